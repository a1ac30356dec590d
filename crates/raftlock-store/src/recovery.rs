//! Offline preparation of a store from a backup: the first state of a NEW
//! cluster (docs/operations.md, "Backup and restore").
//!
//! The prepared store holds no log entries, only:
//! - the backup's state, moved to the new cluster (`State::into_new_cluster`:
//!   new cluster id, no member records, token epoch raised), installed as
//!   the current snapshot and as the state machine's records;
//! - log id `(term 0, node 0, I)`, I = the backup's last index, as the
//!   applied, committed and last purged log id. Keeping I keeps every new
//!   stamp's index above the restored lease and waiter ids' indexes; term 0
//!   makes the first leader's entries, `(1, n, I+1)` onwards, sort above it
//!   (with the backup's own term T a fresh vote's term-1 leader would write
//!   log ids below the last one);
//! - the membership of the new cluster at that log id.
//!
//! No vote. openraft 0.9 starts from this as from a store whose log was
//! purged up to I (storage/helper.rs `get_initial_state`: committed and
//! last_log_id from last_purged, membership and snapshot from the state
//! machine), elects a leader in term 1 and appends at I+1; followers accept
//! it because their last log id is the same (0, 0, I).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, CommittedLeaderId, Membership};
use raftlock_core::State;

use crate::error::OpenError;
use crate::state_machine::snapshot_data_of;
use crate::{LogId, SnapshotMeta, StoreOptions, StoredMembership};

/// Why a store could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    Invalid(String),
}

/// What a prepared store starts from.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub log_id: LogId,
    pub cluster_id: String,
    pub token_epoch: u16,
}

/// Creates the store of one node of a new cluster in `dir` (which must not
/// hold a store: `open` would find its format version and the caller
/// refuses non-empty directories first) from a backup's `state` at index
/// `index`. `voters` maps node ids to their peer addresses (`--peers`).
pub async fn prepare_from_backup(
    dir: &Path,
    options: StoreOptions,
    state: State,
    index: u64,
    cluster_id: String,
    min_epoch: u16,
    voters: &BTreeMap<u64, String>,
) -> Result<Prepared, PrepareError> {
    if voters.is_empty() || voters.contains_key(&0) {
        return Err(PrepareError::Invalid(
            "the new cluster needs at least one voter, with ids from 1".into(),
        ));
    }
    if index != state.last_applied() {
        return Err(PrepareError::Invalid(format!(
            "the backup's state is at index {}, its header says {index}",
            state.last_applied()
        )));
    }
    let state = state.into_new_cluster(cluster_id.clone(), min_epoch);
    let token_epoch = state.token_epoch();
    let log_id = LogId::new(CommittedLeaderId::new(0, 0), index);
    let ids: BTreeSet<u64> = voters.keys().copied().collect();
    let nodes: BTreeMap<u64, BasicNode> = voters
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
        .collect();
    let membership = StoredMembership::new(Some(log_id), Membership::new(vec![ids], nodes));
    let data = snapshot_data_of(state, Some(log_id), membership.clone());
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: membership,
        snapshot_id: format!("restored-{index}-{:08x}", crc32fast::hash(&data)),
    };

    let (mut log, mut sm) = crate::open(dir, options)?;
    let storage = |e: crate::StorageError| PrepareError::Storage(e.to_string());
    sm.install_snapshot(&meta, Box::new(crate::SnapshotData::from_vec(data)))
        .await
        .map_err(storage)?;
    // Committed and purged up to the backup's index: openraft starts with
    // an empty log whose last id is this, and never asks for entries at or
    // below it. Neither call flushes: one flush makes both durable.
    log.save_committed(Some(log_id)).await.map_err(storage)?;
    log.purge(log_id).await.map_err(storage)?;
    log.flush_all().await.map_err(storage)?;
    let closed = log.closed();
    drop((log, sm));
    closed.wait().await;
    Ok(Prepared {
        log_id,
        cluster_id,
        token_epoch,
    })
}
