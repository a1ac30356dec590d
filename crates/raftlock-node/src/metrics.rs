//! A node's metrics, encoded by `prometheus-client` in the OpenMetrics text
//! format (what Prometheus asks for) or the Prometheus text format 0.0.4
//! (for scrapers that do not ask for OpenMetrics), and the small HTTP
//! endpoint that serves them (`GET /metrics`) with a health check
//! (`GET /health`: 200 while a leader is known, else 503).
//!
//! docs/operations.md's metrics table names every series; a test holds the
//! scrape of a live cluster to it. The kinds of series:
//! - Raft, from openraft's metrics: term, role, leader, log and applied
//!   indexes, replication lag per follower, time since the leader last
//!   heard from a quorum; leader changes this node saw.
//! - The lock state, from the replicated state machine: leases, locks and
//!   waiters now, the lease limit, and counters since the cluster began
//!   (grants, releases, expiries...). The same on every node at the same
//!   index.
//! - Latency histograms of this node's work: writes as callers see them,
//!   log flushes (sled write + fsync), AppendEntries round trips per peer
//!   (leader) and AppendEntries taken in (follower), client gRPC calls.
//! - Per lock group (`lock_groups`): waits, holds, grants, contention.
//!
//! The hot-path histograms are `raftlock_store::metrics::Histogram`
//! (relaxed atomics); `prometheus-client`'s own histogram takes a lock per
//! observation. Everything is read at scrape time by one [`Collector`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::ServerState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use raftlock_store::metrics::{Histogram, HistogramSnapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::Api;
use crate::grpc_metrics::GrpcMetrics;
use crate::lock_groups::LockGroups;

/// The histograms and counters a node keeps (the rest is read from Raft
/// and the state at scrape time).
#[derive(Debug)]
pub(crate) struct NodeMetrics {
    /// Every write through `Api::write` (forwarded ones included), from the
    /// call to its answer, errors too.
    pub(crate) writes: Histogram,
    /// AppendEntries with entries that this node took in as a follower.
    pub(crate) appends_taken: Arc<Histogram>,
    /// The store's log flushes.
    pub(crate) log_flushes: Arc<Histogram>,
    /// Connections the client listener refused.
    pub(crate) client_refusals: Arc<crate::listen::Refusals>,
    /// Connections the peer listener refused.
    pub(crate) peer_refusals: Arc<crate::listen::Refusals>,
    /// Peer messages this node refused (bad checksum, undecodable, meant
    /// for another node, a damaged snapshot).
    pub(crate) peer_refused: Arc<AtomicU64>,
    /// Times this node saw a new leader (a new term or another node).
    pub(crate) leader_changes: AtomicU64,
    /// Client gRPC calls per method and code.
    pub(crate) grpc: Arc<GrpcMetrics>,
    /// Per lock-group waits, holds and counts.
    pub(crate) lock_groups: LockGroups,
}

impl NodeMetrics {
    pub(crate) fn new(log_flushes: Arc<Histogram>, config: &crate::NodeConfig) -> Self {
        NodeMetrics {
            writes: Histogram::default(),
            appends_taken: Arc::default(),
            log_flushes,
            client_refusals: Arc::default(),
            peer_refusals: Arc::default(),
            peer_refused: Arc::default(),
            leader_changes: AtomicU64::new(0),
            grpc: Arc::default(),
            lock_groups: LockGroups::new(
                &config.metrics_lock_groups,
                config.metrics_max_lock_groups,
            ),
        }
    }
}

/// Which text format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsFormat {
    /// OpenMetrics 1.0 text (ends with `# EOF`; Prometheus ≥ 2.5 asks for it).
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (older scrapers, `promtool check
    /// metrics`, people with curl).
    Prometheus,
}

impl MetricsFormat {
    /// The format a request's `Accept` header asks for: OpenMetrics if it
    /// names it, else 0.0.4.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => MetricsFormat::OpenMetrics,
            _ => MetricsFormat::Prometheus,
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            MetricsFormat::OpenMetrics => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            }
            MetricsFormat::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// Every series of this node, in `format`. Writing to a String fails only
/// if an encoder refuses a value (none of ours should be): then None, and
/// the error is logged, rather than half a scrape.
pub(crate) fn render(api: &Api, format: MetricsFormat) -> Option<String> {
    let mut registry = Registry::with_prefix("raftlock");
    registry.register_collector(Box::new(Scrape(api.me.clone())));
    let mut out = String::with_capacity(16 * 1024);
    let encoded = match format {
        MetricsFormat::OpenMetrics => {
            prometheus_client::encoding::text::encode(&mut out, &registry)
        }
        MetricsFormat::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        }
    };
    match encoded {
        Ok(()) => Some(out),
        Err(e) => {
            tracing::error!(error = %e, "metrics could not be encoded");
            None
        }
    }
}

/// Reads the node at scrape time. Weak: the registry lives only for one
/// scrape, and a node that is gone has nothing to report.
#[derive(Debug)]
struct Scrape(Weak<Api>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result {
        match self.0.upgrade() {
            Some(api) => encode_node(&api, &mut encoder),
            None => Ok(()),
        }
    }
}

type Result<T = ()> = std::result::Result<T, std::fmt::Error>;

fn descriptor<'a>(
    e: &'a mut DescriptorEncoder,
    name: &'a str,
    help: &str,
    unit: Option<&'a Unit>,
    kind: MetricType,
) -> Result<MetricEncoder<'a>> {
    e.encode_descriptor(name, help, unit, kind)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: impl EncodeGaugeValue) -> Result {
    descriptor(e, name, help, None, MetricType::Gauge)?.encode_gauge(&v)
}

/// `name` without `_total`: the encoders add it to counters.
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result {
    descriptor(e, name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn histogram(m: &mut MetricEncoder, h: &HistogramSnapshot) -> Result {
    m.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)
}

fn labelled_histograms<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, HistogramSnapshot)],
) -> Result {
    let mut m = descriptor(e, name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (labels, h) in series {
        histogram(&mut m.encode_family(labels)?, h)?;
    }
    Ok(())
}

fn labelled_counters<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, u64)],
) -> Result {
    let mut m = descriptor(e, name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        m.encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(v, None)?;
    }
    Ok(())
}

fn labelled_gauges<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, u64)],
) -> Result {
    let mut m = descriptor(e, name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        m.encode_family(labels)?.encode_gauge(v)?;
    }
    Ok(())
}

fn encode_node(api: &Api, e: &mut DescriptorEncoder) -> Result {
    descriptor(
        e,
        "build",
        "This build: its version and the data formats it writes.",
        None,
        MetricType::Info,
    )?
    .encode_info(&[
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("format", raftlock_store::FORMAT_VERSION.to_string()),
        (
            "snapshot_format",
            raftlock_store::SNAPSHOT_FORMAT_VERSION.to_string(),
        ),
    ])?;
    gauge(e, "node_id", "This node's id.", api.id)?;
    encode_raft(api, e)?;
    encode_state(api, e)?;
    encode_node_counters(api, e)?;
    encode_grpc(api, e)?;
    encode_lock_groups(api, e)
}

fn encode_raft(api: &Api, e: &mut DescriptorEncoder) -> Result {
    let m = api.raft.metrics().borrow().clone();
    gauge(e, "raft_term", "Current Raft term.", m.current_term)?;
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    let roles: Vec<([(&str, &str); 1], u64)> =
        ["follower", "candidate", "leader", "learner", "shutdown"]
            .into_iter()
            .map(|r| ([("role", r)], u64::from(r == role)))
            .collect();
    labelled_gauges(
        e,
        "raft_role",
        "This node's Raft role: 1 for the role it has, 0 for the others.",
        &roles,
    )?;
    let leading = m.state == ServerState::Leader && m.current_leader == Some(api.id);
    gauge(
        e,
        "is_leader",
        "1 if this node is the leader, else 0.",
        u64::from(leading),
    )?;
    gauge(
        e,
        "raft_has_leader",
        "1 if this node knows a leader, else 0.",
        u64::from(m.current_leader.is_some()),
    )?;
    gauge(
        e,
        "raft_leader_id",
        "The leader this node knows of (0: none).",
        m.current_leader.unwrap_or(0),
    )?;
    counter(
        e,
        "leader_changes",
        "Times this node saw a new leader (another node, or a new term), since it started.",
        api.metrics.leader_changes.load(Ordering::Relaxed),
    )?;
    let last_log = m.last_log_index.unwrap_or(0);
    gauge(
        e,
        "raft_last_log_index",
        "Index of the last entry in this node's log.",
        last_log,
    )?;
    gauge(
        e,
        "raft_applied_index",
        "Index of the last entry applied to this node's state.",
        m.last_applied.map_or(0, |l| l.index),
    )?;
    gauge(
        e,
        "raft_snapshot_index",
        "Index covered by this node's latest snapshot (0: none).",
        m.snapshot.map_or(0, |l| l.index),
    )?;
    gauge(
        e,
        "raft_purged_index",
        "Log entries up to this index were purged (0: none).",
        m.purged.map_or(0, |l| l.index),
    )?;
    let mut ack = descriptor(
        e,
        "raft_quorum_ack_age",
        "Leader only: time since a quorum last acknowledged this leader.",
        Some(&Unit::Seconds),
        MetricType::Gauge,
    )?;
    if let Some(ms) = m.millis_since_quorum_ack {
        ack.encode_gauge(&(ms as f64 / 1e3))?;
    }
    let lag: Vec<([(&str, String); 1], u64)> = m
        .replication
        .iter()
        .flatten()
        .filter(|(peer, _)| **peer != api.id)
        .map(|(peer, matched)| {
            let matched = matched.map_or(0, |l| l.index);
            (
                [("peer", peer.to_string())],
                last_log.saturating_sub(matched),
            )
        })
        .collect();
    labelled_gauges(
        e,
        "raft_replication_lag_entries",
        "Leader only: entries in the leader's log that each peer has not acknowledged.",
        &lag,
    )
}

fn encode_state(api: &Api, e: &mut DescriptorEncoder) -> Result {
    // Read in one go, so the numbers describe one applied index.
    let (leases, locks, waiters, leases_limit, c, epoch) = api.state.read(|s| {
        (
            s.lease_count(),
            s.lock_count(),
            s.waiter_count(),
            s.limits().max_leases,
            s.counters().clone(),
            s.token_epoch(),
        )
    });
    // The epoch alone: a whole token (epoch << 48 | index) is not exact in a
    // float sample; with `raftlock_raft_applied_index` it says where tokens are.
    gauge(
        e,
        "token_epoch",
        "Token epoch in force (the 16 high bits of every new token; raised by restores, forced clusters and --token-floor).",
        i64::from(epoch),
    )?;
    gauge(e, "leases", "Leases alive now.", leases)?;
    gauge(
        e,
        "leases_limit",
        "Most leases alive at once (the cluster's max_leases).",
        leases_limit,
    )?;
    gauge(e, "locks", "Locks held or waited for now.", locks)?;
    gauge(e, "waiters", "Queued acquire requests now.", waiters)?;
    for (name, help, value) in [
        ("leases_granted", "Leases granted.", c.leases_granted),
        (
            "leases_revoked",
            "Leases revoked by their clients.",
            c.leases_revoked,
        ),
        (
            "leases_expired",
            "Leases expired (keep-alives stopped).",
            c.leases_expired,
        ),
        (
            "grants",
            "Holds granted (immediately or from a queue).",
            c.grants,
        ),
        (
            "grants_from_queue",
            "Queued requests granted.",
            c.grants_from_queue,
        ),
        (
            "releases",
            "Holds released by their holders or cancels.",
            c.releases,
        ),
        (
            "force_releases",
            "Holds removed by force-release.",
            c.force_releases,
        ),
        ("queued", "Acquire requests that had to queue.", c.queued),
        (
            "waits_cancelled",
            "Queued requests withdrawn.",
            c.waits_cancelled,
        ),
        (
            "rejected",
            "Commands the state machine refused.",
            c.rejected,
        ),
    ] {
        counter(e, name, help, value)?;
    }
    Ok(())
}

fn encode_node_counters(api: &Api, e: &mut DescriptorEncoder) -> Result {
    let metrics = &api.metrics;
    counter(
        e,
        "peer_messages_refused",
        "Peer messages this node refused: bad checksum, undecodable, meant for another node, a damaged snapshot.",
        metrics.peer_refused.load(Ordering::Relaxed),
    )?;
    let traffic: Vec<([(&str, String); 2], u64)> = api
        .peer_identity
        .traffic
        .counts()
        .into_iter()
        .map(|(version, direction, n)| {
            (
                [
                    ("protocol", version.to_string()),
                    ("direction", direction.to_string()),
                ],
                n,
            )
        })
        .collect();
    labelled_counters(
        e,
        "peer_messages",
        "Peer messages (Raft RPCs, forwarded calls, their answers) this node sent and received, by peer protocol version.",
        &traffic,
    )?;
    gauge(
        e,
        "watchers",
        "Watch streams open on this node.",
        api.watch.watcher_count(),
    )?;
    counter(
        e,
        "watchers_cut_off",
        "Watch streams this node cut off because they fell behind (SLOW_WATCHER).",
        api.watch.cut_off_count(),
    )?;
    for (listener, refusals) in [
        ("client", &metrics.client_refusals),
        ("peer", &metrics.peer_refusals),
    ] {
        counter(
            e,
            &format!("{listener}_connections_over_limit"),
            &format!(
                "Connections the {listener} listener closed at once: it had max_connections open."
            ),
            refusals.over_limit.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            &format!("{listener}_tls_handshakes_failed"),
            &format!("TLS handshakes on the {listener} listener that failed or timed out."),
            refusals.handshakes.load(Ordering::Relaxed),
        )?;
    }
    for (name, help, h) in [
        (
            "write_duration",
            "Writes through this node (forwarded ones included), call to answer.",
            &metrics.writes,
        ),
        (
            "log_flush_duration",
            "Group flushes of this node's Raft log (sled write + fsync).",
            &*metrics.log_flushes,
        ),
        (
            "append_entries_taken_duration",
            "Follower: AppendEntries with entries taken in (append + flush) by this node's Raft.",
            &*metrics.appends_taken,
        ),
    ] {
        let mut m = descriptor(e, name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
        histogram(&mut m, &h.snapshot())?;
    }
    let peers: Vec<([(&str, String); 1], HistogramSnapshot)> = api
        .network
        .append_times()
        .into_iter()
        .map(|(peer, h)| ([("peer", peer.to_string())], h.snapshot()))
        .collect();
    labelled_histograms(
        e,
        "peer_append_entries_duration",
        "Leader: AppendEntries round trips with entries to each peer.",
        &peers,
    )
}

fn encode_grpc(api: &Api, e: &mut DescriptorEncoder) -> Result {
    let methods = api.metrics.grpc.snapshot();
    let requests: Vec<([(&str, &str); 2], u64)> = methods
        .iter()
        .flat_map(|m| {
            m.codes
                .iter()
                .map(|(code, n)| ([("method", m.method), ("code", *code)], *n))
        })
        .collect();
    labelled_counters(
        e,
        "grpc_requests",
        "Client gRPC requests answered by this node, per method and status code.",
        &requests,
    )?;
    let latency: Vec<([(&str, &str); 1], HistogramSnapshot)> = methods
        .iter()
        .filter_map(|m| m.latency.clone().map(|h| ([("method", m.method)], h)))
        .collect();
    labelled_histograms(
        e,
        "grpc_request_duration",
        "Client gRPC unary requests, from the request to the end of the answer.",
        &latency,
    )
}

fn encode_lock_groups(api: &Api, e: &mut DescriptorEncoder) -> Result {
    let groups = api.metrics.lock_groups.snapshot();
    let label = |g: &crate::lock_groups::GroupSnapshot| [("group", g.label.clone())];
    let wait: Vec<_> = groups.iter().map(|g| (label(g), g.wait.clone())).collect();
    labelled_histograms(
        e,
        "lock_wait_duration",
        "Per lock group: time from a request's queueing to its grant (0 when granted at once).",
        &wait,
    )?;
    let hold: Vec<_> = groups.iter().map(|g| (label(g), g.hold.clone())).collect();
    labelled_histograms(
        e,
        "lock_hold_duration",
        "Per lock group: time from a grant to its release, force-release or expiry.",
        &hold,
    )?;
    for (name, help, field) in [
        (
            "lock_grants",
            "Per lock group: holds granted.",
            (|g| g.grants) as fn(&crate::lock_groups::GroupSnapshot) -> u64,
        ),
        (
            "lock_contended",
            "Per lock group: acquires that found the lock taken (queued, or refused BUSY).",
            |g| g.contended,
        ),
        (
            "lock_wait_timeouts",
            "Per lock group: acquires served by this node that gave up waiting (WAIT_TIMEOUT).",
            |g| g.wait_timeouts,
        ),
        (
            "lock_expirations",
            "Per lock group: holds that ended because their lease expired.",
            |g| g.expirations,
        ),
    ] {
        let series: Vec<_> = groups.iter().map(|g| (label(g), field(g))).collect();
        labelled_counters(e, name, help, &series)?;
    }
    Ok(())
}

/// The content type of every answer but the metrics.
const PLAIN: &str = "text/plain; charset=utf-8";
/// Longest request head the endpoint reads.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// A client that sends no complete request head in this time is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections answered at once; more are closed unanswered (a scraper
/// needs one, a probe another).
const MAX_CONNECTIONS: usize = 32;

/// Serves `GET /metrics` and `GET /health` on `listener` until `stop`.
pub(crate) async fn serve(api: Arc<Api>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match Arc::clone(&slots).try_acquire_owned() {
                    Ok(slot) => {
                        let api = Arc::clone(&api);
                        tokio::spawn(async move {
                            answer(api, stream).await;
                            drop(slot);
                        });
                    }
                    // Too many at once: closing it is the answer.
                    Err(_) => drop(stream),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            changed = stop.changed() => if changed.is_err() { return },
        }
    }
}

/// One request on one connection, then the connection is closed.
async fn answer(api: Arc<Api>, mut stream: TcpStream) {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        // Timed out, too long, or gone: nothing useful to answer.
        _ => return,
    };
    let mut lines = head.lines();
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let accept = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("accept")
            .then(|| value.trim())
    });
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => {
            let format = MetricsFormat::from_accept(accept);
            match render(&api, format) {
                Some(text) => ("200 OK", format.content_type(), text),
                None => (
                    "500 Internal Server Error",
                    PLAIN,
                    "metrics could not be encoded: see the node's log\n".to_string(),
                ),
            }
        }
        ("GET", "/health") => match api.leader() {
            Some((leader, _)) => ("200 OK", PLAIN, format!("ok: leader {leader}\n")),
            None => (
                "503 Service Unavailable",
                PLAIN,
                "no leader known\n".to_string(),
            ),
        },
        ("GET", _) => (
            "404 Not Found",
            PLAIN,
            "not found: try /metrics or /health\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            PLAIN,
            "only GET is served\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads up to the blank line that ends an HTTP request head.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Err(std::io::Error::other("request head too long"));
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
