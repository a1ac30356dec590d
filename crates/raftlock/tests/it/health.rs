//! `raftlock health`: exit 0 only while the node answers SERVING (it knows
//! a leader), 1 while it answers NOT_SERVING or cannot be reached; TLS as
//! for the other commands.

use std::path::Path;
use std::time::{Duration, Instant};

use raftlock_testkit::certs::TestCa;
use raftlock_testkit::process::{peers, serve_command};

use crate::common::*;

const RUN: Duration = Duration::from_secs(20);

/// `raftlock health ARGS` with `envs`: (exit code, stdout, stderr).
fn health(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = raftlock();
    cmd.arg("health").args(args).envs(envs.iter().copied());
    let (status, out, err) = run_bounded(cmd, dir, RUN);
    (status.code().unwrap_or(-1), out, err)
}

/// Runs `health` until `done` says its answer is the awaited one, for at
/// most `within`; returns that answer.
fn health_until(
    dir: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    within: Duration,
    done: impl Fn(&(i32, String, String)) -> bool,
) -> (i32, String, String) {
    let deadline = Instant::now() + within;
    loop {
        let answer = health(dir, args, envs);
        if done(&answer) || Instant::now() >= deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn health_exits_0_only_while_the_node_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(4);
    let (p1, p2, pp1, pp2) = (ports[0], ports[1], ports[2], ports[3]);
    let peers = peers([(1, pp1), (2, pp2)]);
    let bin = Path::new(BIN);
    let endpoint = format!("127.0.0.1:{p1}");
    let args = ["--endpoint", endpoint.as_str()];

    // Nothing listens yet: unreachable is a failure, not a hang.
    let (code, _, err) = health(dir.path(), &args, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&endpoint), "{err}");

    // Node 1 alone of a 2-node cluster: up, but no leader without node 2.
    let _n1 = Proc::spawn(
        serve_command(bin, 1, &dir.path().join("n1"), p1, pp1, &peers),
        &dir.path().join("n1.log"),
    );
    let answer = health_until(dir.path(), &args, &[], RUN, |(_, _, err)| {
        err.contains("NOT_SERVING")
    });
    assert_eq!(answer.0, 1, "{answer:?}");
    assert!(answer.2.contains("NOT_SERVING"), "{answer:?}");

    // With node 2 a leader is elected: SERVING, exit 0.
    let _n2 = Proc::spawn(
        serve_command(bin, 2, &dir.path().join("n2"), p2, pp2, &peers),
        &dir.path().join("n2.log"),
    );
    let answer = health_until(dir.path(), &args, &[], Duration::from_secs(30), |a| {
        a.0 == 0
    });
    assert_eq!(answer.0, 0, "{answer:?}");
    assert!(answer.1.contains("SERVING"), "{answer:?}");
    // Every service the node names answers the same.
    let (code, _, err) = health(
        dir.path(),
        &[
            "--endpoint",
            endpoint.as_str(),
            "--service",
            "raftlock.v1.Locks",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn health_speaks_tls_with_the_ca_from_the_flag_or_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "");
    let node = ca.node(1, "");
    let ports = free_ports(2);
    let (port, peer_port) = (ports[0], ports[1]);
    let mut cmd = raftlock();
    cmd.arg("serve")
        .args(["--id", "1", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--peer-listen")
        .arg(format!("127.0.0.1:{peer_port}"))
        .arg("--peers")
        .arg(peers([(1, peer_port)]))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&node.cert)
        .arg("--tls-key")
        .arg(&node.key)
        .arg("--tls-ca")
        .arg(&ca.cert);
    let _node = Proc::spawn(cmd, &dir.path().join("node.log"));
    let endpoint = format!("127.0.0.1:{port}");
    let ca_path = ca.cert.display().to_string();
    let args = ["--endpoint", endpoint.as_str(), "--ca", ca_path.as_str()];
    let answer = health_until(dir.path(), &args, &[], Duration::from_secs(30), |a| {
        a.0 == 0
    });
    assert_eq!(answer.0, 0, "{answer:?}");
    let (code, out, err) = health(
        dir.path(),
        &["--endpoint", endpoint.as_str()],
        &[("RAFTLOCK_CA", ca_path.as_str())],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("SERVING"), "{out}");
    // Plaintext to a TLS node: refused, exit 1.
    let (code, _, err) = health(dir.path(), &["--endpoint", endpoint.as_str()], &[]);
    assert_eq!(code, 1, "{err}");
}
