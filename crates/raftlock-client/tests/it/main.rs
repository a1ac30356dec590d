//! raftlock-client's integration tests: one binary (STYLE.md), a module
//! per subject, on the test kit's in-process cluster.
//!
//! (tests/common/doc_node.rs is not part of it: the documentation examples
//! include it.)

mod common;
mod in_process;
mod lease_ref;
mod locks;
mod outcomes;
mod recipes;
mod sessions;
mod tls;
