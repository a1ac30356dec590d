//! `raftlock dev`: a ready cluster in one process that `raftlock status`
//! can see, that stops with 0 on SIGTERM, and that comes back with its
//! state from the same directory.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use raftlock_proto::v1 as pb;
use raftlock_testkit::process::{self, DevProc, DevStart};

/// Starts `raftlock dev` on `base_port`.. with its data in `dir`.
fn start_dev(dir: &Path, base_port: u16, log: &Path) -> DevStart {
    process::start_dev_on(Path::new(BIN), dir, base_port, log)
}

fn status_json(endpoints: &str, dir: &Path) -> serde_json::Value {
    let mut cmd = raftlock();
    cmd.args(["status", "--json", "--endpoints", endpoints]);
    let (status, out, err) = run_bounded(cmd, dir, Duration::from_secs(20));
    assert!(status.success(), "status failed: {err}");
    serde_json::from_str(&out).expect("status --json prints JSON")
}

fn stop_with_sigterm(dev: &mut DevProc) {
    let sent = Instant::now();
    signal(dev.proc.pid(), libc::SIGTERM);
    let status = dev
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("raftlock dev stops within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", dev.proc.log_text());
    eprintln!("dev stopped {:?} after SIGTERM", sent.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_starts_a_cluster_that_status_sees_stops_on_sigterm_and_restarts_with_its_state() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = tmp.path().join("dev.log");
    let started = Instant::now();
    let mut attempt = 0;
    let (data, base, mut dev) = loop {
        attempt += 1;
        let data = tmp.path().join(format!("cluster{attempt}"));
        let base = free_port_run(3);
        match start_dev(&data, base, &log) {
            DevStart::Ready(dev) => break (data, base, dev),
            DevStart::Exited(why) if why.contains("in use") && attempt < 5 => continue,
            DevStart::Exited(why) => panic!("raftlock dev exited: {why}"),
        }
    };
    eprintln!("dev ready in {:?}", started.elapsed());
    let expected: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    assert_eq!(dev.endpoints, expected.join(","));

    let s = status_json(&dev.endpoints, tmp.path());
    assert!(s["leader_id"].as_u64().is_some(), "{s}");
    assert_eq!(s["nodes"].as_array().map(Vec::len), Some(3), "{s}");

    // Some state to find again after a restart.
    let lease = leases(base)
        .await
        .grant(pb::GrantLeaseRequest {
            ttl_ms: 120_000,
            owner: "dev-test".into(),
        })
        .await
        .expect("grant a lease")
        .into_inner()
        .lease_id;
    let s = status_json(&dev.endpoints, tmp.path());
    assert_eq!(s["leases"].as_u64(), Some(1), "{s}");

    // Each node serves its metrics 10 ports above its own.
    let leader = s["leader_id"].as_u64().expect("a leader");
    for id in 1..=3u16 {
        // A follower may apply the lease's entry a moment after the leader.
        let deadline = Instant::now() + Duration::from_secs(5);
        let metrics = loop {
            let metrics = http_get(base + 9 + id, "/metrics");
            if metrics.contains("\nraftlock_leases_granted_total 1\n") || Instant::now() > deadline
            {
                break metrics;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains(&format!("\nraftlock_node_id {id}\n")),
            "{metrics}"
        );
        assert!(
            metrics.contains("\nraftlock_leases_granted_total 1\n"),
            "{metrics}"
        );
        let (role, is_leader) = if u64::from(id) == leader {
            ("leader", 1)
        } else {
            ("follower", 0)
        };
        assert!(
            metrics.contains(&format!("\nraftlock_raft_role{{role=\"{role}\"}} 1\n")),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!("\nraftlock_is_leader {is_leader}\n")),
            "{metrics}"
        );
    }
    assert!(http_get(base + 10, "/health").starts_with("HTTP/1.1 200"));

    stop_with_sigterm(&mut dev);

    // Same directory, same ports: the same cluster, with its lease.
    let mut dev = match start_dev(&data, base, &log) {
        DevStart::Ready(dev) => dev,
        DevStart::Exited(why) => panic!("raftlock dev did not restart: {why}"),
    };
    let s = status_json(&dev.endpoints, tmp.path());
    assert!(s["leader_id"].as_u64().is_some(), "{s}");
    assert_eq!(s["leases"].as_u64(), Some(1), "{s}");
    let listed = leases(base + 1)
        .await
        .list(pb::ListLeasesRequest { stale: false })
        .await
        .expect("list leases")
        .into_inner();
    assert_eq!(listed.leases.len(), 1);
    assert_eq!(listed.leases[0].lease_id, lease);
    stop_with_sigterm(&mut dev);
    eprintln!("whole dev test {:?}", started.elapsed());
}

#[test]
fn dev_on_a_taken_port_names_it_and_suggests_base_port() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    // The taken port is node 2's.
    let base = port - 1;
    let mut cmd = raftlock();
    cmd.arg("dev")
        .arg("--dir")
        .arg(tmp.path().join("d"))
        .arg("--base-port")
        .arg(base.to_string());
    let (status, _, err) = run_bounded(cmd, tmp.path(), Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{err}");
    // Port `base` may itself be taken by someone else; either way the
    // message names a port and the way out.
    assert!(
        err.contains("in use") && err.contains("--base-port"),
        "{err}"
    );
}

#[test]
fn status_exits_1_when_no_node_answers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_ports(1)[0];
    let mut cmd = raftlock();
    cmd.args(["status", "--endpoints", &format!("127.0.0.1:{port}")]);
    let (status, _, err) = run_bounded(cmd, tmp.path(), Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("no raftlock node answered"), "{err}");
}

/// A plain HTTP GET on 127.0.0.1:`port`; the whole answer.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    answer
}

/// `raftlock dev | head -1`, or a script that closes the pipe once it has
/// the endpoints: the cluster keeps running (printing its banner into a
/// closed pipe used to panic the whole process).
#[test]
fn dev_keeps_running_when_its_stdout_is_closed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = tmp.path().join("dev.log");
    let mut attempt = 0;
    let (base, mut dev) = loop {
        attempt += 1;
        let base = free_port_run(3);
        let mut cmd = raftlock();
        cmd.arg("dev")
            .arg("--dir")
            .arg(tmp.path().join(format!("cluster{attempt}")))
            .arg("--base-port")
            .arg(base.to_string())
            .stdout(Stdio::piped());
        let mut dev = Proc::spawn_keeping_stdout(cmd, &log);
        // Close the read end before the banner is written.
        drop(dev.child.stdout.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut answered = false;
        while Instant::now() < deadline && dev.exited().is_none() {
            let (status, out, _) = run_bounded(
                {
                    let mut c = raftlock();
                    c.args(["status", "--json", "--endpoints"])
                        .arg(format!("127.0.0.1:{base}"));
                    c
                },
                tmp.path(),
                Duration::from_secs(5),
            );
            if status.success()
                && out.contains("\"leader_id\"")
                && !out.contains("\"leader_id\":null")
            {
                answered = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if answered {
            break (base, dev);
        }
        let why = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            why.contains("in use") && attempt < 5,
            "dev did not keep serving with its stdout closed: {why}"
        );
    };
    // Well after the banner was written into the closed pipe, still alive.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        dev.exited().is_none(),
        "dev exited: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (status, _, err) = run_bounded(
        {
            let mut c = raftlock();
            c.args(["status", "--endpoints"])
                .arg(format!("127.0.0.1:{}", base + 1));
            c
        },
        tmp.path(),
        Duration::from_secs(5),
    );
    assert!(status.success(), "{err}");
}
