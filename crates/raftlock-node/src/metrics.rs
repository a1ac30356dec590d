//! A node's metrics in the Prometheus text format (version 0.0.4), and the
//! small HTTP endpoint that serves them (`GET /metrics`) with a health
//! check (`GET /health`: 200 while a leader is known, else 503).
//!
//! Three kinds of series:
//! - Raft, from openraft's metrics: term, role, leader, log and applied
//!   indexes, time since the leader last heard from a quorum.
//! - The lock state, from the replicated state machine: leases, locks and
//!   waiters now, and counters since the cluster began (grants, releases,
//!   expiries...). These are the same on every node at the same index.
//! - Latency histograms of this node's work: writes as callers see them,
//!   log flushes (sled write + fsync), AppendEntries round trips per peer
//!   (leader) and AppendEntries taken in (follower). These say where a
//!   write's time goes (docs/performance.md).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::ServerState;
use raftlock_store::metrics::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::Api;

/// The histograms a node keeps.
#[derive(Debug, Default)]
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
}

impl NodeMetrics {
    pub(crate) fn new(log_flushes: Arc<Histogram>) -> Self {
        NodeMetrics {
            log_flushes,
            ..NodeMetrics::default()
        }
    }
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

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {value}");
}

fn histogram_head(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
}

/// Every series of this node, as Prometheus text.
pub(crate) fn render(api: &Api) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let id = api.id;
    gauge(&mut out, "raftlock_node_id", "This node's id.", id);
    {
        let m = api.raft.metrics();
        let m = m.borrow();
        gauge(
            &mut out,
            "raftlock_raft_term",
            "Current Raft term.",
            m.current_term,
        );
        let role = match m.state {
            ServerState::Leader => 3,
            ServerState::Candidate => 2,
            ServerState::Follower => 1,
            ServerState::Learner | ServerState::Shutdown => 0,
        };
        gauge(
            &mut out,
            "raftlock_raft_role",
            "0 learner or stopped, 1 follower, 2 candidate, 3 leader.",
            role,
        );
        gauge(
            &mut out,
            "raftlock_raft_leader_id",
            "The leader this node knows of (0: none).",
            m.current_leader.unwrap_or(0),
        );
        gauge(
            &mut out,
            "raftlock_raft_last_log_index",
            "Index of the last entry in this node's log.",
            m.last_log_index.unwrap_or(0),
        );
        gauge(
            &mut out,
            "raftlock_raft_applied_index",
            "Index of the last entry applied to this node's state.",
            m.last_applied.map_or(0, |l| l.index),
        );
        gauge(
            &mut out,
            "raftlock_raft_snapshot_index",
            "Index covered by this node's latest snapshot (0: none).",
            m.snapshot.map_or(0, |l| l.index),
        );
        gauge(
            &mut out,
            "raftlock_raft_purged_index",
            "Log entries up to this index were purged (0: none).",
            m.purged.map_or(0, |l| l.index),
        );
        if let Some(ms) = m.millis_since_quorum_ack {
            gauge(
                &mut out,
                "raftlock_raft_millis_since_quorum_ack",
                "Leader only: milliseconds since a quorum last acknowledged it.",
                ms,
            );
        }
    }
    api.state.read(|s| {
        gauge(
            &mut out,
            "raftlock_leases",
            "Leases alive now.",
            s.lease_count(),
        );
        gauge(
            &mut out,
            "raftlock_locks",
            "Locks held or waited for now.",
            s.lock_count(),
        );
        gauge(
            &mut out,
            "raftlock_waiters",
            "Queued acquire requests now.",
            s.waiter_count(),
        );
        let c = s.counters();
        for (name, help, value) in [
            (
                "raftlock_leases_granted_total",
                "Leases granted.",
                c.leases_granted,
            ),
            (
                "raftlock_leases_revoked_total",
                "Leases revoked by their clients.",
                c.leases_revoked,
            ),
            (
                "raftlock_leases_expired_total",
                "Leases expired (keep-alives stopped).",
                c.leases_expired,
            ),
            (
                "raftlock_grants_total",
                "Holds granted (immediately or from a queue).",
                c.grants,
            ),
            (
                "raftlock_grants_from_queue_total",
                "Queued requests granted.",
                c.grants_from_queue,
            ),
            (
                "raftlock_releases_total",
                "Holds released by their holders or cancels.",
                c.releases,
            ),
            (
                "raftlock_force_releases_total",
                "Holds removed by force-release.",
                c.force_releases,
            ),
            (
                "raftlock_queued_total",
                "Acquire requests that had to queue.",
                c.queued,
            ),
            (
                "raftlock_waits_cancelled_total",
                "Queued requests withdrawn.",
                c.waits_cancelled,
            ),
            (
                "raftlock_rejected_total",
                "Commands the state machine refused.",
                c.rejected,
            ),
        ] {
            counter(&mut out, name, help, value);
        }
    });
    counter(
        &mut out,
        "raftlock_peer_messages_refused_total",
        "Peer messages this node refused: bad checksum, undecodable, meant for another node, a damaged snapshot.",
        api.metrics.peer_refused.load(Ordering::Relaxed),
    );
    gauge(
        &mut out,
        "raftlock_watchers",
        "Watch streams open on this node.",
        api.watch.watcher_count(),
    );

    let metrics = &api.metrics;
    for (name, help, histogram) in [
        (
            "raftlock_write_duration_seconds",
            "Writes through this node (forwarded ones included), call to answer.",
            &metrics.writes,
        ),
        (
            "raftlock_log_flush_duration_seconds",
            "Group flushes of this node's Raft log (sled write + fsync).",
            &*metrics.log_flushes,
        ),
        (
            "raftlock_append_entries_taken_duration_seconds",
            "Follower: AppendEntries with entries taken in (append + flush) by this node's Raft.",
            &*metrics.appends_taken,
        ),
    ] {
        histogram_head(&mut out, name, help);
        histogram.render(name, "", &mut out);
    }
    for (listener, refusals) in [
        ("client", &metrics.client_refusals),
        ("peer", &metrics.peer_refusals),
    ] {
        use std::sync::atomic::Ordering::Relaxed;
        counter(
            &mut out,
            &format!("raftlock_{listener}_connections_over_limit_total"),
            &format!(
                "Connections the {listener} listener closed at once: it had max_connections open."
            ),
            refusals.over_limit.load(Relaxed),
        );
        counter(
            &mut out,
            &format!("raftlock_{listener}_tls_handshakes_failed_total"),
            &format!("TLS handshakes on the {listener} listener that failed or timed out."),
            refusals.handshakes.load(Relaxed),
        );
    }
    let name = "raftlock_peer_append_entries_duration_seconds";
    histogram_head(
        &mut out,
        name,
        "Leader: AppendEntries round trips with entries to each peer.",
    );
    for (peer, times) in api.network.append_times() {
        times.render(name, &format!("peer=\"{peer}\""), &mut out);
    }
    out
}

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
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(&api),
        ),
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
