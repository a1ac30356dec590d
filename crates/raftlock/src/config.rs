//! `raftlock serve` options: flags (and their environment variables), the
//! TOML file, and how both become a checked [`NodeConfig`].
//!
//! Each option has one name: `--snapshot-every` on the command line,
//! `RAFTLOCK_SNAPSHOT_EVERY` in the environment, `snapshot_every` in the
//! file. Limits are flags like `--max-name-bytes` and keys of the file's
//! `[limits]` table. Precedence: flag, then environment, then file, then
//! the default.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use raftlock_core::Limits;
use raftlock_node::NodeConfig;
use serde::{Deserialize, Serialize};

use crate::Failure;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// `--initial-cluster-state`: when a node whose data directory is new,
/// started with `--peers`, makes the cluster (like etcd's option of that
/// name, with a safe default that etcd does not have).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialClusterState {
    /// Bootstrap only once every other node of --peers answered and none
    /// belongs to a cluster; keep asking while one does not answer.
    #[default]
    Auto,
    /// The cluster is new: bootstrap once a majority of --peers (counting
    /// this node) answered and none belongs to a cluster. For a first start
    /// with a node down; remove it afterwards.
    New,
    /// The cluster exists: never bootstrap, wait to be added.
    Existing,
}

impl From<InitialClusterState> for raftlock_node::InitialClusterState {
    fn from(state: InitialClusterState) -> Self {
        match state {
            InitialClusterState::Auto => raftlock_node::InitialClusterState::Auto,
            InitialClusterState::New => raftlock_node::InitialClusterState::New,
            InitialClusterState::Existing => raftlock_node::InitialClusterState::Existing,
        }
    }
}

impl From<raftlock_node::InitialClusterState> for InitialClusterState {
    fn from(state: raftlock_node::InitialClusterState) -> Self {
        match state {
            raftlock_node::InitialClusterState::Auto => InitialClusterState::Auto,
            raftlock_node::InitialClusterState::New => InitialClusterState::New,
            raftlock_node::InitialClusterState::Existing => InitialClusterState::Existing,
        }
    }
}

const CLUSTER: &str = "Node and cluster";
const RAFT: &str = "Raft timing";
const STORAGE: &str = "Storage and snapshots";
const SERVICE: &str = "Leases, waits and watches";
const LIMITS: &str = "Limits (applied to the whole cluster by the leader)";
const LOGGING: &str = "Logging";
const SECURITY: &str = "Security (docs/security.md)";

/// Flags of `raftlock serve`. Every field is optional here: a missing one
/// comes from the file or the default, and required ones are checked after
/// merging.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the options below (keys are the flag names with
    /// `_` for `-`, limits in a [limits] table). Unknown keys are an error.
    #[arg(long, short = 'c', env = "RAFTLOCK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the configuration and exit: resolve the flags, environment
    /// and file, load the TLS and auth files as a start would, print the
    /// result as a config file, and exit 0, or 2 naming the mistake. Opens
    /// no store and binds no port (for deploy scripts, CI and
    /// ExecStartPre). Not a file key or environment variable: a node must
    /// never skip its start by accident.
    #[arg(long)]
    pub check: bool,

    /// This node's id (1, 2, ...), unique in the cluster. A node whose data
    /// was lost comes back under a new id, or under its old one after
    /// `raftlock cluster remove` and `forget`. Required (or
    /// --id-from-hostname).
    #[arg(long, env = "RAFTLOCK_ID", value_name = "N", help_heading = CLUSTER)]
    pub id: Option<u64>,

    /// Take this node's id from the hostname instead of --id: its trailing
    /// `-N` ordinal plus one, so a StatefulSet's pod raftlock-0 is node 1,
    /// raftlock-1 node 2 (of the name's first label: raftlock-2.raftlock
    /// is node 3). A hostname without an ordinal is an error naming it.
    #[arg(long, env = "RAFTLOCK_ID_FROM_HOSTNAME", help_heading = CLUSTER)]
    pub id_from_hostname: bool,

    /// The name --id-from-hostname reads (unused without it) [default:
    /// this machine's hostname, which in a Kubernetes pod is the pod's
    /// name].
    #[arg(long, env = "RAFTLOCK_HOSTNAME", value_name = "NAME", help_heading = CLUSTER)]
    pub hostname: Option<String>,

    /// Directory of this node's database (created if missing; one process
    /// at a time). Required.
    #[arg(long, env = "RAFTLOCK_DATA_DIR", value_name = "DIR", help_heading = CLUSTER)]
    pub data_dir: Option<PathBuf>,

    /// host:port to listen on for clients (the client API, health and
    /// reflection), e.g. 0.0.0.0:7401. Required.
    #[arg(long, env = "RAFTLOCK_LISTEN", value_name = "ADDR", help_heading = CLUSTER)]
    pub listen: Option<String>,

    /// host:port at which clients reach this node; leader hints name it
    /// [default: the host of this node's address in --peers with the
    /// --listen port, else the bound listen address].
    #[arg(long, env = "RAFTLOCK_ADVERTISE", value_name = "ADDR", help_heading = CLUSTER)]
    pub advertise: Option<String>,

    /// host:port to listen on for peers (the node-to-node transport only,
    /// never the client API) [default: the --listen host with its port +
    /// 1000, e.g. 0.0.0.0:8401].
    #[arg(long, env = "RAFTLOCK_PEER_LISTEN", value_name = "ADDR", help_heading = CLUSTER)]
    pub peer_listen: Option<String>,

    /// host:port at which peers reach this node's peer listener [default:
    /// this node's address in --peers, else the bound peer address].
    #[arg(long, env = "RAFTLOCK_PEER_ADVERTISE", value_name = "ADDR", help_heading = CLUSTER)]
    pub peer_advertise: Option<String>,

    /// This node's certificate (PEM), from `raftlock certs node`: both
    /// listeners serve TLS and peers are dialed with mutual TLS. Needs
    /// --tls-key and --tls-ca. Re-read on SIGHUP and when the file changes.
    #[arg(long, env = "RAFTLOCK_TLS_CERT", value_name = "FILE", help_heading = SECURITY)]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "RAFTLOCK_TLS_KEY", value_name = "FILE", help_heading = SECURITY)]
    pub tls_key: Option<PathBuf>,

    /// The CA (PEM) that signs the cluster's node and client certificates:
    /// peers must present a node certificate from it, clients may present
    /// a client certificate from it.
    #[arg(long, env = "RAFTLOCK_TLS_CA", value_name = "FILE", help_heading = SECURITY)]
    pub tls_ca: Option<PathBuf>,

    /// Serve and dial plaintext, with no TLS: anyone who reaches the ports
    /// can take part. Only for a private network or a machine of your own;
    /// required when the --tls-* flags are not given.
    #[arg(long, env = "RAFTLOCK_INSECURE", help_heading = SECURITY)]
    pub insecure: bool,

    /// host:port to serve Prometheus metrics (GET /metrics) and a health
    /// check (GET /health: 200 while a leader is known) over plain HTTP,
    /// e.g. 0.0.0.0:7411 [default: not served].
    #[arg(long, env = "RAFTLOCK_METRICS_LISTEN", value_name = "ADDR", help_heading = CLUSTER)]
    pub metrics_listen: Option<String>,

    /// A lock-name prefix that is a lock group of its own in the per-group
    /// metrics (repeatable, or comma-separated; the longest match wins);
    /// other names group by their first path segment [default: none].
    #[arg(long, env = "RAFTLOCK_METRICS_LOCK_GROUP", value_name = "PREFIX", value_delimiter = ',', help_heading = CLUSTER)]
    pub metrics_lock_group: Vec<String>,

    /// Most lock groups in the metrics; names of further groups count under
    /// `_other` (this bounds the number of series) [default: 64].
    #[arg(long, env = "RAFTLOCK_METRICS_MAX_LOCK_GROUPS", value_name = "N", help_heading = CLUSTER)]
    pub metrics_max_lock_groups: Option<usize>,

    /// Auth file (TOML): identities (client certificate names, bearer
    /// token digests), their roles and limits; see docs/security-auth.md.
    /// A file with a mistake stops the start; re-read on SIGHUP (a mistake
    /// then keeps the old policy) [default: auth off, every caller may do
    /// everything].
    #[arg(long, env = "RAFTLOCK_AUTH", value_name = "FILE", help_heading = SECURITY)]
    pub auth: Option<PathBuf>,

    /// The initial cluster, `ID=HOST:PORT,...` naming each node's PEER
    /// address (its --peer-listen port; e.g.
    /// 1=10.0.0.1:8401,2=10.0.0.2:8401,3=10.0.0.3:8401). Give every node the
    /// same list: a node with a new data directory that is named here
    /// bootstraps the cluster with exactly these voters once every other
    /// node answered and none belongs to a cluster (see
    /// --initial-cluster-state); if one does, it waits to be added. Ignored
    /// once the node has data. Without it a new node waits to be added through
    /// Admin.AddLearner. In the file: a [peers] table, `1 = "10.0.0.1:8401"`.
    #[arg(long, env = "RAFTLOCK_PEERS", value_name = "ID=ADDR,...", help_heading = CLUSTER)]
    pub peers: Option<String>,

    /// When a node with a new data directory and --peers makes the cluster
    /// (docs/operations.md, "Bootstrapping"): a node that does not answer
    /// may belong to a cluster (a forced one, or a running one whose member
    /// lost its data), so `auto` waits for every node. Ignored once the
    /// node has data [default: auto].
    #[arg(long, env = "RAFTLOCK_INITIAL_CLUSTER_STATE", value_name = "STATE", help_heading = CLUSTER)]
    pub initial_cluster_state: Option<InitialClusterState>,

    /// Dial these peers at another address than the one the cluster
    /// membership advertises for them, `ID=HOST:PORT,...` (for NAT, sidecars
    /// or fault-injecting proxies). Only this node's outgoing connections to
    /// those peers change. In the file: a [peer_dial] table.
    #[arg(long, env = "RAFTLOCK_PEER_DIAL", value_name = "ID=ADDR,...", help_heading = CLUSTER)]
    pub peer_dial: Option<String>,

    /// Disaster recovery when a majority is lost for good: make this
    /// surviving member the only member of a NEW cluster (new cluster id,
    /// tokens continue above every earlier one), keeping its state and its
    /// log; then add the others back as learners with wiped data dirs.
    /// Use it on ONE node only, and only when the lost nodes will never
    /// come back (docs/operations.md, "Losing a majority"). A flag only: no
    /// environment variable or file key. Harmless on a restart while the
    /// membership is the forced one; refused once members were added.
    #[arg(long, help_heading = CLUSTER)]
    pub force_new_cluster: bool,

    /// Interval of the leader's heartbeats, in ms [default: 100].
    #[arg(long, env = "RAFTLOCK_HEARTBEAT_MS", value_name = "MS", help_heading = RAFT)]
    pub heartbeat_ms: Option<u64>,

    /// Election timeout range MIN-MAX in ms, e.g. 400-800 [default: 400-800].
    /// A follower that hears no leader for two heartbeats (the leader lease)
    /// plus a random time in this range starts an election. MIN must exceed
    /// two heartbeats.
    #[arg(
        long,
        env = "RAFTLOCK_ELECTION_TIMEOUT_MS",
        value_name = "MIN-MAX",
        value_parser = parse_range,
        conflicts_with_all = ["election_timeout_min_ms", "election_timeout_max_ms"],
        help_heading = RAFT
    )]
    pub election_timeout_ms: Option<(u64, u64)>,

    /// Lower end of the election timeout, in ms [default: 400].
    #[arg(long, env = "RAFTLOCK_ELECTION_TIMEOUT_MIN_MS", value_name = "MS", help_heading = RAFT)]
    pub election_timeout_min_ms: Option<u64>,

    /// Upper end of the election timeout, in ms [default: 800].
    #[arg(long, env = "RAFTLOCK_ELECTION_TIMEOUT_MAX_MS", value_name = "MS", help_heading = RAFT)]
    pub election_timeout_max_ms: Option<u64>,

    /// Timeout of one Raft RPC to a peer, in ms [default: 1000].
    #[arg(long, env = "RAFTLOCK_RPC_TIMEOUT_MS", value_name = "MS", help_heading = RAFT)]
    pub rpc_timeout_ms: Option<u64>,

    /// Build a snapshot after this many log entries since the last one
    /// [default: 10000].
    #[arg(long, env = "RAFTLOCK_SNAPSHOT_EVERY", value_name = "N", help_heading = STORAGE)]
    pub snapshot_every: Option<u64>,

    /// Log entries kept behind a snapshot, so a briefly slow follower catches
    /// up from the log instead of a full snapshot [default: 1000].
    #[arg(long, env = "RAFTLOCK_KEEP_ENTRIES_AFTER_SNAPSHOT", value_name = "N", help_heading = STORAGE)]
    pub keep_entries_after_snapshot: Option<u64>,

    /// Page cache of the database, in MiB [default: 64].
    #[arg(long, env = "RAFTLOCK_CACHE_MB", value_name = "MIB", help_heading = STORAGE)]
    pub cache_mb: Option<u64>,

    /// Threads of this node's async runtime, 1 to 64 [default: 1]. One
    /// is fastest for co-located nodes on a small machine (every Raft write
    /// passes through one task, and a second worker mostly adds wake-ups;
    /// docs/performance.md); more help only when many clients' requests
    /// keep a core busy.
    #[arg(long, env = "RAFTLOCK_WORKER_THREADS", value_name = "N", help_heading = CLUSTER)]
    pub worker_threads: Option<usize>,

    /// Every fencing token, lease id and revision the cluster hands out
    /// from now on is above N: a leader whose state is below N raises the
    /// token epoch past it before anything else. Give every node the same
    /// value: the token_high_water of the cluster this one replaces
    /// (`raftlock status`) [default: 0, no floor].
    #[arg(long, env = "RAFTLOCK_TOKEN_FLOOR", value_name = "N", help_heading = CLUSTER)]
    pub token_floor: Option<u64>,

    /// How often the leader checks lease deadlines and lock-delays, in ms,
    /// 1 to 1000 [default: 50].
    #[arg(long, env = "RAFTLOCK_LEASE_CHECK_INTERVAL_MS", value_name = "MS", help_heading = SERVICE)]
    pub lease_check_interval_ms: Option<u64>,

    /// Most leases ended by one expiry log entry [default: 1000].
    #[arg(long, env = "RAFTLOCK_MAX_EXPIRE_BATCH", value_name = "N", help_heading = SERVICE)]
    pub max_expire_batch: Option<usize>,

    /// Events kept in memory for watchers that resume from a revision
    /// [default: 10000].
    #[arg(long, env = "RAFTLOCK_WATCH_HISTORY_EVENTS", value_name = "N", help_heading = SERVICE)]
    pub watch_history_events: Option<usize>,

    /// Event batches a watcher may have pending before it is cut off with
    /// SLOW_WATCHER [default: 1024].
    #[arg(long, env = "RAFTLOCK_WATCH_BUFFER_BATCHES", value_name = "N", help_heading = SERVICE)]
    pub watch_buffer_batches: Option<usize>,

    /// Most watch streams open on this node [default: 10000].
    #[arg(long, env = "RAFTLOCK_MAX_WATCHERS", value_name = "N", help_heading = SERVICE)]
    pub max_watchers: Option<usize>,

    /// Longest time a client may wait in an acquire, in ms [default: 86400000
    /// (24 h)].
    #[arg(long, env = "RAFTLOCK_MAX_WAIT_MS", value_name = "MS", help_heading = SERVICE)]
    pub max_wait_ms: Option<u64>,

    /// Longest time a write may take before the caller gets an error, in ms
    /// [default: 10000].
    #[arg(long, env = "RAFTLOCK_WRITE_TIMEOUT_MS", value_name = "MS", help_heading = SERVICE)]
    pub write_timeout_ms: Option<u64>,

    /// Largest gRPC request or response of the client API, in bytes
    /// [default: 4194304 (4 MiB)].
    #[arg(long, env = "RAFTLOCK_MAX_MESSAGE_BYTES", value_name = "BYTES", help_heading = SERVICE)]
    pub max_message_bytes: Option<usize>,

    /// Longest lock name, in bytes [default: 512].
    #[arg(long, env = "RAFTLOCK_MAX_NAME_BYTES", value_name = "BYTES", help_heading = LIMITS)]
    pub max_name_bytes: Option<u32>,
    /// Longest lease owner text, in bytes [default: 256].
    #[arg(long, env = "RAFTLOCK_MAX_OWNER_BYTES", value_name = "BYTES", help_heading = LIMITS)]
    pub max_owner_bytes: Option<u32>,
    /// Longest acquire reason, in bytes [default: 1024].
    #[arg(long, env = "RAFTLOCK_MAX_REASON_BYTES", value_name = "BYTES", help_heading = LIMITS)]
    pub max_reason_bytes: Option<u32>,
    /// Largest metadata of a hold (keys and values together), in bytes
    /// [default: 4096].
    #[arg(long, env = "RAFTLOCK_MAX_METADATA_BYTES", value_name = "BYTES", help_heading = LIMITS)]
    pub max_metadata_bytes: Option<u32>,
    /// Shortest lease ttl, in ms [default: 1000].
    #[arg(long, env = "RAFTLOCK_MIN_TTL_MS", value_name = "MS", help_heading = LIMITS)]
    pub min_ttl_ms: Option<u64>,
    /// Longest lease ttl, in ms [default: 86400000 (24 h)].
    #[arg(long, env = "RAFTLOCK_MAX_TTL_MS", value_name = "MS", help_heading = LIMITS)]
    pub max_ttl_ms: Option<u64>,
    /// Longest lock-delay an acquire may ask for, in ms [default: 60000].
    #[arg(long, env = "RAFTLOCK_MAX_LOCK_DELAY_MS", value_name = "MS", help_heading = LIMITS)]
    pub max_lock_delay_ms: Option<u64>,
    /// Most requests queued on one lock [default: 1024].
    #[arg(long, env = "RAFTLOCK_MAX_WAITERS_PER_LOCK", value_name = "N", help_heading = LIMITS)]
    pub max_waiters_per_lock: Option<u32>,
    /// Most locks one lease holds or waits for [default: 1024].
    #[arg(long, env = "RAFTLOCK_MAX_HOLDS_PER_LEASE", value_name = "N", help_heading = LIMITS)]
    pub max_holds_per_lease: Option<u32>,
    /// Most leases alive at once [default: 100000].
    #[arg(long, env = "RAFTLOCK_MAX_LEASES", value_name = "N", help_heading = LIMITS)]
    pub max_leases: Option<u32>,
    /// Most locks in one (all-or-none) acquire [default: 64].
    #[arg(long, env = "RAFTLOCK_MAX_LOCKS_PER_REQUEST", value_name = "N", help_heading = LIMITS)]
    pub max_locks_per_request: Option<u32>,
    /// Most permits of one semaphore [default: 65536].
    #[arg(long, env = "RAFTLOCK_MAX_PERMITS", value_name = "N", help_heading = LIMITS)]
    pub max_permits: Option<u32>,

    /// Log line format on stderr; RUST_LOG sets the level [default: text].
    #[arg(long, env = "RAFTLOCK_LOG_FORMAT", value_name = "FORMAT", help_heading = LOGGING)]
    pub log_format: Option<LogFormat>,
}

/// The `--config` file. Every key is optional; unknown keys are refused so
/// a typo never silently falls back to a default. `serve --check` prints
/// the resolved configuration in this form ([`effective`]).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub id: Option<u64>,
    pub id_from_hostname: Option<bool>,
    pub hostname: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub advertise: Option<String>,
    pub peer_listen: Option<String>,
    pub peer_advertise: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub insecure: Option<bool>,
    pub metrics_listen: Option<String>,
    pub metrics_lock_group: Option<Vec<String>>,
    pub metrics_max_lock_groups: Option<usize>,
    pub auth: Option<PathBuf>,
    /// Node id (as a TOML key) → address.
    pub peers: Option<BTreeMap<String, String>>,
    pub initial_cluster_state: Option<InitialClusterState>,
    /// Node id (as a TOML key) → address to dial it at.
    pub peer_dial: Option<BTreeMap<String, String>>,
    pub heartbeat_ms: Option<u64>,
    pub election_timeout_min_ms: Option<u64>,
    pub election_timeout_max_ms: Option<u64>,
    pub rpc_timeout_ms: Option<u64>,
    pub snapshot_every: Option<u64>,
    pub keep_entries_after_snapshot: Option<u64>,
    pub cache_mb: Option<u64>,
    pub worker_threads: Option<usize>,
    pub lease_check_interval_ms: Option<u64>,
    pub max_expire_batch: Option<usize>,
    pub watch_history_events: Option<usize>,
    pub watch_buffer_batches: Option<usize>,
    pub max_watchers: Option<usize>,
    pub max_wait_ms: Option<u64>,
    pub write_timeout_ms: Option<u64>,
    pub max_message_bytes: Option<usize>,
    pub token_floor: Option<u64>,
    pub log_format: Option<LogFormat>,
    pub limits: Option<FileLimits>,
}

/// The `[limits]` table.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_name_bytes: Option<u32>,
    pub max_owner_bytes: Option<u32>,
    pub max_reason_bytes: Option<u32>,
    pub max_metadata_bytes: Option<u32>,
    pub min_ttl_ms: Option<u64>,
    pub max_ttl_ms: Option<u64>,
    pub max_lock_delay_ms: Option<u64>,
    pub max_waiters_per_lock: Option<u32>,
    pub max_holds_per_lease: Option<u32>,
    pub max_leases: Option<u32>,
    pub max_locks_per_request: Option<u32>,
    pub max_permits: Option<u32>,
}

/// What `serve` runs with.
#[derive(Debug)]
pub struct Resolved {
    pub node: NodeConfig,
    pub log_format: LogFormat,
    /// Threads of the node's runtime (see `ServeArgs::worker_threads`).
    pub worker_threads: usize,
}

/// Threads of a node's runtime unless configured (`--worker-threads`).
pub const DEFAULT_WORKER_THREADS: usize = 1;

/// `MIN-MAX` in milliseconds.
fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}` is not MIN-MAX, e.g. 400-800"))?;
    let parse = |x: &str| {
        x.trim()
            .parse::<u64>()
            .map_err(|_| format!("`{x}` in `{s}` is not a number of milliseconds"))
    };
    Ok((parse(a)?, parse(b)?))
}

/// Reads and parses the `--config` file. Errors name the file and, for
/// unknown or mistyped keys, the key (toml's message quotes it).
pub fn load_file(path: &Path) -> Result<FileConfig, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::Usage(format!(
            "cannot read the config file {}: {e}; check the --config path",
            path.display()
        ))
    })?;
    toml::from_str(&text).map_err(|e| {
        Failure::Usage(format!(
            "config file {}: {}",
            path.display(),
            e.to_string().trim_end()
        ))
    })
}

/// Both names of an option, for error messages.
fn opt(flag: &str) -> String {
    format!("--{flag} (`{}` in the config file)", flag.replace('-', "_"))
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

/// Merges flags over the file over the defaults and checks the result.
pub fn resolve(args: ServeArgs) -> Result<Resolved, Failure> {
    let file = match &args.config {
        Some(path) => load_file(path)?,
        None => FileConfig::default(),
    };
    let fl = file.limits.unwrap_or_default();

    let from_hostname = args.id_from_hostname || file.id_from_hostname.unwrap_or(false);
    let hostname = args.hostname.or(file.hostname);
    let id = match (args.id.or(file.id), from_hostname) {
        (Some(id), true) => {
            return Err(usage(format!(
                "{} and {} ({id}) exclude each other: choose one",
                opt("id-from-hostname"),
                opt("id")
            )));
        }
        (None, true) => {
            let name = match hostname {
                Some(name) => name,
                None => system_hostname()?,
            };
            id_of_hostname(&name)?
        }
        (Some(id), false) => id,
        (None, false) => {
            return Err(usage(
                "missing --id: give this node's id (1, 2, ...) with --id N or `id = N` in the config file, or --id-from-hostname",
            ));
        }
    };
    if id == 0 {
        return Err(usage(format!("{}: node ids start at 1", opt("id"))));
    }
    let data_dir = args.data_dir.or(file.data_dir).ok_or_else(|| {
        usage("missing --data-dir: give the directory of this node's database with --data-dir DIR or `data_dir` in the config file")
    })?;
    let listen = args.listen.or(file.listen).ok_or_else(|| {
        usage("missing --listen: give the address to listen on, e.g. --listen 0.0.0.0:7401 or `listen` in the config file")
    })?;
    check_addr("listen", &listen)?;

    let mut peers = BTreeMap::new();
    if let Some(text) = &args.peers {
        peers = parse_peers_flag("peers", text)?;
    } else if let Some(table) = file.peers {
        peers = parse_peers_table("peers", table)?;
    }
    let mut peer_dial = BTreeMap::new();
    if let Some(text) = &args.peer_dial {
        peer_dial = parse_peers_flag("peer-dial", text)?;
    } else if let Some(table) = file.peer_dial {
        peer_dial = parse_peers_table("peer_dial", table)?;
    }
    if peer_dial.contains_key(&id) {
        return Err(usage(format!(
            "--peer-dial names this node's own id {id}: list only the peers to dial elsewhere"
        )));
    }
    if !peers.is_empty() && !peers.contains_key(&id) {
        return Err(usage(format!(
            "--peers names nodes {:?} but not this node's id {id}: give every node the same --peers, including itself",
            peers.keys().collect::<Vec<_>>()
        )));
    }

    let peer_listen = args
        .peer_listen
        .or(file.peer_listen)
        .unwrap_or_else(|| raftlock_node::peer_listen_for(&listen));
    check_addr("peer-listen", &peer_listen)?;
    // Port 0 twice is two different free ports.
    if peer_listen == listen && !listen.ends_with(":0") {
        return Err(usage(format!(
            "{} and {} are both {listen}: peers and clients need different ports",
            opt("peer-listen"),
            opt("listen")
        )));
    }
    let peer_advertise = args
        .peer_advertise
        .or(file.peer_advertise)
        .or_else(|| peers.get(&id).cloned());
    // Clients reach this node on the host its peers know it by, at the
    // client port, unless told otherwise.
    let advertise = args.advertise.or(file.advertise).or_else(|| {
        let host = host_of(peers.get(&id)?)?;
        let port = listen.rsplit_once(':')?.1;
        Some(format!("{host}:{port}"))
    });
    for (flag, a) in [
        ("advertise", &advertise),
        ("peer-advertise", &peer_advertise),
    ] {
        if let Some(a) = a {
            check_addr(flag, a)?;
            if host_of(a).is_some_and(|h| h.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())) {
                return Err(usage(format!(
                    "{}: {a} is not an address others can reach; give this host's address or name",
                    opt(flag)
                )));
            }
        }
    }

    let tls_files = (
        args.tls_cert.or(file.tls_cert),
        args.tls_key.or(file.tls_key),
        args.tls_ca.or(file.tls_ca),
    );
    let insecure = args.insecure || file.insecure.unwrap_or(false);
    let tls = match tls_files {
        (Some(cert), Some(key), Some(ca)) => {
            if insecure {
                return Err(usage(format!(
                    "{} and the --tls-* options exclude each other: choose one",
                    opt("insecure")
                )));
            }
            Some(raftlock_node::TlsFiles { cert, key, ca })
        }
        (None, None, None) if insecure => None,
        (None, None, None) => {
            return Err(usage(
                "no TLS: give --tls-cert, --tls-key and --tls-ca (make them with `raftlock certs`, docs/security.md), or --insecure to serve plaintext on a network you trust",
            ));
        }
        _ => {
            return Err(usage(
                "--tls-cert, --tls-key and --tls-ca go together: give all three",
            ));
        }
    };

    let metrics_listen = args.metrics_listen.or(file.metrics_listen);
    if let Some(a) = &metrics_listen {
        check_addr("metrics-listen", a)?;
    }

    let mut node = NodeConfig::new(id, data_dir, listen);
    node.advertise = advertise;
    node.peer_listen = peer_listen;
    node.peer_advertise = peer_advertise;
    node.tls = tls;
    node.metrics_listen = metrics_listen;
    let lock_groups = if args.metrics_lock_group.is_empty() {
        file.metrics_lock_group.unwrap_or_default()
    } else {
        args.metrics_lock_group
    };
    if let Some(p) = lock_groups.iter().find(|p| p.is_empty() || p.len() > 256) {
        return Err(usage(format!(
            "--metrics-lock-group {p:?}: a prefix must be 1 to 256 bytes"
        )));
    }
    node.metrics_lock_groups = lock_groups;
    if let Some(n) = args
        .metrics_max_lock_groups
        .or(file.metrics_max_lock_groups)
    {
        if !(1..=10_000).contains(&n) {
            return Err(usage(
                "--metrics-max-lock-groups must be between 1 and 10000",
            ));
        }
        node.metrics_max_lock_groups = n;
    }
    if node.metrics_lock_groups.len() > node.metrics_max_lock_groups {
        return Err(usage(format!(
            "--metrics-lock-group: {} prefixes, more than --metrics-max-lock-groups ({})",
            node.metrics_lock_groups.len(),
            node.metrics_max_lock_groups
        )));
    }
    node.auth = args.auth.or(file.auth).map(raftlock_node::AuthSource::File);
    let initial_cluster_state = args
        .initial_cluster_state
        .or(file.initial_cluster_state)
        .unwrap_or_default();
    if initial_cluster_state == InitialClusterState::New && peers.is_empty() {
        return Err(usage(format!(
            "{} new needs --peers: it bootstraps the cluster --peers names (without --peers a new node waits to be added)",
            opt("initial-cluster-state")
        )));
    }
    node.initial_members = peers;
    node.initial_cluster_state = initial_cluster_state.into();
    node.peer_dial = peer_dial;
    node.force_new_cluster = args.force_new_cluster;

    let t = &mut node.raft;
    let ms = Duration::from_millis;
    if let Some(v) = args.heartbeat_ms.or(file.heartbeat_ms) {
        t.heartbeat = ms(v);
    }
    let (emin, emax) = match args.election_timeout_ms {
        Some((a, b)) => (Some(a), Some(b)),
        None => (
            args.election_timeout_min_ms
                .or(file.election_timeout_min_ms),
            args.election_timeout_max_ms
                .or(file.election_timeout_max_ms),
        ),
    };
    if let Some(v) = emin {
        t.election_timeout_min = ms(v);
    }
    if let Some(v) = emax {
        t.election_timeout_max = ms(v);
    }
    if let Some(v) = args.rpc_timeout_ms.or(file.rpc_timeout_ms) {
        t.rpc_timeout = ms(v);
    }
    if t.heartbeat.is_zero() {
        return Err(usage(format!("{} must be at least 1", opt("heartbeat-ms"))));
    }
    if t.election_timeout_min <= t.heartbeat * 2 {
        return Err(usage(format!(
            "the election timeout minimum ({} ms) must exceed two heartbeats (--heartbeat-ms {} ms): raise --election-timeout-ms or lower --heartbeat-ms",
            t.election_timeout_min.as_millis(),
            t.heartbeat.as_millis()
        )));
    }
    if t.election_timeout_max <= t.election_timeout_min {
        return Err(usage(format!(
            "--election-timeout-ms: the maximum ({} ms) must exceed the minimum ({} ms), e.g. 400-800",
            t.election_timeout_max.as_millis(),
            t.election_timeout_min.as_millis()
        )));
    }
    if t.rpc_timeout.is_zero() {
        return Err(usage(format!(
            "{} must be at least 1",
            opt("rpc-timeout-ms")
        )));
    }

    if let Some(v) = args.snapshot_every.or(file.snapshot_every) {
        if v == 0 {
            return Err(usage(format!(
                "{} must be at least 1",
                opt("snapshot-every")
            )));
        }
        node.snapshot_every_entries = v;
    }
    if let Some(v) = args
        .keep_entries_after_snapshot
        .or(file.keep_entries_after_snapshot)
    {
        node.keep_entries_after_snapshot = v;
    }
    if let Some(v) = args.cache_mb.or(file.cache_mb) {
        if v == 0 || v > 1024 * 1024 {
            return Err(usage(format!(
                "{} must be between 1 and 1048576 MiB",
                opt("cache-mb")
            )));
        }
        node.cache_capacity_bytes = v * 1024 * 1024;
    }
    if let Some(v) = args
        .lease_check_interval_ms
        .or(file.lease_check_interval_ms)
    {
        if !(1..=1000).contains(&v) {
            return Err(usage(format!(
                "{} must be between 1 and 1000 ms",
                opt("lease-check-interval-ms")
            )));
        }
        node.lease_check_interval = ms(v);
    }
    for (flag, value, field) in [
        (
            "max-expire-batch",
            args.max_expire_batch.or(file.max_expire_batch),
            &mut node.max_expire_batch,
        ),
        (
            "watch-history-events",
            args.watch_history_events.or(file.watch_history_events),
            &mut node.watch_history_events,
        ),
        (
            "watch-buffer-batches",
            args.watch_buffer_batches.or(file.watch_buffer_batches),
            &mut node.watch_buffer_batches,
        ),
        (
            "max-watchers",
            args.max_watchers.or(file.max_watchers),
            &mut node.max_watchers,
        ),
    ] {
        if let Some(v) = value {
            // A zero history is allowed (watchers then only get new events).
            if v == 0 && flag != "watch-history-events" {
                return Err(usage(format!("{} must be at least 1", opt(flag))));
            }
            *field = v;
        }
    }
    for (flag, value, field) in [
        (
            "max-wait-ms",
            args.max_wait_ms.or(file.max_wait_ms),
            &mut node.max_wait,
        ),
        (
            "write-timeout-ms",
            args.write_timeout_ms.or(file.write_timeout_ms),
            &mut node.write_timeout,
        ),
    ] {
        if let Some(v) = value {
            if v == 0 {
                return Err(usage(format!("{} must be at least 1", opt(flag))));
            }
            *field = ms(v);
        }
    }
    if let Some(v) = args.max_message_bytes.or(file.max_message_bytes) {
        // Below 64 KiB a legal acquire (64 names of 512 bytes plus
        // metadata) could be refused by the transport.
        if !(64 * 1024..=1024 * 1024 * 1024).contains(&v) {
            return Err(usage(format!(
                "{} must be between 65536 and 1073741824",
                opt("max-message-bytes")
            )));
        }
        node.max_message_bytes = v;
    }
    if let Some(v) = args.token_floor.or(file.token_floor) {
        if raftlock_core::epoch_above(v).is_none() {
            return Err(usage(format!(
                "{} must be below {} (the last token epoch has no epoch above it)",
                opt("token-floor"),
                0xffff_u64 << 48
            )));
        }
        node.token_floor = v;
    }

    let l = &mut node.limits;
    macro_rules! limit {
        ($field:ident) => {
            if let Some(v) = args.$field.or(fl.$field) {
                l.$field = v;
            }
        };
    }
    limit!(max_name_bytes);
    limit!(max_owner_bytes);
    limit!(max_reason_bytes);
    limit!(max_metadata_bytes);
    limit!(min_ttl_ms);
    limit!(max_ttl_ms);
    limit!(max_lock_delay_ms);
    limit!(max_waiters_per_lock);
    limit!(max_holds_per_lease);
    limit!(max_leases);
    limit!(max_locks_per_request);
    limit!(max_permits);
    check_limits(l)?;

    // The node's own checks, in case they know something ours do not.
    node.validate().map_err(|e| {
        usage(format!(
            "invalid configuration: {e}; see raftlock serve --help"
        ))
    })?;
    let worker_threads = args
        .worker_threads
        .or(file.worker_threads)
        .unwrap_or(DEFAULT_WORKER_THREADS);
    if !(1..=64).contains(&worker_threads) {
        return Err(usage(format!(
            "{} must be between 1 and 64, got {worker_threads}",
            opt("worker-threads")
        )));
    }
    Ok(Resolved {
        node,
        log_format: args.log_format.or(file.log_format).unwrap_or_default(),
        worker_threads,
    })
}

/// `raftlock serve --check`: what a start checks before it opens the store
/// or binds a port (the configuration, the TLS files, the auth file),
/// then the resolved configuration printed as a config file.
pub fn check(resolved: &Resolved) -> Result<(), Failure> {
    resolved.node.check().map_err(|e| {
        usage(format!(
            "node {}: {}",
            resolved.node.id,
            crate::error_chain(&e)
        ))
    })?;
    let text = toml::to_string(&effective(resolved))
        .map_err(|e| Failure::Runtime(format!("cannot print the configuration: {e}")))?;
    println!(
        "# raftlock serve --check: this configuration is valid (nothing opened, nothing bound)\n{text}"
    );
    Ok(())
}

/// The resolved configuration as a config file that names every key with
/// its value in force (defaults included): what `serve --check` prints,
/// and a file that resolves to the same configuration.
pub fn effective(resolved: &Resolved) -> FileConfig {
    let n = &resolved.node;
    let ms = |d: Duration| Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let table = |m: &BTreeMap<u64, String>| {
        (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    };
    let l = &n.limits;
    // Exhaustive on purpose: a new key does not compile until it is
    // printed here too.
    FileConfig {
        id: Some(n.id),
        // The id in force is printed; where it came from is not needed to
        // run the node again.
        id_from_hostname: None,
        hostname: None,
        data_dir: Some(n.data_dir.clone()),
        listen: Some(n.listen.clone()),
        advertise: n.advertise.clone(),
        peer_listen: Some(n.peer_listen.clone()),
        peer_advertise: n.peer_advertise.clone(),
        tls_cert: n.tls.as_ref().map(|t| t.cert.clone()),
        tls_key: n.tls.as_ref().map(|t| t.key.clone()),
        tls_ca: n.tls.as_ref().map(|t| t.ca.clone()),
        insecure: Some(n.tls.is_none()),
        metrics_listen: n.metrics_listen.clone(),
        metrics_lock_group: (!n.metrics_lock_groups.is_empty())
            .then(|| n.metrics_lock_groups.clone()),
        metrics_max_lock_groups: Some(n.metrics_max_lock_groups),
        token_floor: (n.token_floor != 0).then_some(n.token_floor),
        auth: match &n.auth {
            Some(raftlock_node::AuthSource::File(path)) => Some(path.clone()),
            // Only embedders give the policy's text itself.
            Some(raftlock_node::AuthSource::Toml(_)) | None => None,
        },
        peers: table(&n.initial_members),
        initial_cluster_state: Some(n.initial_cluster_state.into()),
        peer_dial: table(&n.peer_dial),
        heartbeat_ms: ms(n.raft.heartbeat),
        election_timeout_min_ms: ms(n.raft.election_timeout_min),
        election_timeout_max_ms: ms(n.raft.election_timeout_max),
        rpc_timeout_ms: ms(n.raft.rpc_timeout),
        snapshot_every: Some(n.snapshot_every_entries),
        keep_entries_after_snapshot: Some(n.keep_entries_after_snapshot),
        cache_mb: Some(n.cache_capacity_bytes / (1024 * 1024)),
        worker_threads: Some(resolved.worker_threads),
        lease_check_interval_ms: ms(n.lease_check_interval),
        max_expire_batch: Some(n.max_expire_batch),
        watch_history_events: Some(n.watch_history_events),
        watch_buffer_batches: Some(n.watch_buffer_batches),
        max_watchers: Some(n.max_watchers),
        max_wait_ms: ms(n.max_wait),
        write_timeout_ms: ms(n.write_timeout),
        max_message_bytes: Some(n.max_message_bytes),
        log_format: Some(resolved.log_format),
        limits: Some(FileLimits {
            max_name_bytes: Some(l.max_name_bytes),
            max_owner_bytes: Some(l.max_owner_bytes),
            max_reason_bytes: Some(l.max_reason_bytes),
            max_metadata_bytes: Some(l.max_metadata_bytes),
            min_ttl_ms: Some(l.min_ttl_ms),
            max_ttl_ms: Some(l.max_ttl_ms),
            max_lock_delay_ms: Some(l.max_lock_delay_ms),
            max_waiters_per_lock: Some(l.max_waiters_per_lock),
            max_holds_per_lease: Some(l.max_holds_per_lease),
            max_leases: Some(l.max_leases),
            max_locks_per_request: Some(l.max_locks_per_request),
            max_permits: Some(l.max_permits),
        }),
    }
}

/// The node id of a StatefulSet pod's hostname: the trailing `-N` of its
/// first label, plus one (ordinals start at 0, node ids at 1).
pub fn id_of_hostname(hostname: &str) -> Result<u64, Failure> {
    let label = hostname.split('.').next().unwrap_or_default();
    let ordinal = label
        .rsplit_once('-')
        .map(|(_, n)| n)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok());
    ordinal.and_then(|n| n.checked_add(1)).ok_or_else(|| {
        usage(format!(
            "--id-from-hostname: the hostname {hostname:?} does not end in -N (a StatefulSet pod's ordinal, e.g. raftlock-0 for node 1); give --id instead, or --hostname NAME"
        ))
    })
}

/// This machine's hostname (in a Kubernetes pod: the pod's name).
fn system_hostname() -> Result<String, Failure> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(Failure::Runtime(format!(
            "--id-from-hostname: cannot read the hostname: {}",
            std::io::Error::last_os_error()
        )));
    }
    // A name that filled the buffer may lack its NUL: then it is cut.
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

fn check_limits(limits: &Limits) -> Result<(), Failure> {
    limits.validate().map_err(|e| {
        let text = e.to_string();
        // Name the flag and the key the operator wrote.
        let field = match &e {
            raftlock_core::LockError::InvalidArgument { field, .. } => {
                field.trim_start_matches("limits.").to_string()
            }
            _ => String::new(),
        };
        if field.is_empty() {
            usage(format!("invalid limits: {text}"))
        } else {
            usage(format!(
                "--{} (`{field}` in the [limits] table): {text}",
                field.replace('_', "-")
            ))
        }
    })
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> Option<&str> {
    let (host, _) = addr.rsplit_once(':')?;
    Some(host.trim_start_matches('[').trim_end_matches(']'))
}

fn check_addr(flag: &str, addr: &str) -> Result<(), Failure> {
    let bad = |why: &str| {
        usage(format!(
            "{}: `{addr}` {why}; write host:port, e.g. 10.0.0.1:7401",
            opt(flag)
        ))
    };
    if addr.contains("://") {
        return Err(bad("has a scheme"));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(bad("has no port"));
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    if port.parse::<u16>().is_err() {
        return Err(bad("has no valid port"));
    }
    Ok(())
}

/// `1=10.0.0.1:7401,2=10.0.0.2:7401` of the flag `--{flag}`.
pub(crate) fn parse_peers_flag(flag: &str, text: &str) -> Result<BTreeMap<u64, String>, Failure> {
    let example = "1=10.0.0.1:7401,2=10.0.0.2:7401,3=10.0.0.3:7401";
    let mut peers = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item.split_once('=').ok_or_else(|| {
            usage(format!(
                "--{flag}: `{item}` is not ID=HOST:PORT; write e.g. --{flag} {example}"
            ))
        })?;
        let id: u64 = id.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            usage(format!(
                "--{flag}: `{id}` in `{item}` is not a node id (1, 2, ...)"
            ))
        })?;
        let addr = addr.trim().to_string();
        check_addr(flag, &addr)?;
        if peers.insert(id, addr).is_some() {
            return Err(usage(format!("--{flag}: node id {id} appears twice")));
        }
    }
    if peers.is_empty() {
        return Err(usage(format!(
            "--{flag} is empty; write e.g. --{flag} {example}"
        )));
    }
    Ok(peers)
}

/// A `[peers]`-like table of the config file: node id keys, address values.
fn parse_peers_table(
    table_name: &str,
    table: BTreeMap<String, String>,
) -> Result<BTreeMap<u64, String>, Failure> {
    let mut peers = BTreeMap::new();
    for (key, addr) in table {
        let pid: u64 = key.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            usage(format!(
                "config file [{table_name}]: key `{key}` is not a node id (1, 2, ...); write `1 = \"10.0.0.1:7401\"`"
            ))
        })?;
        check_addr(&table_name.replace('_', "-"), &addr)?;
        peers.insert(pid, addr);
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            id: Some(1),
            data_dir: Some("d".into()),
            listen: Some("127.0.0.1:7401".into()),
            insecure: true,
            ..ServeArgs::default()
        }
    }

    fn message(f: Failure) -> String {
        match f {
            Failure::Usage(m)
            | Failure::Runtime(m)
            | Failure::Busy(m)
            | Failure::LeaseLost(m)
            | Failure::NotAllowed(m) => m,
            Failure::Exit(code) => format!("exit {code}"),
        }
    }

    #[test]
    fn defaults_are_the_node_defaults() {
        let r = resolve(args()).expect("valid");
        let d = NodeConfig::new(1, "d", "127.0.0.1:7401");
        assert_eq!(r.node.raft.heartbeat, d.raft.heartbeat);
        assert_eq!(r.node.snapshot_every_entries, d.snapshot_every_entries);
        assert_eq!(r.node.cache_capacity_bytes, d.cache_capacity_bytes);
        assert_eq!(r.node.limits, d.limits);
        assert_eq!(r.log_format, LogFormat::Text);
    }

    #[test]
    fn peers_become_initial_members_and_the_advertised_address() {
        let mut a = args();
        a.listen = Some("0.0.0.0:7401".into());
        a.peers = Some("1=10.0.0.1:7401, 2=10.0.0.2:7401,3=10.0.0.3:7401".into());
        let r = resolve(a).expect("valid");
        assert_eq!(r.node.initial_members.len(), 3);
        assert_eq!(r.node.advertise.as_deref(), Some("10.0.0.1:7401"));
    }

    #[test]
    fn peer_dial_overrides_where_this_node_dials_its_peers() {
        let mut a = args();
        a.peers = Some("1=10.0.0.1:7401,2=10.0.0.2:7401".into());
        a.peer_dial = Some("2=127.0.0.1:17402".into());
        let r = resolve(a).expect("valid");
        assert_eq!(
            r.node.peer_dial,
            BTreeMap::from([(2, "127.0.0.1:17402".to_string())])
        );
        // What the node advertises is untouched.
        assert_eq!(r.node.initial_members[&2], "10.0.0.2:7401");
    }

    #[test]
    fn peer_dial_naming_this_node_or_a_bad_address_is_refused() {
        let mut a = args();
        a.peer_dial = Some("1=127.0.0.1:17401".into());
        assert!(message(resolve(a).unwrap_err()).contains("--peer-dial"));
        let mut a = args();
        a.peer_dial = Some("2=nowhere".into());
        assert!(message(resolve(a).unwrap_err()).contains("--peer-dial"));
    }

    #[test]
    fn auth_names_the_node_s_auth_file_and_defaults_to_off() {
        let mut a = args();
        a.auth = Some(PathBuf::from("/etc/raftlock/auth.toml"));
        let r = resolve(a).expect("valid");
        assert_eq!(
            r.node.auth,
            Some(raftlock_node::AuthSource::File(
                "/etc/raftlock/auth.toml".into()
            ))
        );
        assert_eq!(resolve(args()).expect("valid").node.auth, None);
    }

    #[test]
    fn metrics_listen_is_passed_on_and_a_bad_address_is_refused() {
        let mut a = args();
        a.metrics_listen = Some("0.0.0.0:7411".into());
        let r = resolve(a).expect("valid");
        assert_eq!(r.node.metrics_listen.as_deref(), Some("0.0.0.0:7411"));
        assert_eq!(resolve(args()).expect("valid").node.metrics_listen, None);
        let mut a = args();
        a.metrics_listen = Some("7411".into());
        assert!(message(resolve(a).unwrap_err()).contains("--metrics-listen"));
    }

    #[test]
    fn metrics_lock_groups_are_passed_on_and_bounded() {
        let mut a = args();
        a.metrics_lock_group = vec!["jobs/".into(), "db/primary/".into()];
        a.metrics_max_lock_groups = Some(8);
        let r = resolve(a).expect("valid");
        assert_eq!(r.node.metrics_lock_groups, ["jobs/", "db/primary/"]);
        assert_eq!(r.node.metrics_max_lock_groups, 8);
        let d = resolve(args()).expect("valid").node;
        assert!(d.metrics_lock_groups.is_empty());
        assert_eq!(d.metrics_max_lock_groups, 64);
        let mut a = args();
        a.metrics_max_lock_groups = Some(0);
        assert!(message(resolve(a).unwrap_err()).contains("--metrics-max-lock-groups"));
        let mut a = args();
        a.metrics_lock_group = vec!["a/".into(), "b/".into()];
        a.metrics_max_lock_groups = Some(1);
        assert!(message(resolve(a).unwrap_err()).contains("more than"));
        let mut a = args();
        a.metrics_lock_group = vec![String::new()];
        assert!(message(resolve(a).unwrap_err()).contains("--metrics-lock-group"));
    }

    #[test]
    fn peers_without_this_node_are_refused() {
        let mut a = args();
        a.peers = Some("2=10.0.0.2:7401,3=10.0.0.3:7401".into());
        assert!(message(resolve(a).unwrap_err()).contains("--peers"));
    }

    #[test]
    fn an_election_timeout_below_two_heartbeats_names_both_flags() {
        let mut a = args();
        a.heartbeat_ms = Some(300);
        a.election_timeout_ms = Some((400, 800));
        let m = message(resolve(a).unwrap_err());
        assert!(
            m.contains("--heartbeat-ms") && m.contains("--election-timeout-ms"),
            "{m}"
        );
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raftlock.toml");
        std::fs::write(
            &path,
            "id = 2\ndata_dir = \"x\"\nlisten = \"127.0.0.1:1\"\nheartbeat_ms = 50\nsnapshot_every = 7\n\
             insecure = true\nlog_format = \"json\"\n[peers]\n1 = \"127.0.0.1:1\"\n2 = \"127.0.0.1:2\"\n[limits]\nmax_leases = 5\n",
        )
        .expect("write");
        let a = ServeArgs {
            config: Some(path),
            snapshot_every: Some(9),
            ..ServeArgs::default()
        };
        let r = resolve(a).expect("valid");
        assert_eq!(r.node.id, 2);
        assert_eq!(r.node.raft.heartbeat, Duration::from_millis(50));
        assert_eq!(r.node.snapshot_every_entries, 9);
        assert_eq!(r.node.limits.max_leases, 5);
        assert_eq!(r.node.initial_members.len(), 2);
        // Peers reach node 2 at its --peers entry; clients at that host
        // and the --listen port.
        assert_eq!(r.node.peer_advertise.as_deref(), Some("127.0.0.1:2"));
        assert_eq!(r.node.advertise.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(r.log_format, LogFormat::Json);
    }

    #[test]
    fn the_checked_configuration_prints_as_a_file_that_resolves_to_the_same() {
        let mut a = args();
        a.peers = Some("1=10.0.0.1:8401,2=10.0.0.2:8401,3=10.0.0.3:8401".into());
        a.peer_dial = Some("2=127.0.0.1:18402".into());
        a.metrics_listen = Some("0.0.0.0:7411".into());
        a.auth = Some("/etc/raftlock/auth.toml".into());
        a.heartbeat_ms = Some(50);
        a.election_timeout_ms = Some((300, 700));
        a.max_leases = Some(7);
        a.cache_mb = Some(3);
        a.worker_threads = Some(2);
        a.log_format = Some(LogFormat::Json);
        a.initial_cluster_state = Some(InitialClusterState::New);
        let first = resolve(a).expect("valid");
        let text = toml::to_string(&effective(&first)).expect("prints");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("printed.toml");
        std::fs::write(&path, &text).expect("write");
        let again = resolve(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .unwrap_or_else(|f| panic!("{}\n{text}", message(f)));
        assert_eq!(
            format!("{:?}", again.node),
            format!("{:?}", first.node),
            "{text}"
        );
        assert_eq!(again.worker_threads, 2);
        assert_eq!(again.log_format, LogFormat::Json);
        assert!(
            text.contains("max_leases = 7") && text.contains("heartbeat_ms = 50"),
            "{text}"
        );
    }

    #[test]
    fn the_id_from_hostname_is_the_trailing_ordinal_plus_one() {
        for (name, id) in [
            ("raftlock-0", 1),
            ("raftlock-2", 3),
            ("lock-service-prod-11", 12),
            ("raftlock-1.raftlock.locks.svc.cluster.local", 2),
        ] {
            assert_eq!(id_of_hostname(name).expect(name), id, "{name}");
        }
        for bad in [
            "raftlock",
            "raftlock-",
            "raftlock-a1",
            "node7",
            "",
            "x-18446744073709551615",
        ] {
            let m = message(id_of_hostname(bad).unwrap_err());
            assert!(m.contains(&format!("{bad:?}")), "{bad}: {m}");
        }
    }

    #[test]
    fn id_from_hostname_excludes_id_and_lets_peers_name_the_pods() {
        let mut a = args();
        a.id = None;
        a.id_from_hostname = true;
        a.hostname = Some("raftlock-1".into());
        a.listen = Some("0.0.0.0:7401".into());
        a.peers = Some(
            "1=raftlock-0.raftlock:8401,2=raftlock-1.raftlock:8401,3=raftlock-2.raftlock:8401"
                .into(),
        );
        let r = resolve(a).expect("valid");
        assert_eq!(r.node.id, 2);
        assert_eq!(
            r.node.advertise.as_deref(),
            Some("raftlock-1.raftlock:7401")
        );
        assert_eq!(
            r.node.peer_advertise.as_deref(),
            Some("raftlock-1.raftlock:8401")
        );

        let mut a = args();
        a.id_from_hostname = true;
        a.hostname = Some("raftlock-1".into());
        let m = message(resolve(a).unwrap_err());
        assert!(
            m.contains("--id-from-hostname") && m.contains("--id"),
            "{m}"
        );

        let mut a = args();
        a.id = None;
        a.id_from_hostname = true;
        a.hostname = Some("lockbox".into());
        let m = message(resolve(a).unwrap_err());
        assert!(m.contains("\"lockbox\""), "{m}");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raftlock.toml");
        std::fs::write(&path, "[limits]\nmax_bananas = 3\n").expect("write");
        let m = message(load_file(&path).unwrap_err());
        assert!(m.contains("max_bananas"), "{m}");
    }

    #[test]
    fn worker_threads_default_to_one_and_out_of_range_is_refused() {
        assert_eq!(resolve(args()).expect("valid").worker_threads, 1);
        let mut a = args();
        a.worker_threads = Some(3);
        assert_eq!(resolve(a).expect("valid").worker_threads, 3);
        for bad in [0, 65] {
            let mut a = args();
            a.worker_threads = Some(bad);
            let m = message(resolve(a).unwrap_err());
            assert!(
                m.contains("--worker-threads") && m.contains("between 1 and 64"),
                "{m}"
            );
        }
    }

    #[test]
    fn token_floor_reaches_the_node_and_one_in_the_last_epoch_is_refused() {
        let mut a = args();
        a.token_floor = Some(12_345);
        assert_eq!(resolve(a).expect("valid").node.token_floor, 12_345);
        let mut a = args();
        a.token_floor = Some(0xffff_u64 << 48);
        let m = message(resolve(a).unwrap_err());
        assert!(m.contains("--token-floor"), "{m}");
    }

    #[test]
    fn a_bad_limit_names_its_flag() {
        let mut a = args();
        a.max_permits = Some(0);
        let m = message(resolve(a).unwrap_err());
        assert!(m.contains("--max-permits"), "{m}");
    }

    /// The `raftlock.toml` in docs/operations.md names every key, with the
    /// defaults, so the guide cannot drift from the code.
    #[test]
    fn the_example_file_in_the_operations_guide_has_every_key_with_its_default() {
        let doc = include_str!("../../../docs/operations.md");
        let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + doc[start..].find("```").expect("end of the toml block");
        let text = &doc[start..end];
        let file: FileConfig = toml::from_str(text).expect("the example parses");
        // Exhaustive on purpose: a new key fails to compile here until the
        // guide (and this test) name it.
        let FileConfig {
            id,
            id_from_hostname,
            hostname,
            data_dir,
            listen,
            advertise,
            peer_listen,
            peer_advertise,
            tls_cert,
            tls_key,
            tls_ca,
            insecure,
            metrics_listen,
            metrics_lock_group,
            metrics_max_lock_groups,
            auth,
            peers,
            initial_cluster_state,
            peer_dial,
            heartbeat_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
            rpc_timeout_ms,
            snapshot_every,
            keep_entries_after_snapshot,
            cache_mb,
            worker_threads,
            lease_check_interval_ms,
            max_expire_batch,
            watch_history_events,
            watch_buffer_batches,
            max_watchers,
            max_wait_ms,
            write_timeout_ms,
            max_message_bytes,
            token_floor,
            log_format,
            limits,
        } = file;
        let FileLimits {
            max_name_bytes,
            max_owner_bytes,
            max_reason_bytes,
            max_metadata_bytes,
            min_ttl_ms,
            max_ttl_ms,
            max_lock_delay_ms,
            max_waiters_per_lock,
            max_holds_per_lease,
            max_leases,
            max_locks_per_request,
            max_permits,
        } = limits.expect("[limits]");
        let present = [
            id.is_some(),
            id_from_hostname.is_some(),
            hostname.is_some(),
            data_dir.is_some(),
            listen.is_some(),
            advertise.is_some(),
            peer_listen.is_some(),
            peer_advertise.is_some(),
            tls_cert.is_some(),
            tls_key.is_some(),
            tls_ca.is_some(),
            insecure.is_some(),
            metrics_listen.is_some(),
            metrics_lock_group.is_some(),
            metrics_max_lock_groups.is_some(),
            auth.is_some(),
            peers.is_some(),
            initial_cluster_state.is_some(),
            peer_dial.is_some(),
            heartbeat_ms.is_some(),
            election_timeout_min_ms.is_some(),
            election_timeout_max_ms.is_some(),
            rpc_timeout_ms.is_some(),
            snapshot_every.is_some(),
            keep_entries_after_snapshot.is_some(),
            cache_mb.is_some(),
            worker_threads.is_some(),
            lease_check_interval_ms.is_some(),
            max_expire_batch.is_some(),
            watch_history_events.is_some(),
            watch_buffer_batches.is_some(),
            max_watchers.is_some(),
            max_wait_ms.is_some(),
            write_timeout_ms.is_some(),
            max_message_bytes.is_some(),
            token_floor.is_some(),
            log_format.is_some(),
            max_name_bytes.is_some(),
            max_owner_bytes.is_some(),
            max_reason_bytes.is_some(),
            max_metadata_bytes.is_some(),
            min_ttl_ms.is_some(),
            max_ttl_ms.is_some(),
            max_lock_delay_ms.is_some(),
            max_waiters_per_lock.is_some(),
            max_holds_per_lease.is_some(),
            max_leases.is_some(),
            max_locks_per_request.is_some(),
            max_permits.is_some(),
        ];
        assert!(present.iter().all(|p| *p), "a key is missing: {present:?}");

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raftlock.toml");
        std::fs::write(&path, text).expect("write");
        let r = resolve(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .expect("the example is valid");
        let (got, d) = (r.node, NodeConfig::new(1, "x", "y"));
        assert_eq!(got.raft.heartbeat, d.raft.heartbeat);
        assert_eq!(got.raft.election_timeout_min, d.raft.election_timeout_min);
        assert_eq!(got.raft.election_timeout_max, d.raft.election_timeout_max);
        assert_eq!(got.raft.rpc_timeout, d.raft.rpc_timeout);
        assert_eq!(got.snapshot_every_entries, d.snapshot_every_entries);
        assert_eq!(got.token_floor, d.token_floor);
        assert_eq!(
            got.keep_entries_after_snapshot,
            d.keep_entries_after_snapshot
        );
        assert_eq!(got.cache_capacity_bytes, d.cache_capacity_bytes);
        assert_eq!(got.lease_check_interval, d.lease_check_interval);
        assert_eq!(got.max_expire_batch, d.max_expire_batch);
        assert_eq!(got.watch_history_events, d.watch_history_events);
        assert_eq!(got.watch_buffer_batches, d.watch_buffer_batches);
        assert_eq!(got.max_watchers, d.max_watchers);
        assert_eq!(got.metrics_lock_groups, d.metrics_lock_groups);
        assert_eq!(got.metrics_max_lock_groups, d.metrics_max_lock_groups);
        assert_eq!(got.max_wait, d.max_wait);
        assert_eq!(got.write_timeout, d.write_timeout);
        assert_eq!(got.max_message_bytes, d.max_message_bytes);
        assert_eq!(got.limits, d.limits);
        assert_eq!(r.log_format, LogFormat::Text);
        assert_eq!(got.initial_members.len(), 3);
        assert_eq!(got.initial_cluster_state, d.initial_cluster_state);
    }

    #[test]
    fn initial_cluster_state_defaults_to_auto_and_reaches_the_node_from_flag_or_file() {
        let mut a = args();
        a.peers = Some("1=10.0.0.1:8401,2=10.0.0.2:8401,3=10.0.0.3:8401".into());
        let r = resolve(a).expect("valid");
        assert_eq!(
            r.node.initial_cluster_state,
            raftlock_node::InitialClusterState::Auto
        );
        for state in [InitialClusterState::New, InitialClusterState::Existing] {
            let mut a = args();
            a.peers = Some("1=10.0.0.1:8401,2=10.0.0.2:8401".into());
            a.initial_cluster_state = Some(state);
            let r = resolve(a).expect("valid");
            assert_eq!(
                InitialClusterState::from(r.node.initial_cluster_state),
                state
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raftlock.toml");
        std::fs::write(
            &path,
            "id = 1\ndata_dir = \"x\"\nlisten = \"127.0.0.1:1\"\ninsecure = true\n\
             initial_cluster_state = \"existing\"\n[peers]\n1 = \"127.0.0.1:2\"\n",
        )
        .expect("write");
        let r = resolve(ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        })
        .expect("valid");
        assert_eq!(
            r.node.initial_cluster_state,
            raftlock_node::InitialClusterState::Existing
        );
        // The flag wins over the file.
        let r = resolve(ServeArgs {
            config: Some(path),
            initial_cluster_state: Some(InitialClusterState::New),
            ..ServeArgs::default()
        })
        .expect("valid");
        assert_eq!(
            r.node.initial_cluster_state,
            raftlock_node::InitialClusterState::New
        );
    }

    #[test]
    fn initial_cluster_state_new_without_peers_or_a_bad_value_in_the_file_is_a_usage_error() {
        let mut a = args();
        a.initial_cluster_state = Some(InitialClusterState::New);
        let m = message(resolve(a).unwrap_err());
        assert!(
            m.contains("--initial-cluster-state") && m.contains("--peers"),
            "{m}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raftlock.toml");
        std::fs::write(&path, "initial_cluster_state = \"fresh\"\n").expect("write");
        let f = load_file(&path).unwrap_err();
        assert!(matches!(f, Failure::Usage(_)));
        let m = message(f);
        assert!(m.contains("fresh") && m.contains("existing"), "{m}");
    }
}
