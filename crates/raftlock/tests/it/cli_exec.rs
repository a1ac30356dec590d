//! `raftlock exec NAME -- COMMAND` run as the real binary against
//! `raftlock dev` on free ports: the environment COMMAND sees, exit codes,
//! release afterwards, busy locks, Ctrl-C, lease loss, and mutual exclusion
//! between many processes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// Waits (bounded) until `path` exists.
fn wait_file(path: &Path, within: Duration, what: &dyn Fn() -> String) {
    let deadline = Instant::now() + within;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} not created within {within:?}: {}",
            path.display(),
            what()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn env_map(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn exec_gives_the_command_the_lock_passes_its_exit_code_and_releases() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path());

    // COMMAND records its environment and, through the endpoints it was
    // given, how the cluster sees the lock while it runs.
    let script = r#"env | grep '^RAFTLOCK_' > env.txt
"$RAFTLOCK_TEST_BIN" inspect "$RAFTLOCK_LOCK_NAME" --json > inspect.json || exit 99
exit 7"#;
    let (code, _, err) = dev.run_cmd(exec_cmd(
        &dev,
        &[
            "jobs/env",
            "--ttl",
            "5s",
            "--reason",
            "env check",
            "--meta",
            "k=v",
            // Passed on to COMMAND like the endpoints (the dev cluster
            // has no auth: it ignores it).
            "--auth-token",
            "rlt_exec-test",
        ],
        &["sh", "-c", script],
    ));
    assert_eq!(code, 7, "COMMAND's exit code passes through: {err}");

    let env = env_map(&std::fs::read_to_string(tmp.path().join("env.txt")).expect("env.txt"));
    assert_eq!(
        env.get("RAFTLOCK_LOCK_NAME").map(String::as_str),
        Some("jobs/env")
    );
    assert_eq!(
        env.get("RAFTLOCK_ENDPOINTS").map(String::as_str),
        Some(dev.endpoints.as_str())
    );
    assert_eq!(
        env.get("RAFTLOCK_LOCK_MODE").map(String::as_str),
        Some("exclusive")
    );
    assert_eq!(
        env.get("RAFTLOCK_TOKEN").map(String::as_str),
        Some("rlt_exec-test")
    );
    assert_eq!(
        env.get("RAFTLOCK_CA"),
        None,
        "no TLS file given, none passed"
    );
    assert_eq!(
        env.get("RAFTLOCK_LEASE_TTL_MS").map(String::as_str),
        Some("5000")
    );
    let token: u64 = env["RAFTLOCK_FENCING_TOKEN"]
        .parse()
        .expect("token is a number");
    let lease: u64 = env["RAFTLOCK_LEASE_ID"].parse().expect("lease is a number");
    assert!(token > 0);

    // While COMMAND ran, the cluster saw its lease holding the lock with
    // exactly that token.
    let seen: Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("inspect.json")).expect("inspect.json"),
    )
    .expect("inspect JSON");
    let holder = &seen["holders"][0];
    assert_eq!(holder["token"].as_u64(), Some(token), "{seen}");
    assert_eq!(holder["lease_id"].as_u64(), Some(lease), "{seen}");
    assert_eq!(holder["reason"], "env check", "{seen}");
    assert_eq!(holder["metadata"]["k"], "v", "{seen}");

    // Released afterwards, and the lease is gone too.
    assert!(is_free(&dev, "jobs/env"));
    let leases = dev.json(&["lease", "list", "--json"]);
    assert!(
        leases
            .as_array()
            .expect("array")
            .iter()
            .all(|l| l["lease_id"].as_u64() != Some(lease)),
        "{leases}"
    );

    // Success is 0; a COMMAND killed by signal s gives 128+s, like a shell.
    let (code, _, err) = dev.run_cmd(exec_cmd(&dev, &["jobs/env"], &["true"]));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = dev.run_cmd(exec_cmd(
        &dev,
        &["jobs/env"],
        &["sh", "-c", "kill -TERM $$"],
    ));
    assert_eq!(code, 143, "{err}");
    assert!(is_free(&dev, "jobs/env"));

    // A COMMAND that does not exist: 127, and the lock is released.
    let (code, _, err) = dev.run_cmd(exec_cmd(&dev, &["jobs/env"], &["./no-such-command"]));
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("cannot run"), "{err}");
    assert!(is_free(&dev, "jobs/env"));

    // A semaphore permit, with its count in the environment.
    let (code, _, err) = dev.run_cmd(exec_cmd(
        &dev,
        &["pool/p", "--permits", "3"],
        &[
            "sh",
            "-c",
            r#"test "$RAFTLOCK_LOCK_MODE/$RAFTLOCK_LOCK_PERMITS" = semaphore/3"#,
        ],
    ));
    assert_eq!(code, 0, "{err}");

    // Bad usage: 2, COMMAND not run.
    for args in [
        &["jobs/env", "--ttl", "4s", "--margin", "3s"][..],
        &["jobs/env", "--ttl", "5x"][..],
        &["jobs/env", "--signal", "NOPE"][..],
    ] {
        let (code, _, err) = dev.run_cmd(exec_cmd(&dev, args, &["touch", "ran-bad-usage"]));
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    let mut no_command = raftlock();
    no_command.args(["exec", "jobs/env", "--endpoints", &dev.endpoints]);
    let (code, _, err) = dev.run_cmd(no_command);
    assert_eq!(code, 2, "{err}");
    assert!(!tmp.path().join("ran-bad-usage").exists());
}

#[test]
fn exec_on_a_busy_lock_exits_3_without_running_the_command() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path());
    let held = dev.json(&["acquire", "jobs/busy", "--ttl", "1m", "--json"]);

    let (code, _, err) = dev.run_cmd(exec_cmd(
        &dev,
        &["jobs/busy", "--wait", "0"],
        &["touch", "ran"],
    ));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("LOCK_BUSY"), "{err}");
    let (code, _, err) = dev.run_cmd(exec_cmd(
        &dev,
        &["jobs/busy", "--wait", "300ms"],
        &["touch", "ran"],
    ));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("WAIT_TIMEOUT"), "{err}");
    assert!(!tmp.path().join("ran").exists(), "COMMAND must not run");

    // Ctrl-C while waiting in the queue: gives up, COMMAND not run, and the
    // wait is withdrawn at once (its lease revoked).
    let mut waiting = Proc::spawn(
        exec_cmd(&dev, &["jobs/busy", "--wait", "50s"], &["touch", "ran"]),
        &tmp.path().join("exec-wait.log"),
    );
    let deadline = Instant::now() + CLI_BOUND;
    while dev.json(&["inspect", "jobs/busy", "--json"])["queue"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(
            Instant::now() < deadline,
            "exec never queued: {}",
            waiting.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(waiting.pid(), libc::SIGINT);
    let status = waiting
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("exec did not give up: {}", waiting.log_text()));
    assert_eq!(status.code(), Some(130), "{}", waiting.log_text());
    assert!(waiting.log_text().contains("COMMAND not run"));
    assert!(!tmp.path().join("ran").exists(), "COMMAND must not run");

    // The first holder still holds it; the failed tries left no lease behind.
    let info = dev.json(&["inspect", "jobs/busy", "--json"]);
    assert_eq!(info["holders"][0]["token"], held["token"], "{info}");
    assert_eq!(info["queue"].as_array().map(Vec::len), Some(0), "{info}");
    let leases = dev.json(&["lease", "list", "--json"]);
    assert_eq!(leases.as_array().map(Vec::len), Some(1), "{leases}");
}

#[test]
fn ctrl_c_and_sigterm_reach_the_command_and_release_the_lock() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path());

    // SIGINT: forwarded to COMMAND's process group (the `sleep` in it too),
    // which exits; exec releases and exits 130.
    let script = r#"trap 'echo int > got-int; exit 0' INT
touch started-int
while :; do sleep 0.05; done"#;
    let mut exec = Proc::spawn(
        exec_cmd(
            &dev,
            &["jobs/ctrl-c", "--kill-after", "20s"],
            &["sh", "-c", script],
        ),
        &tmp.path().join("exec-int.log"),
    );
    wait_file(&tmp.path().join("started-int"), CLI_BOUND, &|| {
        exec.log_text()
    });
    signal(exec.pid(), libc::SIGINT);
    let status = exec
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("exec did not exit after SIGINT: {}", exec.log_text()));
    assert_eq!(status.code(), Some(130), "{}", exec.log_text());
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("got-int")).expect("COMMAND got SIGINT"),
        "int\n"
    );
    assert!(is_free(&dev, "jobs/ctrl-c"));

    // SIGTERM to a COMMAND that ignores it: SIGKILL after --kill-after.
    let script = r#"trap '' TERM
touch started-term
while :; do sleep 0.05; done"#;
    let mut exec = Proc::spawn(
        exec_cmd(
            &dev,
            &["jobs/ctrl-c", "--kill-after", "500ms"],
            &["sh", "-c", script],
        ),
        &tmp.path().join("exec-term.log"),
    );
    wait_file(&tmp.path().join("started-term"), CLI_BOUND, &|| {
        exec.log_text()
    });
    let sent = Instant::now();
    signal(exec.pid(), libc::SIGTERM);
    let status = exec
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("exec did not exit after SIGTERM: {}", exec.log_text()));
    assert!(
        sent.elapsed() >= Duration::from_millis(500),
        "SIGKILL came before --kill-after"
    );
    assert_eq!(status.code(), Some(143), "{}", exec.log_text());
    assert!(
        exec.log_text().contains("killed by SIGKILL"),
        "{}",
        exec.log_text()
    );
    assert!(is_free(&dev, "jobs/ctrl-c"));

    // exec killed outright (SIGKILL): COMMAND is killed at once (SIGKILL:
    // nobody would send a later one) instead of running on without anyone
    // keeping the lease alive; even a COMMAND that traps TERM is gone.
    let script = r#"trap 'echo term > got-term-orphan' TERM
echo $$ > started-orphan
while :; do sleep 0.05; done"#;
    let mut exec = Proc::spawn(
        exec_cmd(&dev, &["jobs/orphan", "--ttl", "2s"], &["sh", "-c", script]),
        &tmp.path().join("exec-orphan.log"),
    );
    let started = tmp.path().join("started-orphan");
    wait_file(&started, CLI_BOUND, &|| exec.log_text());
    // The file exists as soon as the shell opens it; the pid follows.
    let pid_deadline = Instant::now() + Duration::from_secs(10);
    let child_pid: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&started)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break pid;
        }
        assert!(Instant::now() < pid_deadline, "COMMAND wrote its pid");
        std::thread::sleep(Duration::from_millis(10));
    };
    exec.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Running: its /proc entry exists and is not a zombie (an orphan's
    // reaper may be slow).
    let running = || {
        std::fs::read_to_string(format!("/proc/{child_pid}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit(") ").next().map(|rest| !rest.starts_with('Z')))
            .unwrap_or(false)
    };
    while running() {
        assert!(
            Instant::now() < deadline,
            "COMMAND {child_pid} still runs after exec was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !tmp.path().join("got-term-orphan").exists(),
        "it got SIGKILL, not TERM"
    );
}

/// Now on the wall clock, in Unix ms (comparable with what exec and
/// `date +%s%N` print on this machine).
fn wall_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
        * 1000.0
}

/// The number after `key=` in `text`.
fn field(text: &str, key: &str) -> Option<u128> {
    let at = text.find(&format!("{key}="))? + key.len() + 1;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn when_keep_alives_fail_exec_signals_the_command_margin_before_the_lease_can_end() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(tmp.path());
    let ttl_ms = 6000.0;
    let margin_ms = 2000.0;

    // COMMAND records (wall clock, ns) when it got USR1, the --signal; TERM
    // (the default) must not come. Its `sleep` gets USR1 too and ends, so
    // the trap runs at once.
    let script = r#"trap 'date +%s%N > got-usr1; exit 0' USR1
trap 'echo term > got-term; exit 0' TERM
touch started
while :; do sleep 0.05; done"#;
    let spawned_ms = wall_ms();
    let mut exec = Proc::spawn(
        exec_cmd(
            &dev,
            &[
                "jobs/lost",
                "--ttl",
                "6s",
                "--margin",
                "2s",
                "--signal",
                "USR1",
                "--kill-after",
                "1s",
                "--verbose",
            ],
            &["sh", "-c", script],
        ),
        &tmp.path().join("exec.log"),
    );
    wait_file(&tmp.path().join("started"), CLI_BOUND, &|| exec.log_text());
    // Let at least one keep-alive go through after the grant.
    std::thread::sleep(Duration::from_millis(2200));
    assert!(exec.exited().is_none(), "{}", exec.log_text());

    // Freeze the whole cluster: no keep-alive is answered from now on, so
    // the last acknowledged one was sent before `frozen_ms`.
    signal(dev.proc.pid(), libc::SIGSTOP);
    let frozen_ms = wall_ms();
    let frozen = Instant::now();
    let status = exec.wait_exit(Duration::from_secs(15));
    let took = frozen.elapsed();
    signal(dev.proc.pid(), libc::SIGCONT);
    let status = status.unwrap_or_else(|| panic!("exec did not exit: {}", exec.log_text()));
    let log = exec.log_text();
    assert_eq!(status.code(), Some(4), "{log}");

    // exec says when the last acknowledged keep-alive was sent; it cannot
    // be after the freeze (nor before exec started).
    let line = log
        .lines()
        .find(|l| l.contains("cannot be kept alive"))
        .unwrap_or_else(|| panic!("no --verbose line about stopping COMMAND: {log}"));
    let ack_sent_ms = field(line, "last_ack_sent_unix_ms")
        .unwrap_or_else(|| panic!("no last_ack_sent_unix_ms: {line}")) as f64;
    assert!(line.contains("sent SIGUSR1"), "{line}");
    assert!(
        ack_sent_ms <= frozen_ms + 1.0,
        "the last acknowledged keep-alive ({ack_sent_ms}) cannot be sent after the freeze \
         ({frozen_ms}): {line}"
    );
    assert!(ack_sent_ms >= spawned_ms - 1.0, "{line}");

    // The promise: COMMAND got --signal before the lease could end, by
    // --margin: before the last acknowledged keep-alive's send time + ttl
    // - margin. (An exec that stopped COMMAND only once it knew the lease
    // lost, at send time + ttl - 5 %, would fail here. exec signals at send
    // time + ttl - 5 % - margin: the 5 % drift allowance, 300 ms, is the
    // room left for the signal to arrive and `date` to run.)
    let got_ns: u128 = std::fs::read_to_string(tmp.path().join("got-usr1"))
        .unwrap_or_else(|e| panic!("COMMAND did not get USR1 ({e}): {log}"))
        .trim()
        .parse()
        .expect("date +%s%N prints a number");
    let got_ms = got_ns as f64 / 1e6;
    let bound_ms = ack_sent_ms + ttl_ms - margin_ms;
    eprintln!(
        "exec exited {took:?} after the freeze; USR1 {:.0} ms after the last acknowledged \
         keep-alive was sent, {:.0} ms before its bound",
        got_ms - ack_sent_ms,
        bound_ms - got_ms
    );
    assert!(
        got_ms < bound_ms,
        "COMMAND got USR1 at {got_ms:.0}, not before last ack sent ({ack_sent_ms}) + ttl - \
         margin = {bound_ms:.0}: {log}"
    );
    assert!(got_ms > frozen_ms, "USR1 came before the freeze: {log}");
    assert!(
        !tmp.path().join("got-term").exists(),
        "COMMAND got TERM, not --signal"
    );
    assert!(log.contains("lost the lock jobs/lost"), "{log}");
    assert!(log.contains("stopped \"sh\" with USR1"), "{log}");

    // Once the cluster runs again the lock frees (revoked or expired).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_free(&dev, "jobs/lost") {
        assert!(Instant::now() < deadline, "jobs/lost never freed");
        std::thread::sleep(Duration::from_millis(200));
    }
    dev.proc.kill();
}

#[test]
fn many_processes_under_exec_never_overlap_and_tokens_increase() {
    const WORKERS: usize = 5;
    const RUNS: usize = 4;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path());
    std::fs::write(tmp.path().join("counter"), "0\n").expect("counter");

    // The critical section: read, pause, write back +1, log the token. Any
    // overlap loses an increment.
    let critical = r#"n=$(cat counter); sleep 0.02; echo $((n + 1)) > counter; echo "$RAFTLOCK_FENCING_TOKEN" >> tokens"#;
    let worker = format!(
        r#"i=0; while [ $i -lt {RUNS} ]; do
  "$RAFTLOCK_TEST_BIN" exec jobs/counter --wait 50s --ttl 10s --endpoints "$EPS" -- sh -c '{critical}' || exit $?
  i=$((i + 1))
done"#
    );
    let mut procs: Vec<Proc> = (0..WORKERS)
        .map(|w| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &worker])
                .env("RAFTLOCK_TEST_BIN", BIN)
                .env("EPS", &dev.endpoints)
                .current_dir(tmp.path());
            Proc::spawn(cmd, &tmp.path().join(format!("worker{w}.log")))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    for (w, p) in procs.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let status = p
            .wait_exit(left)
            .unwrap_or_else(|| panic!("worker {w} did not finish: {}", p.log_text()));
        assert!(status.success(), "worker {w}: {status}: {}", p.log_text());
    }

    let counter = std::fs::read_to_string(tmp.path().join("counter")).expect("counter");
    assert_eq!(counter.trim(), (WORKERS * RUNS).to_string());
    let tokens: Vec<u64> = std::fs::read_to_string(tmp.path().join("tokens"))
        .expect("tokens")
        .lines()
        .map(|l| l.parse().expect("a token"))
        .collect();
    assert_eq!(tokens.len(), WORKERS * RUNS);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens must strictly increase in file order: {tokens:?}"
    );
    assert!(is_free(&dev, "jobs/counter"));
}

/// `raftlock exec` with its options, then `--`, then COMMAND.
fn exec_cmd(dev: &Dev, args: &[&str], command: &[&str]) -> Command {
    let mut cmd = raftlock();
    cmd.arg("exec")
        .args(args)
        .args(["--endpoints", &dev.endpoints, "--"])
        .args(command)
        .env("RAFTLOCK_TEST_BIN", BIN)
        .current_dir(&dev.dir);
    cmd
}

fn is_free(dev: &Dev, name: &str) -> bool {
    dev.json(&["inspect", name, "--json"])["free"] == Value::Bool(true)
}
