//! The rest of the CLI as the real binary against `raftlock dev` on free
//! ports: `extend`, `force-release`, `lease keep-alive`, the `cluster`
//! group (with a fourth `raftlock serve` process added, promoted and
//! removed), and the exit code of each failure class.

use std::io::{BufRead, BufReader};

use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// The numbers in a JSON array (node ids).
fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .filter_map(Value::as_u64)
        .collect()
}

#[test]
fn extend_force_release_and_keep_alive() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path());

    let got = dev.json(&["acquire", "jobs/ext", "--ttl", "5s", "--json"]);
    let lease = got["lease_id"].as_u64().expect("lease").to_string();
    let token = got["token"].as_u64().expect("token").to_string();

    // extend: a new ttl, counted on the hold.
    let ext = dev.json(&[
        "extend", "jobs/ext", "--token", &token, "--lease", &lease, "--ttl", "1m", "--json",
    ]);
    assert_eq!(ext["ttl_ms"].as_u64(), Some(60_000), "{ext}");
    assert_eq!(ext["extensions"].as_u64(), Some(1), "{ext}");
    let info = dev.json(&["inspect", "jobs/ext", "--json"]);
    assert_eq!(info["holders"][0]["extensions"].as_u64(), Some(1), "{info}");
    let (code, out, err) = dev.run(&["extend", "jobs/ext", "--token", &token, "--lease", &lease]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("extension 2"), "{out}");

    // force-release: the hold goes, its token becomes stale.
    let forced = dev.json(&["force-release", "jobs/ext", "--json"]);
    assert_eq!(
        forced["released"][0]["lease_id"].as_u64(),
        got["lease_id"].as_u64(),
        "{forced}"
    );
    assert_eq!(
        forced["released"][0]["token"].as_u64(),
        got["token"].as_u64(),
        "{forced}"
    );
    assert_eq!(
        dev.json(&["inspect", "jobs/ext", "--json"])["free"],
        Value::Bool(true)
    );
    let (code, _, err) = dev.run(&["release", "jobs/ext", "--token", &token, "--lease", &lease]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("stale"), "{err}");
    let (code, _, err) = dev.run(&["extend", "jobs/ext", "--token", &token, "--lease", &lease]);
    assert_eq!(code, 1, "{err}");
    // A lock nobody holds: nothing to force, exit 1.
    let (code, _, err) = dev.run(&["force-release", "jobs/ext"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("LOCK_NOT_FOUND"), "{err}");

    // lease keep-alive: renewals as JSON lines (a 1 s ttl renews every
    // ~333 ms), stops cleanly on SIGINT.
    let short = dev.json(&["lease", "grant", "--ttl", "1s", "--json"]);
    let short_id = short["lease_id"].as_u64().expect("lease").to_string();
    let log = tmp.path().join("keep-alive.log");
    let mut child = dev
        .cmd(&["lease", "keep-alive", &short_id, "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(append(&log))
        .spawn()
        .expect("spawn keep-alive");
    let stdout = child.stdout.take().expect("stdout");
    let mut ka = Proc { child, log };
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut renewals = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while renewals < 4 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("only {renewals} renewals: {}", ka.log_text()));
        let r: Value = serde_json::from_str(&line).expect("a JSON line");
        assert_eq!(r["lease_id"].as_u64(), short["lease_id"].as_u64(), "{r}");
        assert_eq!(r["ttl_ms"].as_u64(), Some(1000), "{r}");
        renewals += 1;
    }
    // Four renewals span more than the 1 s ttl: the lease is alive only
    // because of them.
    let listed = dev.json(&["lease", "list", "--json"]);
    assert!(
        ids(&Value::Array(
            listed
                .as_array()
                .expect("array")
                .iter()
                .map(|l| l["lease_id"].clone())
                .collect()
        ))
        .contains(&short["lease_id"].as_u64().expect("id")),
        "{listed}"
    );
    signal(ka.pid(), libc::SIGINT);
    let status = ka
        .wait_exit(Duration::from_secs(10))
        .expect("keep-alive stops on SIGINT");
    assert_eq!(status.code(), Some(0), "{}", ka.log_text());

    // Once nothing keeps it alive it expires; keep-alive on it exits 4.
    let short_lease = short["lease_id"].as_u64();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dev
        .json(&["lease", "list", "--json"])
        .as_array()
        .expect("array")
        .iter()
        .any(|l| l["lease_id"].as_u64() == short_lease)
    {
        assert!(Instant::now() < deadline, "lease {short_id} never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, _, err) = dev.run(&["lease", "keep-alive", &short_id]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("LEASE_NOT_FOUND"), "{err}");
}

#[test]
fn each_failure_class_has_its_exit_code() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path());

    // Bad duration: 2 (clap's usage error), for every command that takes one.
    for args in [
        &["acquire", "x", "--ttl", "5x"][..],
        &["acquire", "x", "--wait", "soon"][..],
        &["lease", "grant", "--ttl", "-1s"][..],
        &["exec", "x", "--ttl", "1y", "--", "true"][..],
    ] {
        let (code, _, err) = dev.run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    // Invalid input the server rejects: 2.
    let (code, _, err) = dev.run(&["lease", "grant", "--ttl", "100ms"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("TTL_OUT_OF_RANGE"), "{err}");

    // Unknown lease: 4.
    for args in [
        &["acquire", "x", "--lease", "987654321", "--wait", "0"][..],
        &["release", "x", "--token", "1", "--lease", "987654321"][..],
        &["lease", "keep-alive", "987654321"][..],
    ] {
        let (code, _, err) = dev.run(args);
        assert_eq!(code, 4, "{args:?}: {err}");
    }

    // Stale token: 1.
    let got = dev.json(&["acquire", "codes/held", "--ttl", "1m", "--json"]);
    let lease = got["lease_id"].as_u64().expect("lease").to_string();
    let stale = (got["token"].as_u64().expect("token") + 1000).to_string();
    let (code, _, err) = dev.run(&[
        "release",
        "codes/held",
        "--token",
        &stale,
        "--lease",
        &lease,
    ]);
    assert_eq!(code, 1, "{err}");

    // Busy: 3 (acquire and exec).
    let (code, _, err) = dev.run(&["acquire", "codes/held", "--wait", "0"]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = dev.run(&["exec", "codes/held", "--wait", "0", "--", "true"]);
    assert_eq!(code, 3, "{err}");

    // Output into a pipe closed early (`| head`, `| grep -q`): the command
    // ends quietly (SIGPIPE, as `cat` does), never with a panic.
    let err_path = tmp.path().join("pipe.err");
    let mut child = dev
        .cmd(&["inspect", "codes/held", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(append(&err_path))
        .spawn()
        .expect("spawn inspect");
    drop(child.stdout.take());
    let mut piped = Proc {
        child,
        log: err_path,
    };
    let status = piped.wait_exit(CLI_BOUND).expect("inspect exits");
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGPIPE),
            "{status}: {}",
            piped.log_text()
        );
    }
    assert!(
        !piped.log_text().contains("panicked"),
        "{}",
        piped.log_text()
    );

    // Unreachable endpoints: 1, promptly, with what to do.
    let closed = format!("127.0.0.1:{}", free_ports(1)[0]);
    for args in [
        &["acquire", "x", "--wait", "0"][..],
        &["inspect", "x"][..],
        &["exec", "x", "--", "true"][..],
        &["cluster", "promote", "4"][..],
        &["status"][..],
    ] {
        let cmd = with_endpoints(args, &closed);
        let started = Instant::now();
        let (status, _, err) = run_bounded(cmd, tmp.path(), CLI_BOUND);
        assert_eq!(status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("raftlock dev") || err.contains("UNAVAILABLE"),
            "{args:?}: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
}

/// Waits until `port` answers Status (bounded).
fn wait_serving(port: u16, proc: &mut Proc, rt: &tokio::runtime::Runtime) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = proc.exited() {
            panic!("node 4 exited {status}: {}", proc.log_text());
        }
        if rt.block_on(status(port)).is_some() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 not serving: {}",
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cluster_group_shows_status_and_adds_promotes_and_removes_a_fourth_node() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let s = dev.json(&["cluster", "status", "--leader", "--json"]);
    assert_eq!(s["role"], "leader", "{s}");
    assert_eq!(s["nodes"].as_array().map(Vec::len), Some(3), "{s}");
    assert!(
        s["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .all(|n| n["voter"] == Value::Bool(true))
    );
    // The top-level `status` still answers the same.
    let top = dev.json(&["status", "--json"]);
    assert_eq!(top["nodes"].as_array().map(Vec::len), Some(3), "{top}");
    let (code, out, err) = dev.run(&["cluster", "status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("leader"), "{out}");

    // Bad requests: 2.
    let (code, _, err) = dev.run(&["cluster", "promote", "99"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a learner"), "{err}");
    let (code, _, err) = dev.run(&["cluster", "remove", "99"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = dev.run(&["cluster", "add-learner", "0", "127.0.0.1:1"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = dev.run(&["cluster", "add-learner", "4", "no-port"]);
    assert_eq!(code, 2, "{err}");

    // A fourth node: `raftlock serve` without --peers waits to be added.
    let mut node4 = None;
    for attempt in 0..5 {
        let ports = free_ports(2);
        let (port, peer_port) = (ports[0], ports[1]);
        let mut cmd = raftlock();
        cmd.args([
            "serve",
            "--insecure",
            "--id",
            "4",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--peer-listen",
            &format!("127.0.0.1:{peer_port}"),
        ])
        .arg("--data-dir")
        .arg(tmp.path().join(format!("node4-{attempt}")));
        let mut p = Proc::spawn(cmd, &tmp.path().join(format!("node4-{attempt}.log")));
        std::thread::sleep(Duration::from_millis(200));
        if p.exited().is_some() && p.log_text().contains("in use") {
            continue;
        }
        wait_serving(port, &mut p, &rt);
        node4 = Some((p, port, peer_port));
        break;
    }
    let (mut node4, port, peer_port) = node4.expect("node 4 started on a free port");
    // The membership names peer addresses; clients use the client port.
    let addr = format!("127.0.0.1:{peer_port}");
    let client_addr = format!("127.0.0.1:{port}");

    let added = dev.json(&["cluster", "add-learner", "4", &addr, "--json"]);
    assert!(ids(&added["learners"]).contains(&4), "{added}");
    assert!(!ids(&added["voters"]).contains(&4), "{added}");
    assert!(added["revision"].as_u64().is_some_and(|r| r > 0), "{added}");

    let promoted = dev.json(&["cluster", "promote", "4", "--json"]);
    assert_eq!(ids(&promoted["voters"]), vec![1, 2, 3, 4], "{promoted}");
    assert!(ids(&promoted["learners"]).is_empty(), "{promoted}");

    // Node 4 itself now knows the 4-voter cluster and a leader.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut cmd = raftlock();
        cmd.args(["cluster", "status", "--json", "--endpoints", &client_addr]);
        let (status, out, err) = run_bounded(cmd, tmp.path(), CLI_BOUND);
        assert!(status.success(), "{err}");
        let s: Value = serde_json::from_str(&out).expect("JSON");
        let voters = s["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter(|n| n["voter"] == Value::Bool(true))
            .count();
        if s["node_id"].as_u64() == Some(4) && voters == 4 && s["leader_id"].as_u64().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 never saw the new membership: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And the cluster still grants locks with four voters.
    dev.json(&["acquire", "after/promote", "--json"]);

    let (code, out, err) = dev.run(&["cluster", "remove", "4"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("removed node 4") && out.contains("voters    1, 2, 3"),
        "{out}"
    );
    let s = dev.json(&["cluster", "status", "--leader", "--json"]);
    let members: Vec<u64> = s["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_u64())
        .collect();
    assert_eq!(members, vec![1, 2, 3], "{s}");
    node4.kill();

    // The same with --json: a learner added without waiting (nothing runs
    // at its address), then removed.
    let nowhere = format!("127.0.0.1:{}", free_ports(1)[0]);
    let added = dev.json(&[
        "cluster",
        "add-learner",
        "5",
        &nowhere,
        "--no-wait",
        "--json",
    ]);
    assert_eq!(ids(&added["learners"]), vec![5], "{added}");
    let removed = dev.json(&["cluster", "remove", "5", "--json"]);
    assert_eq!(ids(&removed["voters"]), vec![1, 2, 3], "{removed}");
    assert!(ids(&removed["learners"]).is_empty(), "{removed}");
    assert!(
        removed["revision"].as_u64() > added["revision"].as_u64(),
        "{added} then {removed}"
    );
    let (code, _, err) = dev.run(&["cluster", "remove", "5", "--json"]);
    assert_eq!(code, 2, "no longer a member: {err}");
}
