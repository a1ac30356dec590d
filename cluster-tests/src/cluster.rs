//! A real raftlock cluster: N `raftlock serve` processes on 127.0.0.1, data
//! in a temporary directory, every directed peer link i→j and every
//! client link to node j through its own [`Proxy`].
//!
//! Node j advertises its client proxy (so `--peers` lists client proxies
//! and redirects send clients through the proxy); node i dials peer j
//! through proxy i→j with `--peer-dial`. Faults: cut or degrade links,
//! kill -9 and restart, SIGSTOP and SIGCONT, clock faults through
//! libfaketime (when the cluster is started with [`Faketime`]), removing a
//! node from the membership and adding it back, kill -9 of every node at
//! once, power cuts (when started with `power_disks`: each node's data
//! directory is on its own [`powerfs`] mount, and a cut kills the nodes and
//! throws away every write they had not fsynced), and heal everything.
//! Dropping the cluster kills every process it started, even on panic,
//! then unmounts the disks.
//!
//! With `secure` every node serves TLS on both ports (mutual TLS between
//! peers) and checks every client call against an auth file, and the
//! harness connects with TLS as its own identity ([`HARNESS_IDENTITY`]):
//! a CA, the nodes' and the harness's certificates and the auth file are
//! written to `certs/` in the cluster directory. The proxies work on TCP,
//! so TLS passes through them untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftlock_proto::v1 as pb;
use raftlock_proto::v1::admin_client::AdminClient;
use tempfile::TempDir;

use crate::client::Transport;
use crate::proxy::{LinkMode, Proxy};

/// The harness's identity with `secure`: its client certificate's common
/// name, which the auth file gives `inspect`, `lock`, `watch` and `admin`
/// on every name (the nemesis changes the membership).
pub const HARNESS_IDENTITY: &str = "jepsen";

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
    #[error("clock faults need libfaketime, which this cluster was started without")]
    NoFaketime,
    #[error("membership change: {0}")]
    Membership(String),
    #[error("rolling upgrade: {0}")]
    Upgrade(String),
    #[error("clock fault: {0}")]
    Clock(String),
    #[error("power faults need each node's data on a powerfs mount: {0}")]
    Power(String),
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
    /// Run every node under libfaketime so its clocks can be faulted.
    pub faketime: Option<Faketime>,
    /// Put each node's data directory on its own powerfs mount (in the
    /// cluster directory), so [`Cluster::power_cut`] can drop what a node
    /// had not fsynced. Needs FUSE ([`powerfs::available`]).
    pub power_disks: bool,
    /// TLS on both node ports, mutual TLS between peers, an auth file, and
    /// the harness connecting with TLS as [`HARNESS_IDENTITY`] (module
    /// documentation).
    pub secure: bool,
    /// The newer build a rolling upgrade moves nodes to
    /// ([`Cluster::upgrade`]); the nodes start on `binary`.
    pub upgrade_to: Option<PathBuf>,
}

/// The files of a `secure` cluster, in `certs/` of the cluster directory.
#[derive(Debug, Clone)]
pub struct SecureFiles {
    pub ca: PathBuf,
    /// Node id → its certificate and key.
    pub nodes: BTreeMap<u64, raftlock_testkit::certs::CertFiles>,
    /// The harness's client certificate and key.
    pub client: raftlock_testkit::certs::CertFiles,
    pub auth: PathBuf,
}

impl SecureFiles {
    /// A new CA, a certificate for every node in `ids` (the nodes the
    /// membership nemesis removes and adds back keep their ids, so these
    /// are all it needs), the harness's client certificate, and an auth
    /// file making the harness an admin of every name, written to `dir`.
    pub fn write(dir: &Path, ids: &[u64]) -> Result<SecureFiles, ClusterError> {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let ca = raftlock_testkit::certs::TestCa::new(dir, "");
        let nodes = ids.iter().map(|id| (*id, ca.node(*id, ""))).collect();
        let client = ca.client(HARNESS_IDENTITY);
        let auth = dir.join("auth.toml");
        let text = format!(
            "# Written by cluster-tests: the harness may do everything on every name.\n\
             [[role]]\n\
             name = \"harness\"\n\
             rules = [{{ prefix = \"\", allow = [\"inspect\", \"lock\", \"watch\", \"admin\"] }}]\n\
             \n\
             [[identity]]\n\
             cert = \"{HARNESS_IDENTITY}\"\n\
             roles = [\"harness\"]\n"
        );
        std::fs::write(&auth, text).map_err(io(format!("writing {}", auth.display())))?;
        Ok(SecureFiles {
            ca: ca.cert.clone(),
            nodes,
            client,
            auth,
        })
    }

    /// The harness's transport: TLS with its client certificate.
    pub fn transport(&self) -> Result<Transport, ClusterError> {
        Transport::tls(&self.ca, Some((&self.client.cert, &self.client.key)))
            .map_err(io("reading the harness's certificates"))
    }
}

/// How nodes run under libfaketime (`LD_PRELOAD`): each node reads its
/// clock setting from its own file (`node<id>.faketime` in the cluster
/// directory; libfaketime's `FAKETIME_TIMESTAMP_FILE`), re-read every
/// second, so [`Cluster::set_clock`] changes it while the node runs.
#[derive(Debug, Clone)]
pub struct Faketime {
    /// `libfaketimeMT.so.1` (Debian package `libfaketime`).
    pub library: PathBuf,
    /// Fake the monotonic clock too (for rate skew). Without it only the
    /// wall clock (`CLOCK_REALTIME`) moves, as when an operator or NTP steps
    /// a machine's clock; a monotonic clock never jumps, so offsets must not
    /// be used with this on, and a rate is set only when a node starts:
    /// libfaketime changing the rate of a running process let its monotonic
    /// clock step back by ~0.6 ms (seen: openraft panics on it), which no
    /// real clock does.
    pub fake_monotonic: bool,
    /// The clock each node starts with (default: real time).
    pub start_clocks: BTreeMap<u64, ClockSetting>,
}

/// Where Debian's libfaketime package puts the multi-threaded library.
pub const FAKETIME_LIBRARY: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

impl Faketime {
    /// libfaketime from `$RAFTLOCK_FAKETIME_LIB` or Debian's path, if it is
    /// there.
    pub fn find(fake_monotonic: bool) -> Result<Faketime, String> {
        let library = std::env::var_os("RAFTLOCK_FAKETIME_LIB")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(FAKETIME_LIBRARY));
        if !library.is_file() {
            return Err(format!(
                "{} does not exist: install libfaketime (apt-get install libfaketime; scripts/jepsen.sh does it) or set RAFTLOCK_FAKETIME_LIB",
                library.display()
            ));
        }
        Ok(Faketime {
            library,
            fake_monotonic,
            start_clocks: BTreeMap::new(),
        })
    }
}

/// A node's clock as libfaketime is told to run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockSetting {
    /// The real time.
    Real,
    /// Wall clock shifted by this many milliseconds (either sign).
    Offset { ms: i64 },
    /// Clocks running at this rate from the process's start, in
    /// millionths (1 000 000 = real).
    Rate { millionths: u64 },
}

impl ClockSetting {
    /// The line libfaketime reads.
    fn spec(self) -> String {
        match self {
            ClockSetting::Real => "+0 x1".to_string(),
            ClockSetting::Offset { ms } => {
                let sign = if ms < 0 { '-' } else { '+' };
                let ms = ms.unsigned_abs();
                format!("{sign}{}.{:03}", ms / 1000, ms % 1000)
            }
            ClockSetting::Rate { millionths } => {
                format!(
                    "+0 x{}.{:06}",
                    millionths / 1_000_000,
                    millionths % 1_000_000
                )
            }
        }
    }
}
struct NodeProc {
    listen: SocketAddr,
    /// Its peer port (what the membership names).
    peer_listen: SocketAddr,
    /// Its metrics endpoint (`--metrics-listen`; every release has it).
    metrics: SocketAddr,
    data_dir: PathBuf,
    clock_file: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// The build it runs (and restarts on).
    binary: PathBuf,
}

/// A running cluster (see the module documentation).
pub struct Cluster {
    pub dir: PathBuf,
    /// Where a rolling upgrade moves nodes ([`ClusterConfig::upgrade_to`]).
    upgrade_to: Option<PathBuf>,
    nodes: BTreeMap<u64, NodeProc>,
    peer_proxies: BTreeMap<(u64, u64), Proxy>,
    client_proxies: BTreeMap<u64, Proxy>,
    faketime: Option<Faketime>,
    /// Nodes removed from the membership (still running) by
    /// [`Cluster::remove_member`].
    removed: BTreeSet<u64>,
    /// [`Cluster::mixed_phase_peer_messages`].
    mixed_traffic: BTreeMap<String, u64>,
    /// Each node's disk, when started with `power_disks`. Declared after
    /// nothing that uses it: `Drop` kills the nodes first, then the fields
    /// drop and the mounts go.
    disks: BTreeMap<u64, powerfs::Mount>,
    /// Nodes whose power is off: not started again until it is back.
    powered_off: BTreeSet<u64>,
    /// How the harness connects to the nodes (TLS when `secure`).
    transport: Transport,
    /// The certificates and auth file, when `secure`.
    secure: Option<SecureFiles>,
    /// The temporary directory (unless `keep_dir`), declared last: it goes
    /// after the disks are unmounted, which a busy mount point would stop.
    _tmp: Option<TempDir>,
}

/// What one node's log holds, read from its data directory after it was
/// stopped ([`Cluster::read_logs`]).
#[derive(Debug, Clone, Default)]
pub struct NodeLog {
    /// (index, (term, leader node), CRC32 of the entry's encoded payload),
    /// in index order.
    pub entries: Vec<(u64, (u64, u64), u32)>,
    /// The last purged index (entries at or below it are gone).
    pub purged: Option<u64>,
    /// The index of the last entry its state machine applied (committed).
    pub applied: Option<u64>,
}

/// A free port, kept bound until the returned listener is dropped: the
/// harness's own proxies bind port 0 after the nodes' ports are chosen, and
/// a port released at once could be handed to one of them (seen: "node 3:
/// cannot listen on 127.0.0.1:33581: Address already in use", twice in ~90
/// starts). Drop the listener just before the node is spawned.
fn reserve_port() -> Result<(SocketAddr, std::net::TcpListener), ClusterError> {
    raftlock_testkit::ports::reserve().map_err(io("reserving a free port"))
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
        let mut peer_listen = BTreeMap::new();
        let mut metrics_listen = BTreeMap::new();
        let mut reserved = BTreeMap::new();
        for id in &ids {
            let (addr, listener) = reserve_port()?;
            let (peer_addr, peer_listener) = reserve_port()?;
            let (metrics_addr, metrics_listener) = reserve_port()?;
            listen.insert(*id, addr);
            peer_listen.insert(*id, peer_addr);
            metrics_listen.insert(*id, metrics_addr);
            reserved.insert(*id, (listener, peer_listener, metrics_listener));
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
                    let p = Proxy::start(peer_listen[j])
                        .await
                        .map_err(io("starting a peer proxy"))?;
                    peer_proxies.insert((*i, *j), p);
                }
            }
        }
        // The membership names the nodes' real peer ports; every node dials
        // its peers through the i→j proxies instead (--peer-dial).
        let peers: Vec<String> = ids
            .iter()
            .map(|id| format!("{id}={}", peer_listen[id]))
            .collect();
        let mut disks = BTreeMap::new();
        if config.power_disks {
            powerfs::available().map_err(ClusterError::Power)?;
            for id in &ids {
                let at = dir.join(format!("node{id}.disk"));
                std::fs::create_dir_all(&at).map_err(io(format!("creating {}", at.display())))?;
                let mount = powerfs::mount(&at).map_err(|e| {
                    ClusterError::Power(format!("mounting at {}: {e}", at.display()))
                })?;
                disks.insert(*id, mount);
            }
        }
        let secure = if config.secure {
            Some(SecureFiles::write(&dir.join("certs"), &ids)?)
        } else {
            None
        };
        let transport = match &secure {
            Some(files) => files.transport()?,
            None => Transport::plaintext(),
        };
        let mut cluster = Cluster {
            transport,
            secure,
            _tmp: tmp,
            dir: dir.clone(),
            upgrade_to: config.upgrade_to.clone(),
            nodes: BTreeMap::new(),
            peer_proxies,
            client_proxies,
            faketime: config.faketime.clone(),
            removed: BTreeSet::new(),
            disks,
            powered_off: BTreeSet::new(),
            mixed_traffic: BTreeMap::new(),
        };
        for id in &ids {
            let dial: Vec<String> = ids
                .iter()
                .filter(|j| *j != id)
                .map(|j| format!("{j}={}", cluster.peer_proxies[&(*id, *j)].addr()))
                .collect();
            let data_dir = match cluster.disks.get(id) {
                Some(disk) => disk.mountpoint().join("data"),
                None => dir.join(format!("node{id}")),
            };
            let mut args = vec![
                "serve".to_string(),
                "--id".into(),
                id.to_string(),
                "--data-dir".into(),
                data_dir.display().to_string(),
                "--listen".into(),
                listen[id].to_string(),
                // Leader hints send clients through the node's proxy.
                "--advertise".into(),
                cluster.client_proxies[id].addr().to_string(),
                "--peer-listen".into(),
                peer_listen[id].to_string(),
                "--peers".into(),
                peers.join(","),
                "--peer-dial".into(),
                dial.join(","),
                "--heartbeat-ms".into(),
                "50".into(),
                // A follower campaigns after the lease (two heartbeats) plus
                // this: 700-1100 ms of silence. With 300-600 (400-700 ms
                // since the lease became two heartbeats) a node that this
                // 2-core machine stalled under the whole suite's load once
                // kept a fresh cluster from agreeing on a leader for 30 s.
                "--election-timeout-ms".into(),
                "600-1000".into(),
                "--rpc-timeout-ms".into(),
                "500".into(),
                "--write-timeout-ms".into(),
                "3000".into(),
                "--metrics-listen".into(),
                metrics_listen[id].to_string(),
            ];
            if let Some(files) = &cluster.secure {
                let node = &files.nodes[id];
                for (flag, path) in [
                    ("--tls-cert", &node.cert),
                    ("--tls-key", &node.key),
                    ("--tls-ca", &files.ca),
                    ("--auth", &files.auth),
                ] {
                    args.push(flag.into());
                    args.push(path.display().to_string());
                }
            } else if !config.extra_args.iter().any(|a| a == "--tls-cert") {
                args.push("--insecure".into());
            }
            args.extend(config.extra_args.iter().cloned());
            cluster.nodes.insert(
                *id,
                NodeProc {
                    listen: listen[id],
                    peer_listen: peer_listen[id],
                    metrics: metrics_listen[id],
                    data_dir,
                    clock_file: dir.join(format!("node{id}.faketime")),
                    args,
                    log: dir.join(format!("node{id}.log")),
                    child: None,
                    paused: false,
                    binary: config.binary.clone(),
                },
            );
            // The node binds its ports itself: let go of them now.
            drop(reserved.remove(id));
            cluster.spawn(*id)?;
        }
        cluster.wait_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    fn spawn(&mut self, id: u64) -> Result<(), ClusterError> {
        if self.powered_off.contains(&id) {
            // A machine without power runs nothing; the power fault's heal
            // starts it.
            return Ok(());
        }
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(ClusterError::UnknownNode(id))?;
        let binary = node.binary.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(io(format!("opening {}", node.log.display())))?;
        let err = log.try_clone().map_err(io("cloning a log handle"))?;
        let mut command = Command::new(&binary);
        command.args(&node.args).env(
            "RUST_LOG",
            std::env::var("RAFTLOCK_JEPSEN_LOG").unwrap_or("warn".into()),
        );
        if let Some(faketime) = &self.faketime {
            // A restarted node keeps its clock setting, as a machine would.
            if !node.clock_file.exists() {
                let start = faketime
                    .start_clocks
                    .get(&id)
                    .copied()
                    .unwrap_or(ClockSetting::Real);
                write_clock(&node.clock_file, start)?;
            }
            command
                .env("LD_PRELOAD", &faketime.library)
                .env("FAKETIME_TIMESTAMP_FILE", &node.clock_file)
                .env("FAKETIME_CACHE_DURATION", "1")
                .env(
                    "FAKETIME_DONT_FAKE_MONOTONIC",
                    if faketime.fake_monotonic { "0" } else { "1" },
                );
        }
        let child = command
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

    /// The nodes in the membership (all but the removed ones).
    pub fn members(&self) -> Vec<u64> {
        self.ids()
            .into_iter()
            .filter(|id| !self.removed.contains(id))
            .collect()
    }

    /// Whether the nodes run under libfaketime, and how.
    pub fn faketime(&self) -> Option<&Faketime> {
        self.faketime.as_ref()
    }

    /// Sets node `id`'s wall clock (it reads the change within a second).
    /// Only when monotonic clocks are not faked: see [`Faketime`].
    pub fn set_clock(&self, id: u64, setting: ClockSetting) -> Result<(), ClusterError> {
        let faketime = self.faketime.as_ref().ok_or(ClusterError::NoFaketime)?;
        if faketime.fake_monotonic {
            return Err(ClusterError::Clock(
                "with faked monotonic clocks a running node's clock is never changed (use restart_with_clock)".into(),
            ));
        }
        let node = self.nodes.get(&id).ok_or(ClusterError::UnknownNode(id))?;
        write_clock(&node.clock_file, setting)
    }

    /// kill -9 node `id` and start it again with this clock.
    pub fn restart_with_clock(
        &mut self,
        id: u64,
        setting: ClockSetting,
    ) -> Result<(), ClusterError> {
        if self.faketime.is_none() {
            return Err(ClusterError::NoFaketime);
        }
        self.kill(id)?;
        let node = self.nodes.get(&id).ok_or(ClusterError::UnknownNode(id))?;
        write_clock(&node.clock_file, setting)?;
        self.spawn(id)
    }

    /// Every node's wall clock back to real time. Rates of faked monotonic
    /// clocks stay: changing them in a running process is not safe (see
    /// [`Faketime`]) and bounded rate drift is what real clocks do anyway.
    pub fn heal_clocks(&self) -> Result<(), ClusterError> {
        match &self.faketime {
            Some(f) if !f.fake_monotonic => {
                for node in self.nodes.values() {
                    write_clock(&node.clock_file, ClockSetting::Real)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Removes node `id` from the membership through the leader (the node
    /// keeps running, outside the cluster). Waits for the change to commit.
    pub async fn remove_member(&mut self, id: u64) -> Result<(), ClusterError> {
        if !self.nodes.contains_key(&id) {
            return Err(ClusterError::UnknownNode(id));
        }
        self.admin(|mut admin| async move {
            admin
                .remove(pb::RemoveRequest { id })
                .await
                .map(|r| r.into_inner())
        })
        .await?;
        self.removed.insert(id);
        Ok(())
    }

    /// Adds a removed node back: as a learner (caught up), then a voter.
    pub async fn add_member(&mut self, id: u64) -> Result<(), ClusterError> {
        // The membership names peer addresses.
        let address = self
            .nodes
            .get(&id)
            .map(|n| n.peer_listen)
            .ok_or(ClusterError::UnknownNode(id))?
            .to_string();
        self.admin(|mut admin| {
            let address = address.clone();
            async move {
                admin
                    .add_learner(pb::AddLearnerRequest {
                        id,
                        address,
                        wait_caught_up: true,
                    })
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await?;
        self.admin(|mut admin| async move {
            admin
                .promote(pb::PromoteRequest { id })
                .await
                .map(|r| r.into_inner())
        })
        .await?;
        self.removed.remove(&id);
        Ok(())
    }

    /// Every removed node added back.
    pub async fn heal_membership(&mut self) -> Result<(), ClusterError> {
        let removed: Vec<u64> = self.removed.iter().copied().collect();
        for id in removed {
            self.add_member(id).await?;
        }
        Ok(())
    }

    /// Runs one membership call on the leader (directly, not through a
    /// proxy), retrying other nodes and elections for up to 30 s.
    async fn admin<F, Fut>(&self, call: F) -> Result<pb::MembershipResponse, ClusterError>
    where
        F: Fn(AdminClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<pb::MembershipResponse, tonic::Status>>,
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::from("no node answered");
        loop {
            let leader = self.leader().await;
            let order: Vec<u64> = leader
                .into_iter()
                .chain(self.members().into_iter().filter(|id| Some(*id) != leader))
                .collect();
            for id in order {
                let Some(addr) = self.direct_addr(id).filter(|_| self.is_running(id)) else {
                    continue;
                };
                let Ok(endpoint) = self.transport.endpoint(addr) else {
                    continue;
                };
                let endpoint = endpoint.connect_timeout(Duration::from_millis(300));
                let Ok(channel) = endpoint.connect().await else {
                    continue;
                };
                match tokio::time::timeout(Duration::from_secs(15), call(AdminClient::new(channel)))
                    .await
                {
                    Ok(Ok(response)) => return Ok(response),
                    Ok(Err(status)) => {
                        last = format!("node {id}: {:?} {}", status.code(), status.message())
                    }
                    Err(_) => last = format!("node {id}: no answer within 15 s"),
                }
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Membership(last));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// How the harness connects to the nodes: TLS with its own client
    /// certificate when the cluster is `secure`, else plaintext.
    pub fn transport(&self) -> Transport {
        self.transport.clone()
    }

    /// The certificates and auth file of a `secure` cluster.
    pub fn secure_files(&self) -> Option<&SecureFiles> {
        self.secure.as_ref()
    }

    /// For a `secure` cluster, checks on every running node that security
    /// is really on, so a run can never pass on a plaintext cluster while
    /// claiming TLS: a plaintext gRPC call to its client port gets no
    /// answer, a TLS call without a client certificate is refused
    /// UNAUTHENTICATED (auth is on), and the harness's own TLS call is
    /// answered. Returns one line per node saying what was seen.
    pub async fn check_secure(&self) -> Result<Vec<String>, ClusterError> {
        let setup = |m: String| ClusterError::Io {
            what: "checking TLS and auth".into(),
            source: std::io::Error::other(m),
        };
        if self.secure.is_none() {
            return Err(setup("the cluster was started without secure".into()));
        }
        let anonymous = self.transport.without_identity();
        let mut lines = Vec::new();
        for id in self.ids().into_iter().filter(|id| self.is_running(*id)) {
            let Some(addr) = self.direct_addr(id) else {
                continue;
            };
            if let Ok(r) = status_call(&Transport::plaintext(), addr).await {
                return Err(setup(format!(
                    "node {id} answered a plaintext call on {addr}: TLS is off ({r:?})"
                )));
            }
            match status_call(&anonymous, addr).await {
                Err(Some(tonic::Code::Unauthenticated)) => {}
                other => {
                    return Err(setup(format!(
                        "node {id}: a TLS call without a client certificate should be refused UNAUTHENTICATED (auth on), got {other:?}"
                    )));
                }
            }
            // The harness's own call may meet an election or a slow start:
            // a few tries.
            let mut answered = None;
            for _ in 0..10 {
                if let Ok(r) = status_call(&self.transport, addr).await {
                    answered = Some(r);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if answered.is_none() {
                return Err(setup(format!(
                    "node {id} did not answer the harness's TLS call as {HARNESS_IDENTITY}"
                )));
            }
            lines.push(format!(
                "node {id}: plaintext refused, no client certificate UNAUTHENTICATED, TLS as {HARNESS_IDENTITY} answered"
            ));
        }
        Ok(lines)
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

    /// Sets the link from clients to node `id` (both directions).
    pub fn set_client_link(&self, id: u64, mode: LinkMode) {
        if let Some(p) = self.client_proxies.get(&id) {
            p.set(mode);
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

    /// kill -9 of every node at the same moment (signals first, then
    /// reaping), as a crash of every machine that keeps the page cache.
    pub fn kill_all(&mut self) {
        self.kill_at_once(&self.ids());
    }

    fn kill_at_once(&mut self, ids: &[u64]) {
        let mut dying = Vec::new();
        for id in ids {
            if let Some(node) = self.nodes.get_mut(id)
                && let Some(child) = node.child.take()
            {
                signal(&child, libc::SIGKILL);
                if node.paused {
                    signal(&child, libc::SIGCONT);
                }
                node.paused = false;
                dying.push(child);
            }
        }
        for mut child in dying {
            let _ = child.wait();
        }
    }

    /// A power cut of nodes `ids` at the same moment: they are killed
    /// (SIGKILL to all, then reaped: after that none of their writes is
    /// still on its way), then every write to their disks that was not
    /// fsynced is dropped and the disks answer EIO until
    /// [`Cluster::power_on`]. Returns one line per disk saying what the
    /// cut dropped.
    pub fn power_cut(&mut self, ids: &[u64]) -> Result<Vec<String>, ClusterError> {
        if self.disks.is_empty() {
            return Err(ClusterError::Power(
                "this cluster was started without power_disks".into(),
            ));
        }
        let ids: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| self.disks.contains_key(id))
            .collect();
        self.powered_off.extend(ids.iter().copied());
        self.kill_at_once(&ids);
        let mut report = Vec::new();
        for id in &ids {
            let disk = &self.disks[id];
            disk.cut();
            report.push(format!("node {id}: {}", disk.stats()));
            // Syncs held before the cut were answered EIO by it; the disk
            // comes back as a normal one.
            disk.hold_syncs(false);
        }
        // What each cut threw away, for whoever reads the run afterwards.
        let path = self.dir.join("power-cuts.log");
        let mut text = report.join("\n");
        text.push('\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .map_err(io(format!("writing {}", path.display())))?;
        Ok(report)
    }

    /// Holds (or stops holding) every sync on the disks of `ids`: fsyncs
    /// wait, as on a disk slow to flush, while reads and writes go on, so
    /// a power cut then finds writes in flight (see [`powerfs::Mount::hold_syncs`]).
    pub fn hold_syncs(&self, ids: &[u64], on: bool) {
        for id in ids {
            if let Some(disk) = self.disks.get(id) {
                disk.hold_syncs(on);
            }
        }
    }

    /// Node `id`'s disk, when the cluster was started with `power_disks`
    /// (for faults finer than a cut, such as holding its syncs).
    pub fn disk(&self, id: u64) -> Option<&powerfs::Mount> {
        self.disks.get(&id)
    }

    /// Power back on for nodes `ids`: their disks serve what was durable
    /// at the cut, and the nodes start again.
    pub fn power_on(&mut self, ids: &[u64]) -> Result<(), ClusterError> {
        for id in ids {
            if let Some(disk) = self.disks.get(id) {
                disk.power_on();
            }
            self.powered_off.remove(id);
            self.restart(*id)?;
        }
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

    /// One step of a rolling upgrade: node `preferred` if it still runs the
    /// old build, else the first node (by id) that does, is stopped the way
    /// an operator stops it (SIGTERM, then SIGKILL after 15 s), and started
    /// again on the same data with the newer build
    /// ([`ClusterConfig::upgrade_to`]). Once every node runs it (or with no
    /// newer build), `preferred` is restarted the same way. Returns the node
    /// it restarted.
    ///
    /// Before a step of a mixed cluster (some nodes on each build), the
    /// peer messages of the nodes on the newer build are read
    /// ([`Cluster::mixed_phase_peer_messages`]).
    pub async fn upgrade(&mut self, preferred: u64) -> Result<u64, ClusterError> {
        self.note_mixed_phase_traffic().await;
        let newer = self.upgrade_to.clone();
        let old = |n: &NodeProc| newer.as_ref().is_some_and(|b| &n.binary != b);
        let id = match self.nodes.get(&preferred) {
            Some(n) if old(n) => preferred,
            _ => self
                .nodes
                .iter()
                .find(|(_, n)| old(n))
                .map_or(preferred, |(id, _)| *id),
        };
        if self.powered_off.contains(&id) {
            return Ok(id);
        }
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(ClusterError::UnknownNode(id))?;
        if let Some(mut child) = node.child.take() {
            if node.paused {
                signal(&child, libc::SIGCONT);
            }
            signal(&child, libc::SIGTERM);
            // Polled with the runtime's sleep, not the thread's: the
            // clients and proxies of the run share this runtime.
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Gone already (reaped by try_wait) or SIGKILLed now: the wait
            // that follows returns at once.
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
        if let Some(newer) = newer {
            node.binary = newer;
        }
        self.spawn(id)?;
        Ok(id)
    }

    /// While the cluster is mixed (running nodes on both builds of a
    /// rolling upgrade), adds what the running nodes of the newer build
    /// counted to [`Cluster::mixed_phase_peer_messages`].
    async fn note_mixed_phase_traffic(&mut self) {
        let Some(newer) = self.upgrade_to.clone() else {
            return;
        };
        let running: Vec<(u64, bool)> = self
            .nodes
            .iter()
            .filter(|(id, _)| self.is_running(**id))
            .map(|(id, n)| (*id, n.binary == newer))
            .collect();
        let mixed = running.iter().any(|(_, new)| *new) && running.iter().any(|(_, new)| !*new);
        if !mixed {
            return;
        }
        let mut now: BTreeMap<String, u64> = BTreeMap::new();
        for (id, _) in running.iter().filter(|(_, new)| *new) {
            for (series, n) in self.peer_messages(*id).await.unwrap_or_default() {
                *now.entry(series).or_insert(0) += n;
            }
        }
        for (series, n) in now {
            let seen = self.mixed_traffic.entry(series).or_insert(0);
            *seen = (*seen).max(n);
        }
    }

    /// The most peer messages the nodes of the newer build had counted
    /// together, at any step of a rolling upgrade taken while the cluster
    /// was mixed, by series (`protocol="1",direction="sent"`...).
    pub fn mixed_phase_peer_messages(&self) -> &BTreeMap<String, u64> {
        &self.mixed_traffic
    }

    /// Node `id`'s `raftlock_peer_messages_total` series, by labels
    /// (`protocol="2",direction="received"` → count), read from its
    /// metrics endpoint; None if it does not answer within 2 s, empty from
    /// a build without the series.
    pub async fn peer_messages(&self, id: u64) -> Option<BTreeMap<String, u64>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if !self.is_running(id) {
            return None;
        }
        let addr = self.nodes.get(&id)?.metrics;
        let scrape = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
            stream
                .write_all(
                    format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .ok()?;
            let mut text = String::new();
            // The endpoint answers with a few tens of KiB: bounded anyway.
            stream
                .take(4 * 1024 * 1024)
                .read_to_string(&mut text)
                .await
                .ok()?;
            Some(text)
        };
        let text = tokio::time::timeout(Duration::from_secs(2), scrape)
            .await
            .ok()??;
        Some(raftlock_testkit::process::peer_message_series(&text))
    }

    /// The nodes running the newer build of a rolling upgrade.
    pub fn upgraded(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| self.upgrade_to.as_ref() == Some(&n.binary))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Finishes a rolling upgrade: every node still on the old build is
    /// upgraded, one at a time, each once the cluster has a leader again.
    pub async fn finish_upgrade(&mut self) -> Result<(), ClusterError> {
        let Some(newer) = self.upgrade_to.clone() else {
            return Ok(());
        };
        let old: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.binary != newer)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            // What the cluster had applied before this node went down: it
            // must have it again before the next one goes (never two down).
            let mut applied = 0;
            if let Some(leader) = self.leader().await
                && let Some(s) = self.status(leader).await
            {
                applied = s.applied_index;
            }
            self.upgrade(id).await?;
            self.wait_leader(Duration::from_secs(30)).await?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while self
                .status(id)
                .await
                .is_none_or(|s| s.applied_index < applied)
            {
                if Instant::now() >= deadline {
                    return Err(ClusterError::Upgrade(format!(
                        "node {id} did not catch up within 30 s of its upgrade; see the node logs in {}",
                        self.dir.display()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
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

    /// Links healed, clocks real, paused nodes resumed, dead nodes
    /// restarted, removed nodes added back.
    pub async fn heal_all(&mut self) -> Result<(), ClusterError> {
        self.heal_links();
        self.heal_clocks()?;
        let off: Vec<u64> = self.powered_off.iter().copied().collect();
        self.power_on(&off)?;
        for id in self.ids() {
            self.resume(id)?;
            self.restart(id)?;
        }
        self.heal_membership().await?;
        self.finish_upgrade().await
    }

    /// One node's view (direct, not through a proxy), if it answers soon.
    pub async fn status(&self, id: u64) -> Option<pb::StatusResponse> {
        if !self.is_running(id) {
            return None;
        }
        let addr = self.direct_addr(id)?;
        status_call(&self.transport, addr).await.ok()
    }

    /// The leader most running members name, if any.
    pub async fn leader(&self) -> Option<u64> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for id in self.members() {
            if let Some(s) = self.status(id).await
                && let Some(l) = s.leader_id
            {
                *votes.entry(l).or_insert(0) += 1;
            }
        }
        votes.into_iter().max_by_key(|(_, n)| *n).map(|(l, _)| l)
    }

    /// Waits until every running member names the same leader.
    pub async fn wait_leader(&self, within: Duration) -> Result<u64, ClusterError> {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = BTreeSet::new();
            let mut all = true;
            for id in self.members() {
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

    /// Stops every node and reads each one's Raft log from its data
    /// directory, for [`crate::checker::logs`]: one entry per node, always;
    /// a store that does not open (damaged, or emptied by a lost power
    /// cut) is that node's error, for the checker to count. On powerfs
    /// disks the power of every node is cut once more after the kill, so
    /// what is read is what was durable. The nodes stay stopped.
    pub async fn read_logs(&mut self) -> BTreeMap<u64, Result<NodeLog, String>> {
        self.kill_all();
        for disk in self.disks.values() {
            disk.cut();
            disk.hold_syncs(false);
            disk.power_on();
        }
        self.powered_off.clear();
        let mut logs = BTreeMap::new();
        for (id, node) in &self.nodes {
            logs.insert(*id, read_log(&node.data_dir).await);
        }
        logs
    }
}

/// One stopped node's log (see [`Cluster::read_logs`]).
async fn read_log(dir: &Path) -> Result<NodeLog, String> {
    use raftlock_store::openraft::RaftLogReader;
    use raftlock_store::openraft::storage::RaftLogStorage;
    use raftlock_store::openraft::storage::RaftStateMachine;
    let (mut log, mut sm) = raftlock_store::open(dir, raftlock_store::StoreOptions::default())
        .map_err(|e| e.to_string())?;
    let closed = log.closed();
    let read = async {
        let state = log.get_log_state().await.map_err(|e| e.to_string())?;
        let (applied, _) = sm.applied_state().await.map_err(|e| e.to_string())?;
        let entries = log
            .try_get_log_entries(..)
            .await
            .map_err(|e| e.to_string())?;
        let entries = entries
            .iter()
            .map(|e| {
                // The stored encoding of the whole entry: equal entries
                // give equal bytes (raftlock_codec is deterministic).
                let stored =
                    raftlock_store::frame::encode(&"log entry", e).map_err(|d| d.to_string())?;
                Ok((
                    e.log_id.index,
                    (e.log_id.leader_id.term, e.log_id.leader_id.node_id),
                    crc32fast::hash(&stored),
                ))
            })
            .collect::<Result<_, String>>()?;
        Ok(NodeLog {
            entries,
            purged: state.last_purged_log_id.map(|l| l.index),
            applied: applied.map(|l| l.index),
        })
    };
    let result = read.await;
    drop((log, sm));
    // The next node's store may be opened at once; this one lets go of
    // its files a moment after the drop.
    let _ = tokio::time::timeout(Duration::from_secs(10), closed.wait()).await;
    result
}

/// Writes a clock setting atomically (libfaketime may read it any time).
fn write_clock(path: &Path, setting: ClockSetting) -> Result<(), ClusterError> {
    let tmp = path.with_extension("faketime.tmp");
    std::fs::write(&tmp, format!("{}\n", setting.spec()))
        .map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("renaming {}", tmp.display())))
}

/// One Status call to `addr`, bounded (800 ms): the answer, or the gRPC
/// code it was refused with (None: no connection or no answer in time).
async fn status_call(
    transport: &Transport,
    addr: SocketAddr,
) -> Result<pb::StatusResponse, Option<tonic::Code>> {
    let endpoint = transport
        .endpoint(addr)
        .map_err(|_| None)?
        .connect_timeout(Duration::from_millis(300));
    let call = async {
        let channel = endpoint.connect().await.map_err(|_| None)?;
        let mut admin = AdminClient::new(channel);
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(Duration::from_millis(500));
        admin
            .status(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| Some(s.code()))
    };
    tokio::time::timeout(Duration::from_millis(800), call)
        .await
        .unwrap_or(Err(None))
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

#[cfg(test)]
mod tests {
    use super::ClockSetting;

    #[test]
    fn clock_settings_are_what_libfaketime_reads() {
        assert_eq!(ClockSetting::Real.spec(), "+0 x1");
        assert_eq!(ClockSetting::Offset { ms: 1_500 }.spec(), "+1.500");
        assert_eq!(ClockSetting::Offset { ms: -3_600_007 }.spec(), "-3600.007");
        assert_eq!(
            ClockSetting::Rate {
                millionths: 1_021_336
            }
            .spec(),
            "+0 x1.021336"
        );
        assert_eq!(
            ClockSetting::Rate {
                millionths: 981_000
            }
            .spec(),
            "+0 x0.981000"
        );
    }
}
