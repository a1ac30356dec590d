//! raftlock-node: a raftlock node.
//!
//! openraft over the sled store, the tonic gRPC services (client API, admin,
//! internal transport), the leader's lease keeper, waiting acquires and
//! watches. [`Node::start`] starts one inside any tokio program.

pub mod api;
pub mod batcher;
pub mod config;
pub mod error;
pub mod grpc;
pub mod keeper;
pub mod metrics;
pub mod network;
pub mod node;
pub mod transport;
pub mod waits;
pub mod watch;
pub mod wire;

// The Raft transport over tonic, tested through the crate's internals.
#[cfg(test)]
mod raft_transport_tests;

pub use api::{AcquireArgs, Acquired, Api};
pub use config::{NodeConfig, RaftTiming};
pub use error::{NodeError, status_reason};
pub use node::{Node, NodeHandle, StartError};

/// The openraft handle of a raftlock node.
pub type Raft = openraft::Raft<raftlock_store::TypeConfig>;
