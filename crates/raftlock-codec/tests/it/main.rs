//! raftlock-codec's tests: one binary (STYLE.md), a module per subject.
//!
//! proptest keeps its regressions in ../proptest-regressions/<module>.txt.
//! Cases per property: 256 by default (PROPTEST_CASES overrides).

mod fixtures;
mod hostile;
mod roundtrip;
mod rpc;
mod strategies;

/// Records each thread's largest allocation, for the hostile-input tests.
#[global_allocator]
static ALLOCATOR: raftlock_testkit::alloc_watch::Watching = raftlock_testkit::alloc_watch::Watching;
