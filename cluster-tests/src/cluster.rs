//! A real raftlock cluster: N `raftlock serve` processes on 127.0.0.1, data
//! in a temporary directory, every directed peer link i→j and every
//! client link to node j through its own [`Proxy`].
//!
//! Node j advertises its client proxy (so `--peers` lists client proxies
//! and redirects send clients through the proxy); node i dials peer j
//! through proxy i→j with `--peer-dial`. Faults: cut or degrade links,
//! kill -9 and restart, SIGSTOP and SIGCONT, and heal everything.
//! Dropping the cluster kills every process it started, even on panic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftlock_proto::v1 as pb;
use raftlock_proto::v1::admin_client::AdminClient;
use tempfile::TempDir;

use crate::proxy::{LinkMode, Proxy};

/// Errors starting or driving a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot find the raftlock binary: {0}")]
    Binary(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no leader within {0:?}; see the node logs in {1}")]
    NoLeader(Duration, String),
    #[error("node {0} is not part of the cluster")]
    UnknownNode(u64),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// Where the `raftlock` binary is: `$RAFTLOCK_BIN`; else, when running
/// under cargo (`cargo test`, `cargo run`), the one `cargo build -p
/// raftlock` leaves in the running executable's profile directory (built
/// now, so it is never stale: a no-op when it is up to date); else the one
/// next to the running executable.
pub fn raftlock_binary() -> Result<PathBuf, ClusterError> {
    if let Some(p) = std::env::var_os("RAFTLOCK_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| ClusterError::Binary(e.to_string()))?;
    // target/<profile>/deps/<test binary> or target/<profile>/<binary>.
    let profile_dir = exe
        .parent()
        .map(|d| {
            if d.ends_with("deps") {
                d.parent().unwrap_or(d)
            } else {
                d
            }
        })
        .ok_or_else(|| ClusterError::Binary("no directory for the executable".into()))?
        .to_path_buf();
    let built = profile_dir.join("raftlock");
    if let Ok(cargo) = std::env::var("CARGO") {
        // Cargo holds no lock while tests run, so this does not deadlock.
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "raftlock", "--bin", "raftlock"]);
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        if let Some(target_dir) = profile_dir.parent() {
            cmd.arg("--target-dir").arg(target_dir);
        }
        let status = cmd
            .status()
            .map_err(|e| ClusterError::Binary(format!("running cargo build -p raftlock: {e}")))?;
        if !status.success() {
            return Err(ClusterError::Binary(format!(
                "cargo build -p raftlock failed ({status})"
            )));
        }
    }
    if built.is_file() {
        Ok(built)
    } else {
        Err(ClusterError::Binary(format!(
            "{} does not exist: build it (cargo build -p raftlock) or set RAFTLOCK_BIN",
            built.display()
        )))
    }
}

/// Options of a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub nodes: u64,
    pub binary: PathBuf,
    /// Extra `raftlock serve` flags for every node.
    pub extra_args: Vec<String>,
    /// Keep node data and logs here instead of a temporary directory.
    pub keep_dir: Option<PathBuf>,
}

struct NodeProc {
    listen: SocketAddr,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// A running cluster (see the module documentation).
pub struct Cluster {
    _tmp: Option<TempDir>,
    pub dir: PathBuf,
    binary: PathBuf,
    nodes: BTreeMap<u64, NodeProc>,
    peer_proxies: BTreeMap<(u64, u64), Proxy>,
    client_proxies: BTreeMap<u64, Proxy>,
}

fn free_port() -> Result<SocketAddr, ClusterError> {
    // Bound and released: another process could take it in between, but
    // nothing else on a test machine races for a just-freed ephemeral port.
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("binding a free port"))?;
    l.local_addr().map_err(io("reading a bound address"))
}

impl Cluster {
    /// Starts every node and waits until all agree on a leader.
    pub async fn start(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        let (tmp, dir) = match &config.keep_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
                (None, d.clone())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("raftlock-jepsen-")
                    .tempdir()
                    .map_err(io("creating a temporary directory"))?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let ids: Vec<u64> = (1..=config.nodes).collect();
        let mut listen = BTreeMap::new();
        for id in &ids {
            listen.insert(*id, free_port()?);
        }
        let mut client_proxies = BTreeMap::new();
        for id in &ids {
            let p = Proxy::start(listen[id])
                .await
                .map_err(io("starting a client proxy"))?;
            client_proxies.insert(*id, p);
        }
        let mut peer_proxies = BTreeMap::new();
        for i in &ids {
            for j in &ids {
                if i != j {
                    let p = Proxy::start(listen[j])
                        .await
                        .map_err(io("starting a peer proxy"))?;
                    peer_proxies.insert((*i, *j), p);
                }
            }
        }
        let peers: Vec<String> = ids
            .iter()
            .map(|id| format!("{id}={}", client_proxies[id].addr()))
            .collect();
        let mut cluster = Cluster {
            _tmp: tmp,
            dir: dir.clone(),
            binary: config.binary.clone(),
            nodes: BTreeMap::new(),
            peer_proxies,
            client_proxies,
        };
        for id in &ids {
            let dial: Vec<String> = ids
                .iter()
                .filter(|j| *j != id)
                .map(|j| format!("{j}={}", cluster.peer_proxies[&(*id, *j)].addr()))
                .collect();
            let mut args = vec![
                "serve".to_string(),
                "--id".into(),
                id.to_string(),
                "--data-dir".into(),
                dir.join(format!("node{id}")).display().to_string(),
                "--listen".into(),
                listen[id].to_string(),
                "--peers".into(),
                peers.join(","),
                "--peer-dial".into(),
                dial.join(","),
                "--heartbeat-ms".into(),
                "50".into(),
                "--election-timeout-ms".into(),
                "300-600".into(),
                "--rpc-timeout-ms".into(),
                "500".into(),
                "--write-timeout-ms".into(),
                "3000".into(),
            ];
            args.extend(config.extra_args.iter().cloned());
            cluster.nodes.insert(
                *id,
                NodeProc {
                    listen: listen[id],
                    args,
                    log: dir.join(format!("node{id}.log")),
                    child: None,
                    paused: false,
                },
            );
            cluster.spawn(*id)?;
        }
        cluster.wait_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    fn spawn(&mut self, id: u64) -> Result<(), ClusterError> {
        let binary = self.binary.clone();
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(ClusterError::UnknownNode(id))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(io(format!("opening {}", node.log.display())))?;
        let err = log.try_clone().map_err(io("cloning a log handle"))?;
        let child = Command::new(&binary)
            .args(&node.args)
            .env(
                "RUST_LOG",
                std::env::var("RAFTLOCK_JEPSEN_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(io(format!("starting {}", binary.display())))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Where clients reach node `id` (its client proxy).
    pub fn client_addr(&self, id: u64) -> Option<SocketAddr> {
        self.client_proxies.get(&id).map(Proxy::addr)
    }

    /// Node `id`'s own address (no proxy), for the harness's status checks.
    pub fn direct_addr(&self, id: u64) -> Option<SocketAddr> {
        self.nodes.get(&id).map(|n| n.listen)
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes
            .get(&id)
            .is_some_and(|n| n.child.is_some() && !n.paused)
    }

    /// Connections carried so far by the proxy of link `from` → `to`.
    pub fn link_connections(&self, from: u64, to: u64) -> u64 {
        self.peer_proxies
            .get(&(from, to))
            .map_or(0, Proxy::connections)
    }

    /// Sets the directed link `from` → `to`.
    pub fn set_link(&self, from: u64, to: u64, mode: LinkMode) {
        if let Some(p) = self.peer_proxies.get(&(from, to)) {
            p.set(mode);
        }
    }

    /// Cuts every link between nodes of different groups (both ways).
    /// Nodes not named in any group keep all their links.
    pub fn partition(&self, groups: &[BTreeSet<u64>]) {
        for (a, ga) in groups.iter().enumerate() {
            for (b, gb) in groups.iter().enumerate() {
                if a == b {
                    continue;
                }
                for i in ga {
                    for j in gb {
                        if !ga.contains(j) {
                            self.set_link(*i, *j, LinkMode::Cut);
                        }
                    }
                }
            }
        }
    }

    /// Every peer and client link back to `Pass`.
    pub fn heal_links(&self) {
        for p in self.peer_proxies.values() {
            p.set(LinkMode::Pass);
        }
        for p in self.client_proxies.values() {
            p.set(LinkMode::Pass);
        }
    }

    /// kill -9 node `id` (waits for it to be gone).
    pub fn kill(&mut self, id: u64) -> Result<(), ClusterError> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(ClusterError::UnknownNode(id))?;
        if let Some(mut child) = node.child.take() {
            if node.paused {
                signal(&child, libc::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
        Ok(())
    }

    /// Starts node `id` again on its data directory, if it is not running.
    pub fn restart(&mut self, id: u64) -> Result<(), ClusterError> {
        let running = self
            .nodes
            .get_mut(&id)
            .ok_or(ClusterError::UnknownNode(id))?
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if running {
            return Ok(());
        }
        self.spawn(id)
    }

    /// SIGSTOP node `id`.
    pub fn pause(&mut self, id: u64) -> Result<(), ClusterError> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(ClusterError::UnknownNode(id))?;
        if let Some(child) = &node.child {
            signal(child, libc::SIGSTOP);
            node.paused = true;
        }
        Ok(())
    }

    /// SIGCONT node `id`.
    pub fn resume(&mut self, id: u64) -> Result<(), ClusterError> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(ClusterError::UnknownNode(id))?;
        if let Some(child) = &node.child {
            signal(child, libc::SIGCONT);
        }
        node.paused = false;
        Ok(())
    }

    /// Links healed, paused nodes resumed, dead nodes restarted.
    pub fn heal_all(&mut self) -> Result<(), ClusterError> {
        self.heal_links();
        for id in self.ids() {
            self.resume(id)?;
            self.restart(id)?;
        }
        Ok(())
    }

    /// One node's view (direct, not through a proxy), if it answers soon.
    pub async fn status(&self, id: u64) -> Option<pb::StatusResponse> {
        if !self.is_running(id) {
            return None;
        }
        let addr = self.direct_addr(id)?;
        status_of(addr).await
    }

    /// The leader most running nodes name, if any.
    pub async fn leader(&self) -> Option<u64> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for id in self.ids() {
            if let Some(s) = self.status(id).await
                && let Some(l) = s.leader_id
            {
                *votes.entry(l).or_insert(0) += 1;
            }
        }
        votes.into_iter().max_by_key(|(_, n)| *n).map(|(l, _)| l)
    }

    /// Waits until every running node names the same leader.
    pub async fn wait_leader(&self, within: Duration) -> Result<u64, ClusterError> {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = BTreeSet::new();
            let mut all = true;
            for id in self.ids() {
                if !self.is_running(id) {
                    continue;
                }
                match self.status(id).await.and_then(|s| s.leader_id) {
                    Some(l) => {
                        seen.insert(l);
                    }
                    None => all = false,
                }
            }
            if all
                && seen.len() == 1
                && let Some(l) = seen.first()
            {
                return Ok(*l);
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::NoLeader(
                    within,
                    self.dir.display().to_string(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node logs' directory.
    pub fn log_dir(&self) -> &Path {
        &self.dir
    }
}

async fn status_of(addr: SocketAddr) -> Option<pb::StatusResponse> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_millis(300));
    let call = async {
        let channel = endpoint.connect().await.ok()?;
        let mut admin = AdminClient::new(channel);
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(Duration::from_millis(500));
        admin.status(req).await.ok().map(|r| r.into_inner())
    };
    tokio::time::timeout(Duration::from_millis(800), call)
        .await
        .ok()
        .flatten()
}

fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet
        // waited for), so it cannot name a recycled process.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                signal(&child, libc::SIGCONT);
                let _ = child.kill();
                // Reaping a SIGKILLed child returns at once.
                let _ = child.wait();
            }
        }
    }
}
