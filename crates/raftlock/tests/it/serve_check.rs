//! `raftlock serve --check`: the whole configuration is resolved and its
//! files loaded, the result printed, and nothing opened or bound; a
//! mistake is exit 2 naming it.

use std::net::TcpListener;
use std::time::Duration;

use raftlock_testkit::certs::TestCa;

use crate::common::*;

const QUICK: Duration = Duration::from_secs(20);

fn check(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let mut cmd = raftlock();
    cmd.args(["serve", "--check"]).args(args).current_dir(dir);
    let (status, out, err) = run_bounded(cmd, dir, QUICK);
    (status.code().expect("exited normally"), out, err)
}

#[test]
fn check_prints_the_configuration_and_neither_creates_the_store_nor_binds() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port in use: a start would fail to bind it, a check does not try.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().expect("addr").to_string();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let (code, out, err) = check(
        &[
            "--insecure",
            "--id",
            "2",
            "--data-dir",
            &data_arg,
            "--listen",
            &listen,
            "--peers",
            "1=10.0.0.1:8401,2=10.0.0.2:8401,3=10.0.0.3:8401",
            "--max-leases",
            "77",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("id = 2"), "{out}");
    assert!(out.contains("max_leases = 77"), "{out}");
    assert!(out.contains("advertise = \"10.0.0.2:"), "{out}");
    // The safe default is printed, so an operator sees it.
    assert!(out.contains("initial_cluster_state = \"auto\""), "{out}");
    assert!(!data.exists(), "--check created the data directory");
    // What it printed is a config file that passes the check again.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &out).expect("write");
    let printed_arg = printed.display().to_string();
    let (code, again, err) = check(&["--config", &printed_arg], dir.path());
    assert_eq!(code, 0, "{err}");
    assert_eq!(again, out);
}

#[test]
fn check_loads_the_tls_files_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "");
    let node2 = ca.node(2, "");
    let (cert, key, ca_path) = (
        node2.cert.display().to_string(),
        node2.key.display().to_string(),
        ca.cert.display().to_string(),
    );
    let tls = |id: &'static str, cert: &str| {
        vec![
            "--id".to_string(),
            id.to_string(),
            "--data-dir".into(),
            "d".into(),
            "--listen".into(),
            "127.0.0.1:7401".into(),
            "--tls-cert".into(),
            cert.to_string(),
            "--tls-key".into(),
            key.clone(),
            "--tls-ca".into(),
            ca_path.clone(),
        ]
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        check(&args, dir.path())
    };
    let (code, out, err) = run(tls("2", &cert));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tls_cert = "), "{out}");
    // Node 2's certificate does not name node 1.
    let (code, _, err) = run(tls("1", &cert));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("node 1"), "{err}");
    // A missing file is named.
    let missing = dir.path().join("missing.crt").display().to_string();
    let (code, _, err) = run(tls("2", &missing));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.crt"), "{err}");
    // An auth file with a mistake stops the check as it stops a start.
    let auth = dir.path().join("auth.toml");
    std::fs::write(&auth, "[roles.x]\nbananas = 1\n").expect("write");
    let mut args = tls("2", &cert);
    args.extend(["--auth".to_string(), auth.display().to_string()]);
    let (code, _, err) = run(args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("auth.toml"), "{err}");
}

#[test]
fn id_from_hostname_takes_the_pod_ordinal_plus_one_and_refuses_a_name_without_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = [
        "--insecure",
        "--id-from-hostname",
        "--data-dir",
        "d",
        "--listen",
        "0.0.0.0:7401",
        "--peers",
        "1=raftlock-0.raftlock:8401,2=raftlock-1.raftlock:8401,3=raftlock-2.raftlock:8401",
    ];
    let with_hostname = |name: &str| {
        let mut cmd = raftlock();
        cmd.args(["serve", "--check"])
            .args(base)
            .env("RAFTLOCK_HOSTNAME", name);
        let (status, out, err) = run_bounded(cmd, dir.path(), QUICK);
        (status.code().expect("exited normally"), out, err)
    };
    let (code, out, err) = with_hostname("raftlock-2");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("id = 3\n"), "{out}");
    assert!(
        out.contains("advertise = \"raftlock-2.raftlock:7401\""),
        "{out}"
    );
    let (code, _, err) = with_hostname("lockbox");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("\"lockbox\"") && err.contains("-N"), "{err}");
    // With --id as well: which one is meant is unclear, so neither is taken.
    let mut cmd = raftlock();
    cmd.args(["serve", "--check", "--id", "1"])
        .args(base)
        .env("RAFTLOCK_HOSTNAME", "raftlock-0");
    let (status, _, err) = run_bounded(cmd, dir.path(), QUICK);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("exclude each other"), "{err}");
}

#[test]
fn check_prints_the_initial_cluster_state_given_by_flag_or_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "--insecure",
        "--id",
        "1",
        "--data-dir",
        "d",
        "--listen",
        "127.0.0.1:7401",
        "--peers",
        "1=127.0.0.1:8401,2=127.0.0.1:8402,3=127.0.0.1:8403",
    ];
    let mut with_flag = args.to_vec();
    with_flag.extend(["--initial-cluster-state", "existing"]);
    let (code, out, err) = check(&with_flag, dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("initial_cluster_state = \"existing\""),
        "{out}"
    );

    let mut cmd = raftlock();
    cmd.args(["serve", "--check"])
        .args(args)
        .env("RAFTLOCK_INITIAL_CLUSTER_STATE", "new");
    let (status, out, err) = run_bounded(cmd, dir.path(), QUICK);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(out.contains("initial_cluster_state = \"new\""), "{out}");
}
