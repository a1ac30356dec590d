//! `raftlock serve` refuses bad input with exit code 2 and a message naming
//! what is wrong; runtime start failures exit 1; a signal stops it with 0.

use std::net::TcpListener;
use std::time::Duration;

use crate::common::*;

const QUICK: Duration = Duration::from_secs(20);

fn serve_fails(args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = raftlock();
    cmd.arg("serve").args(args);
    let (status, _, stderr) = run_bounded(cmd, dir.path(), QUICK);
    (status.code().expect("exited normally"), stderr)
}

#[test]
fn a_bad_flag_value_exits_2_naming_the_flag() {
    let (code, err) = serve_fails(&["--id", "abc", "--data-dir", "d", "--listen", "127.0.0.1:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--id"), "{err}");
}

#[test]
fn a_missing_required_option_exits_2_naming_it() {
    let (code, err) = serve_fails(&["--id", "1", "--data-dir", "d"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--listen"), "{err}");
}

#[test]
fn an_election_timeout_below_two_heartbeats_exits_2_naming_the_flags() {
    let (code, err) = serve_fails(&[
        "--insecure",
        "--id",
        "1",
        "--data-dir",
        "d",
        "--listen",
        "127.0.0.1:1",
        "--heartbeat-ms",
        "300",
        "--election-timeout-ms",
        "400-800",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--heartbeat-ms") && err.contains("--election-timeout-ms"),
        "{err}"
    );
}

#[test]
fn peers_without_this_node_exit_2() {
    let (code, err) = serve_fails(&[
        "--id",
        "4",
        "--data-dir",
        "d",
        "--listen",
        "127.0.0.1:1",
        "--peers",
        "1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--peers"), "{err}");
}

/// A bad `--initial-cluster-state` (flag, environment or file) exits 2
/// naming the option and the values it takes; `new` without `--peers` too.
#[test]
fn a_bad_initial_cluster_state_exits_2_naming_the_option_and_its_values() {
    let base = [
        "--insecure",
        "--id",
        "1",
        "--data-dir",
        "d",
        "--listen",
        "127.0.0.1:1",
        "--peers",
        "1=127.0.0.1:2,2=127.0.0.1:3",
    ];
    let mut args = base.to_vec();
    args.extend(["--initial-cluster-state", "fresh"]);
    let (code, err) = serve_fails(&args);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--initial-cluster-state")
            && err.contains("fresh")
            && err.contains("existing"),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = raftlock();
    cmd.arg("serve")
        .args(base)
        .env("RAFTLOCK_INITIAL_CLUSTER_STATE", "maybe");
    let (status, _, err) = run_bounded(cmd, dir.path(), QUICK);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("maybe") && err.contains("auto"), "{err}");

    let path = dir.path().join("raftlock.toml");
    std::fs::write(&path, "initial_cluster_state = \"later\"\n").expect("write config");
    let mut cmd = raftlock();
    cmd.arg("serve").args(base).arg("--config").arg(&path);
    let (status, _, err) = run_bounded(cmd, dir.path(), QUICK);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("later") && err.contains("initial_cluster_state"),
        "{err}"
    );

    let (code, err) = serve_fails(&[
        "--insecure",
        "--id",
        "1",
        "--data-dir",
        "d",
        "--listen",
        "127.0.0.1:1",
        "--initial-cluster-state",
        "new",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--initial-cluster-state") && err.contains("--peers"),
        "{err}"
    );
}

#[test]
fn an_unknown_key_in_the_config_file_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, key) in [
        (
            "id = 1\ndata_dir = \"d\"\nlisten = \"127.0.0.1:1\"\nheartbeat_millis = 50\n",
            "heartbeat_millis",
        ),
        (
            "id = 1\ndata_dir = \"d\"\nlisten = \"127.0.0.1:1\"\n[limits]\nmax_bananas = 3\n",
            "max_bananas",
        ),
    ] {
        let path = dir.path().join("raftlock.toml");
        std::fs::write(&path, text).expect("write config");
        let mut cmd = raftlock();
        cmd.arg("serve").arg("--config").arg(&path);
        let (status, _, err) = run_bounded(cmd, dir.path(), QUICK);
        assert_eq!(status.code(), Some(2), "{err}");
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn a_port_in_use_exits_1_with_the_reason() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = raftlock();
    cmd.arg("serve")
        .args([
            "--insecure",
            "--id",
            "1",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--peer-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    let (status, _, err) = run_bounded(cmd, dir.path(), QUICK);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("in use") && err.contains(&port.to_string()),
        "{err}"
    );
}

#[test]
fn a_data_dir_in_use_exits_1_and_sigint_stops_the_running_node_with_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let start = |port: u16, log: &str| {
        let mut cmd = raftlock();
        cmd.arg("serve")
            .args([
                "--insecure",
                "--id",
                "1",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--peer-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data);
        Proc::spawn(cmd, &dir.path().join(log))
    };
    // The first node, retried on a new port if another process took it.
    let mut first = None;
    for _ in 0..5 {
        let mut p = start(free_ports(1)[0], "first.log");
        let deadline = std::time::Instant::now() + QUICK;
        while std::time::Instant::now() < deadline {
            if p.exited().is_some() || p.log_text().contains("serving") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if p.exited().is_none() && p.log_text().contains("serving") {
            first = Some(p);
            break;
        }
    }
    let mut first = first.expect("the first node started");

    let mut cmd = raftlock();
    cmd.arg("serve")
        .args(["--insecure", "--id", "1", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data);
    let (status, _, err) = run_bounded(cmd, dir.path(), QUICK);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("already open"), "{err}");

    signal(first.pid(), libc::SIGINT);
    let status = first
        .wait_exit(Duration::from_secs(10))
        .expect("serve stops within 10 s of SIGINT");
    assert_eq!(status.code(), Some(0), "{}", first.log_text());
    assert!(first.log_text().contains("stopped"));
}

#[test]
fn without_tls_files_or_insecure_serve_exits_2_saying_how_to_choose() {
    let (code, err) = serve_fails(&["--id", "1", "--data-dir", "d", "--listen", "127.0.0.1:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--insecure") && err.contains("--tls-cert"),
        "{err}"
    );
    let (code, err) = serve_fails(&[
        "--id",
        "1",
        "--data-dir",
        "d",
        "--listen",
        "127.0.0.1:1",
        "--tls-cert",
        "node-1.crt",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("go together"), "{err}");
}

#[test]
fn the_peer_port_must_differ_from_the_client_port() {
    let (code, err) = serve_fails(&[
        "--insecure",
        "--id",
        "1",
        "--data-dir",
        "d",
        "--listen",
        "127.0.0.1:7401",
        "--peer-listen",
        "127.0.0.1:7401",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--peer-listen"), "{err}");
}

#[test]
fn unreadable_tls_files_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nowhere.crt");
    let missing = missing.to_str().expect("utf-8 path");
    let (code, err) = serve_fails(&[
        "--id",
        "1",
        "--data-dir",
        dir.path().join("d").to_str().expect("utf-8 path"),
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        missing,
        "--tls-key",
        missing,
        "--tls-ca",
        missing,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nowhere.crt"), "{err}");
}
