//! raftlock-testkit: the fixtures raftlock's tests share, one copy of each
//! (STYLE.md: "One test kit, one test binary per crate"). Test-only: a
//! dev-dependency of the product crates, never a dependency of what ships.
//!
//! - [`cluster`] (feature `in-process`): in-process clusters of the
//!   product's node, optionally behind fault proxies, with clients.
//! - [`process`]: `raftlock serve` clusters, `raftlock dev` and CLI runs as
//!   processes of a binary given as a parameter.
//! - [`proxy`]: the fault proxy (pass, cut, black hole, one-way, delay,
//!   loss, close).
//! - [`rng`]: the seeded generator.
//! - [`grpc`]: the public gRPC API spoken without the product's client.
//! - [`certs`]: a CA, node and client certificates (as `raftlock certs`
//!   makes them) for TLS tests.
//! - [`hostile`]: damaged encodings for decoding tests (proptest).
//! - [`strategies`] (feature `strategies`): generated raftlock-core
//!   commands (proptest).
//! - [`alloc_watch`]: a test binary's allocator that records the largest
//!   allocation per thread.
//! - [`wait`]: polls and waits, every one bounded.
//! - [`ports`], [`dirs`]: free ports on 127.0.0.1, temporary directories.
//!
//! Everything but `cluster` is free of the
//! product's node and client, so cluster-tests, whose harness must not
//! share the product's client, uses this crate without `in-process`.

pub mod alloc_watch;
pub mod certs;
#[cfg(feature = "in-process")]
pub mod cluster;
pub mod dirs;
pub mod grpc;
pub mod hostile;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod rng;
#[cfg(feature = "strategies")]
pub mod strategies;
pub mod wait;
