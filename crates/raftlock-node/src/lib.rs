//! raftlock-node: a raftlock node.
//!
//! openraft over the sled store, the tonic gRPC services (client API, admin,
//! internal transport), the leader's lease keeper, waiting acquires and
//! watches. [`Node::start`] starts one inside any tokio program.

#![warn(unreachable_pub)]

mod api;
mod batcher;
mod config;
mod error;
mod grpc;
mod keeper;
mod metrics;
mod node;
mod peer;
mod waits;
mod watch;

pub use api::{AcquireArgs, Acquired, Api};
pub use config::{NodeConfig, RaftTiming};
pub use error::NodeError;
pub use node::{Node, NodeHandle, StartError};

/// The openraft handle of a raftlock node.
pub type Raft = openraft::Raft<raftlock_store::TypeConfig>;
