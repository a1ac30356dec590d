//! The people-and-scripts commands (`lease`, `acquire`, `release`,
//! `inspect`, `list`, `watch`) run as the real binary against `raftlock dev`
//! on free ports, with their exit codes.

use std::io::{BufRead, BufReader};

use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

#[test]
fn lease_acquire_inspect_busy_release_and_the_exit_codes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path());

    let lease = dev.json(&[
        "lease", "grant", "--ttl", "1m", "--owner", "alice", "--json",
    ]);
    let lease_id = lease["lease_id"].as_u64().expect("lease_id");
    assert_eq!(lease["ttl_ms"].as_u64(), Some(60_000), "{lease}");
    let lease_s = lease_id.to_string();

    let got = dev.json(&[
        "acquire",
        "jobs/nightly",
        "--lease",
        &lease_s,
        "--reason",
        "nightly report",
        "--meta",
        "ticket=OPS-1",
        "--json",
    ]);
    assert_eq!(got["lease_id"].as_u64(), Some(lease_id), "{got}");
    let token = got["token"].as_u64().expect("token");
    let token_s = token.to_string();

    let info = dev.json(&["inspect", "jobs/nightly", "--json"]);
    assert_eq!(info["free"], Value::Bool(false), "{info}");
    let holder = &info["holders"][0];
    assert_eq!(holder["lease_id"].as_u64(), Some(lease_id), "{info}");
    assert_eq!(holder["token"].as_u64(), Some(token), "{info}");
    assert_eq!(holder["owner"], "alice", "{info}");
    assert_eq!(holder["reason"], "nightly report", "{info}");
    assert_eq!(holder["metadata"]["ticket"], "OPS-1", "{info}");

    // Busy: a second acquirer that does not wait exits 3.
    let (code, _, err) = dev.run(&["acquire", "jobs/nightly", "--wait", "0"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("LOCK_BUSY") && err.contains("raftlock inspect"),
        "{err}"
    );
    // And one that waits a little, too.
    let (code, _, err) = dev.run(&["acquire", "jobs/nightly", "--wait", "300ms"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("WAIT_TIMEOUT"), "{err}");

    // A wrong token: exit 1, and the message says the token is stale.
    let wrong = (token + 1000).to_string();
    let (code, _, err) = dev.run(&[
        "release",
        "jobs/nightly",
        "--token",
        &wrong,
        "--lease",
        &lease_s,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("stale"), "{err}");

    let (code, out, err) = dev.run(&[
        "release",
        "jobs/nightly",
        "--token",
        &token_s,
        "--lease",
        &lease_s,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("released jobs/nightly"), "{out}");

    let info = dev.json(&["inspect", "jobs/nightly", "--json"]);
    assert_eq!(info["free"], Value::Bool(true), "{info}");
    assert_eq!(info["holders"].as_array().map(Vec::len), Some(0), "{info}");
    let (code, out, _) = dev.run(&["inspect", "jobs/nightly"]);
    assert_eq!(code, 0);
    assert!(out.contains("is free"), "{out}");

    // Bad input exits 2 with what was wrong.
    let (code, _, err) = dev.run(&["acquire", "", "--wait", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("INVALID_NAME"), "{err}");
    let (code, _, err) = dev.run(&["acquire", "jobs/x", "--ttl", "5x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ms, s, m or h"), "{err}");

    // An unknown lease exits 4 and says to grant a new one.
    let (code, _, err) = dev.run(&["acquire", "jobs/x", "--lease", "987654321", "--wait", "0"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("LEASE_NOT_FOUND") && err.contains("lease grant"),
        "{err}"
    );

    let (code, _, err) = dev.run(&["lease", "revoke", &lease_s]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn list_and_watch_print_json() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path());

    // watch --json in the background: one JSON object per line.
    let mut cmd = dev.cmd(&["watch", "w/", "--json"]);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(append(&tmp.path().join("watch.log")))
        .spawn()
        .expect("spawn watch");
    let stdout = child.stdout.take().expect("stdout");
    let watch = Proc {
        child,
        log: tmp.path().join("watch.log"),
    };
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // The watch may open after an acquire: take a new lock until one is seen.
    let mut seen = None;
    'outer: for i in 0..5 {
        let name = format!("w/job{i}");
        let got = dev.json(&["acquire", &name, "--ttl", "1m", "--owner", "bob", "--json"]);
        let deadline = Instant::now() + Duration::from_secs(3);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let event: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("watch printed non-JSON ({e}): {line}"));
                    if event["type"] == "acquired" {
                        seen = Some((event, got));
                        break 'outer;
                    }
                }
                Err(_) => break,
            }
        }
    }
    let (event, got) = seen.unwrap_or_else(|| panic!("no event; watch log:\n{}", watch.log_text()));
    assert!(
        event["name"].as_str().unwrap_or("").starts_with("w/"),
        "{event}"
    );
    assert_eq!(event["owner"], "bob", "{event}");
    assert!(event["token"].as_u64().is_some_and(|t| t > 0), "{event}");
    if event["name"] == got["name"] {
        assert_eq!(event["token"], got["token"], "{event} vs {got}");
    }
    drop(watch); // killed

    // A lock outside the prefix, to see list filter.
    dev.json(&["acquire", "other/one", "--json"]);
    let listed = dev.json(&["list", "w/", "--json"]);
    let names: Vec<&str> = listed
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert!(!names.is_empty(), "{listed}");
    assert!(names.iter().all(|n| n.starts_with("w/")), "{listed}");
    let all = dev.json(&["list", "--json"]);
    assert!(
        all.as_array()
            .expect("array")
            .iter()
            .any(|l| l["name"] == "other/one"),
        "{all}"
    );

    let leases = dev.json(&["lease", "list", "--json"]);
    assert!(
        leases
            .as_array()
            .expect("array")
            .iter()
            .any(|l| l["owner"] == "bob"),
        "{leases}"
    );
}

/// Runs `raftlock ARGS` with no --endpoints and RAFTLOCK_ENDPOINTS set.
fn with_env_endpoints(dev: &Dev, endpoints: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = raftlock();
    cmd.args(args).env("RAFTLOCK_ENDPOINTS", endpoints);
    dev.run_cmd(cmd)
}

#[test]
fn raftlock_endpoints_env_names_the_cluster_and_endpoints_flag_overrides_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path());

    // Only the environment says where the cluster is.
    let (code, out, err) = with_env_endpoints(
        &dev,
        &dev.endpoints,
        &["acquire", "env/a", "--ttl", "1m", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let got: Value = serde_json::from_str(&out).expect("acquire JSON");
    let info = dev.json(&["inspect", "env/a", "--json"]);
    assert_eq!(info["holders"][0]["token"], got["token"], "{info} vs {got}");

    // A node that is not there, named only by the environment: exit 1 and
    // it says so (the default endpoints are not tried instead).
    let nobody = format!("127.0.0.1:{}", free_ports(1)[0]);
    let (code, _, err) = with_env_endpoints(&dev, &nobody, &["inspect", "env/a", "--json"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is the cluster running"), "{err}");

    // --endpoints wins over the environment.
    let mut cmd = dev.cmd(&["inspect", "env/a", "--json"]);
    cmd.env("RAFTLOCK_ENDPOINTS", &nobody);
    let (code, out, err) = dev.run_cmd(cmd);
    assert_eq!(code, 0, "{err}");
    let info: Value = serde_json::from_str(&out).expect("inspect JSON");
    assert_eq!(info["holders"][0]["token"], got["token"], "{info}");

    // exec reads it too, and hands it on to COMMAND.
    let mut cmd = raftlock();
    cmd.args([
        "exec",
        "env/b",
        "--",
        "sh",
        "-c",
        r#"test "$RAFTLOCK_ENDPOINTS" = "$WANT""#,
    ])
    .env("RAFTLOCK_ENDPOINTS", &dev.endpoints)
    .env("WANT", &dev.endpoints);
    let (code, _, err) = dev.run_cmd(cmd);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn shared_holds_and_semaphore_permits_are_counted_and_a_full_one_exits_3() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path());

    // Two readers share the lock; a writer is busy (3).
    let lease = dev.json(&["lease", "grant", "--ttl", "1m", "--json"]);
    let lease_s = lease["lease_id"].as_u64().expect("lease_id").to_string();
    let r1 = dev.json(&[
        "acquire", "rw/c", "--mode", "shared", "--lease", &lease_s, "--json",
    ]);
    let r2 = dev.json(&[
        "acquire", "rw/c", "--mode", "shared", "--ttl", "1m", "--json",
    ]);
    assert_eq!(
        (r1["mode"].as_str(), r2["mode"].as_str()),
        (Some("shared"), Some("shared"))
    );
    let info = dev.json(&["inspect", "rw/c", "--json"]);
    let holders = info["holders"].as_array().expect("holders");
    assert_eq!(holders.len(), 2, "{info}");
    assert!(holders.iter().all(|h| h["mode"] == "shared"), "{info}");
    assert_eq!(info["kind"], "read-write", "{info}");
    let (code, _, err) = dev.run(&["acquire", "rw/c", "--mode", "exclusive", "--wait", "0"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("LOCK_BUSY"), "{err}");
    // Another reader still gets in beside the two.
    let (code, _, err) = dev.run(&["acquire", "rw/c", "--mode", "shared", "--wait", "0"]);
    assert_eq!(code, 0, "{err}");

    // release --json: the names released and the entry's revision.
    let token1 = r1["token"].as_u64().expect("token");
    let released = dev.json(&[
        "release",
        "rw/c",
        "--token",
        &token1.to_string(),
        "--lease",
        &lease_s,
        "--json",
    ]);
    assert_eq!(
        released["released"],
        serde_json::json!(["rw/c"]),
        "{released}"
    );
    assert!(
        released["revision"].as_u64().is_some_and(|r| r > token1),
        "{released}"
    );
    let info = dev.json(&["inspect", "rw/c", "--json"]);
    assert_eq!(info["holders"].as_array().map(Vec::len), Some(2), "{info}");

    // A semaphore of 2: two permits, then busy (3) with the count in the
    // message; a different count is refused (1).
    let p1 = dev.json(&[
        "acquire",
        "pool/g",
        "--permits",
        "2",
        "--lease",
        &lease_s,
        "--json",
    ]);
    let p2 = dev.json(&[
        "acquire",
        "pool/g",
        "--permits",
        "2",
        "--ttl",
        "1m",
        "--json",
    ]);
    assert_eq!(p1["mode"], "semaphore", "{p1}");
    assert_eq!(p1["permits"].as_u64(), Some(2), "{p1}");
    assert!(p2["token"].as_u64() > p1["token"].as_u64(), "{p1} {p2}");
    let info = dev.json(&["inspect", "pool/g", "--json"]);
    assert_eq!(info["kind"], "semaphore", "{info}");
    assert_eq!(info["permits"].as_u64(), Some(2), "{info}");
    assert_eq!(info["holders"].as_array().map(Vec::len), Some(2), "{info}");
    let (code, _, err) = dev.run(&["acquire", "pool/g", "--permits", "2", "--wait", "0"]);
    assert_eq!(code, 3, "a full semaphore is busy: {err}");
    assert!(
        err.contains("LOCK_BUSY") && err.contains("2 holder(s)"),
        "{err}"
    );
    let (code, _, err) = dev.run(&["acquire", "pool/g", "--permits", "3", "--wait", "0"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("PERMITS_MISMATCH"), "{err}");
    let (code, _, err) = dev.run(&["acquire", "pool/g", "--permits", "0", "--wait", "0"]);
    assert_eq!(code, 2, "{err}");

    // lease revoke --json: what the lease held is released, by name.
    let revoked = dev.json(&["lease", "revoke", &lease_s, "--json"]);
    assert_eq!(
        revoked["lease_id"].as_u64(),
        lease["lease_id"].as_u64(),
        "{revoked}"
    );
    let mut names: Vec<&str> = revoked["released"]
        .as_array()
        .expect("released")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["pool/g"], "{revoked}");
    assert!(
        revoked["revision"].as_u64().is_some_and(|r| r > 0),
        "{revoked}"
    );
    // Its permit is free again: a third holder fits.
    let (code, _, err) = dev.run(&["acquire", "pool/g", "--permits", "2", "--wait", "0"]);
    assert_eq!(code, 0, "{err}");
}

/// Whether process `pid` ignores SIGPIPE (bit 13 of /proc's SigIgn mask).
fn ignores_sigpipe(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).expect("SigIgn mask"))
        .expect("SigIgn line");
    mask & (1 << (libc::SIGPIPE - 1)) != 0
}

/// `acquire --wait` and `lease keep-alive` outlive node restarts, so a
/// write to the socket of a node that died must be an error they retry,
/// not a SIGPIPE that kills them: they keep SIGPIPE ignored, and a closed
/// stdout ends them with exit 0 instead.
#[test]
fn acquire_and_keep_alive_ignore_sigpipe_and_exit_0_on_a_closed_stdout() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path());
    let holder = dev.json(&["acquire", "sp/x", "--ttl", "1m", "--json"]);
    let (token, lease) = (
        holder["token"].as_u64().expect("token").to_string(),
        holder["lease_id"].as_u64().expect("lease").to_string(),
    );

    // A waiter whose reader has already gone.
    let log = tmp.path().join("acquire-closed.log");
    let mut waiter = Proc::spawn_keeping_stdout(
        {
            let mut cmd = dev.cmd(&["acquire", "sp/x", "--ttl", "1m", "--wait", "30s"]);
            cmd.stdout(Stdio::piped());
            cmd
        },
        &log,
    );
    drop(waiter.child.stdout.take());
    let deadline = Instant::now() + Duration::from_secs(20);
    while dev.json(&["inspect", "sp/x", "--json"])["queue"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(
            Instant::now() < deadline && waiter.exited().is_none(),
            "the waiter never queued: {}",
            waiter.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        ignores_sigpipe(waiter.pid()),
        "acquire --wait lets SIGPIPE kill it"
    );
    let (code, _, err) = dev.run(&["release", "sp/x", "--token", &token, "--lease", &lease]);
    assert_eq!(code, 0, "{err}");
    let status = waiter.wait_exit(Duration::from_secs(20));
    let text = waiter.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}\n{text}");
    assert!(!text.contains("panicked"), "{text}");
    let info = dev.json(&["inspect", "sp/x", "--json"]);
    assert_eq!(info["holders"].as_array().map(Vec::len), Some(1), "{info}");

    // A keep-alive whose reader goes after the first renewal.
    let granted = dev.json(&["lease", "grant", "--ttl", "3s", "--json"]);
    let id = granted["lease_id"].as_u64().expect("lease_id").to_string();
    let log = tmp.path().join("keep-alive-closed.log");
    let mut keeper = Proc::spawn_keeping_stdout(
        {
            let mut cmd = dev.cmd(&["lease", "keep-alive", &id]);
            cmd.stdout(Stdio::piped());
            cmd
        },
        &log,
    );
    let mut stdout = BufReader::new(keeper.child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("first renewal");
    assert!(first.contains("renewed"), "{first}");
    assert!(
        ignores_sigpipe(keeper.pid()),
        "lease keep-alive lets SIGPIPE kill it"
    );
    drop(stdout);
    let status = keeper.wait_exit(Duration::from_secs(20));
    let text = keeper.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}\n{text}");
    assert!(text.contains("stdout closed"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}
