//! The people-and-scripts commands (`lease`, `acquire`, `release`,
//! `inspect`, `list`, `watch`) run as the real binary against `raftlock dev`
//! on free ports, with their exit codes.

mod common;

use std::io::{BufRead, BufReader};

use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
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
