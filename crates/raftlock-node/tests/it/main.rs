//! raftlock-node's integration tests: one binary (STYLE.md), a module per
//! subject, on the test kit's in-process cluster. The Raft transport's
//! own tests use the crate's internals and live in
//! src/peer/tests.rs.

mod auth;
mod bootstrap;
mod cluster;
mod embedders;
mod failover;
mod hostile;
mod metrics;
mod security;
mod services;
