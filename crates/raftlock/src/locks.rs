//! The people-and-scripts commands: `lease`, `acquire`, `release`,
//! `extend`, `inspect`, `list`, `watch`, `force-release`.
//!
//! Reads (inspect, list, watch) go through `raftlock_client::Client`. Writes
//! on an explicit lease go straight to the gRPC services (the client's
//! `Session` owns its lease and revokes it when dropped, so it cannot leave a
//! lock held after this process exits): [`Rpc::call`] tries the endpoints in
//! order, follows a NOT_LEADER's leader, and [`from_reason`] turns the
//! server's stable reason into an exit code and a message.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use raftlock_client::{Client, ClientOptions, RetryPolicy};
use raftlock_proto::v1 as pb;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_types::StatusExt;

use crate::dev::DEV_ENDPOINTS;
use crate::runner::{self, Signals};
use crate::{Failure, error_chain};

/// The exit codes, for --help (and docs/cli.md).
pub const EXIT_CODES: &str = "Exit codes: 0 ok; 1 error (no node answered, stale token or not \
    the holder, ...); 2 bad usage or invalid input (INVALID_*, TTL_OUT_OF_RANGE, TOO_LARGE, \
    LIMIT_EXCEEDED); 3 lock busy or wait timed out (LOCK_BUSY, WAIT_TIMEOUT); 4 lease lost \
    (LEASE_NOT_FOUND, LEASE_EXPIRING). See docs/cli.md.";

/// How long one call may take, on top of an acquire's wait.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a call keeps retrying while a cluster that answered elects a
/// leader (a few election timeouts, with room for a loaded machine).
const ELECTION_RIDE_OUT: Duration = Duration::from_secs(10);

/// How long `watch` keeps trying to reopen a broken stream while no node
/// answers.
const WATCH_RIDE_OUT: Duration = Duration::from_secs(30);

/// Where the cluster is and how to print: shared by every command here.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// Nodes of the cluster as host:port (comma-separated); any node
    /// serves any call. The default is the `raftlock dev` cluster.
    #[arg(
        long,
        global = true,
        env = "RAFTLOCK_ENDPOINTS",
        value_name = "HOST:PORT,...",
        value_delimiter = ',',
        default_value = DEV_ENDPOINTS
    )]
    pub endpoints: Vec<String>,

    /// Print JSON (one object; JSON lines for `watch` and `keep-alive`).
    #[arg(long, global = true)]
    pub json: bool,
}

/// Longest duration a flag takes (a ttl, a wait, a margin): 24 h.
const MAX_DURATION_MS: u64 = 24 * 3_600_000;

/// Parses `500ms`, `30s`, `5m`, `1h` (a whole number and a unit; `0` alone
/// is allowed), at most 24 h.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    let hint = "expected a whole number and a unit, ms, s, m or h (e.g. 500ms, 30s, 5m)";
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    if number.is_empty() {
        return Err(hint.to_string());
    }
    let n: u64 = number
        .parse()
        .map_err(|_| "the number is too large (at most 24h)".to_string())?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" if n == 0 => 1,
        "" => return Err(format!("no unit; {hint}")),
        _ => return Err(format!("unknown unit `{unit}`; {hint}")),
    };
    n.checked_mul(unit_ms)
        .filter(|ms| *ms <= MAX_DURATION_MS)
        .map(Duration::from_millis)
        .ok_or_else(|| "longer than the maximum, 24h".to_string())
}

pub(crate) fn meta_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected KEY=VALUE with a non-empty key (e.g. --meta ticket=OPS-12)".into()),
    }
}

#[derive(Debug, Args)]
pub struct LeaseArgs {
    #[command(subcommand)]
    pub command: LeaseCommand,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease; prints its id and ttl. It expires after --ttl unless
    /// kept alive (`raftlock lease keep-alive ID`).
    Grant {
        /// Time to live without a keep-alive (1s to 24h): 500ms, 30s, 5m.
        #[arg(long, default_value = "30s", value_parser = duration)]
        ttl: Duration,
        /// Who holds it (shown by inspect): a person, job or host.
        #[arg(long, default_value_t = default_owner())]
        owner: String,
    },
    /// End a lease now: its locks are released, its waits dropped.
    Revoke {
        /// The lease id.
        lease: u64,
    },
    /// Leases alive, with owner, ttl and the locks they hold.
    List,
    /// Keep a lease alive until Ctrl-C, printing each renewal.
    KeepAlive {
        /// The lease id.
        lease: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// One holder at a time (a write lock).
    Exclusive,
    /// Many holders together, never beside an exclusive one (a read lock).
    Shared,
}

#[derive(Debug, Args)]
pub struct AcquireArgs {
    /// The lock's name, such as jobs/nightly (1 to 512 bytes).
    pub name: String,
    /// Hold it for this lease; by default a new lease is granted with --ttl.
    #[arg(long, value_name = "LEASE")]
    pub lease: Option<u64>,
    /// Ttl of the new lease (when no --lease): 500ms, 30s, 5m.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub ttl: Duration,
    /// How long to wait in the queue; 0 tries once and never waits.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub wait: Duration,
    /// exclusive (write) or shared (read).
    #[arg(long, value_enum, default_value_t = ModeArg::Exclusive, conflicts_with = "permits")]
    pub mode: ModeArg,
    /// Hold one of N permits of a semaphore instead (the first acquirer
    /// fixes N).
    #[arg(long, value_name = "N")]
    pub permits: Option<u32>,
    /// Owner of the new lease (when no --lease).
    #[arg(long, default_value_t = default_owner())]
    pub owner: String,
    /// Why the lock is taken, for people inspecting it.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// KEY=VALUE kept with the hold; repeat for more.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = meta_pair)]
    pub meta: Vec<(String, String)>,
    /// If the lease expires while holding, keep the lock ungrantable this
    /// long (at most 60s).
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub lock_delay: Duration,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct HoldArgs {
    /// The lock's name.
    pub name: String,
    /// The fencing token printed by acquire.
    #[arg(long)]
    pub token: u64,
    /// The lease that holds the lock.
    #[arg(long)]
    pub lease: u64,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct ExtendArgs {
    #[command(flatten)]
    pub hold: HoldArgs,
    /// Give the lease this new ttl (1s to 24h).
    #[arg(long, value_parser = duration)]
    pub ttl: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The lock's name.
    pub name: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only locks whose names start with this.
    #[arg(default_value = "")]
    pub prefix: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only locks whose names start with this (lease events come only with
    /// no prefix).
    #[arg(default_value = "")]
    pub prefix: String,
    /// Start from this revision (inclusive); 0: only new events.
    #[arg(long, default_value_t = 0, value_name = "R")]
    pub from_revision: u64,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct ForceReleaseArgs {
    /// The lock's name.
    pub name: String,
    /// Only this lease's hold; all holds of the lock when absent.
    #[arg(long)]
    pub lease: Option<u64>,
    #[command(flatten)]
    pub conn: Conn,
}

pub(crate) fn default_owner() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    if host.is_empty() {
        format!("{user} (raftlock cli)")
    } else {
        format!("{user}@{host} (raftlock cli)")
    }
}

// ---------------------------------------------------------------------------
// Errors → exit codes
// ---------------------------------------------------------------------------

/// The failure for a server (or client) reason: 2 invalid input, 3 busy,
/// 4 lease lost, 1 anything else. `hint` says what to do.
pub fn from_reason(reason: &str, message: &str, hint: &str) -> Failure {
    let text = if hint.is_empty() {
        format!("{reason}: {message}")
    } else {
        format!("{reason}: {message}; {hint}")
    };
    match reason {
        r if r.starts_with("INVALID_") => Failure::Usage(text),
        "TTL_OUT_OF_RANGE" | "TOO_LARGE" | "LIMIT_EXCEEDED" => Failure::Usage(text),
        "LOCK_BUSY" | "WAIT_TIMEOUT" => Failure::Busy(text),
        "LEASE_NOT_FOUND" | "LEASE_EXPIRING" | "LEASE_LOST" => Failure::LeaseLost(text),
        _ => Failure::Runtime(text),
    }
}

/// What to do about a reason, for the commands here.
fn hint(reason: &str, name: &str, lease: Option<u64>) -> String {
    let lease_text = lease.map_or_else(|| "the lease".to_string(), |l| format!("lease {l}"));
    match reason {
        "LOCK_BUSY" => format!(
            "{name} is held by another lease; see who holds it with `raftlock inspect {name}`, \
             or wait for it with --wait 30s"
        ),
        "WAIT_TIMEOUT" => format!(
            "{name} was not granted within --wait; see who holds it with `raftlock inspect \
             {name}`, or wait longer"
        ),
        "LEASE_NOT_FOUND" | "LEASE_EXPIRING" | "LEASE_LOST" => format!(
            "{lease_text} is gone (expired or revoked); grant a new one with `raftlock lease \
             grant`, or acquire without --lease"
        ),
        "STALE_TOKEN" | "NOT_HOLDER" => format!(
            "the token is stale: {lease_text} no longer holds {name} with that token (released, \
             expired or force-released); check with `raftlock inspect {name}`"
        ),
        "INVALID_NAME" => "a lock name is 1 to 512 bytes of UTF-8 without control characters \
                           (e.g. jobs/nightly)"
            .into(),
        "TTL_OUT_OF_RANGE" => "a lease ttl is 1s to 24h (e.g. --ttl 30s)".into(),
        "TOO_LARGE" => "shorten the reason (1024 bytes) or the metadata (4096 bytes)".into(),
        "KIND_CONFLICT" | "PERMITS_MISMATCH" => format!(
            "{name} exists with another kind or permit count; see it with `raftlock inspect \
             {name}`"
        ),
        "HELD_IN_OTHER_MODE" => format!("{lease_text} already holds {name} in another mode"),
        "LOCK_NOT_FOUND" => format!("{name} is not held; see `raftlock list`"),
        _ => String::new(),
    }
}

fn status_failure(s: &Status, name: &str, lease: Option<u64>) -> Failure {
    let reason =
        raftlock_node::status_reason(s).unwrap_or_else(|| format!("{:?}", s.code()).to_uppercase());
    from_reason(&reason, s.message(), &hint(&reason, name, lease))
}

pub(crate) fn client_failure(e: &raftlock_client::Error, name: &str) -> Failure {
    let reason = e.reason();
    let mut h = hint(reason, name, None);
    if reason == "UNAVAILABLE" || reason == "DEADLINE_EXCEEDED" {
        h = "is the cluster running? Start one with `raftlock dev`, or name its nodes with \
             --endpoints or RAFTLOCK_ENDPOINTS"
            .into();
    }
    from_reason(reason, &e.to_string(), &h)
}

// ---------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------

/// Direct gRPC calls with endpoint failover and leader following.
pub(crate) struct Rpc {
    endpoints: Vec<String>,
}

pub(crate) enum CallError {
    /// The server answered with an error.
    Server(Status),
    /// No node answered.
    Unreachable(String),
}

fn uri(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

impl Rpc {
    pub(crate) fn new(conn: &Conn) -> Result<Rpc, Failure> {
        Ok(Rpc {
            endpoints: endpoint_list(&conn.endpoints)?,
        })
    }

    async fn channel(endpoint: &str) -> Result<Channel, String> {
        Endpoint::from_shared(uri(endpoint))
            .map_err(|e| format!("not an address ({})", error_chain(&e)))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| error_chain(&e))
    }

    /// Runs `attempt` against the endpoints in order until one answers;
    /// NOT_LEADER / NO_LEADER / transport failures move on (to the named
    /// leader first). Other errors are returned as they are.
    ///
    /// Rounds over the endpoints repeat with a growing pause (100 ms to
    /// 1 s) for as long as a leader election may take: until
    /// [`ELECTION_RIDE_OUT`] has passed, once any node has answered (a
    /// cluster is there, its leader is changing). When no node has answered
    /// at all after two rounds, nothing is listening: give up at once.
    pub(crate) async fn call<T, F, Fut>(&self, attempt: F) -> Result<T, CallError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_with(true, attempt).await
    }

    /// [`Rpc::call`] for a call that must not be repeated once it may have
    /// taken effect (release, force-release, revoke): a failure whose
    /// outcome is unknown (TIMEOUT, OUTCOME_UNKNOWN, SHUTTING_DOWN, a
    /// connection broken after the request went out) is returned as it is.
    /// Only failures that prove nothing was applied (no connection,
    /// NOT_LEADER, NO_LEADER) move on to another node.
    pub(crate) async fn call_once<T, F, Fut>(&self, attempt: F) -> Result<T, CallError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call_with(false, attempt).await
    }

    async fn call_with<T, F, Fut>(
        &self,
        retry_unknown: bool,
        mut attempt: F,
    ) -> Result<T, CallError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = std::time::Instant::now() + ELECTION_RIDE_OUT;
        let mut errors: Vec<String> = Vec::new();
        let mut answered = false;
        let mut leader_hint: Option<String> = None;
        for round in 1u32.. {
            let mut queue: std::collections::VecDeque<String> =
                self.endpoints.iter().cloned().collect();
            if let Some(hint) = leader_hint.take() {
                queue.push_front(hint);
            }
            let mut tried: Vec<String> = Vec::new();
            while let Some(endpoint) = queue.pop_front() {
                if tried.contains(&endpoint) {
                    continue;
                }
                tried.push(endpoint.clone());
                let channel = match Rpc::channel(&endpoint).await {
                    Ok(c) => c,
                    Err(e) => {
                        errors.push(format!("{endpoint}: {e}"));
                        continue;
                    }
                };
                match attempt(channel).await {
                    Ok(r) => return Ok(r.into_inner()),
                    Err(s) => {
                        let reason = raftlock_node::status_reason(&s);
                        let unknown = match reason.as_deref() {
                            Some("NOT_LEADER" | "NO_LEADER") => false,
                            Some("OUTCOME_UNKNOWN" | "TIMEOUT" | "SHUTTING_DOWN") => true,
                            Some(_) => false,
                            None => true,
                        };
                        if unknown && !retry_unknown {
                            return Err(CallError::Server(s));
                        }
                        match reason.as_deref() {
                            Some(
                                "NOT_LEADER" | "NO_LEADER" | "SHUTTING_DOWN" | "OUTCOME_UNKNOWN"
                                | "TIMEOUT",
                            ) => {
                                answered = true;
                                if let Some(addr) = s
                                    .get_details_error_info()
                                    .and_then(|info| info.metadata.get("leader_addr").cloned())
                                    .filter(|a| !a.is_empty())
                                {
                                    if !tried.contains(&addr) {
                                        queue.push_front(addr.clone());
                                    }
                                    leader_hint = Some(addr);
                                }
                                errors.push(format!("{endpoint}: {}", s.message()));
                            }
                            None if matches!(
                                s.code(),
                                tonic::Code::Unavailable | tonic::Code::Unknown
                            ) =>
                            {
                                errors.push(format!("{endpoint}: {}", s.message()));
                            }
                            _ => return Err(CallError::Server(s)),
                        }
                    }
                }
            }
            let now = std::time::Instant::now();
            if (!answered && round >= 2) || now >= deadline {
                break;
            }
            let pause =
                Duration::from_millis(100u64 << (round - 1).min(4)).min(Duration::from_secs(1));
            tokio::time::sleep(pause.min(deadline - now)).await;
        }
        // The last round's failures say most; earlier ones repeat them.
        let keep = errors.len().saturating_sub(2 * self.endpoints.len().max(1));
        Err(CallError::Unreachable(errors.split_off(keep).join("; ")))
    }
}

/// The --endpoints list without blanks; empty is a usage error.
pub(crate) fn endpoint_list(raw: &[String]) -> Result<Vec<String>, Failure> {
    let endpoints: Vec<String> = raw
        .iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err(Failure::Usage(
            "--endpoints is empty; give host:port of at least one node".into(),
        ));
    }
    Ok(endpoints)
}

pub(crate) fn call_failure(e: CallError, name: &str, lease: Option<u64>) -> Failure {
    match e {
        CallError::Server(s) => status_failure(&s, name, lease),
        CallError::Unreachable(why) => Failure::Runtime(format!(
            "no raftlock node answered ({why}); is the cluster running? Start one with \
             `raftlock dev`, or name its nodes with --endpoints or RAFTLOCK_ENDPOINTS"
        )),
    }
}

pub(crate) fn timed<T>(msg: T, timeout: Duration) -> Request<T> {
    let mut req = Request::new(msg);
    req.set_timeout(timeout);
    req
}

async fn client(conn: &Conn) -> Result<Client, Failure> {
    let rpc = Rpc::new(conn)?;
    Client::connect(rpc.endpoints, ClientOptions::default())
        .await
        .map_err(|e| Failure::Usage(format!("{e}; give --endpoints as host:port,...")))
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// Prints one JSON document. A closed stdout is not an error here: for the
/// short commands SIGPIPE has already ended the process quietly, and for
/// those that keep SIGPIPE ignored (`keeps_sigpipe_ignored` in main.rs) the
/// call has done its work; a loop that prints calls [`write_line`] itself.
pub(crate) fn print_json<T: Serialize>(value: &T, pretty: bool) -> Result<(), Failure> {
    write_line(&json_text(value, pretty)?).map(drop)
}

fn json_text<T: Serialize>(value: &T, pretty: bool) -> Result<String, Failure> {
    if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .map_err(|e| Failure::Runtime(format!("cannot encode JSON: {e}")))
}

/// Writes one line (or several, joined by newlines) to stdout, flushed:
/// stdout is line-buffered. `Ok(false)` when the reader has gone, as in
/// `raftlock watch | head -3`, where `println!` would panic on the closed
/// pipe.
fn write_line(text: &str) -> Result<bool, Failure> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Failure::Runtime(format!("cannot write to stdout: {e}"))),
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// "12s ago" from a Unix time in ms.
fn ago(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let secs = now_unix_ms().saturating_sub(unix_ms) / 1000;
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s => format!("{}h ago", s / 3600),
    }
}

fn ms_text(ms: u64) -> String {
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn mode_name(mode: i32) -> &'static str {
    match pb::Mode::try_from(mode) {
        Ok(pb::Mode::Exclusive) => "exclusive",
        Ok(pb::Mode::Shared) => "shared",
        Ok(pb::Mode::Semaphore) => "semaphore",
        _ => "unspecified",
    }
}

fn kind_name(kind: i32) -> &'static str {
    match pb::LockKind::try_from(kind) {
        Ok(pb::LockKind::ReadWrite) => "read-write",
        Ok(pb::LockKind::Semaphore) => "semaphore",
        _ => "unspecified",
    }
}

/// A table: columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[derive(Debug, Serialize)]
struct HolderOut {
    lease_id: u64,
    owner: String,
    mode: &'static str,
    token: u64,
    acquired_at_unix_ms: u64,
    reason: String,
    metadata: BTreeMap<String, String>,
    extensions: u64,
    lock_delay_ms: u64,
}

#[derive(Debug, Serialize)]
struct QueuedOut {
    waiter_id: u64,
    lease_id: u64,
    owner: String,
    mode: &'static str,
    names: Vec<String>,
    queued_at_unix_ms: u64,
    reason: String,
}

#[derive(Debug, Serialize)]
struct LockOut {
    name: String,
    /// True when nobody holds it or waits for it.
    free: bool,
    kind: &'static str,
    permits: u32,
    holders: Vec<HolderOut>,
    queue: Vec<QueuedOut>,
    delayed_until_cluster_ms: Option<u64>,
    grants: u64,
    max_token: u64,
}

impl LockOut {
    fn free(name: &str) -> LockOut {
        LockOut {
            name: name.to_string(),
            free: true,
            kind: "unspecified",
            permits: 0,
            holders: Vec::new(),
            queue: Vec::new(),
            delayed_until_cluster_ms: None,
            grants: 0,
            max_token: 0,
        }
    }

    fn new(l: pb::LockInfo) -> LockOut {
        LockOut {
            free: l.holders.is_empty() && l.queue.is_empty(),
            kind: kind_name(l.kind),
            permits: l.permits,
            holders: l
                .holders
                .into_iter()
                .map(|h| HolderOut {
                    lease_id: h.lease_id,
                    owner: h.owner,
                    mode: mode_name(h.mode),
                    token: h.token,
                    acquired_at_unix_ms: h.acquired_at_unix_ms,
                    reason: h.reason,
                    metadata: h.metadata.into_iter().collect(),
                    extensions: h.extensions,
                    lock_delay_ms: h.lock_delay_ms,
                })
                .collect(),
            queue: l
                .queue
                .into_iter()
                .map(|q| QueuedOut {
                    waiter_id: q.waiter_id,
                    lease_id: q.lease_id,
                    owner: q.owner,
                    mode: mode_name(q.mode),
                    names: q.names,
                    queued_at_unix_ms: q.queued_at_unix_ms,
                    reason: q.reason,
                })
                .collect(),
            delayed_until_cluster_ms: l.delayed_until_cluster_ms,
            grants: l.grants,
            max_token: l.max_token,
            name: l.name,
        }
    }

    fn text(&self) -> String {
        if self.free && self.delayed_until_cluster_ms.is_none() {
            return format!("{} is free\n", self.name);
        }
        let mut out = format!(
            "{} ({}{}), {} holder(s), {} waiting, highest token {}\n",
            self.name,
            self.kind,
            if self.permits > 0 {
                format!(", {} permits", self.permits)
            } else {
                String::new()
            },
            self.holders.len(),
            self.queue.len(),
            self.max_token
        );
        if let Some(until) = self.delayed_until_cluster_ms {
            out.push_str(&format!(
                "lock-delay: ungrantable until cluster time {until} ms\n"
            ));
        }
        if !self.holders.is_empty() {
            out.push('\n');
            let rows: Vec<Vec<String>> = self
                .holders
                .iter()
                .map(|h| {
                    let meta: Vec<String> =
                        h.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    vec![
                        h.lease_id.to_string(),
                        h.owner.clone(),
                        h.mode.to_string(),
                        h.token.to_string(),
                        ago(h.acquired_at_unix_ms),
                        h.reason.clone(),
                        meta.join(","),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "LEASE", "OWNER", "MODE", "TOKEN", "SINCE", "REASON", "METADATA",
                ],
                &rows,
            ));
        }
        if !self.queue.is_empty() {
            out.push_str("\nqueue (first in line first):\n");
            let rows: Vec<Vec<String>> = self
                .queue
                .iter()
                .map(|q| {
                    vec![
                        q.waiter_id.to_string(),
                        q.lease_id.to_string(),
                        q.owner.clone(),
                        q.mode.to_string(),
                        ago(q.queued_at_unix_ms),
                        q.reason.clone(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &["WAITER", "LEASE", "OWNER", "MODE", "SINCE", "REASON"],
                &rows,
            ));
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

pub fn lease(args: LeaseArgs) -> Result<(), Failure> {
    let rpc = Rpc::new(&args.conn)?;
    let json = args.conn.json;
    let rt = runner::control_runtime()?;
    match args.command {
        LeaseCommand::Grant { ttl, owner } => rt.block_on(async {
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            let g = grant(&rpc, ttl_ms, &owner).await?;
            if json {
                print_json(
                    &serde_json::json!({
                        "lease_id": g.lease_id,
                        "ttl_ms": g.ttl_ms,
                        "owner": owner,
                        "expires_at_unix_ms": now_unix_ms() + g.ttl_ms,
                    }),
                    true,
                )
            } else {
                println!(
                    "lease {} granted, ttl {} (expires unless kept alive: raftlock lease \
                     keep-alive {})",
                    g.lease_id,
                    ms_text(g.ttl_ms),
                    g.lease_id
                );
                Ok(())
            }
        }),
        LeaseCommand::Revoke { lease } => rt.block_on(async {
            let r = rpc
                .call_once(|ch| async move {
                    pb::leases_client::LeasesClient::new(ch)
                        .revoke(timed(
                            pb::RevokeLeaseRequest { lease_id: lease },
                            CALL_TIMEOUT,
                        ))
                        .await
                })
                .await
                .map_err(|e| call_failure(e, "", Some(lease)))?;
            let released: Vec<String> = r.released.iter().map(|g| g.name.clone()).collect();
            if json {
                print_json(
                    &serde_json::json!({
                        "lease_id": lease,
                        "released": released,
                        "revision": r.revision,
                    }),
                    true,
                )
            } else {
                if released.is_empty() {
                    println!("lease {lease} revoked (it held no locks)");
                } else {
                    println!("lease {lease} revoked; released {}", released.join(", "));
                }
                Ok(())
            }
        }),
        LeaseCommand::List => rt.block_on(async {
            let r = rpc
                .call(|ch| async move {
                    pb::leases_client::LeasesClient::new(ch)
                        .list(timed(pb::ListLeasesRequest { stale: false }, CALL_TIMEOUT))
                        .await
                })
                .await
                .map_err(|e| call_failure(e, "", None))?;
            if json {
                #[derive(Serialize)]
                struct LeaseOut {
                    lease_id: u64,
                    owner: String,
                    ttl_ms: u64,
                    granted_at_unix_ms: u64,
                    holds: Vec<String>,
                    waits: Vec<u64>,
                    remaining_ms: Option<u64>,
                }
                let out: Vec<LeaseOut> = r
                    .leases
                    .into_iter()
                    .map(|l| LeaseOut {
                        lease_id: l.lease_id,
                        owner: l.owner,
                        ttl_ms: l.ttl_ms,
                        granted_at_unix_ms: l.granted_at_unix_ms,
                        holds: l.holds,
                        waits: l.waits,
                        remaining_ms: l.remaining_ms,
                    })
                    .collect();
                print_json(&out, true)
            } else {
                if r.leases.is_empty() {
                    println!("no leases");
                    return Ok(());
                }
                let rows: Vec<Vec<String>> = r
                    .leases
                    .iter()
                    .map(|l| {
                        vec![
                            l.lease_id.to_string(),
                            l.owner.clone(),
                            ms_text(l.ttl_ms),
                            l.remaining_ms.map_or("-".into(), ms_text),
                            ago(l.granted_at_unix_ms),
                            l.holds.join(","),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["LEASE", "OWNER", "TTL", "REMAINING", "GRANTED", "HOLDS"],
                        &rows
                    )
                );
                Ok(())
            }
        }),
        LeaseCommand::KeepAlive { lease } => {
            let mut signals = Signals::new(&rt)?;
            rt.block_on(async {
                tokio::select! {
                    r = keep_alive(&rpc, lease, json) => r,
                    sig = signals.recv() => {
                        eprintln!("{sig}: stopped keeping lease {lease} alive; it expires after its ttl");
                        Ok(())
                    }
                }
            })
        }
    }
}

async fn grant(rpc: &Rpc, ttl_ms: u64, owner: &str) -> Result<pb::GrantLeaseResponse, Failure> {
    rpc.call(|ch| {
        let owner = owner.to_string();
        async move {
            pb::leases_client::LeasesClient::new(ch)
                .grant(timed(pb::GrantLeaseRequest { ttl_ms, owner }, CALL_TIMEOUT))
                .await
        }
    })
    .await
    .map_err(|e| call_failure(e, "", None))
}

/// One keep-alive stream to one node, renewing every ttl/3; reconnects on a
/// broken stream, ends on LEASE_NOT_FOUND / LEASE_EXPIRING (exit 4).
async fn keep_alive(rpc: &Rpc, lease: u64, json: bool) -> Result<(), Failure> {
    let mut every = Duration::from_secs(1);
    loop {
        let mut sender = None;
        let stream = rpc
            .call(|ch| {
                let (tx, rx) = mpsc::channel(4);
                // The first request goes at once, to learn the ttl.
                let _ = tx.try_send(pb::KeepAliveRequest { lease_id: lease });
                sender = Some(tx);
                async move {
                    pb::leases_client::LeasesClient::new(ch)
                        .keep_alive(ReceiverStream::new(rx))
                        .await
                }
            })
            .await;
        let (mut responses, tx) = match (stream, sender) {
            (Ok(s), Some(tx)) => (s, tx),
            (Err(e), _) => return Err(call_failure(e, "", Some(lease))),
            (Ok(_), None) => unreachable!("a stream comes from an attempt"),
        };
        loop {
            tokio::select! {
                msg = responses.message() => match msg {
                    Ok(Some(r)) => {
                        every = Duration::from_millis((r.ttl_ms / 3).max(100));
                        let line = if json {
                            json_text(&serde_json::json!({
                                "lease_id": r.lease_id,
                                "ttl_ms": r.ttl_ms,
                                "renewed_at_unix_ms": now_unix_ms(),
                            }), false)?
                        } else {
                            format!("lease {} renewed, ttl {}", r.lease_id, ms_text(r.ttl_ms))
                        };
                        if !write_line(&line)? {
                            // `raftlock lease keep-alive 7 | head -1`: the
                            // reader has gone, as it would on Ctrl-C.
                            eprintln!(
                                "stdout closed: stopped keeping lease {lease} alive; it expires \
                                 after its ttl"
                            );
                            return Ok(());
                        }
                    }
                    Ok(None) => {
                        eprintln!("note: the server ended the keep-alive stream; reconnecting");
                        break;
                    }
                    Err(s) => {
                        let f = status_failure(&s, "", Some(lease));
                        if matches!(f, Failure::LeaseLost(_) | Failure::Usage(_)) {
                            return Err(f);
                        }
                        eprintln!("note: keep-alive stream broke ({}); reconnecting", s.message());
                        break;
                    }
                },
                _ = tokio::time::sleep(every) => {
                    if tx.send(pb::KeepAliveRequest { lease_id: lease }).await.is_err() {
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub fn acquire(args: AcquireArgs) -> Result<(), Failure> {
    let rpc = Rpc::new(&args.conn)?;
    let rt = runner::control_runtime()?;
    let (mode, permits) = match (args.permits, args.mode) {
        (Some(n), _) => (pb::Mode::Semaphore, n),
        (None, ModeArg::Exclusive) => (pb::Mode::Exclusive, 0),
        (None, ModeArg::Shared) => (pb::Mode::Shared, 0),
    };
    let name = args.name.clone();
    rt.block_on(async {
        let (lease_id, ttl_ms, granted) = match args.lease {
            Some(l) => (l, None, false),
            None => {
                let ttl_ms = u64::try_from(args.ttl.as_millis()).unwrap_or(u64::MAX);
                let g = grant(&rpc, ttl_ms, &args.owner).await?;
                (g.lease_id, Some(g.ttl_ms), true)
            }
        };
        let req = pb::AcquireRequest {
            lease_id,
            locks: vec![pb::LockSpec {
                name: name.clone(),
                mode: mode as i32,
                permits,
            }],
            wait_timeout_ms: u64::try_from(args.wait.as_millis()).unwrap_or(u64::MAX),
            reason: args.reason.clone(),
            metadata: args.meta.iter().cloned().collect(),
            lock_delay_ms: u64::try_from(args.lock_delay.as_millis()).unwrap_or(u64::MAX),
        };
        // A retry (the same lease: it finds its queued request or its hold)
        // waits only for what is left of --wait, not the whole of it again.
        let wait_until = std::time::Instant::now() + args.wait;
        let result = rpc
            .call(|ch| {
                let mut req = req.clone();
                let wait_left = wait_until.saturating_duration_since(std::time::Instant::now());
                req.wait_timeout_ms = u64::try_from(wait_left.as_millis()).unwrap_or(u64::MAX);
                let timeout = wait_left + CALL_TIMEOUT;
                async move {
                    pb::locks_client::LocksClient::new(ch)
                        .acquire(timed(req, timeout))
                        .await
                }
            })
            .await;
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                if granted {
                    // Best effort: the lease would expire by itself anyway.
                    let _ = rpc
                        .call_once(|ch| async move {
                            pb::leases_client::LeasesClient::new(ch)
                                .revoke(timed(pb::RevokeLeaseRequest { lease_id }, CALL_TIMEOUT))
                                .await
                        })
                        .await;
                }
                return Err(call_failure(e, &name, Some(lease_id)));
            }
        };
        let expires = ttl_ms.map(|t| now_unix_ms() + t);
        if args.conn.json {
            print_json(
                &serde_json::json!({
                    "name": name,
                    "lease_id": lease_id,
                    "lease_granted": granted,
                    "token": r.token,
                    "mode": mode_name(mode as i32),
                    "permits": permits,
                    "ttl_ms": ttl_ms,
                    "expires_at_unix_ms": expires,
                    "revision": r.revision,
                    "waited_ms": r.waited_ms,
                    "retry": r.retry,
                }),
                true,
            )
        } else {
            let expiry = match ttl_ms {
                Some(t) => format!(
                    "expiry  in {} with the new lease, unless kept alive: raftlock lease \
                     keep-alive {lease_id}",
                    ms_text(t)
                ),
                None => format!(
                    "expiry  when lease {lease_id} expires (its ttl after its last keep-alive)"
                ),
            };
            // A closed stdout (`| head -1`) still leaves the lock acquired:
            // exit 0, as the exit code is what says so.
            write_line(&format!(
                "acquired {name} ({})\nlease   {lease_id}\ntoken   {}\n{expiry}\n\
                 release with: raftlock release {name} --token {} --lease {lease_id}",
                mode_name(mode as i32),
                r.token,
                r.token
            ))
            .map(drop)
        }
    })
}

pub fn release(args: HoldArgs) -> Result<(), Failure> {
    let rpc = Rpc::new(&args.conn)?;
    let rt = runner::control_runtime()?;
    rt.block_on(async {
        let req = pb::ReleaseRequest {
            lease_id: args.lease,
            token: args.token,
            names: vec![args.name.clone()],
        };
        let r = rpc
            .call_once(|ch| {
                let req = req.clone();
                async move {
                    pb::locks_client::LocksClient::new(ch)
                        .release(timed(req, CALL_TIMEOUT))
                        .await
                }
            })
            .await
            .map_err(|e| call_failure(e, &args.name, Some(args.lease)))?;
        if args.conn.json {
            print_json(
                &serde_json::json!({"released": r.names, "revision": r.revision}),
                true,
            )
        } else {
            println!("released {}", r.names.join(", "));
            Ok(())
        }
    })
}

pub fn extend(args: ExtendArgs) -> Result<(), Failure> {
    let hold = args.hold;
    let rpc = Rpc::new(&hold.conn)?;
    let rt = runner::control_runtime()?;
    rt.block_on(async {
        let req = pb::ExtendRequest {
            lease_id: hold.lease,
            name: hold.name.clone(),
            token: hold.token,
            ttl_ms: args
                .ttl
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        let r = rpc
            .call(|ch| {
                let req = req.clone();
                async move {
                    pb::locks_client::LocksClient::new(ch)
                        .extend(timed(req, CALL_TIMEOUT))
                        .await
                }
            })
            .await
            .map_err(|e| call_failure(e, &hold.name, Some(hold.lease)))?;
        if hold.conn.json {
            print_json(
                &serde_json::json!({
                    "name": hold.name,
                    "lease_id": hold.lease,
                    "ttl_ms": r.ttl_ms,
                    "extensions": r.extensions,
                    "expires_at_unix_ms": now_unix_ms() + r.ttl_ms,
                    "revision": r.revision,
                }),
                true,
            )
        } else {
            println!(
                "extended {}: lease {} lives {} from now unless kept alive (extension {})",
                hold.name,
                hold.lease,
                ms_text(r.ttl_ms),
                r.extensions
            );
            Ok(())
        }
    })
}

pub fn inspect(args: InspectArgs) -> Result<(), Failure> {
    let rt = runner::control_runtime()?;
    rt.block_on(async {
        let client = client(&args.conn).await?;
        let info = client
            .inspect(&args.name)
            .await
            .map_err(|e| client_failure(&e, &args.name))?;
        let out = info.map_or_else(|| LockOut::free(&args.name), LockOut::new);
        if args.conn.json {
            print_json(&out, true)
        } else {
            print!("{}", out.text());
            Ok(())
        }
    })
}

pub fn list(args: ListArgs) -> Result<(), Failure> {
    let rt = runner::control_runtime()?;
    rt.block_on(async {
        let client = client(&args.conn).await?;
        let locks = client
            .list(&args.prefix)
            .await
            .map_err(|e| client_failure(&e, &args.prefix))?;
        let out: Vec<LockOut> = locks.into_iter().map(LockOut::new).collect();
        if args.conn.json {
            return print_json(&out, true);
        }
        if out.is_empty() {
            println!("no locks held or waited for");
            return Ok(());
        }
        let rows: Vec<Vec<String>> = out
            .iter()
            .map(|l| {
                let owners: Vec<String> = l
                    .holders
                    .iter()
                    .map(|h| format!("{} (lease {}, token {})", h.owner, h.lease_id, h.token))
                    .collect();
                vec![
                    l.name.clone(),
                    l.kind.to_string(),
                    l.holders.len().to_string(),
                    l.queue.len().to_string(),
                    owners.join("; "),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["NAME", "KIND", "HOLDERS", "WAITING", "HELD BY"], &rows)
        );
        Ok(())
    })
}

fn event_type(t: i32) -> &'static str {
    match pb::EventType::try_from(t) {
        Ok(pb::EventType::Acquired) => "acquired",
        Ok(pb::EventType::Released) => "released",
        Ok(pb::EventType::Expired) => "expired",
        Ok(pb::EventType::Queued) => "queued",
        Ok(pb::EventType::ForceReleased) => "force_released",
        Ok(pb::EventType::WaitDropped) => "wait_dropped",
        Ok(pb::EventType::Delayed) => "delayed",
        Ok(pb::EventType::LeaseGranted) => "lease_granted",
        Ok(pb::EventType::LeaseEnded) => "lease_ended",
        _ => "unspecified",
    }
}

fn lease_end(e: i32) -> Option<&'static str> {
    match pb::LeaseEnd::try_from(e) {
        Ok(pb::LeaseEnd::Revoked) => Some("revoked"),
        Ok(pb::LeaseEnd::Expired) => Some("expired"),
        _ => None,
    }
}

#[derive(Debug, Serialize)]
struct EventOut {
    revision: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    lease_id: u64,
    owner: String,
    mode: Option<&'static str>,
    token: u64,
    waiter_id: u64,
    position: u32,
    lease_end: Option<&'static str>,
    delayed_until_cluster_ms: u64,
    ttl_ms: u64,
}

impl EventOut {
    fn new(e: pb::Event) -> EventOut {
        EventOut {
            revision: e.revision,
            kind: event_type(e.r#type),
            name: e.name,
            lease_id: e.lease_id,
            owner: e.owner,
            mode: (e.mode != 0).then(|| mode_name(e.mode)),
            token: e.token,
            waiter_id: e.waiter_id,
            position: e.position,
            lease_end: lease_end(e.lease_end),
            delayed_until_cluster_ms: e.delayed_until_cluster_ms,
            ttl_ms: e.ttl_ms,
        }
    }

    fn text(&self) -> String {
        let mut out = format!("rev {} {}", self.revision, self.kind);
        if !self.name.is_empty() {
            out.push_str(&format!(" {}", self.name));
        }
        out.push_str(&format!(" lease {}", self.lease_id));
        if !self.owner.is_empty() {
            out.push_str(&format!(" owner {:?}", self.owner));
        }
        if let Some(m) = self.mode {
            out.push_str(&format!(" {m}"));
        }
        if self.token != 0 {
            out.push_str(&format!(" token {}", self.token));
        }
        if self.kind == "queued" {
            out.push_str(&format!(" position {}", self.position));
        }
        if let Some(end) = self.lease_end {
            out.push_str(&format!(" ({end})"));
        }
        if self.ttl_ms != 0 {
            out.push_str(&format!(" ttl {}", ms_text(self.ttl_ms)));
        }
        out
    }
}

/// Prints events until Ctrl-C, or until stdout is closed (exit 0 either
/// way). The stream is `Client::watch_resuming`: when it breaks it is
/// reopened (on another node if need be) at the revision of
/// the last event printed, skipping the events of that revision already
/// printed. Reopening after it instead would lose the rest of that entry's
/// events (a release and the grant to the next waiter share one revision,
/// and a batch boundary may fall between them).
pub fn watch(args: WatchArgs) -> Result<(), Failure> {
    let rt = runner::control_runtime()?;
    let mut signals = Signals::new(&rt)?;
    rt.block_on(async {
        // A watch runs for long: let it ride out a node's restart, not only
        // an election, before giving up (each reopening retries for up to
        // WATCH_RIDE_OUT; the timeout bounds the opening, not the stream).
        let rpc = Rpc::new(&args.conn)?;
        let options = ClientOptions {
            retry: RetryPolicy::patient(),
            call_timeout: WATCH_RIDE_OUT,
            ..ClientOptions::default()
        };
        let client = Client::connect(rpc.endpoints, options)
            .await
            .map_err(|e| Failure::Usage(format!("{e}; give --endpoints as host:port,...")))?;
        let mut stream = client
            .watch_resuming(&args.prefix, args.from_revision)
            .await
            .map_err(|e| client_failure(&e, &args.prefix))?;
        loop {
            tokio::select! {
                sig = signals.recv() => {
                    eprintln!("{sig}: stopped watching");
                    return Ok(());
                }
                item = stream.next() => match item {
                    Some(Ok(e)) => {
                        let out = EventOut::new(e);
                        let line = if args.conn.json {
                            json_text(&out, false)?
                        } else {
                            out.text()
                        };
                        // Whoever read the events has gone: nothing left to do.
                        if !write_line(&line)? {
                            return Ok(());
                        }
                    }
                    // It cannot go on: the events it needs are gone from
                    // every node's history (COMPACTED), or no node answered
                    // within the client's retries.
                    Some(Err(e)) => return Err(client_failure(&e, &args.prefix)),
                    None => {
                        return Err(Failure::Runtime(format!(
                            "the watch of {:?} ended unexpectedly; watch again with \
                             --from-revision R (R: the last revision printed, whose events \
                             may then come again)",
                            args.prefix
                        )));
                    }
                }
            }
        }
    })
}

pub fn force_release(args: ForceReleaseArgs) -> Result<(), Failure> {
    let rpc = Rpc::new(&args.conn)?;
    let rt = runner::control_runtime()?;
    rt.block_on(async {
        let req = pb::ForceReleaseRequest {
            name: args.name.clone(),
            lease_id: args.lease,
        };
        let r = rpc
            .call_once(|ch| {
                let req = req.clone();
                async move {
                    pb::admin_client::AdminClient::new(ch)
                        .force_release(timed(req, CALL_TIMEOUT))
                        .await
                }
            })
            .await
            .map_err(|e| call_failure(e, &args.name, args.lease))?;
        if args.conn.json {
            let released: Vec<serde_json::Value> = r
                .released
                .iter()
                .map(|h| {
                    serde_json::json!({
                        "lease_id": h.lease_id,
                        "owner": h.owner,
                        "token": h.token,
                        "mode": mode_name(h.mode),
                    })
                })
                .collect();
            print_json(
                &serde_json::json!({"name": args.name, "released": released, "revision": r.revision}),
                true,
            )
        } else {
            if r.released.is_empty() {
                println!("{}: nothing to release (no matching hold)", args.name);
            }
            for h in &r.released {
                println!(
                    "force-released {} from lease {} ({}), token {}",
                    args.name, h.lease_id, h.owner, h.token
                );
            }
            Ok(())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_ms_s_m_and_h() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration("0ms"), Ok(Duration::ZERO));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_without_a_known_unit_are_rejected_with_a_hint() {
        for bad in ["5x", "10", "s", "", "1.5s", "-1s", "10 s"] {
            let e = duration(bad).expect_err(bad);
            assert!(e.contains("ms, s, m or h"), "{bad}: {e}");
        }
        assert!(duration("25h").is_err());
        assert!(duration("99999999999999999999s").is_err());
    }

    fn code(f: Failure) -> u8 {
        f.code()
    }

    #[test]
    fn reasons_map_to_exit_codes() {
        assert_eq!(code(from_reason("INVALID_NAME", "m", "")), 2);
        assert_eq!(code(from_reason("TTL_OUT_OF_RANGE", "m", "")), 2);
        assert_eq!(code(from_reason("LIMIT_EXCEEDED", "m", "")), 2);
        assert_eq!(code(from_reason("LOCK_BUSY", "m", "")), 3);
        assert_eq!(code(from_reason("WAIT_TIMEOUT", "m", "")), 3);
        assert_eq!(code(from_reason("LEASE_NOT_FOUND", "m", "")), 4);
        assert_eq!(code(from_reason("LEASE_EXPIRING", "m", "")), 4);
        assert_eq!(code(from_reason("STALE_TOKEN", "m", "")), 1);
        assert_eq!(code(from_reason("INTERNAL", "m", "")), 1);
    }

    #[test]
    fn meta_needs_key_and_equals() {
        assert_eq!(meta_pair("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(meta_pair("=x").is_err());
        assert!(meta_pair("novalue").is_err());
    }
}
