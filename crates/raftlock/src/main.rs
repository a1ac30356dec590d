//! `raftlock`: the one binary of raftlock.
//!
//! - `raftlock serve`: run one node of a cluster (flags, environment, TOML file).
//! - `raftlock dev`: a ready 3-node cluster in one process, for development.
//! - `raftlock status`: ask a node how the cluster is doing.
//! - `raftlock bench`: measure lock throughput and latency (raftlock or etcd).
//!
//! Exit codes: 0 success (including a clean stop on SIGINT/SIGTERM), 1 a
//! runtime failure (port in use, data directory locked, no node answered),
//! 2 a usage or configuration error.

mod bench;
mod config;
mod dev;
mod logging;
mod runner;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A distributed lock service that needs nothing but itself: Raft (openraft)
/// over an embedded database (sled), served over gRPC.
#[derive(Debug, Parser)]
#[command(name = "raftlock", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node of a raftlock cluster until SIGINT or SIGTERM.
    ///
    /// Every option can be given as a flag, as an environment variable, or
    /// as a key of the TOML file named by --config (the key is the flag's
    /// name with `_` for `-`; limits go in a [limits] table). Flags and
    /// environment variables override the file.
    ///
    /// Start every node of a new cluster with the same --peers: they form
    /// the cluster by themselves, once. A restarted node keeps its data
    /// directory and rejoins; --peers is then ignored.
    Serve(Box<config::ServeArgs>),
    /// Run a ready 3-node cluster in this process, for development.
    ///
    /// Nodes 1, 2 and 3 listen on 127.0.0.1 at --base-port, +1 and +2 (by
    /// default 7401-7403, the default endpoints of `raftlock status` and the
    /// clients) and keep their data in DIR/node1, DIR/node2, DIR/node3.
    /// Running it again on the same directory brings back the same state.
    Dev(dev::DevArgs),
    /// Show the cluster as one node sees it: members, roles, leader, log.
    Status(status::StatusArgs),
    /// Measure lock acquire/release cycles per second and their latency.
    ///
    /// Workloads: seq (one client, one lock), distinct (N clients, each on
    /// its own lock) and contended (N clients queueing for one lock, FIFO).
    /// Every client has its own connection and lease. Against raftlock the
    /// clients talk to the leader; with --target etcd they use etcd's
    /// server-side lock API (v3lock) and leases instead, for comparison.
    Bench(bench::BenchArgs),
}

/// Why the program stops with a failure; decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad flags, configuration or environment: exit code 2.
    Usage(String),
    /// Something failed while running: exit code 1.
    Runtime(String),
}

impl Failure {
    fn exit(self) -> ExitCode {
        let (code, message) = match self {
            Failure::Usage(m) => (2, m),
            Failure::Runtime(m) => (1, m),
        };
        eprintln!("error: {message}");
        ExitCode::from(code)
    }
}

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with code 2.
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => runner::serve(*args),
        Command::Dev(args) => dev::run(args),
        Command::Status(args) => status::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.exit(),
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
