//! `raftlock-bench` against a real 3-node raftlock cluster: it completes
//! cycles without errors, its JSON figures agree with each other, and a bad
//! duration is a usage error that names the flag. No timing assertions: the
//! machine may be busy.
//!
//! The cluster runs in this test process, started through raftlock-node's
//! public `Node::start_on` (as `raftlock dev` starts its nodes): the
//! `raftlock` binary belongs to another package, so Cargo builds no
//! `CARGO_BIN_EXE_raftlock` for these tests. The bench itself runs as the
//! `raftlock-bench` binary, a separate process, as scripts/bench.sh runs it.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use raftlock_node::{Node, NodeConfig, NodeHandle};

const BIN: &str = env!("CARGO_BIN_EXE_raftlock-bench");

/// How long the cluster may take to elect a leader that every node knows.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long stopping the cluster may take when a test ends.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// A `raftlock-bench` command with no configuration leaking in from the
/// environment of whoever runs the tests (RAFTLOCK_ENDPOINTS).
fn raftlock_bench() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RAFTLOCK_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// A 3-node raftlock cluster on loopback in this process, on a runtime of
/// its own (whose threads serve while the test waits for the bench
/// process); stopped when dropped.
struct Cluster {
    rt: tokio::runtime::Runtime,
    nodes: Vec<NodeHandle>,
    /// host:port of every node, comma-separated, for --endpoints.
    endpoints: String,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    fn start() -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("cluster")
            .build()
            .expect("tokio runtime");
        let (nodes, members, dirs) = rt.block_on(async {
            // Bound before any node starts: port 0, so no other process can
            // take a port between choosing and binding it.
            let mut listeners = Vec::new();
            let mut members = BTreeMap::new();
            for id in 1..=3u64 {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind 127.0.0.1:0");
                members.insert(id, l.local_addr().expect("local_addr").to_string());
                listeners.push((id, l));
            }
            let (mut nodes, mut dirs) = (Vec::new(), Vec::new());
            for (id, listener) in listeners {
                let dir = tempfile::tempdir().expect("tempdir");
                let mut config = NodeConfig::new(id, dir.path(), members[&id].clone());
                config.initial_members = members.clone();
                // Three nodes in one process, little data (as `raftlock dev`).
                config.cache_capacity_bytes = 16 * 1024 * 1024;
                nodes.push(Node::start_on(config, listener).await.expect("node starts"));
                dirs.push(dir);
            }
            (nodes, members, dirs)
        });
        let cluster = Cluster {
            rt,
            nodes,
            endpoints: members.into_values().collect::<Vec<_>>().join(","),
            _dirs: dirs,
        };
        cluster.wait_leader();
        cluster
    }

    /// Waits until every node knows the same leader.
    fn wait_leader(&self) {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let leaders: Vec<Option<u64>> = self
                .nodes
                .iter()
                .map(|n| n.raft().metrics().borrow().current_leader)
                .collect();
            if leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no leader known to all nodes within {LEADER_TIMEOUT:?}: {leaders:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let nodes = std::mem::take(&mut self.nodes);
        // Bounded: a node that does not stop must not hang the test run.
        self.rt.block_on(async {
            let stop_all = async {
                for node in nodes {
                    node.shutdown().await;
                }
            };
            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, stop_all).await;
        });
    }
}

/// The last 6000 bytes of a file, for failure messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut start = text.len().saturating_sub(6000);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// Runs a command that is expected to finish, bounded by `within`;
/// returns (exit status, stdout, stderr).
fn run_bounded(mut cmd: Command, dir: &Path, within: Duration) -> (ExitStatus, String, String) {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = dir.join(format!("run-{n}.out"));
    let err = dir.join(format!("run-{n}.err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("stdout file"))
        .stderr(File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn raftlock-bench");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {within:?}; stderr:\n{}",
                tail(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(&err).unwrap_or_default(),
    )
}

/// A loopback port that was free a moment ago (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("local_addr")
        .port()
}

/// Runs `raftlock-bench ... --json` and returns the parsed object.
fn bench_json(endpoints: &str, dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut cmd = raftlock_bench();
    cmd.args(["--json", "--endpoints", endpoints]).args(args);
    let (status, out, err) = run_bounded(cmd, dir, Duration::from_secs(60));
    assert!(status.success(), "bench {args:?} failed ({status}): {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The figures of one run are whole and agree with each other.
fn check_report(r: &serde_json::Value, workload: &str, clients: u64) {
    assert_eq!(r["target"], "raftlock", "{r}");
    assert_eq!(r["workload"], workload, "{r}");
    assert_eq!(r["clients"].as_u64(), Some(clients), "{r}");
    let cycles = r["cycles"].as_u64().expect("cycles");
    assert!(cycles > 0, "no cycles: {r}");
    assert_eq!(r["errors_total"].as_u64(), Some(0), "errors: {r}");
    assert_eq!(r["errors"].as_object().map(|m| m.len()), Some(0), "{r}");
    let duration_s = r["duration_s"].as_f64().expect("duration_s");
    let per_s = r["cycles_per_s"].as_f64().expect("cycles_per_s");
    let expected = cycles as f64 / duration_s;
    assert!(
        (per_s - expected).abs() <= 0.01 + expected * 1e-6,
        "cycles_per_s {per_s} is not cycles / duration_s = {expected}: {r}"
    );
    for what in ["acquire", "cycle"] {
        let p50 = r[format!("{what}_ms_p50")].as_f64().expect("p50");
        let p99 = r[format!("{what}_ms_p99")].as_f64().expect("p99");
        let max = r[format!("{what}_ms_max")].as_f64().expect("max");
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{what}: {r}");
    }
    // A cycle contains its acquire.
    assert!(
        r["acquire_ms_p50"].as_f64() <= r["cycle_ms_p50"].as_f64(),
        "{r}"
    );
}

#[test]
fn bench_seq_and_contended_complete_cycles_without_errors_and_consistent_figures() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start();
    let endpoints = &cluster.endpoints;

    let seq = bench_json(
        endpoints,
        tmp.path(),
        &["--workload", "seq", "--duration", "1s", "--warmup", "0s"],
    );
    check_report(&seq, "seq", 1);
    assert_eq!(seq["duration_s"].as_f64(), Some(1.0), "{seq}");

    let contended = bench_json(
        endpoints,
        tmp.path(),
        &[
            "--workload",
            "contended",
            "--clients",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "0s",
        ],
    );
    check_report(&contended, "contended", 4);
}

#[test]
fn bench_with_a_bad_duration_exits_2_naming_the_flag() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = raftlock_bench();
    cmd.args(["--workload", "seq", "--duration", "5x"]);
    let (status, _, err) = run_bounded(cmd, tmp.path(), Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--duration") && err.contains("5x"), "{err}");
}

#[test]
fn bench_seq_with_several_clients_is_a_usage_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = raftlock_bench();
    cmd.args(["--workload", "seq", "--clients", "3"]);
    let (status, _, err) = run_bounded(cmd, tmp.path(), Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--clients"), "{err}");
}

#[test]
fn bench_with_zero_threads_is_a_usage_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = raftlock_bench();
    cmd.args(["--workload", "seq", "--threads", "0"]);
    let (status, _, err) = run_bounded(cmd, tmp.path(), Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--threads") && err.contains("1..=64"), "{err}");
}

#[test]
fn bench_exits_1_when_no_node_answers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut cmd = raftlock_bench();
    cmd.args([
        "--workload",
        "seq",
        "--endpoints",
        &format!("127.0.0.1:{port}"),
    ]);
    let (status, _, err) = run_bounded(cmd, tmp.path(), Duration::from_secs(40));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("no raftlock leader"), "{err}");
}

#[test]
fn bench_distinct_with_a_hold_holds_each_lock_that_long() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start();
    let endpoints = &cluster.endpoints;

    // 50 ms, not less: on a loopback cluster a release alone takes a few ms, so
    // a shorter hold could not be told from no hold at all.
    let clients = 4;
    let r = bench_json(
        endpoints,
        tmp.path(),
        &[
            "--workload",
            "distinct",
            "--clients",
            "4",
            "--hold",
            "50ms",
            "--threads",
            "2",
            "--duration",
            "1s",
            "--warmup",
            "0s",
        ],
    );
    check_report(&r, "distinct", clients);
    assert_eq!(r["hold_ms"].as_f64(), Some(50.0), "{r}");
    assert_eq!(r["threads"].as_u64(), Some(2), "{r}");
    // Every cycle is its acquire + 50 ms + its release, so each quantile
    // of the cycles is at least that of the acquires + 50 ms (less 1 % for
    // the histogram's precision) ...
    for q in ["p50", "p99", "max"] {
        let acquire = r[format!("acquire_ms_{q}")].as_f64().expect("acquire");
        let cycle = r[format!("cycle_ms_{q}")].as_f64().expect("cycle");
        assert!(
            cycle >= (acquire + 50.0) * 0.99,
            "cycle {q} {cycle} ms is not its acquire {acquire} ms + the 50 ms hold: {r}"
        );
    }
    // ... and each client completes at most 1 s / 50 ms of them (+1 for
    // one that started as the clock did).
    let cycles = r["cycles"].as_u64().expect("cycles");
    assert!(
        cycles <= clients * 21,
        "{cycles} cycles of at least 50 ms in 1 s by {clients} clients: {r}"
    );
}
