//! Everything a node needs to start. Every field is explicit: timeouts and
//! durability are safety decisions, not hidden defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use raftlock_core::Limits;

/// Configuration of one raftlock node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id, unique in the cluster and never reused for a node
    /// whose data was wiped (openraft's leader rejects such a node).
    pub id: u64,
    /// Where the node keeps its sled database.
    pub data_dir: PathBuf,
    /// The address to listen on for clients (`host:port`): the client API
    /// (`raftlock.v1`), health and reflection, never the peer transport.
    pub listen: String,
    /// The address clients reach this node at (leader hints name it);
    /// defaults to the bound listen address.
    pub advertise: Option<String>,
    /// The address to listen on for peers (`host:port`): the node-to-node
    /// transport (`raftlock.internal.v1`) only. [`NodeConfig::new`] makes
    /// it the client port + 1000 (port 0 stays 0).
    pub peer_listen: String,
    /// The address other nodes reach this node's peer listener at; defaults
    /// to the bound peer address.
    pub peer_advertise: Option<String>,
    /// TLS on both listeners and when dialing peers; `None` serves and
    /// dials plaintext (only for tests, embedding on loopback, and
    /// `--insecure`).
    pub tls: Option<crate::tls::TlsFiles>,
    /// Most connections open at once on each listener; more are closed
    /// as they arrive.
    pub max_connections: usize,
    /// The initial cluster (id → peer address), like etcd's `--initial-cluster`.
    /// A node whose store is new and that is named here bootstraps the
    /// cluster with exactly these voters (when `initial_cluster_state`
    /// allows it); every node must get the same map.
    /// Empty: the node waits to be added through the admin API.
    pub initial_members: BTreeMap<u64, String>,
    /// When a node with a new store and `initial_members` may bootstrap
    /// (like etcd's `--initial-cluster-state`): by default only once every
    /// other member answered and none belongs to a cluster.
    pub initial_cluster_state: InitialClusterState,
    /// Dial these peers (id → `host:port`) at the given address instead of
    /// the address the membership advertises for them: for NAT, sidecars
    /// and fault-injecting proxies. Only this node's outgoing connections
    /// change; what it advertises and what others dial stay as they are.
    pub peer_dial: BTreeMap<u64, String>,
    /// Raft timing: heartbeat and election timeouts.
    pub raft: RaftTiming,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot (for slow followers).
    pub keep_entries_after_snapshot: u64,
    /// Limits the state machine applies when the cluster is bootstrapped.
    /// (Later changes go through the log.)
    pub limits: Limits,
    /// Every fencing token, lease id, waiter id and revision this cluster
    /// hands out from now on is above this (0: no floor). A leader whose
    /// state's high water is below it raises the token epoch past it
    /// before it proposes anything else (docs/operations.md: give the same
    /// value to every node, e.g. the replaced cluster's token_high_water).
    pub token_floor: u64,
    /// The peer protocol versions this node announces and accepts: leave
    /// it at the default (every version this build speaks). Tests set a
    /// narrower or foreign range to stand in for another release
    /// (`RAFTLOCK_TEST_PEER_PROTOCOL`); the payloads keep their real
    /// encoding.
    pub peer_protocol: crate::ProtocolRange,
    /// How often the leader checks lease deadlines and lock-delays.
    pub lease_check_interval: Duration,
    /// Most leases ended by one expiry entry.
    pub max_expire_batch: usize,
    /// Events kept in memory for watchers that resume from a revision.
    pub watch_history_events: usize,
    /// Event batches a watcher may have pending before it is cut off.
    pub watch_buffer_batches: usize,
    /// Most watch streams open on this node.
    pub max_watchers: usize,
    /// Longest time a client may wait in an acquire.
    pub max_wait: Duration,
    /// sled page cache.
    pub cache_capacity_bytes: u64,
    /// Longest time a write may take before the caller gets an error.
    pub write_timeout: Duration,
    /// Largest gRPC message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Where to serve Prometheus metrics (`GET /metrics`) and a plain
    /// health check (`GET /health`) over HTTP; `None`: not served
    /// (`NodeHandle::metrics_text` still has them).
    pub metrics_listen: Option<String>,
    /// Lock-name prefixes that are a lock group of their own in the
    /// per-group metrics (the longest match wins; other names group by
    /// their first path segment).
    pub metrics_lock_groups: Vec<String>,
    /// Most lock groups in the metrics; names of further groups count
    /// under `_other` (lock names are chosen by clients: this bounds the
    /// number of series).
    pub metrics_max_lock_groups: usize,
    /// The auth policy (docs/security-auth.md): identities, their rules
    /// and limits. `None`: auth is off and every caller may do everything
    /// (as "anonymous").
    pub auth: Option<crate::auth::AuthSource>,
    /// Disaster recovery after losing a majority for good (etcd's
    /// `--force-new-cluster`): make this surviving member's store a
    /// one-member cluster with a new cluster id and a raised token epoch,
    /// keeping its state and log, before Raft starts. Others come back as
    /// learners with wiped stores. Harmless while the membership is still
    /// the forced one; refused once members were added. Needs an existing
    /// store; `initial_members` is ignored.
    pub force_new_cluster: bool,
}

/// When a node whose store is new, started with `initial_members`, makes
/// the cluster of those members (Raft's `initialize`). Whatever the value,
/// a node never bootstraps once a member it asks names a cluster (it is a
/// node whose data was lost, beside a running or forced cluster) or refuses
/// it as a member it knows with another store; it then waits to be added.
///
/// Bootstrapping too eagerly is the danger: a store that is new because it
/// was wiped, beside a cluster it cannot reach at that moment, would make a
/// second cluster whose tokens restart from the bottom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialClusterState {
    /// Bootstrap only once EVERY other member answered and none belongs to
    /// a cluster: all of them are new, so this is the birth of the
    /// cluster. While any is unreachable the node keeps asking (and
    /// serves, uninitialized, so a cluster can add it as a learner).
    #[default]
    Auto,
    /// The operator says the cluster is new: bootstrap once a majority of
    /// the members (counting this node) answered and none belongs to a
    /// cluster, so a first start with a member down still forms the
    /// cluster. Only for the first start of a cluster.
    New,
    /// Never bootstrap: the cluster exists and this node waits to be added
    /// (`raftlock cluster add-learner`).
    Existing,
}

impl InitialClusterState {
    /// The name used by `--initial-cluster-state` and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            InitialClusterState::Auto => "auto",
            InitialClusterState::New => "new",
            InitialClusterState::Existing => "existing",
        }
    }
}

/// Raft timing. Lease safety does not depend on these (the leader counts
/// lease deadlines from its own receipt of keep-alives), only availability.
///
/// A follower campaigns after [`RaftTiming::leader_lease`] plus its
/// election timeout (drawn once per process between the two bounds)
/// without a heartbeat: with the defaults, 600-1000 ms after the leader's
/// last one.
#[derive(Debug, Clone)]
pub struct RaftTiming {
    /// How often the leader sends heartbeats.
    pub heartbeat: Duration,
    /// A follower that has heard no leader for a random time between this
    /// and `election_timeout_max` starts an election.
    pub election_timeout_min: Duration,
    /// See `election_timeout_min`.
    pub election_timeout_max: Duration,
    /// Timeout of one Raft RPC to a peer.
    pub rpc_timeout: Duration,
}

impl RaftTiming {
    /// openraft's leader lease (patch 0009): two heartbeats. A follower
    /// that heard from the leader less than this long ago refuses to vote
    /// for anyone else (a node that was cut off and comes back with a
    /// higher term cannot unseat a leader that is heard from), and one that
    /// knows a leader waits this long beyond its election timeout before it
    /// campaigns. openraft's own choice, the whole `election_timeout_max`,
    /// added 800 ms to every failover (notes in docs/performance.md,
    /// Failover); two heartbeats keep the guard for as long as heartbeats
    /// arrive, and one lost heartbeat does not open it.
    pub fn leader_lease(&self) -> Duration {
        self.heartbeat * 2
    }
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(400),
            election_timeout_max: Duration::from_millis(800),
            rpc_timeout: Duration::from_millis(1_000),
        }
    }
}

impl NodeConfig {
    /// A configuration with the documented defaults for everything but the
    /// node's identity and places.
    pub fn new(id: u64, data_dir: impl Into<PathBuf>, listen: impl Into<String>) -> Self {
        let listen = listen.into();
        NodeConfig {
            id,
            data_dir: data_dir.into(),
            peer_listen: peer_listen_for(&listen),
            listen,
            advertise: None,
            peer_advertise: None,
            tls: None,
            max_connections: 4_096,
            initial_members: BTreeMap::new(),
            initial_cluster_state: InitialClusterState::Auto,
            peer_dial: BTreeMap::new(),
            raft: RaftTiming::default(),
            snapshot_every_entries: 10_000,
            keep_entries_after_snapshot: 1_000,
            limits: Limits::default(),
            token_floor: 0,
            peer_protocol: crate::ProtocolRange::default(),
            lease_check_interval: Duration::from_millis(50),
            max_expire_batch: 1_000,
            watch_history_events: 10_000,
            watch_buffer_batches: 1_024,
            max_watchers: 10_000,
            max_wait: Duration::from_secs(24 * 3600),
            cache_capacity_bytes: 64 * 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            max_message_bytes: 4 * 1024 * 1024,
            metrics_listen: None,
            metrics_lock_groups: Vec::new(),
            metrics_max_lock_groups: 64,
            auth: None,
            force_new_cluster: false,
        }
    }

    /// What [`Node::start`](crate::Node::start) checks before it opens the
    /// store or binds a port: [`NodeConfig::validate`], the TLS files
    /// (readable, the key matching the certificate, a certificate from the
    /// CA that names this node) and the auth file. Opens, binds and
    /// changes nothing (`raftlock serve --check`).
    pub fn check(&self) -> Result<(), crate::StartError> {
        self.validate().map_err(crate::StartError::Config)?;
        if let Some(files) = &self.tls {
            crate::tls::Tls::load(files.clone(), self.id)?;
        }
        if let Some(source) = &self.auth {
            source.load()?;
        }
        Ok(())
    }

    /// Checks the combination; errors name the field.
    ///
    /// (The peer listener defaults to the client port + 1000.)
    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("id: node ids start at 1".into());
        }
        if !self.initial_members.is_empty() && !self.initial_members.contains_key(&self.id) {
            return Err(format!(
                "initial_members: this node's id {} is not among {:?}",
                self.id,
                self.initial_members.keys().collect::<Vec<_>>()
            ));
        }
        if self.initial_members.contains_key(&0) {
            return Err("initial_members: node ids start at 1".into());
        }
        if self.initial_cluster_state == InitialClusterState::New && self.initial_members.is_empty()
        {
            return Err(
                "initial_cluster_state new: there is no cluster to bootstrap without initial_members (--peers)"
                    .into(),
            );
        }
        let t = &self.raft;
        if t.heartbeat.is_zero() || t.election_timeout_min <= t.heartbeat * 2 {
            return Err("raft: the election timeout must exceed two heartbeats".into());
        }
        if t.election_timeout_max <= t.election_timeout_min {
            return Err("raft: election_timeout_max must exceed election_timeout_min".into());
        }
        if raftlock_core::epoch_above(self.token_floor).is_none() {
            return Err(format!(
                "token_floor: {} is in the last token epoch; no epoch is above it",
                self.token_floor
            ));
        }
        if self.snapshot_every_entries == 0 {
            return Err("snapshot_every_entries must be at least 1".into());
        }
        if self.lease_check_interval.is_zero() || self.lease_check_interval > Duration::from_secs(1)
        {
            return Err("lease_check_interval must be between 1 ms and 1 s".into());
        }
        if self.max_expire_batch == 0 || self.watch_buffer_batches == 0 || self.max_watchers == 0 {
            return Err(
                "max_expire_batch, watch_buffer_batches and max_watchers must be at least 1".into(),
            );
        }
        if !(64 * 1024..=64 * 1024 * 1024).contains(&self.max_message_bytes) {
            return Err("max_message_bytes must be between 64 KiB and 64 MiB".into());
        }
        if self.write_timeout < Duration::from_millis(100)
            || self.write_timeout > Duration::from_secs(300)
        {
            return Err("write_timeout must be between 100 ms and 5 min".into());
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if self.peer_listen == self.listen && !self.listen.ends_with(":0") {
            return Err(format!(
                "peer_listen: the peer port must differ from the client port ({})",
                self.listen
            ));
        }
        if !(1..=10_000).contains(&self.metrics_max_lock_groups) {
            return Err("metrics_max_lock_groups must be between 1 and 10000".into());
        }
        if self.metrics_lock_groups.len() > self.metrics_max_lock_groups {
            return Err(format!(
                "metrics_lock_groups: {} prefixes, more than metrics_max_lock_groups ({})",
                self.metrics_lock_groups.len(),
                self.metrics_max_lock_groups
            ));
        }
        if let Some(p) = self
            .metrics_lock_groups
            .iter()
            .find(|p| p.is_empty() || p.len() > crate::lock_groups::MAX_SEGMENT_BYTES * 4)
        {
            return Err(format!(
                "metrics_lock_groups: {p:?}: a prefix must be 1 to {} bytes",
                crate::lock_groups::MAX_SEGMENT_BYTES * 4
            ));
        }
        if self.max_wait > Duration::from_secs(24 * 3600) {
            return Err("max_wait must be at most 24 h".into());
        }
        self.limits.validate().map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The default peer address for client address `listen`: the same host,
/// port + 1000 (port 0, "any free port", stays 0). An address that does not
/// parse is kept as it is, for `validate` and the bind to report.
pub fn peer_listen_for(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(0) => format!("{host}:0"),
            Ok(p) => match p.checked_add(1000) {
                Some(peer) => format!("{host}:{peer}"),
                None => listen.to_string(),
            },
            Err(_) => listen.to_string(),
        },
        None => listen.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_port_defaults_to_the_client_port_plus_1000() {
        assert_eq!(peer_listen_for("127.0.0.1:7001"), "127.0.0.1:8001");
        assert_eq!(peer_listen_for("[::1]:7001"), "[::1]:8001");
        assert_eq!(peer_listen_for("127.0.0.1:0"), "127.0.0.1:0");
        assert_eq!(peer_listen_for("h:65000"), "h:65000");
        let config = NodeConfig::new(1, "/tmp/x", "0.0.0.0:7001");
        assert_eq!(config.peer_listen, "0.0.0.0:8001");
        let mut same = config.clone();
        same.peer_listen = same.listen.clone();
        assert!(same.validate().unwrap_err().contains("peer_listen"));
    }
}
