//! raftlock-store's integration tests: one binary (STYLE.md), a module per
//! subject.

mod common;
mod conformance;
mod crash;
mod fixture_v3;
mod hostile;
mod power;
mod raft;
mod store;
