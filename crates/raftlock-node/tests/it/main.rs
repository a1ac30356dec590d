//! raftlock-node's integration tests: one binary (STYLE.md), a module per
//! subject, on the test kit's in-process cluster. The Raft transport's
//! own tests use the crate's internals and live in
//! src/raft_transport_tests.rs.

mod cluster;
mod failover;
mod metrics;
mod services;
