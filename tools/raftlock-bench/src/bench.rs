//! `raftlock-bench`: a load generator of lock acquire/release cycles, against
//! raftlock or, for comparison, etcd's server-side lock API (v3lock, with
//! etcd leases) or ZooKeeper's lock recipe (Curator's InterProcessMutex,
//! with ZooKeeper sessions).
//!
//! Workloads:
//! - `seq`: one client; loop { acquire `bench/seq` ; hold ; release }.
//! - `distinct`: N clients, client i on its own lock `bench/distinct/i`:
//!   independent writes, so it measures how well the system batches them.
//! - `contended`: N clients on one lock `bench/contended`, each waiting in the
//!   FIFO queue: measures handoffs (release, then grant to the next) per
//!   second.
//! - `failover`: one client takes one lock once, retrying every failure
//!   after a fixed pause until it holds it (see `failover.rs`): how long a
//!   client waits for a lock after a node was killed.
//!
//! With raftlock, seq and distinct acquire with `wait_timeout_ms = 0` (try);
//! contended waits. etcd's Lock always waits (it has no try); so does the
//! ZooKeeper recipe (Curator's `acquire()`). Without contention (seq,
//! distinct) waiting and trying do the same calls.
//!
//! ZooKeeper: the recipe of Curator's InterProcessMutex, call for call
//! (`zk_lock`): create an ephemeral sequential znode
//! `/locks/<name>/_c_<uuid>-lock-<seq>` (protected mode, as Curator does),
//! list the children of `/locks/<name>`, hold the lock if ours has the
//! lowest sequence, else set a watch on the predecessor (getData) and wait
//! for it to go, then list again. Release deletes our znode. Each client has
//! its own session (its own TCP connection; the client library pings to keep
//! it alive), which plays the part of the lease: it is closed at the end.
//!
//! Each client has its own lease (ttl 30 s), granted before the clock
//! starts, kept alive by ONE keep-alive stream for all leases of the process
//! (a keep-alive per lease every 10 s is a few messages a second: not load),
//! and revoked at the end.
//!
//! Connections: each client has its own tonic `Channel`, so its own HTTP/2
//! connection, as separate client processes would; the keep-alive stream,
//! the leader lookup and the revokes use one more. raftlock clients go to the
//! leader (found with Admin.Status; a NOT_LEADER error moves the client to
//! the leader it names). etcd clients all go to the first endpoint that
//! grants a lease: put etcd's leader first for a like-for-like comparison
//! (etcd forwards to its leader itself). ZooKeeper clients likewise all open
//! their sessions at the first endpoint that accepts one (a follower would
//! forward each write to the leader): each session is pinned to that server,
//! as placing it there needs (the client library shuffles a list of
//! servers). The failover workload gives the library every endpoint instead,
//! so its session moves to another server when one goes.
//!
//! Figures cover the cycles that complete inside the measured window,
//! which starts after --warmup; so cycles/s is cycles / --duration.
//! Latencies are in microseconds in HDR histograms (3 significant digits) and
//! printed in ms. Errors are counted by reason (raftlock's ErrorInfo reason,
//! else the gRPC code), not fatal: the run fails (exit 1) only if no cycle
//! succeeds at all.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use raftlock_proto::v1 as pb;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use raftlock_client::parse_duration;

use crate::{DEV_ENDPOINTS, Failure, error_chain};

mod failover;

/// The generated client of the etcd subset in `proto/etcd_bench*.proto`.
#[allow(clippy::all, clippy::pedantic, dead_code, missing_docs)]
mod etcd_pb {
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
}
use etcd_pb::{etcdserverpb as epb, v3lockpb as lockpb};
use zookeeper_client as zk;

/// Most concurrent clients (each has a connection and a lease).
const MAX_CLIENTS: u32 = 10_000;
/// Longest --duration, --warmup or --hold.
/// Time to live of each client's lease; must outlast gaps in keep-alives.
const LEASE_TTL_MS: u64 = 30_000;
/// Keep-alive period: a third of the ttl, so two lost rounds do no harm.
const KEEPALIVE_EVERY: Duration = Duration::from_millis(LEASE_TTL_MS / 3);
/// How long an acquire that waits in the queue may wait (contended, etcd).
const WAIT_TIMEOUT_MS: u64 = 30_000;
/// Deadline of every call that does not wait for a lock.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to look for a raftlock leader before giving up.
const LEADER_SEARCH: Duration = Duration::from_secs(10);
/// Pause after a failed operation, so an unavailable cluster is not
/// hammered in a tight loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(20);
/// Pause before reopening a broken keep-alive stream.
const KEEPALIVE_RETRY: Duration = Duration::from_secs(1);
/// After the window: time for clients to finish their last cycle (a waiting
/// acquire may take up to its wait timeout).
const DRAIN_TIMEOUT: Duration =
    Duration::from_millis(WAIT_TIMEOUT_MS + RPC_TIMEOUT.as_millis() as u64 * 2);
/// Where the ZooKeeper lock recipe keeps its znodes: `/locks/<name>`.
const ZK_LOCKS: &str = "/locks";
/// The lock name in each contender's znode name, as Curator's
/// InterProcessMutex spells it; the sequence number follows it.
const ZK_LOCK_NAME: &str = "lock-";
/// Time for the ZooKeeper sessions' CloseSession requests to go out at the
/// end of a run.
const ZK_CLOSE_GRACE: Duration = Duration::from_millis(300);
/// Distinct error reasons kept; the rest are counted under OTHER.
const MAX_REASONS: usize = 32;
/// Latencies above this (µs) are recorded as this: one hour.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// One client: acquire (try), hold, release, on one lock.
    Seq,
    /// N clients (default 64), each on its own lock.
    Distinct,
    /// N clients (default 8) queueing (FIFO) for one lock.
    Contended,
    /// One client takes one lock (a fresh name) once, retrying after a
    /// fixed pause until it holds it or --duration has passed: run it at the
    /// kill of a node, with the survivors as --endpoints.
    Failover,
    /// Loads --holds N exclusive holds and prints each local node's memory
    /// per hold (--pids), the load rate and the snapshot time (raftlock
    /// only; see holds.rs).
    Holds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A raftlock cluster.
    Raftlock,
    /// An etcd v3 cluster, through its server-side lock API (v3lock).
    Etcd,
    /// A ZooKeeper ensemble, through the lock recipe of Curator's
    /// InterProcessMutex (ephemeral sequential znodes, a watch on the
    /// predecessor).
    Zookeeper,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What the clients do (see below).
    #[arg(long, value_name = "WORKLOAD")]
    pub workload: Workload,

    /// Concurrent clients, each with its own connection and lease (default:
    /// 1 for seq, which only runs one; 64 for distinct; 8 for contended).
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CLIENTS))
    )]
    pub clients: Option<u32>,

    /// Length of the measured window, e.g. 500ms, 30s, 5m.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// How long a client holds each lock before releasing it.
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = parse_duration)]
    pub hold: Duration,

    /// Load before the measured window, left out of the figures.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Nodes as host:port, comma-separated. Default for raftlock:
    /// RAFTLOCK_ENDPOINTS, else the `raftlock dev` cluster; for etcd:
    /// 127.0.0.1:2379; for zookeeper: 127.0.0.1:2181.
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    pub endpoints: Vec<String>,

    /// The system under test.
    #[arg(long, value_name = "TARGET", default_value = "raftlock")]
    pub target: Target,

    /// Threads of the load generator's own runtime. One leaves the other
    /// cores to the servers when they share the machine (the usual case for
    /// this command); on a separate load machine give it more.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=64)
    )]
    pub threads: u32,

    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,

    /// --workload failover: the Unix time in seconds (e.g. bash's
    /// $EPOCHREALTIME) of the event to time from, such as the kill of a
    /// leader. Without it the time counts from the start of this process.
    #[arg(long, value_name = "SECONDS", value_parser = parse_epoch)]
    pub since_epoch: Option<f64>,

    /// --workload failover: the pause after a failed attempt, always the
    /// same (default 25ms, as etcd's Go client pauses between retries).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retry_pause: Option<Duration>,

    /// --workload failover: how long each call of an attempt may take
    /// before the attempt counts as failed (default 1s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub call_timeout: Option<Duration>,

    /// --workload holds: how many holds to load.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub holds: u64,

    /// --workload holds: leases holding them (N / LEASES names each).
    #[arg(long, value_name = "LEASES", default_value_t = 1_000)]
    pub leases: u64,

    /// --workload holds: names per Acquire (the cluster's default
    /// max_locks_per_request is 64).
    #[arg(long, value_name = "NAMES", default_value_t = 64)]
    pub batch: u64,

    /// --workload holds: process ids of the `raftlock serve` nodes on this
    /// machine whose memory to read (/proc/PID/status), comma-separated.
    #[arg(long, value_name = "PID,...", value_delimiter = ',')]
    pub pids: Vec<u32>,

    /// --workload holds: pause between the last entry being applied on
    /// every node and reading their memory (the store saves changed records
    /// every 200 ms).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,

    /// --workload holds: leave the leases and their holds in place at the
    /// end (default: revoke them).
    #[arg(long)]
    pub keep: bool,

    /// --workload holds: do not build a snapshot after loading.
    #[arg(long)]
    pub no_snapshot: bool,
}

/// A Unix time in seconds with a fraction ("1765081234.123456"), as bash's
/// $EPOCHREALTIME prints it.
fn parse_epoch(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let well_formed = !t.is_empty()
        && t.chars().all(|c| c.is_ascii_digit() || c == '.')
        && t.chars().filter(|c| *c == '.').count() <= 1
        && t.chars().next().is_some_and(|c| c.is_ascii_digit());
    let seconds: f64 = if well_formed {
        t.parse().map_err(|_| format!("`{t}` is not a number"))?
    } else {
        return Err(format!(
            "`{t}` is not a Unix time in seconds such as 1765081234.123456 (a locale's decimal \
             comma is not accepted)"
        ));
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("`{t}` is not a Unix time after 1970"));
    }
    Ok(seconds)
}

/// A validated run.
#[derive(Debug, Clone)]
struct Plan {
    workload: Workload,
    target: Target,
    clients: u32,
    duration: Duration,
    warmup: Duration,
    hold: Duration,
    endpoints: Vec<String>,
    /// Threads of the load generator's runtime (`--threads`).
    threads: u32,
    /// The failover workload's settings (None for the others).
    failover: Option<failover::Settings>,
}

impl Plan {
    fn new(args: &BenchArgs) -> Result<Plan, Failure> {
        let clients = match (args.workload, args.clients) {
            (Workload::Seq, Some(n)) if n != 1 => {
                return Err(Failure::Usage(format!(
                    "--workload seq runs exactly one client (got --clients {n}); drop \
                     --clients, or use --workload distinct for {n} clients"
                )));
            }
            (_, Some(n)) => n,
            (Workload::Seq, None) => 1,
            (Workload::Distinct, None) => 64,
            (Workload::Contended, None) => 8,
            (Workload::Failover, None) => 1,
            (Workload::Holds, None) => 8,
        };
        if args.workload == Workload::Failover && clients != 1 {
            return Err(Failure::Usage(format!(
                "--workload failover runs exactly one client (got --clients {clients}); drop \
                 --clients"
            )));
        }
        if args.duration.is_zero() {
            return Err(Failure::Usage("--duration must be more than 0".into()));
        }
        let mut endpoints: Vec<String> = args
            .endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            if !args.endpoints.is_empty() {
                return Err(Failure::Usage(
                    "--endpoints is empty; give host:port of at least one node".into(),
                ));
            }
            let default = match args.target {
                Target::Raftlock => std::env::var("RAFTLOCK_ENDPOINTS")
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .unwrap_or_else(|| DEV_ENDPOINTS.to_string()),
                Target::Etcd => "127.0.0.1:2379".to_string(),
                Target::Zookeeper => "127.0.0.1:2181".to_string(),
            };
            endpoints = default.split(',').map(|e| e.trim().to_string()).collect();
        }
        let failover = if args.workload == Workload::Failover {
            if !args.hold.is_zero() {
                return Err(Failure::Usage(
                    "--hold does not apply to --workload failover (it takes the lock once and \
                     stops)"
                        .into(),
                ));
            }
            Some(failover::Settings::new(
                args.since_epoch,
                args.retry_pause,
                args.call_timeout,
            )?)
        } else {
            let only_failover = [
                ("--since-epoch", args.since_epoch.is_some()),
                ("--retry-pause", args.retry_pause.is_some()),
                ("--call-timeout", args.call_timeout.is_some()),
            ];
            if let Some((flag, _)) = only_failover.iter().find(|(_, given)| *given) {
                return Err(Failure::Usage(format!(
                    "{flag} applies only to --workload failover"
                )));
            }
            None
        };
        Ok(Plan {
            workload: args.workload,
            target: args.target,
            clients,
            duration: args.duration,
            warmup: args.warmup,
            hold: args.hold,
            endpoints,
            threads: args.threads,
            failover,
        })
    }

    /// The lock client `i` works on.
    fn lock_name(&self, i: u32) -> String {
        match self.workload {
            Workload::Seq => "bench/seq".into(),
            Workload::Distinct => format!("bench/distinct/{i}"),
            Workload::Contended => "bench/contended".into(),
            // A fresh name: a hold a previous run could not release must not
            // stand in the way.
            Workload::Failover => failover::lock_name(),
            Workload::Holds => format!("holds/{i}"),
        }
    }

    /// Whether acquires wait in the queue (raftlock; etcd and the ZooKeeper
    /// recipe always wait).
    fn waits(&self) -> bool {
        self.workload == Workload::Contended
    }
}

pub fn run(args: BenchArgs) -> Result<(), Failure> {
    let plan = Plan::new(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.threads as usize)
        .enable_all()
        .thread_name("bench")
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start the tokio runtime: {e}")))?;
    if plan.workload == Workload::Holds {
        if plan.target != Target::Raftlock {
            return Err(Failure::Usage(
                "--workload holds runs against raftlock only".into(),
            ));
        }
        let holds = crate::holds::HoldsPlan {
            holds: args.holds,
            leases: args.leases,
            batch: args.batch,
            clients: plan.clients,
            endpoints: plan.endpoints.clone(),
            pids: args.pids.clone(),
            settle: args.settle,
            keep: args.keep,
            snapshot: !args.no_snapshot,
        };
        let report = rt.block_on(crate::holds::run(&holds))?;
        return emit(args.json, &report, || report.table());
    }
    if let Some(settings) = &plan.failover {
        let report = rt.block_on(failover::run(&plan, settings))?;
        return emit(args.json, &report, || report.table());
    }
    let report = rt.block_on(bench(&plan))?;
    emit(args.json, &report, || report.table())
}

/// Prints `report` as one JSON object (`--json`) or as its table.
fn emit(
    json: bool,
    report: &impl Serialize,
    table: impl FnOnce() -> String,
) -> Result<(), Failure> {
    if json {
        let text = serde_json::to_string(report)
            .map_err(|e| Failure::Runtime(format!("cannot encode JSON: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", table());
    }
    Ok(())
}

/// A failed operation, as counted.
#[derive(Debug, Clone)]
pub(crate) struct OpError {
    /// Machine-readable, low-cardinality: the key it is counted under.
    reason: String,
    /// For a person: the reason and the server's message.
    pub(crate) detail: String,
    /// From a NOT_LEADER error: where the leader is.
    leader_addr: Option<String>,
}

impl OpError {
    pub(crate) fn raftlock(status: &Status) -> OpError {
        let classified = raftlock_proto::errors::classify(status);
        let reason = classified.reason_text(status);
        let leader_addr = classified.leader.map(|l| l.addr);
        OpError {
            detail: format!("{reason}: {}", status.message()),
            reason,
            leader_addr,
        }
    }

    fn etcd(status: &Status) -> OpError {
        // etcd's messages ("etcdserver: requested lease not found") name the
        // cause and are few, so they are part of the reason.
        let message: String = status.message().chars().take(60).collect();
        let reason = format!("{:?}: {message}", status.code());
        OpError {
            detail: reason.clone(),
            reason,
            leader_addr: None,
        }
    }

    fn zookeeper(e: &zk::Error) -> OpError {
        // The client library's messages ("connection to server has lost",
        // "session expired") name the cause and are few.
        let reason: String = e.to_string().chars().take(60).collect();
        OpError {
            detail: reason.clone(),
            reason,
            leader_addr: None,
        }
    }

    fn other(reason: &str, detail: String) -> OpError {
        OpError {
            reason: reason.to_string(),
            detail,
            leader_addr: None,
        }
    }
}

/// Errors by reason, and the first error seen (even outside the window).
#[derive(Debug, Default)]
struct ErrorCounts {
    by_reason: BTreeMap<String, u64>,
    total: u64,
    first: Option<String>,
}

impl ErrorCounts {
    /// Counts `e` if `counted` (it happened in the window).
    fn record(&mut self, e: &OpError, counted: bool) {
        if self.first.is_none() {
            self.first = Some(e.detail.clone());
        }
        if counted {
            self.add(&e.reason, 1);
        }
    }

    fn add(&mut self, reason: &str, n: u64) {
        self.total += n;
        let key = if self.by_reason.len() >= MAX_REASONS && !self.by_reason.contains_key(reason) {
            "OTHER"
        } else {
            reason
        };
        *self.by_reason.entry(key.to_string()).or_default() += n;
    }

    fn merge(&mut self, other: ErrorCounts) {
        if self.first.is_none() {
            self.first = other.first;
        }
        for (reason, n) in other.by_reason {
            self.add(&reason, n);
        }
    }
}

fn histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy new_with_bounds' rules
    // (low >= 1, high >= 2 * low, sigfig <= 5); `expect` documents that.
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What one client measured.
struct ClientStats {
    /// Acquire latency (µs) of the cycles in the window.
    acquire: Histogram<u64>,
    /// Acquire + hold + release (µs) of the cycles in the window.
    cycle: Histogram<u64>,
    /// Cycles completed in the window.
    cycles: u64,
    /// Cycles completed at any time (warmup and drain included).
    cycles_total: u64,
    /// Longest stretch of the window (µs) in which this client completed
    /// no cycle: what an outage (a failover) cost it, errors and retries
    /// included, which the cycle latencies leave out.
    gap_max: u64,
    errors: ErrorCounts,
}

/// The measured window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        self.start <= t && t <= self.end
    }
}

/// One client's connection and lease.
enum Client {
    Raftlock {
        locks: pb::locks_client::LocksClient<Channel>,
        lease_id: u64,
        /// Token of the hold, while holding.
        held: Option<u64>,
    },
    Etcd {
        lock: lockpb::lock_client::LockClient<Channel>,
        lease_id: i64,
        /// The ownership key etcd returned, while holding.
        held: Option<Vec<u8>>,
    },
    Zookeeper {
        /// This client's own session.
        zk: zk::Client,
        /// Our contender znode's path, while holding.
        held: Option<String>,
    },
}

impl Client {
    async fn acquire(&mut self, name: &str, wait: bool) -> Result<(), OpError> {
        match self {
            Client::Raftlock {
                locks,
                lease_id,
                held,
            } => {
                let mut req = Request::new(pb::AcquireRequest {
                    lease_id: *lease_id,
                    locks: vec![pb::LockSpec {
                        name: name.to_string(),
                        mode: pb::Mode::Exclusive as i32,
                        permits: 0,
                    }],
                    wait_timeout_ms: if wait { WAIT_TIMEOUT_MS } else { 0 },
                    ..Default::default()
                });
                req.set_timeout(if wait {
                    Duration::from_millis(WAIT_TIMEOUT_MS) + RPC_TIMEOUT
                } else {
                    RPC_TIMEOUT
                });
                match locks.acquire(req).await {
                    Ok(r) => {
                        *held = Some(r.into_inner().token);
                        Ok(())
                    }
                    Err(s) => Err(self.raftlock_failed(&s).await),
                }
            }
            Client::Etcd {
                lock,
                lease_id,
                held,
            } => {
                let mut req = Request::new(lockpb::LockRequest {
                    name: name.as_bytes().to_vec(),
                    lease: *lease_id,
                });
                req.set_timeout(Duration::from_millis(WAIT_TIMEOUT_MS) + RPC_TIMEOUT);
                let r = lock.lock(req).await.map_err(|s| OpError::etcd(&s))?;
                *held = Some(r.into_inner().key);
                Ok(())
            }
            Client::Zookeeper { zk, held } => {
                // A release that failed (a lost connection, a timeout) left
                // our old znode in place: the new one would queue behind it
                // for good. Delete it first (gone already counts as done).
                if let Some(old) = held.take()
                    && let Err(e) = zk_unlock(zk, &old).await
                {
                    *held = Some(old);
                    return Err(e);
                }
                *held = Some(zk_lock(zk, &zk_lock_dir(name)).await?);
                Ok(())
            }
        }
    }

    /// Releases the hold, if any.
    async fn release(&mut self, name: &str) -> Result<(), OpError> {
        match self {
            Client::Raftlock {
                locks,
                lease_id,
                held,
            } => {
                let Some(token) = *held else { return Ok(()) };
                let mut req = Request::new(pb::ReleaseRequest {
                    lease_id: *lease_id,
                    token,
                    names: vec![name.to_string()],
                });
                req.set_timeout(RPC_TIMEOUT);
                match locks.release(req).await {
                    Ok(_) => {
                        *held = None;
                        Ok(())
                    }
                    Err(s) => Err(self.raftlock_failed(&s).await),
                }
            }
            Client::Etcd { lock, held, .. } => {
                let Some(key) = held.clone() else {
                    return Ok(());
                };
                let mut req = Request::new(lockpb::UnlockRequest { key });
                req.set_timeout(RPC_TIMEOUT);
                lock.unlock(req).await.map_err(|s| OpError::etcd(&s))?;
                *held = None;
                Ok(())
            }
            Client::Zookeeper { zk, held } => {
                let Some(ours) = held.as_deref() else {
                    return Ok(());
                };
                zk_unlock(zk, ours).await?;
                *held = None;
                Ok(())
            }
        }
    }

    /// The error of a raftlock call; on NOT_LEADER, moves this client to the
    /// leader it names (the failed call is counted, not retried here).
    async fn raftlock_failed(&mut self, status: &Status) -> OpError {
        let e = OpError::raftlock(status);
        if let (Client::Raftlock { locks, .. }, Some(addr)) = (&mut *self, &e.leader_addr)
            && let Ok(channel) = connect(addr).await
        {
            *locks = pb::locks_client::LocksClient::new(channel);
        }
        e
    }

    fn holds(&self) -> bool {
        match self {
            Client::Raftlock { held, .. } => held.is_some(),
            Client::Etcd { held, .. } => held.is_some(),
            Client::Zookeeper { held, .. } => held.is_some(),
        }
    }
}

/// Runs cycles until the window ends; then lets the last one finish.
async fn run_client(
    mut client: Client,
    name: String,
    wait: bool,
    hold: Duration,
    window: Window,
) -> ClientStats {
    let mut stats = ClientStats {
        acquire: histogram(),
        cycle: histogram(),
        cycles: 0,
        cycles_total: 0,
        gap_max: 0,
        errors: ErrorCounts::default(),
    };
    // When this client last completed a cycle (the window's start at first).
    let mut last_end = window.start;
    while Instant::now() < window.end {
        let start = Instant::now();
        if let Err(e) = client.acquire(&name, wait).await {
            stats.errors.record(&e, window.contains(Instant::now()));
            tokio::time::sleep(ERROR_BACKOFF).await;
            continue;
        }
        let acquired = Instant::now();
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        if let Err(e) = client.release(&name).await {
            stats.errors.record(&e, window.contains(Instant::now()));
            tokio::time::sleep(ERROR_BACKOFF).await;
            continue;
        }
        let end = Instant::now();
        stats.cycles_total += 1;
        if window.contains(end) {
            stats.gap_max = stats.gap_max.max(micros(end - last_end.max(window.start)));
            last_end = end;
            stats.cycles += 1;
            stats.acquire.saturating_record(micros(acquired - start));
            stats.cycle.saturating_record(micros(end - start));
        }
    }
    // A release that failed leaves a hold; try once more so waiters of a
    // contended lock are not stuck until the revoke.
    if client.holds() {
        let _ = client.release(&name).await;
    }
    stats
}

/// Leases granted for the clients, to keep alive during the run and revoke
/// at the end, with the connection (`admin`) that does it.
enum Leases {
    Raftlock {
        admin: Channel,
        ids: Vec<u64>,
    },
    Etcd {
        admin: Channel,
        ids: Vec<i64>,
    },
    /// ZooKeeper's sessions are the clients' leases: the client library
    /// pings to keep each alive, and a session closes when its client is
    /// dropped.
    Zookeeper,
}

/// Clients ready to run, before the clock starts.
struct Prepared {
    /// Where the clients send.
    endpoint: String,
    clients: Vec<Client>,
    leases: Leases,
}

pub(crate) async fn connect(addr: &str) -> Result<Channel, String> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Endpoint::from_shared(uri)
        .map_err(|e| format!("{addr}: not an address ({})", error_chain(&e)))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("{addr}: {}", error_chain(&e)))
}

/// The address of the raftlock leader, asking the endpoints in turn until
/// one knows it or [`LEADER_SEARCH`] has passed.
pub(crate) async fn find_leader(endpoints: &[String]) -> Result<String, Failure> {
    let deadline = Instant::now() + LEADER_SEARCH;
    loop {
        let mut errors = Vec::new();
        for endpoint in endpoints {
            match raftlock_client::Client::status_of(endpoint, RPC_TIMEOUT).await {
                Ok(s) if s.role == pb::Role::Leader as i32 => return Ok(endpoint.clone()),
                Ok(s) if !s.leader_addr.is_empty() => return Ok(s.leader_addr),
                Ok(s) => errors.push(format!("{endpoint}: node {} knows no leader", s.node_id)),
                Err(e) => errors.push(format!("{endpoint}: {e}")),
            }
        }
        if Instant::now() >= deadline {
            return Err(Failure::Runtime(format!(
                "found no raftlock leader within {} s ({}); is the cluster running? Name its \
                 nodes with --endpoints",
                LEADER_SEARCH.as_secs(),
                errors.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn prepare_raftlock(plan: &Plan) -> Result<Prepared, Failure> {
    let leader = find_leader(&plan.endpoints).await?;
    let admin = connect(&leader).await.map_err(Failure::Runtime)?;
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for i in 0..plan.clients {
        let granted = async {
            let channel = connect(&leader).await?;
            let mut req = Request::new(pb::GrantLeaseRequest {
                ttl_ms: LEASE_TTL_MS,
                owner: format!("raftlock-bench/{i}"),
            });
            req.set_timeout(RPC_TIMEOUT);
            let lease_id = pb::leases_client::LeasesClient::new(channel.clone())
                .grant(req)
                .await
                .map_err(|s| OpError::raftlock(&s).detail)?
                .into_inner()
                .lease_id;
            Ok::<_, String>((channel, lease_id))
        };
        match granted.await {
            Ok((channel, lease_id)) => {
                ids.push(lease_id);
                clients.push(Client::Raftlock {
                    locks: pb::locks_client::LocksClient::new(channel),
                    lease_id,
                    held: None,
                });
            }
            Err(e) => {
                revoke(&Leases::Raftlock { admin, ids }).await;
                return Err(Failure::Runtime(format!(
                    "cannot grant a lease for client {i} at the leader {leader}: {e}"
                )));
            }
        }
    }
    Ok(Prepared {
        endpoint: leader,
        clients,
        leases: Leases::Raftlock { admin, ids },
    })
}

async fn etcd_grant(channel: Channel) -> Result<i64, String> {
    let mut req = Request::new(epb::LeaseGrantRequest {
        ttl: i64::try_from(LEASE_TTL_MS / 1000).unwrap_or(30),
        id: 0,
    });
    req.set_timeout(RPC_TIMEOUT);
    let r = epb::lease_client::LeaseClient::new(channel)
        .lease_grant(req)
        .await
        .map_err(|s| OpError::etcd(&s).detail)?
        .into_inner();
    if !r.error.is_empty() {
        return Err(format!("etcd refused the lease: {}", r.error));
    }
    Ok(r.id)
}

async fn prepare_etcd(plan: &Plan) -> Result<Prepared, Failure> {
    let mut errors = Vec::new();
    let mut found = None;
    for endpoint in &plan.endpoints {
        match connect(endpoint).await {
            Ok(channel) => match etcd_grant(channel.clone()).await {
                Ok(id) => {
                    found = Some((endpoint.clone(), channel, id));
                    break;
                }
                Err(e) => errors.push(format!("{endpoint}: {e}")),
            },
            Err(e) => errors.push(e),
        }
    }
    let Some((endpoint, admin, first_id)) = found else {
        return Err(Failure::Runtime(format!(
            "no etcd member granted a lease ({}); is etcd running? Name its members with \
             --endpoints",
            errors.join("; ")
        )));
    };
    let mut ids = vec![first_id];
    let mut clients = Vec::new();
    for i in 0..plan.clients {
        let granted = async {
            let channel = connect(&endpoint).await?;
            let id = if i == 0 {
                first_id
            } else {
                etcd_grant(channel.clone()).await?
            };
            Ok::<_, String>((channel, id))
        };
        match granted.await {
            Ok((channel, lease_id)) => {
                if i > 0 {
                    ids.push(lease_id);
                }
                clients.push(Client::Etcd {
                    lock: lockpb::lock_client::LockClient::new(channel),
                    lease_id,
                    held: None,
                });
            }
            Err(e) => {
                revoke(&Leases::Etcd { admin, ids }).await;
                return Err(Failure::Runtime(format!(
                    "cannot grant an etcd lease for client {i} at {endpoint}: {e}"
                )));
            }
        }
    }
    Ok(Prepared {
        endpoint,
        clients,
        leases: Leases::Etcd { admin, ids },
    })
}

/// The znode under which the contenders for lock `name` queue.
fn zk_lock_dir(name: &str) -> String {
    format!("{ZK_LOCKS}/{name}")
}

/// The sequence number of a contender's znode name (`_c_<uuid>-lock-<seq>`),
/// as Curator's `StandardLockInternalsDriver.fixForSorting` takes it: what
/// follows the last "lock-". Zero-padded, so it sorts as text.
fn zk_sequence(child: &str) -> Option<&str> {
    child
        .rfind(ZK_LOCK_NAME)
        .map(|i| &child[i + ZK_LOCK_NAME.len()..])
}

/// Acquires the lock whose contenders queue under `dir`, exactly as Curator's
/// InterProcessMutex does (`LockInternals.attemptLock` and
/// `internalLockLoop`); returns our znode's path, which the holder deletes
/// to release. Gives up after the wait timeout; our znode is deleted when
/// we give up or fail, as Curator's `deleteOurPath` does.
async fn zk_lock(zk: &zk::Client, dir: &str) -> Result<String, OpError> {
    // Protected mode (Curator's `withProtection()`, which InterProcessMutex
    // uses): a fresh "_c_<uuid>-" in the name lets a client whose create
    // lost its answer find its znode. One write.
    let protected = format!("_c_{}-", uuid::Uuid::new_v4());
    let prefix = format!("{dir}/{protected}{ZK_LOCK_NAME}");
    let create = zk.create(
        &prefix,
        &[],
        &zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all()),
    );
    // A create that failed without an answer (a timeout, a lost
    // connection) may still have made our znode, which would block this
    // lock until the session ends: find it by its "_c_<uuid>-" prefix and
    // delete it, as Curator's protected mode does, then report the error.
    let failed = match tokio::time::timeout(RPC_TIMEOUT, create).await {
        Ok(Ok((_, sequence))) => Ok(sequence),
        Ok(Err(zk::Error::ConnectionLoss)) => Err(OpError::zookeeper(&zk::Error::ConnectionLoss)),
        Ok(Err(e)) => return Err(OpError::zookeeper(&e)),
        Err(_) => Err(zk_timeout("create")),
    };
    let sequence = match failed {
        Ok(sequence) => sequence,
        Err(e) => {
            zk_delete_protected(zk, dir, &protected).await;
            return Err(e);
        }
    };
    let ours = format!("{prefix}{sequence}");
    let wait = Duration::from_millis(WAIT_TIMEOUT_MS) + RPC_TIMEOUT;
    let waited = tokio::time::timeout(wait, zk_wait_first(zk, dir, &ours)).await;
    match waited {
        Ok(Ok(())) => Ok(ours),
        Ok(Err(e)) => {
            let _ = zk_unlock(zk, &ours).await;
            Err(e)
        }
        Err(_) => {
            let _ = zk_unlock(zk, &ours).await;
            Err(zk_timeout("wait for the lock"))
        }
    }
}

/// Waits until `ours` has the lowest sequence among the children of `dir`:
/// list them (a read), and while some have a lower sequence, set a watch on
/// the one just before ours (getData with a watch) and wait for it to go.
/// Watching the predecessor only, not the whole directory, wakes one waiter
/// per release (no herd).
async fn zk_wait_first(zk: &zk::Client, dir: &str, ours: &str) -> Result<(), OpError> {
    let our_name = ours.rsplit('/').next().unwrap_or(ours);
    let our_sequence = zk_sequence(our_name).ok_or_else(|| {
        OpError::other("ZK_BAD_NAME", format!("our znode {ours} has no sequence"))
    })?;
    loop {
        let mut children = zk
            .list_children(dir)
            .await
            .map_err(|e| OpError::zookeeper(&e))?;
        children.retain(|c| zk_sequence(c).is_some());
        children.sort_unstable_by(|a, b| zk_sequence(a).cmp(&zk_sequence(b)));
        let Some(at) = children
            .iter()
            .position(|c| zk_sequence(c) == Some(our_sequence))
        else {
            // Curator throws NoNodeException here: our znode is gone, so
            // the session ended.
            return Err(OpError::other(
                "ZK_OURS_GONE",
                format!("our znode {ours} is gone (session expired?)"),
            ));
        };
        let Some(before) = at.checked_sub(1) else {
            return Ok(());
        };
        let predecessor = format!("{dir}/{}", children[before]);
        match zk.get_and_watch_data(&predecessor).await {
            // Gone between the listing and the watch: list again.
            Err(zk::Error::NoNode) => continue,
            Err(e) => return Err(OpError::zookeeper(&e)),
            Ok((_, _, watcher)) => {
                watcher.changed().await;
            }
        }
    }
}

/// Deletes a znode of ours under `dir` named with `protected`, if a create
/// that lost its answer made one. Best effort: if ZooKeeper cannot be
/// reached now, the znode goes with the session.
async fn zk_delete_protected(zk: &zk::Client, dir: &str, protected: &str) {
    let listed = tokio::time::timeout(RPC_TIMEOUT, zk.list_children(dir)).await;
    if let Ok(Ok(children)) = listed {
        for child in children.iter().filter(|c| c.starts_with(protected)) {
            let _ = zk_unlock(zk, &format!("{dir}/{child}")).await;
        }
    }
}

/// Releases: deletes our znode (one write). Already gone counts as released,
/// as in Curator's `deleteOurPath`.
async fn zk_unlock(zk: &zk::Client, ours: &str) -> Result<(), OpError> {
    match tokio::time::timeout(RPC_TIMEOUT, zk.delete(ours, None)).await {
        Ok(Ok(()) | Err(zk::Error::NoNode)) => Ok(()),
        Ok(Err(e)) => Err(OpError::zookeeper(&e)),
        Err(_) => Err(zk_timeout("delete")),
    }
}

fn zk_timeout(what: &str) -> OpError {
    OpError::other(
        "ZK_TIMEOUT",
        format!("ZooKeeper did not answer the {what} in time"),
    )
}

/// A session at `endpoint`, with a timeout as long as the other targets'
/// leases.
async fn zk_connect(endpoint: &str) -> Result<zk::Client, String> {
    let connect = zk::Client::connector()
        .with_session_timeout(Duration::from_millis(LEASE_TTL_MS))
        .connect(endpoint);
    match tokio::time::timeout(RPC_TIMEOUT, connect).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!("{endpoint}: {e}")),
        Err(_) => Err(format!(
            "{endpoint}: no session within {} s",
            RPC_TIMEOUT.as_secs()
        )),
    }
}

async fn prepare_zookeeper(plan: &Plan) -> Result<Prepared, Failure> {
    let mut errors = Vec::new();
    let mut found = None;
    for endpoint in &plan.endpoints {
        match zk_connect(endpoint).await {
            Ok(client) => {
                found = Some((endpoint.clone(), client));
                break;
            }
            Err(e) => errors.push(e),
        }
    }
    let Some((endpoint, first)) = found else {
        return Err(Failure::Runtime(format!(
            "no ZooKeeper server opened a session ({}); is ZooKeeper running? Name its              servers with --endpoints",
            errors.join("; ")
        )));
    };
    // The lock directories are persistent znodes made once, before the
    // clock starts (Curator makes them as containers on first use).
    let mut dirs: Vec<String> = (0..plan.clients)
        .map(|i| zk_lock_dir(&plan.lock_name(i)))
        .collect();
    dirs.dedup();
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    for dir in &dirs {
        match tokio::time::timeout(RPC_TIMEOUT, first.mkdir(dir, &persistent)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(Failure::Runtime(format!(
                    "cannot create the znode {dir} at {endpoint}: {e}"
                )));
            }
            Err(_) => {
                return Err(Failure::Runtime(format!(
                    "ZooKeeper at {endpoint} did not create {dir} within {} s",
                    RPC_TIMEOUT.as_secs()
                )));
            }
        }
    }
    let mut clients = vec![Client::Zookeeper {
        zk: first,
        held: None,
    }];
    for i in 1..plan.clients {
        let zk = zk_connect(&endpoint).await.map_err(|e| {
            Failure::Runtime(format!(
                "cannot open a ZooKeeper session for client {i}: {e}"
            ))
        })?;
        clients.push(Client::Zookeeper { zk, held: None });
    }
    Ok(Prepared {
        endpoint,
        clients,
        leases: Leases::Zookeeper,
    })
}

/// Keeps every lease alive on one stream until it breaks; returns why.
async fn keep_alive_session(leases: Arc<Leases>) -> OpError {
    let mut tick = tokio::time::interval(KEEPALIVE_EVERY);
    match &*leases {
        Leases::Raftlock { admin, ids } => {
            let (tx, rx) = mpsc::channel(2 * ids.len().max(1));
            let mut client = pb::leases_client::LeasesClient::new(admin.clone());
            let mut responses = match client.keep_alive(ReceiverStream::new(rx)).await {
                Ok(r) => r.into_inner(),
                Err(s) => return OpError::raftlock(&s),
            };
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        for id in ids {
                            if tx.send(pb::KeepAliveRequest { lease_id: *id }).await.is_err() {
                                return OpError::other("STREAM_CLOSED", "keep-alive stream closed".into());
                            }
                        }
                    }
                    msg = responses.message() => match msg {
                        Ok(Some(_)) => {}
                        Ok(None) => return OpError::other("STREAM_ENDED", "the server ended the keep-alive stream".into()),
                        Err(s) => return OpError::raftlock(&s),
                    }
                }
            }
        }
        Leases::Etcd { admin, ids } => {
            let (tx, rx) = mpsc::channel(2 * ids.len().max(1));
            let mut client = epb::lease_client::LeaseClient::new(admin.clone());
            let mut responses = match client.lease_keep_alive(ReceiverStream::new(rx)).await {
                Ok(r) => r.into_inner(),
                Err(s) => return OpError::etcd(&s),
            };
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        for id in ids {
                            if tx.send(epb::LeaseKeepAliveRequest { id: *id }).await.is_err() {
                                return OpError::other("STREAM_CLOSED", "keep-alive stream closed".into());
                            }
                        }
                    }
                    msg = responses.message() => match msg {
                        Ok(Some(r)) if r.ttl <= 0 => return OpError::other(
                            "LEASE_GONE", format!("etcd lease {:x} is gone", r.id)),
                        Ok(Some(_)) => {}
                        Ok(None) => return OpError::other("STREAM_ENDED", "etcd ended the keep-alive stream".into()),
                        Err(s) => return OpError::etcd(&s),
                    }
                }
            }
        }
        // Nothing to do: the client library keeps each session alive.
        Leases::Zookeeper => std::future::pending().await,
    }
}

/// Keeps the leases alive until aborted, reopening a broken stream; counts
/// each break as an error `keep-alive <reason>`.
fn spawn_keep_alive(leases: Arc<Leases>, errors: Arc<Mutex<ErrorCounts>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let e = keep_alive_session(leases.clone()).await;
            let e = OpError {
                reason: format!("keep-alive {}", e.reason),
                detail: format!("keep-alive: {}", e.detail),
                leader_addr: None,
            };
            if let Ok(mut errors) = errors.lock() {
                errors.record(&e, true);
            }
            tokio::time::sleep(KEEPALIVE_RETRY).await;
        }
    })
}

/// Revokes the leases (which also releases anything still held); a failure
/// is only noted: the leases expire by themselves.
async fn revoke(leases: &Leases) {
    let mut failed = Vec::new();
    match leases {
        Leases::Raftlock { admin, ids } => {
            let mut client = pb::leases_client::LeasesClient::new(admin.clone());
            for id in ids {
                let mut req = Request::new(pb::RevokeLeaseRequest { lease_id: *id });
                req.set_timeout(RPC_TIMEOUT);
                if let Err(s) = client.revoke(req).await {
                    failed.push(format!("{id}: {}", OpError::raftlock(&s).detail));
                }
            }
        }
        Leases::Etcd { admin, ids } => {
            let mut client = epb::lease_client::LeaseClient::new(admin.clone());
            for id in ids {
                let mut req = Request::new(epb::LeaseRevokeRequest { id: *id });
                req.set_timeout(RPC_TIMEOUT);
                if let Err(s) = client.lease_revoke(req).await {
                    failed.push(format!("{id:x}: {}", OpError::etcd(&s).detail));
                }
            }
        }
        Leases::Zookeeper => {
            // The sessions close as their clients are dropped (the client
            // tasks have ended), each with a CloseSession request sent by
            // the library's session task; give those a moment to go out
            // before the runtime stops. A session not closed expires after
            // its timeout, with nothing in it: every hold was released.
            tokio::time::sleep(ZK_CLOSE_GRACE).await;
        }
    }
    if !failed.is_empty() {
        eprintln!(
            "note: {} lease(s) not revoked; they expire within {} s ({})",
            failed.len(),
            LEASE_TTL_MS / 1000,
            failed.first().map_or("", String::as_str)
        );
    }
}

/// Awaits a future, giving up after `deadline`.
async fn until<F: Future>(deadline: Instant, f: F) -> Option<F::Output> {
    tokio::time::timeout_at(deadline.into(), f).await.ok()
}

async fn bench(plan: &Plan) -> Result<Report, Failure> {
    let prepared = match plan.target {
        Target::Raftlock => prepare_raftlock(plan).await?,
        Target::Etcd => prepare_etcd(plan).await?,
        Target::Zookeeper => prepare_zookeeper(plan).await?,
    };
    let Prepared {
        endpoint,
        clients,
        leases,
    } = prepared;
    let leases = Arc::new(leases);
    let keep_alive_errors = Arc::new(Mutex::new(ErrorCounts::default()));
    let keep_alive = spawn_keep_alive(leases.clone(), keep_alive_errors.clone());

    // The clock starts once every client is connected and has its lease.
    let start = Instant::now() + plan.warmup;
    let window = Window {
        start,
        end: start + plan.duration,
    };
    let tasks: Vec<JoinHandle<ClientStats>> = clients
        .into_iter()
        .zip(0..)
        .map(|(client, i)| {
            tokio::spawn(run_client(
                client,
                plan.lock_name(i),
                plan.waits(),
                plan.hold,
                window,
            ))
        })
        .collect();

    let mut acquire = histogram();
    let mut cycle = histogram();
    let mut cycles = 0;
    let mut cycles_total = 0;
    let mut gap_max = 0;
    let mut errors = ErrorCounts::default();
    let mut unfinished = 0;
    let drain_deadline = window.end + DRAIN_TIMEOUT;
    for task in tasks {
        let abort = task.abort_handle();
        match until(drain_deadline, task).await {
            Some(Ok(stats)) => {
                // Same bounds on both sides, so adding cannot fail.
                let _ = acquire.add(&stats.acquire);
                let _ = cycle.add(&stats.cycle);
                cycles += stats.cycles;
                cycles_total += stats.cycles_total;
                gap_max = gap_max.max(stats.gap_max);
                errors.merge(stats.errors);
            }
            Some(Err(e)) => {
                errors.record(&OpError::other("CLIENT_PANIC", e.to_string()), true);
            }
            None => {
                abort.abort();
                unfinished += 1;
            }
        }
    }
    keep_alive.abort();
    if unfinished > 0 {
        eprintln!(
            "note: {unfinished} client(s) still busy {} s after the window; their figures are \
             left out",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    if let Ok(mut ka) = keep_alive_errors.lock() {
        errors.merge(std::mem::take(&mut *ka));
    }
    revoke(&leases).await;

    if cycles_total == 0
        && let Some(first) = errors.first.take()
    {
        return Err(Failure::Runtime(format!(
            "every operation failed; the first error: {first}"
        )));
    }
    if cycles == 0 {
        return Err(Failure::Runtime(format!(
            "no cycle completed within the measured window of {:.2} s; make --duration longer \
             than a cycle (--hold is {:.2} s)",
            plan.duration.as_secs_f64(),
            plan.hold.as_secs_f64()
        )));
    }
    Ok(Report::new(
        plan, endpoint, &acquire, &cycle, cycles, gap_max, errors,
    ))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn ms(us: u64) -> f64 {
    round2(us as f64 / 1000.0)
}

/// What a run prints; `--json` prints it as one object.
#[derive(Debug, Serialize)]
struct Report {
    target: Target,
    workload: Workload,
    clients: u32,
    /// Threads of the load generator's runtime.
    threads: u32,
    /// Where the clients sent their calls.
    endpoint: String,
    duration_s: f64,
    warmup_s: f64,
    hold_ms: f64,
    /// Cycles (acquire, hold, release) completed in the window.
    cycles: u64,
    cycles_per_s: f64,
    acquire_ms_p50: f64,
    acquire_ms_p99: f64,
    acquire_ms_max: f64,
    cycle_ms_p50: f64,
    cycle_ms_p99: f64,
    cycle_ms_max: f64,
    /// Longest stretch of the window in which one client completed no
    /// cycle (ms): with a failover during the run, the outage that client
    /// saw, its failed attempts and retries included.
    gap_ms_max: f64,
    errors_total: u64,
    /// Errors in the window by reason.
    errors: BTreeMap<String, u64>,
}

impl Report {
    fn new(
        plan: &Plan,
        endpoint: String,
        acquire: &Histogram<u64>,
        cycle: &Histogram<u64>,
        cycles: u64,
        gap_max: u64,
        errors: ErrorCounts,
    ) -> Report {
        let duration_s = plan.duration.as_secs_f64();
        Report {
            target: plan.target,
            workload: plan.workload,
            clients: plan.clients,
            threads: plan.threads,
            endpoint,
            duration_s: round2(duration_s),
            warmup_s: round2(plan.warmup.as_secs_f64()),
            hold_ms: round2(plan.hold.as_secs_f64() * 1000.0),
            cycles,
            cycles_per_s: round2(cycles as f64 / duration_s),
            acquire_ms_p50: ms(acquire.value_at_quantile(0.5)),
            acquire_ms_p99: ms(acquire.value_at_quantile(0.99)),
            acquire_ms_max: ms(acquire.max()),
            cycle_ms_p50: ms(cycle.value_at_quantile(0.5)),
            cycle_ms_p99: ms(cycle.value_at_quantile(0.99)),
            cycle_ms_max: ms(cycle.max()),
            gap_ms_max: ms(gap_max),
            errors_total: errors.total,
            errors: errors.by_reason,
        }
    }

    fn table(&self) -> String {
        let target = match self.target {
            Target::Raftlock => "raftlock",
            Target::Etcd => "etcd",
            Target::Zookeeper => "zookeeper",
        };
        let workload = match self.workload {
            Workload::Seq => "seq",
            Workload::Distinct => "distinct",
            Workload::Contended => "contended",
            Workload::Failover => "failover",
            Workload::Holds => "holds",
        };
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            format!("{} ({})", self.errors_total, list.join(", "))
        };
        format!(
            "workload  {workload}\n\
             target    {target} at {}\n\
             clients   {} (load generator on {} thread(s))\n\
             duration  {:.2} s (after {:.2} s warmup; hold {:.2} ms)\n\
             cycles    {}\n\
             cycles/s  {:.2}\n\
             acquire   p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n\
             cycle     p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n\
             gap       {:.2} ms (longest a client completed no cycle)\n\
             errors    {errors}\n",
            self.endpoint,
            self.clients,
            self.threads,
            self.duration_s,
            self.warmup_s,
            self.hold_ms,
            self.cycles,
            self.cycles_per_s,
            self.acquire_ms_p50,
            self.acquire_ms_p99,
            self.acquire_ms_max,
            self.cycle_ms_p50,
            self.cycle_ms_p99,
            self.cycle_ms_max,
            self.gap_ms_max,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_beyond_the_reason_limit_are_counted_as_other() {
        let mut counts = ErrorCounts::default();
        for i in 0..MAX_REASONS + 5 {
            counts.record(&OpError::other(&format!("R{i}"), format!("d{i}")), true);
        }
        assert_eq!(counts.total, (MAX_REASONS + 5) as u64);
        assert_eq!(counts.by_reason.get("OTHER"), Some(&5));
        assert_eq!(counts.first.as_deref(), Some("d0"));
    }

    #[test]
    fn zookeeper_contenders_sort_by_the_sequence_after_the_lock_name_not_by_uuid() {
        // Protected-mode names begin with a random uuid: sorting the names
        // as they are would order the queue by uuid, not by arrival.
        let mut children = vec![
            "_c_ffffffff-0000-4000-8000-000000000000-lock-0000000002".to_string(),
            "_c_00000000-0000-4000-8000-000000000000-lock-0000000010".to_string(),
            "_c_88888888-0000-4000-8000-000000000000-lock-0000000001".to_string(),
            "not-a-contender".to_string(),
        ];
        children.retain(|c| zk_sequence(c).is_some());
        children.sort_unstable_by(|a, b| zk_sequence(a).cmp(&zk_sequence(b)));
        let order: Vec<&str> = children.iter().filter_map(|c| zk_sequence(c)).collect();
        assert_eq!(order, ["0000000001", "0000000002", "0000000010"]);
    }

    #[test]
    fn a_zookeeper_lock_queues_under_locks_and_its_name() {
        assert_eq!(zk_lock_dir("bench/distinct/7"), "/locks/bench/distinct/7");
    }

    /// Debian's ZooKeeper server jar (scripts/zookeeper.sh installs it).
    pub(super) const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";

    /// A standalone ZooKeeper server on a free loopback port in a temporary
    /// directory, killed (and its directory removed) when dropped.
    pub(super) struct ZkServer {
        child: std::process::Child,
        pub(super) endpoint: String,
        _dir: tempfile::TempDir,
    }

    impl ZkServer {
        pub(super) fn start() -> ZkServer {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = raftlock_testkit::ports::free_ports(1)[0];
            let config = dir.path().join("zoo.cfg");
            std::fs::write(
                &config,
                format!(
                    "tickTime=2000\ndataDir={}\nclientPortAddress=127.0.0.1\nclientPort={port}\n\
                     forceSync=yes\nmaxClientCnxns=0\nadmin.enableServer=false\n",
                    dir.path().display()
                ),
            )
            .expect("write zoo.cfg");
            let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
            let child = std::process::Command::new("java")
                .args(["-Xmx256m", "-cp", ZK_JAR])
                .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
                .arg(&config)
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .expect("start java");
            ZkServer {
                child,
                endpoint: format!("127.0.0.1:{port}"),
                _dir: dir,
            }
        }

        /// A session, once the server accepts one (it takes a JVM start).
        pub(super) async fn session(&self) -> zk::Client {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match zk_connect(&self.endpoint).await {
                    Ok(c) => return c,
                    Err(e) if Instant::now() >= deadline => {
                        panic!("no ZooKeeper session within 30 s: {e}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
    }

    impl Drop for ZkServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The recipe must exclude, or the ZooKeeper figures would count
    /// overlapping holds as hand-offs: 4 sessions take the same lock 15
    /// times each, and inside the lock no one else is.
    #[test]
    fn the_zookeeper_recipe_lets_one_session_hold_the_lock_at_a_time() {
        if !std::path::Path::new(ZK_JAR).exists() {
            eprintln!(
                "skipped: ZooKeeper is not installed ({ZK_JAR}; scripts/zookeeper.sh install)"
            );
            return;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let server = ZkServer::start();
        rt.block_on(async {
            let dir = zk_lock_dir("test/exclusive");
            let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
            let first = server.session().await;
            first.mkdir(&dir, &persistent).await.expect("mkdir");
            let inside = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let most_inside = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let mut tasks = Vec::new();
            for i in 0..4 {
                let zk = if i == 0 {
                    first.clone()
                } else {
                    server.session().await
                };
                let (dir, inside, most_inside) = (dir.clone(), inside.clone(), most_inside.clone());
                tasks.push(tokio::spawn(async move {
                    for _ in 0..15 {
                        let ours = zk_lock(&zk, &dir).await.expect("lock");
                        let now = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        most_inside.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        zk_unlock(&zk, &ours).await.expect("unlock");
                    }
                }));
            }
            for task in tasks {
                tokio::time::timeout(Duration::from_secs(60), task)
                    .await
                    .expect("the clients finish within 60 s")
                    .expect("client task");
            }
            assert_eq!(most_inside.load(std::sync::atomic::Ordering::SeqCst), 1);
            // Every contender's znode is gone again.
            let left = first.list_children(&dir).await.expect("list");
            assert!(left.is_empty(), "{left:?}");
        });
    }

    /// The flags as the binary parses them.
    fn plan(args: &[&str]) -> Result<Plan, Failure> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: BenchArgs,
        }
        let cli = <Cli as clap::Parser>::try_parse_from(
            std::iter::once("raftlock-bench").chain(args.iter().copied()),
        )
        .map_err(|e| Failure::Usage(e.to_string()))?;
        Plan::new(&cli.args)
    }

    fn usage_error(result: Result<Plan, Failure>) -> String {
        match result {
            Err(Failure::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn the_failover_workload_takes_its_settings_and_runs_one_client() {
        let p = plan(&[
            "--workload",
            "failover",
            "--target",
            "etcd",
            "--endpoints",
            "127.0.0.1:1,127.0.0.1:2",
            "--since-epoch",
            "1765081234.123456",
            "--retry-pause",
            "50ms",
            "--call-timeout",
            "2s",
        ])
        .expect("valid flags");
        assert_eq!(p.clients, 1);
        assert_eq!(p.endpoints, ["127.0.0.1:1", "127.0.0.1:2"]);
        let f = p.failover.as_ref().expect("failover settings");
        assert_eq!(f.since_epoch, Some(1_765_081_234.123_456));
        assert_eq!(f.retry_pause, Duration::from_millis(50));
        assert_eq!(f.call_timeout, Duration::from_secs(2));
        assert!(p.lock_name(0).starts_with("bench/failover/"));
    }

    #[test]
    fn failover_flags_with_another_workload_or_failover_with_clients_are_usage_errors() {
        let m = usage_error(plan(&["--workload", "seq", "--since-epoch", "12.5"]));
        assert!(
            m.contains("--since-epoch applies only to --workload failover"),
            "{m}"
        );
        let m = usage_error(plan(&["--workload", "distinct", "--call-timeout", "1s"]));
        assert!(m.contains("--call-timeout"), "{m}");
        let m = usage_error(plan(&["--workload", "failover", "--clients", "2"]));
        assert!(m.contains("exactly one client"), "{m}");
        let m = usage_error(plan(&["--workload", "failover", "--hold", "5ms"]));
        assert!(m.contains("--hold"), "{m}");
        let m = usage_error(plan(&["--workload", "failover", "--since-epoch", "12,5"]));
        assert!(m.contains("12,5"), "{m}");
    }

    #[test]
    fn an_epoch_is_unix_seconds_with_an_optional_fraction() {
        assert_eq!(parse_epoch("1765081234.123456"), Ok(1_765_081_234.123_456));
        assert_eq!(parse_epoch(" 17 "), Ok(17.0));
        for bad in ["", "-5", "1.2.3", "1,5", "abc", "1e9", "0", ".5", "inf"] {
            assert!(parse_epoch(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn errors_outside_the_window_are_not_counted_but_the_first_is_kept() {
        let mut counts = ErrorCounts::default();
        counts.record(&OpError::other("X", "first".into()), false);
        assert_eq!(counts.total, 0);
        assert!(counts.by_reason.is_empty());
        assert_eq!(counts.first.as_deref(), Some("first"));
    }
}
