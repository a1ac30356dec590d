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

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use raftlock_node::{NodeConfig, RaftTiming};
use raftlock_testkit::cluster::Cluster as Nodes;
use raftlock_testkit::ports::free_ports;
use raftlock_testkit::process::{self, run_bounded};

const BIN: &str = env!("CARGO_BIN_EXE_raftlock-bench");

/// How long stopping the cluster may take when a test ends.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// A `raftlock-bench` command with no configuration leaking in from the
/// environment of whoever runs the tests (RAFTLOCK_ENDPOINTS).
fn raftlock_bench() -> Command {
    process::command(Path::new(BIN))
}

/// `raftlock dev`'s settings rather than the test kit's fast elections: a
/// measurement must not meet an election on a busy machine.
fn like_dev(c: &mut NodeConfig) {
    c.raft = RaftTiming::default();
    c.cache_capacity_bytes = 16 * 1024 * 1024;
}

/// The test kit's 3-node cluster on loopback, on a runtime of its own
/// (whose threads serve while the test waits for the bench process);
/// stopped when dropped.
struct Cluster {
    rt: tokio::runtime::Runtime,
    nodes: Option<Nodes>,
    /// host:port of every node, comma-separated, for --endpoints.
    endpoints: String,
}

impl Cluster {
    fn start() -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("cluster")
            .build()
            .expect("tokio runtime");
        let nodes = rt.block_on(Nodes::start_with(3, like_dev));
        let endpoints = nodes.addrs.values().cloned().collect::<Vec<_>>().join(",");
        Cluster {
            rt,
            nodes: Some(nodes),
            endpoints,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(nodes) = self.nodes.take() {
            // Bounded: a node that does not stop must not hang the test run.
            self.rt
                .block_on(async { tokio::time::timeout(SHUTDOWN_TIMEOUT, nodes.shutdown()).await })
                .ok();
        }
    }
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
    // The longest stretch without a completed cycle holds at least the
    // typical cycle (HDR values are rounded to 3 digits: allow 0.1 %), and
    // no more than the window.
    let gap = r["gap_ms_max"].as_f64().expect("gap_ms_max");
    let p50 = r["cycle_ms_p50"].as_f64().expect("cycle_ms_p50");
    assert!(gap >= p50 * 0.999, "gap {gap} < cycle p50 {p50}: {r}");
    assert!(
        gap <= duration_s * 1000.0,
        "gap {gap} beyond the window: {r}"
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
    let port = free_ports(1)[0];
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

/// Every node of `cluster` reports no lease and no lock, within 10 s (a
/// follower applies the revoke a moment after the leader).
fn wait_until_empty(cluster: &Cluster) {
    let endpoints: Vec<String> = cluster.endpoints.split(',').map(str::to_string).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let counts: Vec<(u64, u64)> = cluster.rt.block_on(async {
            let mut counts = Vec::new();
            for e in &endpoints {
                if let Ok(s) = raftlock_client::Client::status_of(e, Duration::from_secs(2)).await {
                    counts.push((s.leases, s.locks));
                }
            }
            counts
        });
        if counts.len() == endpoints.len() && counts.iter().all(|c| *c == (0, 0)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leases and locks (per node) are still {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn failover_client_moves_past_a_refused_endpoint_holds_the_lock_and_cleans_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start();
    // A port nobody listens on first: the first attempt is refused, and
    // the client must go on to the next endpoint after its pause.
    let dead = free_ports(1)[0];
    let endpoints = format!("127.0.0.1:{dead},{}", cluster.endpoints);
    let r = bench_json(
        &endpoints,
        tmp.path(),
        &[
            "--workload",
            "failover",
            "--duration",
            "20s",
            "--since-epoch",
            "1000000000.5",
        ],
    );
    assert_eq!(r["target"], "raftlock", "{r}");
    assert_eq!(r["workload"], "failover", "{r}");
    assert_eq!(r["measured_from"], "since-epoch", "{r}");
    let attempts = r["attempts"].as_u64().expect("attempts");
    assert!(attempts >= 2, "the refused endpoint took no attempt: {r}");
    assert_eq!(r["errors_total"].as_u64(), Some(attempts - 1), "{r}");
    assert!(r["errors"]["CONNECT"].as_u64() >= Some(1), "{r}");
    assert_ne!(r["held_via"], format!("127.0.0.1:{dead}"), "{r}");
    assert!(
        r["lock"]
            .as_str()
            .is_some_and(|l| l.starts_with("bench/failover/")),
        "{r}"
    );
    // From an epoch long past, so the figure is large; not a timing claim.
    assert!(r["held_after_ms"].as_f64() > Some(1.0e9), "{r}");
    assert_eq!(r["retry_pause_ms"].as_f64(), Some(25.0), "{r}");
    assert_eq!(r["call_timeout_ms"].as_f64(), Some(1000.0), "{r}");
    // The lease was revoked after the measurement, its hold with it.
    wait_until_empty(&cluster);
}

#[test]
fn failover_client_with_no_node_gives_up_at_its_deadline_with_exit_1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dead = free_ports(1)[0];
    let mut cmd = raftlock_bench();
    cmd.args([
        "--workload",
        "failover",
        "--target",
        "etcd",
        "--endpoints",
        &format!("127.0.0.1:{dead}"),
        "--duration",
        "300ms",
    ]);
    let (status, _, err) = run_bounded(cmd, tmp.path(), Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("held no lock within 0.3 s") && err.contains("CONNECT"),
        "{err}"
    );
}

#[test]
fn failover_flags_with_a_throughput_workload_are_a_usage_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = raftlock_bench();
    cmd.args(["--workload", "seq", "--retry-pause", "10ms"]);
    let (status, _, err) = run_bounded(cmd, tmp.path(), Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--retry-pause applies only to --workload failover"),
        "{err}"
    );
}

/// scripts/bench.sh, which runs this benchmark's failover workload, checks
/// its arguments before it builds or starts anything: a bad one exits 2
/// with a message naming it.
#[test]
fn bench_sh_refuses_bad_failover_arguments_with_exit_2_and_a_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench.sh");
    let cases: [(&[&str], &str); 6] = [
        (
            &["--failover-rounds", "x"],
            "--failover-rounds must be a whole number",
        ),
        (
            &["--failover-rounds", "101"],
            "--failover-rounds must be at most 100",
        ),
        (&["--failover-rounds"], "--failover-rounds needs a value"),
        (
            &["--failover-only", "--failover-rounds", "0"],
            "leaves nothing to run",
        ),
        (
            &["--failover-call-timeout", "1m5s"],
            "--failover-call-timeout must look like 250ms or 1s",
        ),
        (&["--no-such-flag"], "unknown argument '--no-such-flag'"),
    ];
    for (args, message) in cases {
        let mut cmd = Command::new("bash");
        cmd.arg(&script).args(args);
        let (status, _, err) = run_bounded(cmd, tmp.path(), Duration::from_secs(20));
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
}
