//! The raftlock binary's integration tests: one binary (STYLE.md), a
//! module per subject. They run this package's `raftlock` through the test
//! kit's process helpers (through `common`).

mod common;

mod backup;
mod certs;
mod cli_admin;
mod cli_exec;
mod cli_locks;
mod cli_tls;
mod cli_watch;
mod deploy;
mod dev_cluster;
mod force_new_cluster;
mod health;
mod lost_volume;
mod peer_versions;
mod sd_notify;
mod secure_cluster;
mod serve_check;
mod serve_cluster;
mod serve_errors;
