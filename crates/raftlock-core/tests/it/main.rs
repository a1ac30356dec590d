//! raftlock-core's integration tests: one binary (STYLE.md), a module per
//! subject.
//!
//! proptest keeps its regressions in ../proptest-regressions/<module>.txt
//! (its default beside a directory with a main.rs).

mod alloc_watch;
mod common;
mod decoding;
mod properties;
mod rules;

#[global_allocator]
static ALLOCATOR: alloc_watch::Watching = alloc_watch::Watching;
