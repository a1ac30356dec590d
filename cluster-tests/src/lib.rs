//! cluster-tests: a Jepsen-style fault harness for raftlock.
//!
//! It runs a real cluster of `raftlock serve` processes with every peer
//! link and every client link through a fault proxy owned by the harness,
//! drives clients through the public gRPC API while a seeded nemesis
//! injects faults, records every operation in a [`history::History`], and
//! checks it against raftlock's promises ([`checker`]).

pub mod checker;
pub mod client;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod report;
pub mod run;
pub mod unsafe_server;
pub mod workload;

// Pure infrastructure from the test kit (without its `in-process` feature,
// which brings the product's node and client): the fault proxy and the
// seeded generator. The harness's client stays its own (src/client.rs).
pub use raftlock_testkit::{proxy, rng};
