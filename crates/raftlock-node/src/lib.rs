//! raftlock-node: a raftlock node.
//!
//! openraft over the sled store, the tonic gRPC services (client API, admin,
//! internal transport), the leader's lease keeper, waiting acquires and
//! watches. [`Node::start`] starts one inside any tokio program.
//!
//! The public surface is small: [`Node`] starts a node from a
//! [`NodeConfig`] (with its [`RaftTiming`]) and hands back a [`NodeHandle`],
//! which gives the node's operations in process ([`Api`], with
//! [`AcquireArgs`] and [`Acquired`]), its client services without a socket,
//! its metrics, and openraft's handle ([`Raft`]). Operations fail with
//! [`NodeError`], a start with [`StartError`]. Everything else, the
//! node-to-node transport included, is internal to the crate.

#![warn(missing_docs, unreachable_pub)]

mod api;
mod auth;
mod batcher;
mod config;
mod conn;
mod error;
mod grpc;
mod grpc_metrics;
mod keeper;
mod listen;
mod lock_groups;
mod metrics;
mod node;
mod peer;
mod tls;
mod waits;
mod watch;

pub use api::{AcquireArgs, Acquired, Api};
pub use auth::{AuthFileError, AuthSource};
pub use config::{InitialClusterState, NodeConfig, RaftTiming, peer_listen_for};
pub use error::NodeError;
pub use metrics::MetricsFormat;
pub use node::{Node, NodeHandle, StartError};
pub use peer::version::{
    ProtocolRange, SUPPORTED as PEER_PROTOCOLS, TEST_OVERRIDE_ENV as PEER_PROTOCOL_TEST_ENV,
};
pub use raftlock_store::force::ForceError;
pub use tls::{TlsError, TlsFiles};

/// The openraft handle of a raftlock node ([`NodeHandle::raft`]): its
/// metrics (role, leader, indexes) and membership. It makes openraft's
/// version part of this crate's API.
pub type Raft = openraft::Raft<raftlock_store::TypeConfig>;

/// Preparing the nodes of a new cluster from a backup (`raftlock snapshot
/// restore`), offline: the store's recovery, so embedders and the binary
/// need no direct dependency on the store.
pub mod restore {
    pub use raftlock_store::recovery::{PrepareError, Prepared, prepare_from_backup};
    pub use raftlock_store::{
        Damaged, MARKER_FILE, SNAPSHOT_FORMAT_VERSION, StoreOptions, decode_snapshot_copy,
    };
}
