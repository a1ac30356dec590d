//! Running nodes in this process: one tokio runtime per node (threads named
//! `node-<id>`, see `logging`), a small control runtime on the main thread
//! for signals and waiting, and a bounded graceful stop. `serve` is here;
//! `dev` uses the same pieces for three nodes.

use std::net::SocketAddr;
use std::time::Duration;

use raftlock_node::{ForceError, Node, NodeConfig, NodeHandle, Raft, StartError};
use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinSet;
use tracing::{Instrument, Span};

use crate::config::{self, ServeArgs};
use crate::{Failure, error_chain, logging};

/// How long a graceful stop may take before we give up on it.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The span around everything one node does in this process: `serve{id=N}`.
pub fn node_span(id: u64) -> Span {
    tracing::info_span!(parent: None, "serve", id)
}

/// The runtime that waits for signals and drives the main thread.
pub fn control_runtime() -> Result<Runtime, Failure> {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start the tokio runtime: {e}")))
}

/// A node with its own runtime.
pub struct RunningNode {
    id: u64,
    span: Span,
    // Declared before `rt`: if dropped without `stop_all`, the handle stops
    // serving before the runtime goes.
    handle: Option<NodeHandle>,
    rt: Option<Runtime>,
}

impl RunningNode {
    /// Starts a node on its own runtime; on `listeners` (client, peer) if
    /// given (already bound, so a port conflict is found before any node
    /// starts), else on `config.listen` and `config.peer_listen`. `span` (see [`node_span`]) wraps the node's start,
    /// its role log and its shutdown.
    pub fn start(
        config: NodeConfig,
        listeners: Option<(std::net::TcpListener, std::net::TcpListener)>,
        worker_threads: usize,
        span: Span,
    ) -> Result<RunningNode, Failure> {
        let id = config.id;
        let rt = Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .thread_name(format!("node-{id}"))
            .enable_all()
            .build()
            .map_err(|e| Failure::Runtime(format!("cannot start the runtime of node {id}: {e}")))?;
        let (listen, peer_listen) = (config.listen.clone(), config.peer_listen.clone());
        let started = rt.block_on(
            async move {
                let tokio_listener = |l: std::net::TcpListener, addr: String| {
                    l.set_nonblocking(true)
                        .and_then(|()| tokio::net::TcpListener::from_std(l))
                        .map_err(|source| StartError::Bind { addr, source })
                };
                match listeners {
                    Some((client, peer)) => {
                        let client = tokio_listener(client, listen)?;
                        let peer = tokio_listener(peer, peer_listen)?;
                        Node::start_on(config, client, peer).await
                    }
                    None => Node::start(config).await,
                }
            }
            .instrument(span.clone()),
        );
        match started {
            Ok(handle) => {
                rt.spawn(log_role_changes(handle.raft().clone()).instrument(span.clone()));
                Ok(RunningNode {
                    id,
                    span,
                    handle: Some(handle),
                    rt: Some(rt),
                })
            }
            Err(e) => {
                rt.shutdown_timeout(Duration::from_secs(2));
                Err(start_failure(id, &e))
            }
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        self.handle.as_ref().map(NodeHandle::addr)
    }

    pub fn raft(&self) -> Option<Raft> {
        self.handle.as_ref().map(|h| h.raft().clone())
    }

    /// Runs `task` on this node's runtime.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Some(rt) = &self.rt {
            rt.spawn(task);
        }
    }

    /// Re-read this node's TLS files and auth file now (SIGHUP); on a
    /// mistake the old ones stay and the log says why.
    pub fn reload_files(&self) {
        if let Some(handle) = &self.handle {
            let _entered = self.span.enter();
            match handle.reload_tls() {
                Ok(()) => tracing::info!("TLS files reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS files not reloaded; keeping the old ones")
                }
            }
            // The auth module logs the outcome itself (target "audit").
            let _ = handle.reload_auth();
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        // Only reached without `stop_all` (an early error): stop serving and
        // let the runtime go without blocking.
        drop(self.handle.take());
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// One info line whenever this node's role, term or known leader changes
/// (openraft's own lines are at `warn` by default).
async fn log_role_changes(raft: Raft) {
    // Server metrics change with role, leader and vote only; `metrics()`
    // would wake this task several times per write.
    let mut metrics = raft.server_metrics();
    let mut last = None;
    loop {
        let now = {
            let m = metrics.borrow_and_update();
            (m.state, m.vote.leader_id().get_term(), m.current_leader)
        };
        if last != Some(now) {
            let (state, term, leader) = now;
            match leader {
                Some(leader) => tracing::info!(role = ?state, term, leader, "raft state"),
                None => tracing::info!(role = ?state, term, "raft state: no leader known"),
            }
            last = Some(now);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Tells systemd (`Type=notify`) how this node is doing: `STATUS=` on
/// every change of role, term, leader or membership, and `READY=1` once,
/// when the node is a member that knows a leader: a node waiting for a
/// quorum, or to be added, is started but not ready.
async fn notify_systemd(raft: Raft, notifier: crate::sd_notify::Notifier) {
    let mut metrics = raft.server_metrics();
    let mut ready = false;
    let mut last = None;
    loop {
        let now = {
            let m = metrics.borrow_and_update();
            let member = m.membership_config.membership().get_node(&m.id).is_some();
            let role = format!("{:?}", m.state).to_lowercase();
            (
                role,
                m.vote.leader_id().get_term(),
                m.current_leader,
                member,
            )
        };
        if last.as_ref() != Some(&now) {
            let (role, term, leader, member) = &now;
            let status = crate::sd_notify::status_line(role, *term, *leader, *member);
            if !ready && *member && leader.is_some() {
                notifier.notify(&format!("READY=1\n{status}"));
                ready = true;
            } else {
                notifier.notify(&status);
            }
            last = Some(now);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

fn start_failure(id: u64, e: &StartError) -> Failure {
    let text = error_chain(e);
    match e {
        StartError::Config(_)
        | StartError::Tls(_)
        | StartError::Force(
            ForceError::NothingStored | ForceError::MembershipChangedSince { .. },
        ) => Failure::Usage(format!("node {id}: {text}")),
        StartError::Bind { .. } => Failure::Runtime(format!(
            "node {id}: {text}; is another process using this address? choose another with --listen or --peer-listen"
        )),
        _ => Failure::Runtime(format!("node {id} could not start: {text}")),
    }
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere). Create inside a runtime context;
/// from then on these signals no longer kill the process by default.
pub struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    /// Only for nodes ([`Signals::with_hangup`]): SIGHUP reloads files.
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn new(control: &Runtime) -> Result<Signals, Failure> {
        let _ctx = control.enter();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let fail = |e: std::io::Error| {
                Failure::Runtime(format!("cannot install signal handlers: {e}"))
            };
            Ok(Signals {
                int: signal(SignalKind::interrupt()).map_err(fail)?,
                term: signal(SignalKind::terminate()).map_err(fail)?,
                hup: None,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// [`Signals::new`] plus SIGHUP, which `recv` then returns as well
    /// (nodes reload their certificates on it instead of stopping).
    pub fn with_hangup(control: &Runtime) -> Result<Signals, Failure> {
        #[allow(unused_mut)]
        let mut signals = Signals::new(control)?;
        #[cfg(unix)]
        {
            let _ctx = control.enter();
            use tokio::signal::unix::{SignalKind, signal};
            signals.hup = Some(signal(SignalKind::hangup()).map_err(|e| {
                Failure::Runtime(format!("cannot install the SIGHUP handler: {e}"))
            })?);
        }
        Ok(signals)
    }

    /// The next signal's name.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "SIGINT",
                _ = self.term.recv() => "SIGTERM",
                Some(()) = async {
                    match self.hup.as_mut() {
                        Some(hup) => hup.recv().await,
                        None => std::future::pending().await,
                    }
                } => "SIGHUP",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// Why a running cluster ends.
pub enum End {
    Signal(&'static str),
    /// A node's Raft stopped on its own (a fatal storage error).
    RaftStopped(u64),
}

/// Waits for a signal, or for any node's Raft to stop by itself.
pub async fn wait_for_end(nodes: &[RunningNode], signals: &mut Signals) -> End {
    let mut stopped = JoinSet::new();
    for node in nodes {
        if let Some(raft) = node.raft() {
            let id = node.id();
            stopped.spawn(async move {
                // Server metrics: not woken per write, and the channel
                // closes, like all of them, when Raft's core task ends.
                let mut metrics = raft.server_metrics();
                while metrics.changed().await.is_ok() {}
                id
            });
        }
    }
    loop {
        tokio::select! {
            name = signals.recv() => {
                if name == "SIGHUP" {
                    // Reload, not stop: re-read certificates (and the
                    // other files a node re-reads) and keep serving.
                    tracing::info!("SIGHUP: reloading");
                    for node in nodes {
                        node.reload_files();
                    }
                    continue;
                }
                return End::Signal(name);
            }
            Some(Ok(id)) = stopped.join_next() => return End::RaftStopped(id),
        }
    }
}

/// Gracefully stops every node (in parallel), bounded by [`STOP_TIMEOUT`];
/// a second signal cuts it short. Errors say what did not stop cleanly.
pub fn stop_all(
    mut nodes: Vec<RunningNode>,
    control: &Runtime,
    signals: &mut Signals,
) -> Result<(), Failure> {
    let mut stopping = Vec::new();
    for node in &mut nodes {
        if let (Some(handle), Some(rt)) = (node.handle.take(), node.rt.as_ref()) {
            stopping.push((
                node.id,
                rt.spawn(handle.shutdown().instrument(node.span.clone())),
            ));
        }
    }
    let outcome = control.block_on(async {
        let all = async {
            for (id, task) in stopping {
                if let Err(e) = task.await {
                    tracing::error!(node = id, error = %e, "shutdown task failed");
                }
            }
        };
        tokio::select! {
            r = tokio::time::timeout(STOP_TIMEOUT, all) => r.map_err(|_| {
                Failure::Runtime(format!(
                    "the nodes did not stop within {} s; exiting anyway",
                    STOP_TIMEOUT.as_secs()
                ))
            }),
            name = signals.recv() => Err(Failure::Runtime(format!(
                "{name} received again: exiting before the nodes finished stopping"
            ))),
        }
    });
    for node in &mut nodes {
        if let Some(rt) = node.rt.take() {
            if outcome.is_ok() {
                rt.shutdown_timeout(Duration::from_secs(2));
            } else {
                rt.shutdown_background();
            }
        }
    }
    outcome
}

/// `raftlock serve`.
pub fn serve(args: ServeArgs) -> Result<(), Failure> {
    let check = args.check;
    let resolved = config::resolve(args)?;
    if check {
        return config::check(&resolved);
    }
    logging::init(resolved.log_format);
    let notifier = crate::sd_notify::Notifier::from_env()?;
    let control = control_runtime()?;
    let mut signals = Signals::with_hangup(&control)?;
    let mut node_config = resolved.node;
    // Test-only (cluster-tests' upgrade scenario, the peer-version tests):
    // announce another release's peer protocol versions.
    if let Some(text) = std::env::var_os(raftlock_node::PEER_PROTOCOL_TEST_ENV) {
        let text = text.to_string_lossy();
        node_config.peer_protocol = text.parse().map_err(|e| {
            Failure::Usage(format!("{}: {e}", raftlock_node::PEER_PROTOCOL_TEST_ENV))
        })?;
        tracing::warn!(
            protocol = %node_config.peer_protocol,
            "{} is set: this node announces a peer protocol range for tests",
            raftlock_node::PEER_PROTOCOL_TEST_ENV
        );
    }
    let id = node_config.id;
    let span = node_span(id);
    let _entered = span.enter();

    let unspecified = node_config
        .listen
        .rsplit_once(':')
        .is_some_and(|(h, _)| matches!(h, "0.0.0.0" | "[::]" | "::"));
    if unspecified && node_config.advertise.is_none() {
        tracing::warn!(
            listen = node_config.listen,
            "listening on all interfaces without --advertise: peers will be told the wildcard \
             address; give --advertise HOST:PORT if this node is added to a cluster later"
        );
    }
    tracing::info!(
        data_dir = %node_config.data_dir.display(),
        listen = node_config.listen,
        peers = ?node_config.initial_members,
        initial_cluster_state = node_config.initial_cluster_state.as_str(),
        "starting"
    );
    let tls = node_config.tls.is_some();
    let node = RunningNode::start(node_config, None, resolved.worker_threads, span.clone())?;
    if let Some(addr) = node.addr() {
        tracing::info!(%addr, tls, "serving; stop with Ctrl-C or SIGTERM, reload with SIGHUP");
    }
    if let (Some(notifier), Some(raft)) = (&notifier, node.raft()) {
        node.spawn(notify_systemd(raft, notifier.clone()).instrument(span.clone()));
    }
    let nodes = vec![node];
    let end = control.block_on(wait_for_end(&nodes, &mut signals));
    if let Some(notifier) = &notifier {
        notifier.notify("STOPPING=1\nSTATUS=stopping");
    }
    let result = match end {
        End::Signal(name) => {
            tracing::info!(signal = name, "stopping");
            Ok(())
        }
        End::RaftStopped(_) => Err(Failure::Runtime(format!(
            "node {id}: Raft stopped unexpectedly (see the log above); stopping"
        ))),
    };
    stop_all(nodes, &control, &mut signals)?;
    tracing::info!("stopped");
    result
}
