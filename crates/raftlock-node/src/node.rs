//! Starting and stopping a node: store, Raft, gRPC server, background tasks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use raftlock_core::{Command, LeaseId, Request};
use raftlock_proto::v1 as pb;
use raftlock_store::{StoreOptions, open};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tracing::Instrument;

use crate::Raft;
use crate::api::Api;
use crate::config::{InitialClusterState, NodeConfig};
use crate::grpc::{AdminService, LeasesService, LocksService};
use crate::keeper::Keeper;
use crate::peer::client::{Network, NetworkOptions, PeerAnswer};
use crate::waits::Waits;
use crate::watch::WatchHub;

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid; the text names the field.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] raftlock_store::OpenError),
    /// The TLS files could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// An address (`listen`, `peer_listen` or `metrics_listen`) could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why it could not be bound.
        source: std::io::Error,
    },
    /// openraft did not start, or could not bootstrap the cluster.
    #[error("cannot start Raft: {0}")]
    Raft(String),
    /// Anything else that failed while starting.
    #[error("internal error: {0}")]
    Internal(String),
    /// The auth file could not be read or is wrong (the text names the
    /// entry): the node does not start rather than guess.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthFileError),
    /// `force_new_cluster` could not be done (the text says what to do).
    #[error(transparent)]
    Force(#[from] raftlock_store::force::ForceError),
}

/// Starts nodes. See [`Node::start`].
pub struct Node;

/// A running node: its address, its in-process API, and `shutdown`.
pub struct NodeHandle {
    api: Arc<Api>,
    addr: SocketAddr,
    peer_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    servers: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
    store_closed: Option<raftlock_store::Closed>,
}

impl Node {
    /// Start a node: open (or create) its store in `config.data_dir`, listen
    /// on `config.listen` (clients) and `config.peer_listen` (peers), and,
    /// if its store is new and `initial_members` is set, bootstrap the
    /// cluster.
    pub async fn start(config: NodeConfig) -> Result<NodeHandle, StartError> {
        let bind = |addr: String| async move {
            TcpListener::bind(&addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let listener = bind(config.listen.clone()).await?;
        let peer_listener = bind(config.peer_listen.clone()).await?;
        Self::start_on(config, listener, peer_listener).await
    }

    /// [`Node::start`] on already bound listeners, for clients and for
    /// peers (tests bind port 0 first so every node's addresses are known
    /// before any starts).
    pub async fn start_on(
        config: NodeConfig,
        listener: TcpListener,
        peer_listener: TcpListener,
    ) -> Result<NodeHandle, StartError> {
        let span = tracing::info_span!("node", id = config.id);
        Self::start_inner(config, listener, peer_listener)
            .instrument(span)
            .await
    }

    async fn start_inner(
        config: NodeConfig,
        listener: TcpListener,
        peer_listener: TcpListener,
    ) -> Result<NodeHandle, StartError> {
        config.validate().map_err(StartError::Config)?;
        let auth = crate::auth::Auth::new(config.auth.clone())?;
        let local = |l: &TcpListener, addr: &str| {
            l.local_addr().map_err(|source| StartError::Bind {
                addr: addr.to_string(),
                source,
            })
        };
        let addr = local(&listener, &config.listen)?;
        let peer_addr = local(&peer_listener, &config.peer_listen)?;
        let advertise = config.advertise.clone().unwrap_or_else(|| addr.to_string());
        let peer_advertise = config
            .peer_advertise
            .clone()
            .unwrap_or_else(|| peer_addr.to_string());
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(crate::tls::Tls::load(files.clone(), config.id)?)),
            None => None,
        };
        // Every task of this node logs inside its span (node id).
        let span = tracing::Span::current();

        // Off the runtime's workers: opening verifies the store and may
        // migrate an older format, which reads and rewrites all of it.
        let (data_dir, options) = (
            config.data_dir.clone(),
            StoreOptions {
                cache_capacity_bytes: config.cache_capacity_bytes,
                ..StoreOptions::default()
            },
        );
        let (mut log_store, mut state_machine) =
            match tokio::task::spawn_blocking(move || open(&data_dir, options)).await {
                Ok(opened) => opened?,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
        if !config.force_new_cluster
            && raftlock_store::force::forget_forced(&log_store).map_err(|e| {
                StartError::Force(raftlock_store::force::ForceError::Storage(Box::new(e)))
            })?
        {
            tracing::info!("started without --force-new-cluster: this node may be forced again");
        }
        let forced_at = if config.force_new_cluster {
            Some(
                force_new_cluster(
                    &config,
                    &mut log_store,
                    &mut state_machine,
                    &advertise,
                    &peer_advertise,
                )
                .await?,
            )
        } else {
            None
        };
        let state = state_machine.handle();
        // Subscribe before Raft applies anything, so no apply is missed.
        let applied_rx = state_machine.subscribe();
        // Watch revisions are stamps: the history starts after the stamp
        // of what is applied (after a restore, far above the index).
        let applied_at_start = state.read(raftlock_core::State::token_high_water);
        let store_closed = state_machine.closed();
        let log_flushes = log_store.flush_times();
        let store_id = log_store.store_id();
        let peer_identity = crate::peer::identity::PeerIdentity::new(
            config.id,
            store_id.clone(),
            config.peer_protocol,
            state.clone(),
        );
        // Bound before Raft starts, so a taken port fails the start at once.
        let (metrics_listener, metrics_addr) = match &config.metrics_listen {
            Some(at) => {
                let bind_error = |source| StartError::Bind {
                    addr: at.clone(),
                    source,
                };
                let listener = TcpListener::bind(at).await.map_err(bind_error)?;
                let bound = listener.local_addr().map_err(bind_error)?;
                (Some(listener), Some(bound))
            }
            None => (None, None),
        };

        let raft_config = openraft::Config {
            cluster_name: "raftlock".into(),
            heartbeat_interval: config.raft.heartbeat.as_millis() as u64,
            election_timeout_min: config.raft.election_timeout_min.as_millis() as u64,
            election_timeout_max: config.raft.election_timeout_max.as_millis() as u64,
            leader_lease: config.raft.leader_lease().as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
            // Per snapshot chunk; the default 200 ms is tight for a loaded disk.
            install_snapshot_timeout: 5_000,
            max_in_snapshot_log_to_keep: config.keep_entries_after_snapshot,
            purge_batch_size: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;
        let network = Network::secured(
            config.id,
            NetworkOptions {
                dial_overrides: config
                    .peer_dial
                    .iter()
                    .map(|(id, addr)| (*id, addr.clone()))
                    .collect(),
                ..NetworkOptions::default()
            },
            Some(peer_identity.clone()),
            tls.clone(),
            advertise.clone(),
        );
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            network.clone(),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        if let Some(at) = forced_at {
            snapshot_past_the_force(&raft, at).await?;
        }

        let config = Arc::new(config);
        let (stop, stop_rx) = watch::channel(false);
        let (batcher, batches) = crate::batcher::Batcher::new();
        let api = Arc::new_cyclic(|me| Api {
            me: me.clone(),
            id: config.id,
            client_addr: advertise.clone(),
            store_id,
            tls: tls.clone(),
            peer_identity,
            raft: raft.clone(),
            state,
            network,
            keeper: Keeper::default(),
            waits: Waits::default(),
            watch: WatchHub::new(
                applied_at_start,
                config.watch_history_events,
                config.watch_buffer_batches,
                config.max_watchers,
            ),
            config: Arc::clone(&config),
            metrics: crate::metrics::NodeMetrics::new(log_flushes, &config),
            batcher,
            stopping: stop_rx.clone(),
            auth,
            epoch_raise: tokio::sync::Mutex::new(()),
        });

        // A cluster of this node alone is made before the node serves: it
        // has nobody to ask, and a node that served first could hear from
        // the leader of another cluster (on the address this node took
        // over) before it bootstrapped, adopt that leader's vote and never
        // bootstrap (its `initialize` is then refused).
        if config.initial_members.len() == 1
            && config.initial_members.contains_key(&config.id)
            && config.initial_cluster_state != InitialClusterState::Existing
        {
            let guard = BootstrapGuard {
                network: api.network.clone(),
                timeout: config.raft.rpc_timeout,
                state: config.initial_cluster_state,
            };
            bootstrap(
                &raft,
                &config.initial_members,
                config.id,
                &peer_advertise,
                &guard,
            )
            .await?;
        }
        let servers = spawn_servers(Arc::clone(&api), listener, peer_listener, stop_rx.clone())?;
        let mut tasks = vec![
            tokio::spawn(
                feed_applies(Arc::clone(&api), applied_rx, stop_rx.clone())
                    .instrument(span.clone()),
            ),
            tokio::spawn(
                follow_leadership(Arc::clone(&api), stop_rx.clone()).instrument(span.clone()),
            ),
            tokio::spawn(keep_leases(Arc::clone(&api), stop_rx.clone()).instrument(span.clone())),
            tokio::spawn(
                record_members(Arc::clone(&api), stop_rx.clone()).instrument(span.clone()),
            ),
            tokio::spawn(
                crate::batcher::run(Arc::clone(&api), batches, stop_rx.clone())
                    .instrument(span.clone()),
            ),
        ];
        if let Some(tls) = &tls {
            tasks.push(tokio::spawn(
                watch_certificates(Arc::clone(tls), stop_rx.clone()).instrument(span.clone()),
            ));
        }
        if let Some(listener) = metrics_listener {
            tasks.push(tokio::spawn(
                crate::metrics::serve(Arc::clone(&api), listener, stop_rx.clone()).instrument(span),
            ));
        }

        let first_member = config.initial_members.keys().next().copied();
        let advertise = peer_advertise;
        let guard = BootstrapGuard {
            network: api.network.clone(),
            timeout: config.raft.rpc_timeout,
            state: config.initial_cluster_state,
        };
        if first_member.is_some() {
            // The lowest id bootstraps; the others receive its membership
            // entry. Only if that has not happened after a few election
            // timeouts (the lowest node is down) do they bootstrap too,
            // which openraft allows with the same members. In a task that
            // ends with the node: the guard asks the peers first, for as
            // long as it takes, and the node serves meanwhile (a cluster
            // may add it as a learner).
            let grace = if first_member == Some(config.id) {
                Duration::ZERO
            } else {
                config.raft.election_timeout_max * 4
            };
            let members = config.initial_members.clone();
            let (raft, id) = (raft.clone(), config.id);
            let mut stop = stop_rx.clone();
            tasks.push(tokio::spawn(
                async move {
                    let run = async {
                        tokio::time::sleep(grace).await;
                        bootstrap(&raft, &members, id, &advertise, &guard).await
                    };
                    tokio::select! {
                        result = run => if let Err(e) = result {
                            tracing::error!(error = %e, "bootstrap failed");
                        },
                        _ = stop.wait_for(|stopped| *stopped) => {}
                    }
                }
                .instrument(tracing::Span::current()),
            ));
        }
        tracing::info!(%addr, %peer_addr, tls = tls.is_some(), "node started");
        Ok(NodeHandle {
            api,
            addr,
            peer_addr,
            metrics_addr,
            stop,
            tasks,
            servers,
            store_closed: Some(store_closed),
        })
    }
}

/// `--force-new-cluster`, before Raft starts (see raftlock_store::force).
async fn force_new_cluster(
    config: &NodeConfig,
    log_store: &mut raftlock_store::LogStore,
    state_machine: &mut raftlock_store::StateMachineStore,
    client_addr: &str,
    peer_addr: &str,
) -> Result<raftlock_store::LogId, StartError> {
    let Some(cluster_id) = random_id() else {
        return Err(StartError::Internal(
            "no randomness for a cluster id".into(),
        ));
    };
    let store_id = log_store.store_id();
    let (cluster_ms, epoch) = state_machine.read(|s| (s.cluster_ms(), s.token_epoch()));
    if epoch == u16::MAX {
        return Err(StartError::Config(
            "--force-new-cluster: the token epoch is at its maximum (65535) and cannot be raised again; build a new cluster with --token-floor instead (docs/operations.md)".into(),
        ));
    }
    let node = BasicNode {
        addr: peer_addr.to_string(),
    };
    let command = || {
        Request::new(
            cluster_ms,
            crate::api::wall_ms(),
            Command::ForceNewCluster {
                cluster_id: cluster_id.clone(),
                node: config.id,
                store_id: store_id.clone(),
                client_addr: client_addr.to_string(),
            },
        )
    };
    let at = match raftlock_store::force::force_new_cluster(
        log_store,
        state_machine,
        config.id,
        node,
        command,
    )
    .await?
    {
        raftlock_store::force::Forced::Now { at, term } => {
            tracing::warn!(
                %at,
                term,
                cluster_id,
                "FORCED A NEW CLUSTER of this node alone, from its own state and log; add the other nodes back as learners with wiped data directories, and remove --force-new-cluster"
            );
            at
        }
        raftlock_store::force::Forced::Already { at } => {
            tracing::warn!(
                %at,
                "--force-new-cluster: this node was forced at {at} and its membership is unchanged: starting as it is; remove the flag"
            );
            at
        }
    };
    Ok(at)
}

/// After a force: a snapshot at or past the force, and the log behind it
/// purged, so a node added later starts from that snapshot (the new
/// cluster) and never replays the old cluster's log, whose states name the
/// old cluster id and old stores (it would refuse or be refused).
async fn snapshot_past_the_force(raft: &Raft, at: raftlock_store::LogId) -> Result<(), StartError> {
    let past =
        |m: &openraft::RaftMetrics<u64, BasicNode>| m.snapshot.is_some_and(|s| s.index >= at.index);
    let raft_error = |e: &dyn std::fmt::Display| {
        StartError::Raft(format!(
            "--force-new-cluster: snapshot after the force: {e}"
        ))
    };
    if !past(&raft.metrics().borrow()) {
        raft.trigger()
            .snapshot()
            .await
            .map_err(|e| raft_error(&e))?;
        raft.wait(Some(Duration::from_secs(60)))
            .metrics(past, "a snapshot past the force")
            .await
            .map_err(|e| raft_error(&e))?;
    }
    raft.trigger()
        .purge_log(at.index)
        .await
        .map_err(|e| raft_error(&e))?;
    Ok(())
}

/// What [`bootstrap`] asks before it initializes a cluster.
struct BootstrapGuard {
    network: crate::peer::client::Network,
    /// How long a peer may take to answer.
    timeout: Duration,
    /// When this node may bootstrap (`--initial-cluster-state`).
    state: InitialClusterState,
}

/// First pause between two rounds of questions to the peers; it doubles up
/// to [`BOOTSTRAP_RETRY_MAX`].
const BOOTSTRAP_RETRY_MIN: Duration = Duration::from_millis(200);
/// Longest pause between two rounds of questions to the peers.
const BOOTSTRAP_RETRY_MAX: Duration = Duration::from_secs(5);
/// How often a node still waiting for its peers says so (the first time
/// at once).
const BOOTSTRAP_LOG_EVERY: Duration = Duration::from_secs(30);

/// What a node with a new store does after asking the other members.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Make the cluster of the initial members.
    Bootstrap,
    /// Never: a member belongs to a cluster already (the text says which).
    Never(String),
    /// Not yet: ask again. The text names the members not heard from.
    Wait(String),
}

/// Whether a node with a new store may bootstrap the cluster of its
/// `members` (this node among them) after the others answered `answers`.
/// Failing closed: a member that did not answer may belong to a cluster
/// (one forced with `--force-new-cluster`, or running while this node's
/// data was wiped), so silence never counts as "no cluster".
fn decide(
    state: InitialClusterState,
    members: usize,
    answers: &BTreeMap<u64, PeerAnswer>,
) -> Decision {
    if state == InitialClusterState::Existing {
        return Decision::Never("--initial-cluster-state is existing".into());
    }
    if let Some(why) = answers.values().find_map(|a| match a {
        PeerAnswer::InCluster(why) => Some(why.clone()),
        PeerAnswer::New | PeerAnswer::Unknown(_) => None,
    }) {
        return Decision::Never(why);
    }
    let new = answers.values().filter(|a| **a == PeerAnswer::New).count();
    let enough = match state {
        InitialClusterState::Auto => new == members.saturating_sub(1),
        // A majority of the members, counting this node.
        InitialClusterState::New => (new + 1) * 2 > members,
        InitialClusterState::Existing => false,
    };
    if enough {
        return Decision::Bootstrap;
    }
    let waiting: Vec<String> = answers
        .iter()
        .filter_map(|(id, a)| match a {
            PeerAnswer::Unknown(why) => Some(format!("node {id} ({why})")),
            PeerAnswer::New | PeerAnswer::InCluster(_) => None,
        })
        .collect();
    Decision::Wait(waiting.join("; "))
}

/// Bootstraps the cluster of `members` once [`decide`] allows it, asking
/// the other members again (with a growing pause) for as long as it does
/// not; returns without bootstrapping when a member belongs to a cluster
/// or when this node was added to one meanwhile.
async fn bootstrap(
    raft: &Raft,
    members: &BTreeMap<u64, String>,
    id: u64,
    advertise: &str,
    guard: &BootstrapGuard,
) -> Result<(), StartError> {
    let initialized = || async {
        raft.is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))
    };
    if initialized().await? {
        if guard.state == InitialClusterState::New {
            tracing::info!(
                "--initial-cluster-state new is ignored: this node's store already has a cluster; \
                 remove the option (left in place, a wiped store would bootstrap with only a majority of --peers answering)"
            );
        }
        return Ok(());
    }
    if guard.state == InitialClusterState::Existing {
        tracing::info!(
            "not bootstrapping: --initial-cluster-state is existing; this node waits to be added \
             (`raftlock cluster add-learner {id} ADDR`, then `promote {id}`)"
        );
        return Ok(());
    }
    let mut pause = BOOTSTRAP_RETRY_MIN;
    let mut said: Option<tokio::time::Instant> = None;
    let asking_since = tokio::time::Instant::now();
    loop {
        let answers = guard
            .network
            .ask_before_bootstrap(members, guard.timeout)
            .await;
        // Added to a cluster while asking: nothing to do.
        if initialized().await? {
            return Ok(());
        }
        match decide(guard.state, members.len(), &answers) {
            Decision::Bootstrap => break,
            // A new store beside peers of a running cluster is a node whose
            // data was lost (a pod whose volume went), not the birth of a
            // cluster: with its own one-entry log it could never win a
            // vote, and under the old id it is refused anyway. It waits to
            // be added instead.
            Decision::Never(why) => {
                tracing::warn!(
                    reason = %why,
                    "not bootstrapping: this node's store is new but the cluster of --peers already exists; \
                     it waits to be added (if the cluster knew this id with a lost store: `raftlock cluster \
                     remove {id}`, `raftlock cluster forget {id}`, then `raftlock cluster add-learner {id} \
                     ADDR` and `promote {id}`; see docs/operations.md)"
                );
                return Ok(());
            }
            Decision::Wait(waiting_for) => {
                let now = tokio::time::Instant::now();
                if said.is_none_or(|at| now.duration_since(at) >= BOOTSTRAP_LOG_EVERY) {
                    let waited_s = now.duration_since(asking_since).as_secs();
                    let what = "not bootstrapping yet: this node's store is new, and it makes the \
                                cluster of --peers only once every other member answered and none \
                                belongs to a cluster (a member that does not answer may have one); \
                                it keeps asking, and can be added to a running cluster meanwhile. \
                                For the first start of a new cluster with a member down, start the \
                                others with --initial-cluster-state new (docs/operations.md)";
                    if said.is_none() {
                        tracing::info!(
                            waiting_for,
                            state = guard.state.as_str(),
                            waited_s,
                            "{what}"
                        );
                    } else {
                        tracing::warn!(
                            waiting_for,
                            state = guard.state.as_str(),
                            waited_s,
                            "{what}"
                        );
                    }
                    said = Some(now);
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(BOOTSTRAP_RETRY_MAX);
    }
    if members.get(&id).is_some_and(|a| a != advertise) {
        tracing::warn!(
            configured = members.get(&id).map(String::as_str),
            advertise,
            "this node's address in the initial members differs from its advertised peer address"
        );
    }
    let nodes: BTreeMap<u64, BasicNode> = members
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect();
    match raft.initialize(nodes).await {
        Ok(()) => {
            tracing::info!(
                members = ?members.keys().collect::<Vec<_>>(),
                state = guard.state.as_str(),
                "cluster bootstrapped"
            );
            Ok(())
        }
        // Another member initialized first and its entry reached us.
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(StartError::Raft(e.to_string())),
    }
}

type ClientServices = (
    pb::locks_server::LocksServer<LocksService>,
    pb::leases_server::LeasesServer<LeasesService>,
    pb::admin_server::AdminServer<AdminService>,
);

/// The services clients call (Locks, Leases, Admin), served on the node's
/// address and, without a network hop, by [`NodeHandle::local_service`].
fn client_services(api: &Arc<Api>) -> ClientServices {
    let max = api.config.max_message_bytes;
    let locks = pb::locks_server::LocksServer::new(LocksService(Arc::clone(api)))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let leases = pb::leases_server::LeasesServer::new(LeasesService(Arc::clone(api)))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let admin = pb::admin_server::AdminServer::new(AdminService(Arc::clone(api)))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    (locks, leases, admin)
}

/// HTTP/2 limits of both listeners, so that one client (or a slow-loris
/// connection) cannot starve the others: streams per connection, header
/// size, reset floods, and keepalive PINGs that close dead connections.
fn limited(builder: Server) -> Server {
    builder
        .tcp_nodelay(true)
        .max_concurrent_streams(1_024)
        .http2_max_header_list_size(16 * 1024)
        .http2_max_pending_accept_reset_streams(Some(64))
        .http2_max_local_error_reset_streams(Some(256))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
}

type ServerTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// What the client listener serves (and so what reflection lists).
const CLIENT_LISTENER_SERVICES: [&str; 6] = [
    pb::locks_server::SERVICE_NAME,
    pb::leases_server::SERVICE_NAME,
    pb::admin_server::SERVICE_NAME,
    tonic_health::pb::health_server::SERVICE_NAME,
    tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
    tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
];

/// Serves the client listener (Locks, Leases, Admin, health, reflection)
/// and the peer listener (the internal transport only), each in its own
/// task.
fn spawn_servers(
    api: Arc<Api>,
    listener: TcpListener,
    peer_listener: TcpListener,
    stop: watch::Receiver<bool>,
) -> Result<Vec<ServerTask>, StartError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // Reflection in both versions: `grpc.reflection.v1` for current tools
    // (grpcurl, tonic), `v1alpha` for clients that speak only that one
    // (grpcio-reflection's Python descriptor database, older tools). Each
    // registers both reflection protos and lists exactly the services this
    // listener serves: raftlock's descriptor set also describes
    // `raftlock.internal.v1`, which only the peer listener serves.
    let reflection_builder = || {
        CLIENT_LISTENER_SERVICES.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(raftlock_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                ),
            |builder, service| builder.with_service_name(*service),
        )
    };
    let reflection_error = |e| StartError::Internal(format!("gRPC reflection: {e}"));
    let reflection = reflection_builder().build_v1().map_err(reflection_error)?;
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(reflection_error)?;
    let (locks, leases, admin) = client_services(&api);
    let transport = crate::peer::server::transport_server(&api);
    let health_api = Arc::clone(&api);
    let mut health_stop = stop.clone();
    // Serving while a leader is known (a Kubernetes readiness probe).
    let span = tracing::Span::current();
    tokio::spawn(
        async move {
            // `server_metrics` changes only with role, leader, vote or
            // membership; `metrics()` is sent after every batch of Raft
            // work, and a watcher of it would wake several times per write.
            let mut metrics = health_api.raft.server_metrics();
            loop {
                let serving = metrics.borrow_and_update().current_leader.is_some();
                let status = if serving {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                for service in [
                    "",
                    "raftlock.v1.Locks",
                    "raftlock.v1.Leases",
                    "raftlock.v1.Admin",
                ] {
                    health_reporter.set_service_status(service, status).await;
                }
                tokio::select! {
                    changed = metrics.changed() => if changed.is_err() { break },
                    _ = health_stop.changed() => break,
                }
            }
        }
        .instrument(span.clone()),
    );
    let max = api.config.max_connections;
    let clients = crate::listen::incoming(
        listener,
        api.tls.clone(),
        crate::tls::Side::Client,
        max,
        Arc::clone(&api.metrics.client_refusals),
        stop.clone(),
    );
    let peers = crate::listen::incoming(
        peer_listener,
        api.tls.clone(),
        crate::tls::Side::Peer,
        max,
        Arc::clone(&api.metrics.peer_refusals),
        stop.clone(),
    );
    let shutdown = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let client_server = limited(Server::builder())
        .layer(crate::grpc_metrics::GrpcMetricsLayer(Arc::clone(
            &api.metrics.grpc,
        )))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(locks)
        .add_service(leases)
        .add_service(admin)
        .serve_with_incoming_shutdown(clients, shutdown(stop.clone()));
    let peer_server = limited(Server::builder())
        .add_service(transport)
        .serve_with_incoming_shutdown(peers, shutdown(stop));
    Ok(vec![
        tokio::spawn(client_server.instrument(span.clone())),
        tokio::spawn(peer_server.instrument(span)),
    ])
}

/// Re-reads the certificate files when one changes (checked every 2 s), so
/// a rotated certificate is used for new connections without a restart.
/// (SIGHUP reloads at once through [`NodeHandle::reload_tls`].)
async fn watch_certificates(tls: Arc<crate::tls::Tls>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(Duration::from_secs(2));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = interval.tick() => {},
            _ = stop.wait_for(|s| *s) => return,
        }
        match tls.reload_if_changed() {
            Ok(true) => tracing::info!("certificates changed on disk; reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "certificates changed on disk but cannot be loaded; keeping the old ones")
            }
        }
    }
}

/// On the leader: name the cluster if it has no id yet, and record in the
/// cluster's state each node's store and client address (this node's own,
/// and what its peers said in their `Hello`), so every node can check its
/// peers and give clients leader hints.
async fn record_members(api: Arc<Api>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(Duration::from_millis(200));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut conflicts_logged = std::collections::BTreeSet::new();
    loop {
        tokio::select! {
            _ = interval.tick() => {},
            _ = stop.wait_for(|s| *s) => return,
        }
        // What a node that is no longer a member said about itself is
        // forgotten, on every node: were it kept, a later leader would
        // record it again after `raftlock cluster forget`, and the id could
        // never come back with a new store.
        let (voters, learners) = api.members();
        let is_member = |id: &u64| voters.contains_key(id) || learners.contains_key(id);
        for (node, _) in api.network.introduced() {
            if !is_member(&node) {
                api.network.forget_introduction(node);
            }
        }
        if api.keeper.leader_term().is_none() {
            continue;
        }
        if api.state.read(|s| s.cluster().id.is_empty()) {
            let Some(cluster_id) = random_id() else {
                tracing::error!("no randomness for a cluster id");
                continue;
            };
            match api.propose_one(Command::InitCluster { cluster_id }).await {
                Ok(applied) => {
                    if let Ok(raftlock_core::Response::ClusterInit { cluster_id }) = applied.result
                    {
                        tracing::info!(cluster_id, "cluster named");
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "could not name the cluster yet");
                    continue;
                }
            }
        }
        let mut wanted = api.network.introduced();
        wanted.insert(
            api.id,
            crate::peer::client::Introduced {
                store_id: api.store_id.clone(),
                client_addr: api.client_addr.clone(),
                protocol: api.peer_identity.protocol,
                build_version: env!("CARGO_PKG_VERSION").to_string(),
            },
        );
        for (node, seen) in wanted {
            // Only members are recorded (see above).
            if !is_member(&node) {
                continue;
            }
            let recorded = api.state.read(|s| s.cluster().members.get(&node).cloned());
            if recorded
                .is_some_and(|r| r.store_id == seen.store_id && r.client_addr == seen.client_addr)
                || conflicts_logged.contains(&(node, seen.store_id.clone()))
            {
                continue;
            }
            let command = Command::RecordMember {
                node,
                store_id: seen.store_id.clone(),
                client_addr: seen.client_addr,
            };
            match api.propose_one(command).await {
                Ok(applied) => match applied.result {
                    Ok(raftlock_core::Response::MemberRecorded {
                        conflict: Some(known),
                    }) => {
                        tracing::error!(
                            node,
                            store = seen.store_id,
                            known,
                            "node came back with another store (its data was wiped): refused; remove it and add it back under a new id"
                        );
                        conflicts_logged.insert((node, seen.store_id));
                    }
                    Ok(_) => tracing::info!(node, "member recorded"),
                    Err(e) => tracing::warn!(node, error = %e, "member not recorded"),
                },
                Err(e) => {
                    tracing::debug!(node, error = %e, "could not record a member yet");
                    break;
                }
            }
        }
    }
}

/// 16 random bytes as hex.
fn random_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Hands every applied batch to the waiting acquires, the watchers and the
/// lease keeper.
async fn feed_applies(
    api: Arc<Api>,
    mut applied: broadcast::Receiver<raftlock_store::AppliedBatch>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let batch = tokio::select! {
            b = applied.recv() => b,
            _ = stop.wait_for(|s| *s) => return,
        };
        match batch {
            Ok(batch) => {
                api.waits.on_applied(&batch);
                let now = std::time::Instant::now();
                for a in batch.iter() {
                    api.metrics.lock_groups.on_applied(a, now);
                    api.watch.publish(&a.events);
                    for e in &a.events {
                        api.keeper.on_event(&e.kind);
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "apply feed lagged; resynchronizing from the state");
                api.metrics.lock_groups.forget_in_flight();
                api.state.read(|s| {
                    api.waits.resync(s);
                    api.watch.reset(s.token_high_water());
                    if let Some(term) = api.keeper.leader_term() {
                        // Fresh deadlines: leases only get longer.
                        api.keeper.become_leader(term, s);
                    }
                });
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Starts and stops the lease keeper with leadership.
async fn follow_leadership(api: Arc<Api>, mut stop: watch::Receiver<bool>) {
    // Server metrics: woken by role and vote changes only (not per write).
    let mut metrics = api.raft.server_metrics();
    // The (term, leader) last counted in `leader_changes`.
    let mut seen_leader = None;
    loop {
        let (leading, term, leader) = {
            let m = metrics.borrow_and_update();
            (
                m.state == ServerState::Leader && m.current_leader == Some(api.id),
                m.vote.leader_id().get_term(),
                m.current_leader,
            )
        };
        if let Some(leader) = leader
            && seen_leader != Some((term, leader))
        {
            seen_leader = Some((term, leader));
            api.metrics
                .leader_changes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if leading && api.keeper.leader_term() != Some(term) {
            api.state.read(|s| api.keeper.become_leader(term, s));
            raise_token_epoch(&api);
            sync_limits(&api).await;
        } else if !leading && api.keeper.leader_term().is_some() {
            api.keeper.step_down();
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// A new leader honours `--token-floor` before anything else: its first
/// proposal raises the token epoch if the state's high water is below the
/// floor (every proposal waits for that too, `Api::propose_one`).
fn raise_token_epoch(api: &Arc<Api>) {
    if api.config.token_floor == 0 {
        return;
    }
    let api = Arc::clone(api);
    tokio::spawn(async move {
        if let Err(e) = api.ensure_token_floor().await {
            tracing::warn!(error = %e, "could not raise the token epoch past the floor yet");
        }
    });
}

/// The leader's configured limits become the cluster's.
async fn sync_limits(api: &Arc<Api>) {
    let wanted = api.config.limits.clone();
    if api.state.read(|s| *s.limits() == wanted) {
        return;
    }
    let api = Arc::clone(api);
    tokio::spawn(async move {
        match api.propose(Command::SetLimits { limits: wanted }).await {
            Ok(_) => tracing::info!("limits from this leader's configuration applied"),
            Err(e) => tracing::warn!(error = %e, "could not apply the configured limits"),
        }
    });
}

/// On the leader: expire leases whose deadline passed, and tick when a
/// lock-delay ends.
async fn keep_leases(api: Arc<Api>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(api.config.lease_check_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = interval.tick() => {},
            _ = stop.wait_for(|s| *s) => return,
        }
        if api.keeper.leader_term().is_none() {
            continue;
        }
        let (next_delay_end, cluster_ms) =
            api.state.read(|s| (s.next_delay_end_ms(), s.cluster_ms()));
        let due = api
            .keeper
            .due(api.config.max_expire_batch, next_delay_end, cluster_ms);
        if !due.expire.is_empty() {
            expire(&api, due.expire).await;
        }
        if due.tick
            && let Err(e) = api.propose(Command::Tick).await
        {
            tracing::debug!(error = %e, "tick not applied");
        }
    }
}

async fn expire(api: &Api, leases: Vec<LeaseId>) {
    tracing::info!(leases = ?leases, "expiring leases whose keep-alives stopped");
    match api
        .propose(Command::ExpireLeases {
            leases: leases.clone(),
        })
        .await
    {
        Ok(_) => api.keeper.expiry_applied(&leases),
        Err(e) => {
            tracing::warn!(error = %e, "lease expiry not applied; will retry");
            api.keeper.expiry_failed(&leases);
        }
    }
}

impl NodeHandle {
    /// The address the node listens on for clients.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the node listens on for peers.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Re-read the TLS certificate, key and CA files now (the node also
    /// notices changed files by itself within a few seconds); on an error
    /// the old ones stay. Without TLS, nothing to do.
    pub fn reload_tls(&self) -> Result<(), crate::tls::TlsError> {
        match &self.api.tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }

    /// This node's cluster id as it has applied it (empty until the first
    /// leader named the cluster).
    pub fn cluster_id(&self) -> String {
        self.api.state.read(|s| s.cluster().id.clone())
    }

    /// Where the metrics endpoint listens, if `metrics_listen` was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// This node's metrics in the Prometheus text format 0.0.4 (see
    /// [`Api::metrics_in`] for OpenMetrics).
    pub fn metrics_text(&self) -> String {
        self.api.metrics_text()
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.api.id
    }

    /// Re-read the auth file and put its policy in force (what SIGHUP is
    /// for). On error the policy in force stays, and the error says why.
    /// Without auth (`NodeConfig::auth` unset) it does nothing.
    pub fn reload_auth(&self) -> Result<(), crate::auth::AuthFileError> {
        self.api.auth.reload()
    }

    /// The node's operations, in process (no network hop).
    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    /// The node's client-facing gRPC services (Locks, Leases, Admin) as one
    /// in-process tower service: requests are encoded and answered exactly
    /// as over the network (same replies, reasons and leader metadata), but
    /// never touch a socket. `raftlock_client::Client::in_process` takes it.
    pub fn local_service(&self) -> tonic::service::Routes {
        let (locks, leases, admin) = client_services(&self.api);
        tonic::service::Routes::new(locks)
            .add_service(leases)
            .add_service(admin)
    }

    /// openraft's handle (metrics, membership).
    pub fn raft(&self) -> &Raft {
        &self.api.raft
    }

    /// Stop serving, stop Raft, and wait for the background tasks.
    pub async fn shutdown(mut self) {
        self.stop_now().await;
    }

    async fn stop_now(&mut self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.api.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        for mut server in self.servers.drain(..) {
            // Long calls end on the stop signal; a client that keeps a
            // connection busy anyway gets cut off after a grace period.
            match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server stopped with an error"),
                Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
                Err(_) => {
                    tracing::warn!("connections still open 5 s after shutdown; closing them");
                    server.abort();
                }
            }
        }
        // openraft drops the store a moment after it stops; wait, so the data
        // dir can be opened again as soon as this returns.
        if let Some(closed) = self.store_closed.take()
            && tokio::time::timeout(Duration::from_secs(10), closed.wait())
                .await
                .is_err()
        {
            tracing::warn!("the store was not closed within 10 s of shutdown");
        }
        tracing::info!(id = self.api.id, "node stopped");
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        // A handle dropped without shutdown still stops serving; Raft stops
        // when its last handle goes.
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(list: &[(u64, PeerAnswer)]) -> BTreeMap<u64, PeerAnswer> {
        list.iter().cloned().collect()
    }

    fn unknown() -> PeerAnswer {
        PeerAnswer::Unknown("127.0.0.1:1: Unavailable: connection refused".into())
    }

    fn in_cluster() -> PeerAnswer {
        PeerAnswer::InCluster("node 1 belongs to cluster c1".into())
    }

    #[test]
    fn auto_bootstraps_only_when_every_other_member_answered_new() {
        let all_new = answers(&[(2, PeerAnswer::New), (3, PeerAnswer::New)]);
        assert_eq!(
            decide(InitialClusterState::Auto, 3, &all_new),
            Decision::Bootstrap
        );
        let one_silent = answers(&[(2, PeerAnswer::New), (3, unknown())]);
        match decide(InitialClusterState::Auto, 3, &one_silent) {
            Decision::Wait(who) => {
                assert!(who.contains("node 3") && who.contains("refused"), "{who}")
            }
            other => panic!("{other:?}"),
        }
        // The only member: nobody to ask.
        assert_eq!(
            decide(InitialClusterState::Auto, 1, &BTreeMap::new()),
            Decision::Bootstrap
        );
    }

    #[test]
    fn new_bootstraps_with_a_majority_counting_itself() {
        let one_of_two_others = answers(&[(2, PeerAnswer::New), (3, unknown())]);
        assert_eq!(
            decide(InitialClusterState::New, 3, &one_of_two_others),
            Decision::Bootstrap
        );
        let none = answers(&[(2, unknown()), (3, unknown())]);
        assert!(matches!(
            decide(InitialClusterState::New, 3, &none),
            Decision::Wait(_)
        ));
        // Five members: itself and two others are a majority, one is not.
        let two = answers(&[
            (2, PeerAnswer::New),
            (3, PeerAnswer::New),
            (4, unknown()),
            (5, unknown()),
        ]);
        assert_eq!(
            decide(InitialClusterState::New, 5, &two),
            Decision::Bootstrap
        );
        let one = answers(&[
            (2, PeerAnswer::New),
            (3, unknown()),
            (4, unknown()),
            (5, unknown()),
        ]);
        assert!(matches!(
            decide(InitialClusterState::New, 5, &one),
            Decision::Wait(_)
        ));
    }

    #[test]
    fn a_member_in_a_cluster_means_never_whatever_the_state() {
        let list = answers(&[(2, PeerAnswer::New), (3, in_cluster())]);
        for state in [InitialClusterState::Auto, InitialClusterState::New] {
            assert!(
                matches!(decide(state, 3, &list), Decision::Never(why) if why.contains("c1")),
                "{state:?}"
            );
        }
        let all_new = answers(&[(2, PeerAnswer::New), (3, PeerAnswer::New)]);
        assert!(matches!(
            decide(InitialClusterState::Existing, 3, &all_new),
            Decision::Never(_)
        ));
    }
}
