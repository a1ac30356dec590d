//! raftlock-core's integration tests: one binary (STYLE.md), a module per
//! subject.
//!
//! proptest keeps its regressions in ../proptest-regressions/<module>.txt
//! (its default beside a directory with a main.rs).

mod common;
mod properties;
mod rules;
