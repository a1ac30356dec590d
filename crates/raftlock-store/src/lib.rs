//! raftlock-store: the sled-backed openraft log storage and state machine.
//!
//! One sled database per node holds three trees (see [`layout`]): the Raft
//! log, Raft metadata (vote, committed, last purged, format version, store
//! id, the forced-at marker) and the state machine's records; the current
//! snapshot is a file beside it ([`snapshot_file`]: sled would keep a
//! large value in memory for good). Every stored value is
//! framed with a CRC32 ([`frame`]) because sled is beta software with reports
//! of corruption after unclean shutdowns: damage must surface as a named
//! error, never as silently wrong lock state.
//!
//! Durability rules (why the code is shaped the way it is):
//! - A log append is acknowledged to openraft only after a sled flush that
//!   covers it. Appends are group-committed: one flusher thread flushes once
//!   for every append queued since its last flush. Entries are plain sled
//!   inserts, not a sled batch (a batch costs sled's thread pool a write of
//!   its own); a crash keeps a prefix of them, and a hole is refused on open.
//! - The vote is flushed before `save_vote` returns.
//! - The state machine is *not* written per apply, let alone flushed: the
//!   log is durable, and openraft re-applies committed entries after a
//!   restart. Every 1024 entries or 200 ms of applies it saves one atomic
//!   sled batch (changed records + header with `last_applied`), so the state
//!   on disk is always the state after some whole entry.
//! - `purge` saves the state machine's records (in memory, no flush), then
//!   records `last_purged` and returns: sled keeps a prefix of its writes
//!   in a crash, so no flush can make the marker durable without the save
//!   it relies on. A purger thread saves again and flushes (making both
//!   durable) before deleting log entries, oldest first, so the saved state
//!   machine is never behind the first entry still in the log, and the Raft
//!   core never waits for the deletion. A purge the state in memory does
//!   not cover yet (a follower's, up to a snapshot it is still installing)
//!   records nothing: the purger waits until the state covers it.
//! - A snapshot is made durable (its own file, synced, renamed, directory
//!   synced) before it is reported built or installed. An install writes
//!   the snapshot first and the state's records after it, in small sled
//!   batches; a store that opens with a snapshot newer than its saved
//!   state writes the state from the snapshot.
//! - A sled `flush` is durable by POSIX rules only because sled is
//!   vendored with a patch (vendor/README.md): upstream ends each buffer
//!   write with `sync_file_range`, which survives `kill -9` but not a power
//!   cut; ours calls `fdatasync`, and syncs sled's config file, blobs and
//!   the directories whose entries it creates. `tests/it/power.rs` cuts power
//!   under a store (crates/powerfs) and fails without it. The other patch
//!   takes thread hand-offs out of every flush.
//!
//! [`open`] returns the two halves openraft wants: a [`LogStore`] and a
//! [`StateMachineStore`].

// openraft's storage traits return `StorageError` (224 bytes) by value;
// helpers that feed those methods return it too rather than box and unbox.
#![allow(clippy::result_large_err)]

mod error;
pub mod force;
pub mod frame;
pub mod layout;
mod log_store;
pub mod metrics;
mod migrate;
mod open;
pub mod recovery;
pub mod snapshot_data;
pub mod snapshot_file;
mod state_machine;

pub use error::{Damaged, OpenError};
pub use log_store::{LogReader, LogStore};
pub use open::{Closed, FORMAT_VERSION, MARKER_FILE, StoreOptions, open};
pub use state_machine::{
    AppliedBatch, SNAPSHOT_FORMAT_V3, SNAPSHOT_FORMAT_VERSION, SnapshotBuilder, SnapshotCopy,
    StateHandle, StateMachineStore, decode_snapshot_copy, snapshot_data_for_protocol_1,
    verify_snapshot_data,
};

pub use openraft;
pub use sled;
pub use snapshot_data::SnapshotData;

openraft::declare_raft_types!(
    /// The openraft type configuration of raftlock: log entries carry a
    /// [`raftlock_core::Request`], applying one answers a
    /// [`raftlock_core::Applied`].
    pub TypeConfig:
        D = raftlock_core::Request,
        R = raftlock_core::Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = snapshot_data::SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Node id of a raftlock node.
pub type NodeId = u64;
/// A Raft log id with raftlock's node id type.
pub type LogId = openraft::LogId<NodeId>;
/// A Raft vote with raftlock's node id type.
pub type Vote = openraft::Vote<NodeId>;
/// A log entry of raftlock's Raft log.
pub type Entry = openraft::Entry<TypeConfig>;
/// Membership as the state machine records it.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// Metadata of a snapshot.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
/// A snapshot: metadata and its data.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// openraft's storage error with raftlock's node id type.
pub type StorageError = openraft::StorageError<NodeId>;
