//! `raftlock`: the one binary of raftlock.
//!
//! - `raftlock serve`: run one node of a cluster (flags, environment, TOML file).
//! - `raftlock dev`: a ready 3-node cluster in one process, for development.
//! - `raftlock status`: ask a node how the cluster is doing.
//! - `raftlock health`: a node's gRPC health check, for probes.
//! - `raftlock cluster status|add-learner|promote|remove|forget`: membership.
//!
//! - `raftlock lease|acquire|release|extend|inspect|list|watch|force-release`:
//!   take, look at and manage locks from a shell (see docs/cli.md).
//! - `raftlock exec NAME -- COMMAND`: run a command while holding a lock.
//! - `raftlock certs ca|node|client|token`: certificates and tokens of a
//!   secured cluster.
//!
//! Exit codes: 0 success (including a clean stop on SIGINT/SIGTERM), 1 a
//! runtime failure (port in use, data directory locked, no node answered,
//! stale token), 2 a usage or configuration error or invalid input, 3 the
//! lock is busy or the wait timed out, 4 the lease is lost, 5 not allowed
//! (DENIED, UNAUTHENTICATED). `exec` passes
//! on its command's exit code (see `exec::EXEC_EXIT_CODES`).

mod commands;
mod config;
mod exit;
mod logging;
mod output;
mod runner;
mod sd_notify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::{
    acquire, certs, cluster, dev, exec, extend, force_release, health, inspect, lease, list,
    release, serve, snapshot, status, watch,
};
use exit::EXIT_CODES;
pub use exit::Failure;

/// A distributed lock service that needs nothing but itself: Raft (openraft)
/// over an embedded database (sled), served over gRPC.
#[derive(Debug, Parser)]
#[command(
    name = "raftlock",
    version,
    propagate_version = true,
    after_help = EXIT_CODES
)]
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
    /// Start every node of a new cluster with the same --peers (the nodes'
    /// peer addresses): they form the cluster by themselves, once. A
    /// restarted node keeps its data directory and rejoins; --peers is then
    /// ignored. TLS is required: --tls-cert, --tls-key and --tls-ca, or
    /// --insecure for plaintext on a network you trust (docs/security.md).
    Serve(Box<serve::Args>),
    /// Run a ready 3-node cluster in this process, for development.
    ///
    /// Nodes 1, 2 and 3 listen on 127.0.0.1 at --base-port, +1 and +2 (by
    /// default 7401-7403, the default endpoints of `raftlock status` and the
    /// clients; their peer ports 1000 above) and keep their data in
    /// DIR/node1, DIR/node2, DIR/node3. --secure turns on TLS and auth.
    /// Running it again on the same directory brings back the same state.
    Dev(dev::DevArgs),
    /// Show the cluster as one node sees it: members, roles, leader, log.
    Status(status::StatusArgs),
    /// Grant, revoke, list or keep alive leases (a lease owns locks).
    #[command(after_help = EXIT_CODES)]
    Lease(lease::LeaseArgs),
    /// Take a lock: prints the lease, the fencing token and the expiry.
    ///
    /// Without --lease a new lease is granted with --ttl; it lives until its
    /// ttl unless kept alive (`raftlock lease keep-alive LEASE`), and the
    /// lock is released when it expires. Exit 3 if the lock is busy
    /// (--wait 0) or the wait timed out, 4 if --lease is gone.
    #[command(after_help = EXIT_CODES)]
    Acquire(Box<acquire::AcquireArgs>),
    /// Release a lock held by a lease, with its token.
    ///
    /// Exit 1 if the token is stale (the lease no longer holds the lock
    /// with it), 4 if the lease is gone.
    #[command(after_help = EXIT_CODES)]
    Release(release::HoldArgs),
    /// Extend a hold: restart its lease's ttl (optionally a new --ttl).
    #[command(after_help = EXIT_CODES)]
    Extend(extend::ExtendArgs),
    /// Show a lock: holders (owner, token, since, reason, metadata), queue.
    #[command(after_help = EXIT_CODES)]
    Inspect(inspect::InspectArgs),
    /// List locks held or waited for, optionally under a name prefix.
    #[command(after_help = EXIT_CODES)]
    List(list::ListArgs),
    /// Print lock events as they happen (JSON lines with --json), until Ctrl-C.
    #[command(after_help = EXIT_CODES)]
    Watch(watch::WatchArgs),
    /// Remove holds regardless of token (administrator's unlock).
    #[command(after_help = EXIT_CODES)]
    ForceRelease(force_release::ForceReleaseArgs),
    /// Run a command while holding a lock; release it when the command ends.
    ///
    /// Takes NAME with a new lease (--ttl, kept alive while COMMAND runs),
    /// runs COMMAND in its own process group with RAFTLOCK_LOCK_NAME,
    /// RAFTLOCK_FENCING_TOKEN, RAFTLOCK_LEASE_ID, RAFTLOCK_LEASE_TTL_MS,
    /// RAFTLOCK_LOCK_MODE (RAFTLOCK_LOCK_PERMITS) and RAFTLOCK_ENDPOINTS
    /// (with RAFTLOCK_CA/CERT/KEY/TOKEN when given) in its environment, and exits with COMMAND's exit code. Ctrl-C, SIGTERM
    /// and SIGHUP are forwarded to COMMAND; the lock is released afterwards.
    ///
    /// If keep-alives fail, COMMAND gets --signal --margin before the lease's
    /// certain validity ends (SIGKILL --kill-after later) and exec exits 4.
    ///
    /// Example: raftlock exec jobs/nightly --wait 0 -- ./nightly.sh
    #[command(after_help = exec::EXEC_EXIT_CODES)]
    Exec(Box<exec::ExecArgs>),
    /// Cluster membership: status, add-learner, promote, remove, forget.
    ///
    /// To grow a cluster: start the new node with `raftlock serve --id N
    /// --listen ADDR` and its TLS flags (no --peers), `raftlock cluster
    /// add-learner N PEER_ADDR` (its peer port), then `raftlock cluster
    /// promote N`.
    #[command(after_help = EXIT_CODES)]
    Cluster(cluster::ClusterArgs),
    /// Back up the cluster state to a file, or prepare a new cluster's
    /// nodes from one.
    ///
    /// raftlock snapshot save backup.rlb; then, for each node of the new
    /// cluster: raftlock snapshot restore backup.rlb --data-dir DIR --id N
    /// --peers 1=A,2=B,3=C. See docs/operations.md, "Backup and restore".
    #[command(after_help = EXIT_CODES)]
    Snapshot(snapshot::SnapshotArgs),
    /// Make a CA, node and client certificates, and bearer tokens.
    ///
    /// raftlock certs ca --dir certs; raftlock certs node --id 1 --host
    /// node1.example.com --dir certs; raftlock certs client --name worker
    /// --dir certs; raftlock certs token --name ci. Keys are ECDSA P-256,
    /// written with mode 0600; nothing is overwritten without --force.
    /// See docs/security-certs.md.
    Certs(certs::CertsArgs),
    /// Ask one node whether it serves (gRPC health check): exit 0 only if
    /// it answers SERVING (it knows a leader), else 1.
    ///
    /// For Docker's HEALTHCHECK and Kubernetes exec probes, which cannot
    /// speak gRPC over TLS themselves. --endpoint defaults to
    /// 127.0.0.1:7401; TLS options as for the other commands (--ca or
    /// RAFTLOCK_CA; no identity is needed).
    Health(health::HealthArgs),
}

/// mimalloc instead of glibc's malloc: a gRPC call allocates and frees
/// several buffers of a few KiB (tonic's encode and decode buffers, h2's
/// frames), which glibc serves from its slow path (`_int_malloc`,
/// `malloc_consolidate`: ~20 % of the leader's CPU under 64 clients).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: the same index of its `mi_option_e`
/// in mimalloc 2.x and 3.x (include/mimalloc.h).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

unsafe extern "C" {
    fn mi_version() -> std::ffi::c_int;
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Makes mimalloc give freed memory back to the system at once. With its
/// default delay (1 s in mimalloc 3, 10 ms in 2) it purges only when the
/// thread that freed allocates again, so a node kept what a snapshot's
/// encoding or a restart's load had used: at 1M holds a leader stayed
/// ~100-190 MiB above its RSS at rest after a snapshot, a restarted
/// follower ~290 MiB (docs/performance.md, "Memory per hold"). Measured
/// cost: 1-3 % of cycles/s. A `MIMALLOC_PURGE_DELAY` in the environment
/// still wins; a mimalloc of another major version is left alone.
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: plain calls into the mimalloc linked as the global
    // allocator, with integers only.
    unsafe {
        // 30302 is 3.3.2 (major, then two digits each for minor and patch).
        if matches!(mi_version() / 10_000, 2 | 3) {
            mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
}

fn main() -> ExitCode {
    purge_freed_memory_at_once();
    // clap prints usage errors itself and exits with code 2.
    let cli = Cli::parse();
    if !keeps_sigpipe_ignored(&cli.command) {
        restore_sigpipe();
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Dev(args) => dev::run(args),
        Command::Status(args) => status::run(args),
        Command::Lease(args) => lease::run(args),
        Command::Acquire(args) => acquire::run(*args),
        Command::Release(args) => release::run(args),
        Command::Extend(args) => extend::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::List(args) => list::run(args),
        Command::Watch(args) => watch::run(args),
        Command::ForceRelease(args) => force_release::run(args),
        Command::Exec(args) => exec::run(*args),
        Command::Cluster(args) => cluster::run(args),
        Command::Snapshot(args) => snapshot::run(args),
        Command::Certs(args) => certs::run(args),
        Command::Health(args) => health::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.exit(),
    }
}

/// Whether `command` runs with SIGPIPE ignored, as Rust starts every
/// program. The short-lived commands print to stdout, often into a pipe
/// that closes early (`raftlock list | head`, `| grep -q`); with SIGPIPE
/// ignored `println!` would panic on the closed pipe, with the default
/// action the process ends quietly, as `cat` or `grep` do. Ignored stays
/// ignored for the servers (their sockets must never kill them), `exec` (it
/// must outlive its stdout to release the lock), and the commands that ride
/// out node restarts: `watch`, `acquire` (its --wait) and `lease
/// keep-alive`. A write to the socket of a node that died would raise
/// SIGPIPE too (hyper writes with `writev`, which has no MSG_NOSIGNAL) and
/// kill them in the middle of a retry; they notice a closed stdout
/// themselves (`output::write_line`).
fn keeps_sigpipe_ignored(command: &Command) -> bool {
    match command {
        Command::Serve(_)
        | Command::Dev(_)
        | Command::Exec(_)
        | Command::Watch(_)
        | Command::Acquire(_) => true,
        Command::Lease(args) => matches!(args.command, lease::LeaseCommand::KeepAlive { .. }),
        _ => false,
    }
}

/// See [`keeps_sigpipe_ignored`]. Not the default action itself: that
/// also ended a command, silently with status 141, when it wrote to the
/// socket of a node that had closed it (a TLS node hanging up on a
/// plaintext client, a client certificate the node refused), instead of
/// printing the error. So SIGPIPE ends the process only when stdout is the
/// broken pipe; a socket's write just fails with EPIPE.
fn restore_sigpipe() {
    extern "C" fn on_sigpipe(_: libc::c_int) {
        let mut stdout = libc::pollfd {
            fd: libc::STDOUT_FILENO,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: poll, signal and raise are async-signal-safe; SIGPIPE is
        // blocked while this runs, so the raised one is delivered, with
        // the default action, when it returns.
        unsafe {
            if libc::poll(&mut stdout, 1, 0) == 1 && stdout.revents & libc::POLLERR != 0 {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
        }
    }
    // SAFETY: installing a handler that only makes async-signal-safe
    // calls, before any other thread exists.
    unsafe {
        libc::signal(
            libc::SIGPIPE,
            on_sigpipe as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
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
