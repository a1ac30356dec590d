//! Processes of the `raftlock` binary: `raftlock serve` clusters,
//! `raftlock dev`, and CLI commands, each bounded in time and killed when
//! its owner is dropped.
//!
//! The binary is a parameter: only the raftlock package's own tests know
//! it (`env!("CARGO_BIN_EXE_raftlock")`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::grpc::status;
use crate::ports::{free_port_run, free_ports};

/// A command running `bin` with no configuration leaking in from the
/// environment of whoever runs the tests.
pub fn command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RAFTLOCK_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
    cmd
}

/// `bin ARGS --endpoints ENDPOINTS`, the endpoints before a `--` if any.
pub fn with_endpoints(bin: &Path, args: &[&str], endpoints: &str) -> Command {
    let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    let mut cmd = command(bin);
    cmd.args(&args[..split])
        .args(["--endpoints", endpoints])
        .args(&args[split..]);
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
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
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

/// The lines `from` prints, read on a thread of their own that keeps
/// reading after the receiver is gone, so the writer never writes into a
/// closed pipe.
pub fn lines(from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Runs a command that is expected to finish, bounded by `within` (killed
/// and a panic after that), with its output in files in `dir`; returns
/// (exit status, stdout, stderr).
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
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
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

// ---------------------------------------------------------------------------
// raftlock dev
// ---------------------------------------------------------------------------

/// A `raftlock dev` that printed its endpoints.
pub struct DevProc {
    pub proc: Proc,
    /// `host:port,...` as `export RAFTLOCK_ENDPOINTS=` printed them.
    pub endpoints: String,
}

pub enum DevStart {
    Ready(DevProc),
    /// Exited before it was ready, with its status and stderr.
    Exited(String),
}

/// Starts `bin dev` with its data in `dir` on ports `base_port`.. and
/// stderr appended to `log`; waits (at most 30 s, then panics) until it
/// prints its endpoints or exits.
pub fn start_dev_on(bin: &Path, dir: &Path, base_port: u16, log: &Path) -> DevStart {
    let mut cmd = command(bin);
    cmd.arg("dev")
        .arg("--dir")
        .arg(dir)
        .arg("--base-port")
        .arg(base_port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(append(log));
    let mut child = cmd.spawn().expect("spawn raftlock dev");
    let stdout = child.stdout.take().expect("stdout");
    let mut proc = Proc {
        child,
        log: log.to_path_buf(),
    };
    let rx = lines(stdout);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                if let Some(endpoints) = line.strip_prefix("export RAFTLOCK_ENDPOINTS=") {
                    return DevStart::Ready(DevProc {
                        proc,
                        endpoints: endpoints.to_string(),
                    });
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = proc.wait_exit(Duration::from_secs(10));
                return DevStart::Exited(format!("{status:?}\n{}", proc.log_text()));
            }
        }
        assert!(
            Instant::now() < deadline,
            "raftlock dev not ready within 30 s:\n{}",
            proc.log_text()
        );
    }
}

/// Starts `bin dev` on free ports with its data and `dev.log` in `dir`;
/// starts over on new ports if one was taken in between. Returns it and
/// its endpoints.
pub fn start_dev(bin: &Path, dir: &Path) -> (Proc, String) {
    let log = dir.join("dev.log");
    for attempt in 0..5 {
        let base = free_port_run(3);
        match start_dev_on(bin, &dir.join(format!("cluster{attempt}")), base, &log) {
            DevStart::Ready(dev) => return (dev.proc, dev.endpoints),
            // A port taken between choosing and binding it: retry.
            DevStart::Exited(why) if why.contains("in use") => continue,
            DevStart::Exited(why) => panic!("raftlock dev exited:\n{why}"),
        }
    }
    panic!("could not start raftlock dev on free ports");
}

// ---------------------------------------------------------------------------
// raftlock serve
// ---------------------------------------------------------------------------

/// `bin serve --insecure` as node `id` of the cluster `peers` (their peer
/// addresses), listening on 127.0.0.1:`port` for clients and
/// 127.0.0.1:`peer_port` for peers, with its data in `data_dir`.
pub fn serve_command(
    bin: &Path,
    id: u64,
    data_dir: &Path,
    port: u16,
    peer_port: u16,
    peers: &str,
) -> Command {
    let mut cmd = command(bin);
    cmd.arg("serve")
        .arg("--insecure")
        .arg("--id")
        .arg(id.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--peer-listen")
        .arg(format!("127.0.0.1:{peer_port}"))
        .arg("--peers")
        .arg(peers);
    cmd
}

/// The `--peers` value of nodes on 127.0.0.1 (their peer ports):
/// `1=127.0.0.1:P1,2=...`.
pub fn peers(ports: impl IntoIterator<Item = (u64, u16)>) -> String {
    ports
        .into_iter()
        .map(|(id, p)| format!("{id}=127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `raftlock_peer_messages_total` samples of a Prometheus text scrape:
/// labels as written between the braces (`protocol="1",direction="sent"`)
/// → count.
pub fn peer_message_series(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| line.strip_prefix("raftlock_peer_messages_total{"))
        .filter_map(|rest| {
            let (labels, value) = rest.split_once('}')?;
            Some((labels.to_string(), value.trim().parse::<u64>().ok()?))
        })
        .collect()
}

/// The previous release's binary (`RAFTLOCK_BIN_PREVIOUS`, which
/// scripts/test.sh sets from scripts/build-previous.sh), or `None` (the
/// caller skips its test, and this says so) — unless
/// `RAFTLOCK_REQUIRE_PREVIOUS` is set (`.ci/run` sets it when the clone has
/// the release's commit): then its absence is a failure.
pub fn previous_release() -> Option<PathBuf> {
    match std::env::var_os("RAFTLOCK_BIN_PREVIOUS") {
        Some(p) => Some(p.into()),
        None if std::env::var_os("RAFTLOCK_REQUIRE_PREVIOUS").is_none() => {
            eprintln!(
                "skipped: RAFTLOCK_BIN_PREVIOUS is not set (scripts/build-previous.sh builds the previous release; scripts/test.sh sets it)"
            );
            None
        }
        None => panic!("RAFTLOCK_REQUIRE_PREVIOUS is set but RAFTLOCK_BIN_PREVIOUS is not"),
    }
}

/// `raftlock serve` processes 1..=n on free ports of 127.0.0.1, with their
/// data and logs in a temporary directory; all killed when dropped.
pub struct ServeCluster {
    /// Declared first: killed before the directory is removed.
    pub procs: BTreeMap<u64, Proc>,
    /// Client ports.
    pub ports: BTreeMap<u64, u16>,
    /// Peer ports.
    pub peer_ports: BTreeMap<u64, u16>,
    /// Metrics ports (`--metrics-listen`).
    pub metrics_ports: BTreeMap<u64, u16>,
    /// The `--peers` every node gets.
    pub peers: String,
    pub dir: TempDir,
    bin: PathBuf,
    /// More `serve` arguments every node gets (e.g. `--token-floor N`).
    pub extra_args: Vec<String>,
}

pub enum WaitError {
    /// A process exited (a port taken between choosing and binding it?).
    Exited(u64, String),
    Timeout(String),
}

impl ServeCluster {
    /// Starts `n` nodes on free ports; starts over on new ports if one
    /// could not bind. Returns the cluster and its leader.
    pub async fn start(bin: &Path, n: u64) -> (ServeCluster, u64) {
        Self::start_with(bin, n, &[]).await
    }

    /// [`ServeCluster::start`] with `extra_args` added to every node's
    /// `serve` command.
    pub async fn start_with(bin: &Path, n: u64, extra_args: &[&str]) -> (ServeCluster, u64) {
        let mut last = String::new();
        for _ in 0..4 {
            let free = free_ports(3 * n as usize);
            let ports: BTreeMap<u64, u16> = (1..=n).zip(free.iter().copied()).collect();
            let peer_ports: BTreeMap<u64, u16> =
                (1..=n).zip(free.iter().copied().skip(n as usize)).collect();
            let metrics_ports: BTreeMap<u64, u16> = (1..=n)
                .zip(free.iter().copied().skip(2 * n as usize))
                .collect();
            let mut cluster = ServeCluster {
                procs: BTreeMap::new(),
                peers: peers(peer_ports.iter().map(|(id, p)| (*id, *p))),
                ports,
                peer_ports,
                metrics_ports,
                dir: crate::dirs::temp_dir(),
                bin: bin.to_path_buf(),
                extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            };
            for id in 1..=n {
                cluster.spawn(id);
            }
            let ids: Vec<u64> = (1..=n).collect();
            match cluster
                .wait_leader(&ids, None, Duration::from_secs(30))
                .await
            {
                Ok(leader) => return (cluster, leader),
                Err(WaitError::Exited(id, log)) if log.contains("in use") => {
                    last = format!("node {id}: {log}");
                    continue;
                }
                Err(WaitError::Exited(id, log)) => panic!("node {id} exited:\n{log}"),
                Err(WaitError::Timeout(why)) => panic!("{why}\n{}", cluster.logs()),
            }
        }
        panic!("could not start a cluster on free ports: {last}");
    }

    /// Node `id`'s `raftlock_peer_messages_total` series from its metrics
    /// endpoint: labels as written between the braces
    /// (`protocol="1",direction="sent"`) → count.
    pub fn peer_messages(&self, id: u64) -> BTreeMap<String, u64> {
        use std::io::{Read, Write};
        let port = self.metrics_ports[&id];
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("node {id}'s metrics port {port}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a read timeout");
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .expect("the request is sent");
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("node {id}'s metrics: {e}"));
        peer_message_series(&text)
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    /// Starts node `id` (again), its stderr appended to `node<id>.log`.
    pub fn spawn(&mut self, id: u64) {
        self.spawn_with_env(id, &[]);
    }

    /// [`ServeCluster::spawn`] with `env` set for the process.
    pub fn spawn_with_env(&mut self, id: u64, env: &[(&str, &str)]) {
        let mut cmd = serve_command(
            &self.bin,
            id,
            &self.data_dir(id),
            self.ports[&id],
            self.peer_ports[&id],
            &self.peers,
        );
        cmd.arg("--metrics-listen")
            .arg(format!("127.0.0.1:{}", self.metrics_ports[&id]));
        cmd.args(&self.extra_args);
        cmd.envs(env.iter().copied());
        let log = self.dir.path().join(format!("node{id}.log"));
        self.procs.insert(id, Proc::spawn(cmd, &log));
    }

    /// Starts a node `id` that is not a member yet, running `bin` (another
    /// build, say) on free ports, its `--peers` naming every node so far
    /// and itself; the cluster then adds it (`raftlock cluster
    /// add-learner`). Killed with the others.
    pub fn spawn_new_node(&mut self, id: u64, bin: &Path, extra_args: &[&str]) {
        let free = free_ports(3);
        self.ports.insert(id, free[0]);
        self.peer_ports.insert(id, free[1]);
        self.metrics_ports.insert(id, free[2]);
        let all = peers(self.peer_ports.iter().map(|(id, p)| (*id, *p)));
        let mut cmd = serve_command(bin, id, &self.data_dir(id), free[0], free[1], &all);
        cmd.arg("--metrics-listen")
            .arg(format!("127.0.0.1:{}", free[2]));
        cmd.args(extra_args);
        let log = self.dir.path().join(format!("node{id}.log"));
        self.procs.insert(id, Proc::spawn(cmd, &log));
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|(id, p)| format!("--- node {id} ---\n{}", p.log_text()))
            .collect()
    }

    /// Waits until every node in `ids` answers Status and names the same
    /// leader (other than `not`).
    pub async fn wait_leader(
        &mut self,
        ids: &[u64],
        not: Option<u64>,
        within: Duration,
    ) -> Result<u64, WaitError> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            for id in ids {
                if let Some(p) = self.procs.get_mut(id)
                    && let Some(status) = p.exited()
                {
                    return Err(WaitError::Exited(
                        *id,
                        format!("{status}\n{}", p.log_text()),
                    ));
                }
            }
            seen.clear();
            for id in ids {
                seen.push(status(self.ports[id]).await.and_then(|s| s.leader_id));
            }
            if let Some(Some(leader)) = seen.first()
                && seen.iter().all(|l| *l == Some(*leader))
                && Some(*leader) != not
            {
                return Ok(*leader);
            }
            if Instant::now() >= deadline {
                return Err(WaitError::Timeout(format!(
                    "no common leader among {ids:?} within {within:?}: {seen:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
