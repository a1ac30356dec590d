//! `raftlock-bench`: the load generator of acquire/release cycles, against a
//! raftlock cluster or, for comparison, etcd (see `bench.rs`).
//!
//! It lives beside the product, as etcd's `tools/benchmark` does, not in the
//! `raftlock` binary that users install: it carries etcd's protos and a
//! histogram library that a lock service has no use for. It was
//! `raftlock bench` until then; the flags, workloads and JSON are the same.
//!
//! The micro-benchmarks (state machine, sled flush, fdatasync, loopback and
//! gRPC round trips, in-process cluster, client handoff) are this package's
//! examples: `cargo run --release -p raftlock-bench --example NAME`.
//!
//! Exit codes: 0 success, 1 a runtime failure (no leader found, every
//! operation failed), 2 a usage error.

mod bench;
mod holds;

use std::process::ExitCode;

use clap::Parser;

/// Measure lock acquire/release cycles per second and their latency.
///
/// Workloads: seq (one client, one lock), distinct (N clients, each on
/// its own lock), contended (N clients queueing for one lock, FIFO) and
/// holds (loads --holds N holds, then prints the memory per hold of the
/// nodes given by --pids, the load rate and the snapshot time).
/// Every client has its own connection and lease. Against raftlock the
/// clients talk to the leader; with --target etcd they use etcd's
/// server-side lock API (v3lock) and leases instead, for comparison; with
/// --target zookeeper, the lock recipe of Curator's InterProcessMutex, a
/// ZooKeeper session per client.
#[derive(Debug, Parser)]
#[command(name = "raftlock-bench", version)]
struct Cli {
    #[command(flatten)]
    args: bench::BenchArgs,
}

/// The endpoints of `raftlock dev` at its default --base-port: where the
/// clients go without --endpoints or RAFTLOCK_ENDPOINTS, as with every
/// `raftlock` command. The same value as `raftlock`'s `dev::DEV_ENDPOINTS`,
/// which lives in a binary crate and cannot be imported.
pub const DEV_ENDPOINTS: &str = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403";

/// Why the program stops with a failure; decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad flags or environment: exit code 2.
    Usage(String),
    /// Something failed while running: exit code 1.
    Runtime(String),
}

/// mimalloc instead of glibc's malloc, as in the `raftlock` binary: every
/// gRPC call allocates and frees buffers of a few KiB, which glibc serves
/// from its slow path; the load generator shares the machine's cores with
/// the servers it measures.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with code 2. SIGPIPE stays
    // ignored, as Rust starts every program: a write to the socket of a
    // node that died must not kill the run.
    let cli = Cli::parse();
    match bench::run(cli.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line (tonic's transport errors say only
/// "transport error" at the top).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
