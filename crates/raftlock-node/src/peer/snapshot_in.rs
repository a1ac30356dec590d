//! Receiving a snapshot's chunks (InstallSnapshot) before Raft sees any of
//! it. openraft's own chunk receiver writes each chunk at the offset the
//! message names into a `Cursor<Vec<u8>>` (in 0.9), so one chunk at offset 2^40
//! made the node allocate a terabyte and abort; and it hands the whole
//! data to the state machine unchecked, where a damaged snapshot is a
//! storage error that stops Raft for good. Here the chunks are collected
//! in order (a gap is refused), the whole snapshot is checked
//! ([`verify_snapshot_data`]: checksum, version, metadata, state
//! invariants) and only a good one is handed to Raft, whole
//! (`install_full_snapshot`). A damaged one is `INVALID_ARGUMENT`; the
//! leader sends it again from the start.

use openraft::error::{InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{InstallSnapshotRequest, InstallSnapshotResponse};
use openraft::{Snapshot, SnapshotSegmentId};
use raftlock_store::{NodeId, TypeConfig, verify_snapshot_data};
use tokio::sync::Mutex;

use crate::Raft;

/// What InstallSnapshot answers: Raft's answer, or a refusal.
pub(crate) type ChunkAnswer = Result<
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    tonic::Status,
>;

/// The snapshot being received, if any.
#[derive(Debug, Default)]
pub(crate) struct SnapshotReceiver {
    receiving: Mutex<Option<Receiving>>,
}

#[derive(Debug)]
struct Receiving {
    snapshot_id: String,
    /// The chunks so far, in order, without gaps.
    data: Vec<u8>,
}

/// The refusal of a chunk at `got` when `expected` was next.
fn mismatch(snapshot_id: &str, expected: u64, got: u64) -> RaftError<NodeId, InstallSnapshotError> {
    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
        expect: SnapshotSegmentId {
            id: snapshot_id.to_string(),
            offset: expected,
        },
        got: SnapshotSegmentId {
            id: snapshot_id.to_string(),
            offset: got,
        },
    }))
}

impl SnapshotReceiver {
    /// Takes one chunk. A chunk of a leader whose vote is below this
    /// node's is answered with this node's vote and dropped (as openraft
    /// does); a chunk that would leave a gap, or starts a new snapshot
    /// anywhere but at 0, is a `SnapshotMismatch` (the leader restarts
    /// the transfer at 0); the last chunk of damaged data is refused.
    pub(crate) async fn receive(
        &self,
        raft: &Raft,
        request: InstallSnapshotRequest<TypeConfig>,
    ) -> ChunkAnswer {
        let my_vote = raft.metrics().borrow().vote;
        if request.vote < my_vote {
            return Ok(Ok(InstallSnapshotResponse { vote: my_vote }));
        }
        let id = request.meta.snapshot_id.clone();
        let mut receiving = self.receiving.lock().await;
        let current = match receiving.as_mut() {
            Some(r) if r.snapshot_id == id => r,
            _ if request.offset != 0 => return Ok(Err(mismatch(&id, 0, request.offset))),
            _ => receiving.insert(Receiving {
                snapshot_id: id.clone(),
                data: Vec::new(),
            }),
        };
        // A chunk sent again (its answer was lost) overwrites from its
        // offset; one past the end would leave a gap.
        let received = current.data.len() as u64;
        let Ok(offset) = usize::try_from(request.offset) else {
            return Ok(Err(mismatch(&id, received, request.offset)));
        };
        if offset > current.data.len() {
            return Ok(Err(mismatch(&id, received, request.offset)));
        }
        current.data.truncate(offset);
        current.data.extend_from_slice(&request.data);
        if !request.done {
            return Ok(Ok(InstallSnapshotResponse { vote: my_vote }));
        }
        let data = receiving.take().map(|r| r.data).unwrap_or_default();
        drop(receiving);
        if let Err(damaged) = verify_snapshot_data(&request.meta, &data) {
            return Err(tonic::Status::invalid_argument(format!(
                "refused snapshot {id}: {damaged}"
            )));
        }
        let snapshot = Snapshot {
            meta: request.meta,
            snapshot: Box::new(raftlock_store::SnapshotData::from_vec(data)),
        };
        Ok(raft
            .install_full_snapshot(request.vote, snapshot)
            .await
            .map(InstallSnapshotResponse::from)
            .map_err(RaftError::Fatal))
    }
}
