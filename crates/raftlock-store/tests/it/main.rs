//! raftlock-store's integration tests: one binary (STYLE.md), a module per
//! subject.

mod common;
mod conformance;
mod crash;
mod force;
mod hostile;
mod migrate;
mod power;
mod raft;
mod recovery;
mod store;
