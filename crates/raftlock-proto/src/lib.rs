//! The gRPC contract of raftlock, generated from `proto/` at build time.
//!
//! - [`v1`]: the client and admin API (`raftlock.v1`): `Locks`, `Leases`, `Admin`.
//! - [`internal::v1`]: the node-to-node transport (`raftlock.internal.v1`).
//! - [`storage::v1`]: the storage format (`raftlock.storage.v1`), not an
//!   API: what nodes store and send, wrapped in a versioned envelope.
//! - [`errors`]: the error contract (reasons, metadata keys, and whether a
//!   failed call was applied or may be retried), hand-written, used by the
//!   node, the client, the CLI and the fault harness alike.
//! - [`auth`]: the names of the security model (certificate names, the
//!   bearer token's metadata key, token digests, environment variables).

pub mod auth;
pub mod errors;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("raftlock.v1");
}

#[allow(clippy::all, missing_docs)]
pub mod internal {
    pub mod v1 {
        tonic::include_proto!("raftlock.internal.v1");
    }
}

/// The storage format (`raftlock.storage.v1`): log entries, state records,
/// snapshots and openraft's log ids, votes and memberships, each stored or
/// sent in an `Envelope`. Messages only; `raftlock-codec` converts them to
/// and from the Rust types.
#[allow(clippy::all, missing_docs)]
pub mod storage {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/raftlock.storage.v1.rs"));
    }
}

/// Encoded `FileDescriptorSet` of every raftlock proto, for gRPC server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("raftlock_descriptor");
