//! cluster-tests' end-to-end tests: one binary, a module per subject, each
//! running real `raftlock serve` processes.

mod ci;
mod findings;
mod restart_rule;
