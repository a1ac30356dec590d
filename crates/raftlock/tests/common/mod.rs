//! Helpers for tests that run the real `raftlock` binary.

#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use raftlock_proto::v1 as pb;
use tonic::transport::{Channel, Endpoint};

pub const BIN: &str = env!("CARGO_BIN_EXE_raftlock");

/// A `raftlock` command with no configuration leaking in from the
/// environment of whoever runs the tests.
pub fn raftlock() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RAFTLOCK_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
    cmd
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so no
/// test leaves one behind, whatever happens.
pub struct Proc {
    pub child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stderr appended to `log` and stdout discarded.
    pub fn spawn(mut cmd: Command, log: &Path) -> Proc {
        cmd.stdout(Stdio::null());
        Self::spawn_keeping_stdout(cmd, log)
    }

    /// [`Proc::spawn`] with whatever stdout `cmd` was given.
    pub fn spawn_keeping_stdout(mut cmd: Command, log: &Path) -> Proc {
        let file = append(log);
        let child = cmd
            .stdin(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn raftlock");
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits at most `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log file")
}

/// The last 6000 bytes of a log, for failure messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut start = text.len().saturating_sub(6000);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// Sends a signal to a process (SIGTERM, SIGINT).
pub fn signal(pid: u32, sig: i32) {
    let pid = i32::try_from(pid).expect("pid fits i32");
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Runs a command that is expected to finish, bounded by `within`;
/// returns (exit status, stdout, stderr).
pub fn run_bounded(mut cmd: Command, dir: &Path, within: Duration) -> (ExitStatus, String, String) {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = dir.join(format!("run-{n}.out"));
    let err = dir.join(format!("run-{n}.err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("stdout file"))
        .stderr(File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn raftlock");
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

/// `n` distinct ports that were free a moment ago (bound together, then
/// released). Another process may take one before we use it: callers retry.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// A port P such that P, P+1 and P+2 were free a moment ago.
pub fn free_port_run(n: u16) -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let base = first.local_addr().expect("local_addr").port();
        if base.checked_add(n).is_none() {
            continue;
        }
        let rest: Result<Vec<TcpListener>, _> = (1..n)
            .map(|i| TcpListener::bind(("127.0.0.1", base + i)))
            .collect();
        if rest.is_ok() {
            return base;
        }
    }
    panic!("no run of {n} free ports found");
}

pub async fn channel(port: u16) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// Admin.Status of the node on `port`, or None if it does not answer.
pub async fn status(port: u16) -> Option<pb::StatusResponse> {
    let channel = channel(port).await.ok()?;
    pb::admin_client::AdminClient::new(channel)
        .status(pb::StatusRequest {})
        .await
        .ok()
        .map(tonic::Response::into_inner)
}

pub async fn leases(port: u16) -> pb::leases_client::LeasesClient<Channel> {
    pb::leases_client::LeasesClient::new(channel(port).await.expect("connect"))
}

pub async fn locks(port: u16) -> pb::locks_client::LocksClient<Channel> {
    pb::locks_client::LocksClient::new(channel(port).await.expect("connect"))
}

pub fn exclusive(name: &str) -> pb::LockSpec {
    pb::LockSpec {
        name: name.into(),
        mode: pb::Mode::Exclusive as i32,
        permits: 0,
    }
}

/// Starts `raftlock dev` on free ports; returns it and its endpoints.
pub fn start_dev(dir: &Path) -> (Proc, String) {
    let log = dir.join("dev.log");
    for attempt in 0..5 {
        let base = free_port_run(3);
        let mut cmd = raftlock();
        cmd.arg("dev")
            .arg("--dir")
            .arg(dir.join(format!("cluster{attempt}")))
            .arg("--base-port")
            .arg(base.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(append(&log));
        let mut child = cmd.spawn().expect("spawn raftlock dev");
        let stdout = child.stdout.take().expect("stdout");
        let mut proc = Proc {
            child,
            log: log.clone(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep reading after the caller stops listening, so dev never
            // writes into a closed pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    if let Some(endpoints) = line.strip_prefix("export RAFTLOCK_ENDPOINTS=") {
                        return (proc, endpoints.to_string());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    proc.wait_exit(Duration::from_secs(10));
                    // A port taken between choosing and binding it: retry.
                    if proc.log_text().contains("in use") {
                        break;
                    }
                    panic!("raftlock dev exited:\n{}", proc.log_text());
                }
            }
            assert!(
                Instant::now() < deadline,
                "raftlock dev not ready within 30 s:\n{}",
                proc.log_text()
            );
        }
    }
    panic!("could not start raftlock dev on free ports");
}

/// `raftlock ARGS --endpoints ENDPOINTS`, the endpoints before a `--` if any.
pub fn with_endpoints(args: &[&str], endpoints: &str) -> Command {
    let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    let mut cmd = raftlock();
    cmd.args(&args[..split])
        .args(["--endpoints", endpoints])
        .args(&args[split..]);
    cmd
}

/// Every CLI command a test runs must finish within this.
pub const CLI_BOUND: Duration = Duration::from_secs(60);

/// A running `raftlock dev` for CLI tests (killed when dropped), and how to
/// run commands against it.
pub struct Dev {
    pub proc: Proc,
    pub endpoints: String,
    pub dir: PathBuf,
}

impl Dev {
    pub fn start(tmp: &Path) -> Dev {
        let (proc, endpoints) = start_dev(tmp);
        Dev {
            proc,
            endpoints,
            dir: tmp.to_path_buf(),
        }
    }

    /// `raftlock ARGS --endpoints E`, the endpoints before a `--` if any.
    pub fn cmd(&self, args: &[&str]) -> Command {
        with_endpoints(args, &self.endpoints)
    }

    /// Runs a command; returns (exit code, stdout, stderr).
    pub fn run_cmd(&self, cmd: Command) -> (i32, String, String) {
        let (status, out, err) = run_bounded(cmd, &self.dir, CLI_BOUND);
        (status.code().unwrap_or(-1), out, err)
    }

    /// Runs `raftlock ARGS` against this cluster.
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.run_cmd(self.cmd(args))
    }

    /// Runs a command that must succeed and print JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "{args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    }
}
