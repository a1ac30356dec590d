//! The server half of the Raft RPCs: decode openraft's request from a
//! [`RaftMessage`], hand it to the local [`Raft`], and send back its whole
//! `Result<Resp, RaftError<..>>`, so the caller sees Raft's refusals as
//! `RPCError::RemoteError` and transport trouble as a gRPC status.
//!
//! The node's `RaftTransport` service delegates its three Raft methods here.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use std::sync::Arc;

use raftlock_proto::internal::v1::RaftMessage;
use raftlock_store::metrics::Histogram;
use raftlock_store::{NodeId, TypeConfig};

use crate::Raft;
use crate::wire::{pack, unpack};

/// Serves AppendEntries, Vote and InstallSnapshot for one node.
#[derive(Clone)]
pub struct RaftRpcs {
    raft: Raft,
    id: NodeId,
    /// How long this node's Raft took to take in (append and flush) each
    /// AppendEntries that carried entries.
    append_times: Arc<Histogram>,
}

impl RaftRpcs {
    pub fn new(raft: Raft, id: NodeId) -> Self {
        Self::with_append_times(raft, id, Arc::default())
    }

    /// [`RaftRpcs::new`] recording into the node's histogram.
    pub fn with_append_times(raft: Raft, id: NodeId, append_times: Arc<Histogram>) -> Self {
        RaftRpcs {
            raft,
            id,
            append_times,
        }
    }

    /// A message meant for another node id (an old member whose address this
    /// node now has) is refused, never handed to Raft.
    fn check_target(&self, message: &RaftMessage) -> Result<(), tonic::Status> {
        if message.target_id != 0 && message.target_id != self.id {
            return Err(tonic::Status::failed_precondition(format!(
                "message for node {} reached node {} (the address now belongs to another node)",
                message.target_id, self.id
            )));
        }
        Ok(())
    }

    /// `AppendEntriesRequest` → `Result<AppendEntriesResponse, RaftError>`.
    /// A message that fails its checksum or does not decode is
    /// `INVALID_ARGUMENT`.
    pub async fn append_entries(&self, message: RaftMessage) -> Result<RaftMessage, tonic::Status> {
        self.check_target(&message)?;
        let request: AppendEntriesRequest<TypeConfig> = unpack("append entries request", &message)?;
        let entries = request.entries.len();
        let started = std::time::Instant::now();
        let answer: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
            self.raft.append_entries(request).await;
        if entries > 0 {
            self.append_times.observe(started.elapsed());
        }
        Ok(pack(&answer))
    }

    /// `VoteRequest` → `Result<VoteResponse, RaftError>`.
    pub async fn vote(&self, message: RaftMessage) -> Result<RaftMessage, tonic::Status> {
        self.check_target(&message)?;
        let request: VoteRequest<NodeId> = unpack("vote request", &message)?;
        let answer: Result<VoteResponse<NodeId>, RaftError<NodeId>> = self.raft.vote(request).await;
        Ok(pack(&answer))
    }

    /// One chunk: `InstallSnapshotRequest` →
    /// `Result<InstallSnapshotResponse, RaftError<InstallSnapshotError>>`.
    pub async fn install_snapshot(
        &self,
        message: RaftMessage,
    ) -> Result<RaftMessage, tonic::Status> {
        self.check_target(&message)?;
        let request: InstallSnapshotRequest<TypeConfig> =
            unpack("install snapshot request", &message)?;
        let answer: Result<
            InstallSnapshotResponse<NodeId>,
            RaftError<NodeId, InstallSnapshotError>,
        > = self.raft.install_snapshot(request).await;
        Ok(pack(&answer))
    }
}
