//! The client half of the node-to-node transport: openraft's
//! [`RaftNetworkFactory`]/[`RaftNetwork`] over the `RaftTransport` gRPC
//! service, plus [`Network::call`] for the node's own peer messages
//! (Forward, ReadIndex, KeepAlive) through the same channels.
//!
//! Channels are cached per peer address and shared by every clone of a
//! [`Network`]. A tonic channel reconnects by itself, but a channel that saw
//! a transport failure is still dropped from the cache (see
//! [`Network::call`]): the next call builds a fresh one, so no failure mode
//! of an old connection can stick to a peer forever.
//!
//! How failures reach openraft (it decides retries and backoff from the
//! variant):
//! - the peer cannot be reached (connection refused, connect timeout, DNS,
//!   a bad address, `UNAVAILABLE`), or refuses this node as a peer, or is
//!   refused by it (another cluster, a wiped store, a message meant for
//!   another node id, a certificate that does not name the node:
//!   `FAILED_PRECONDITION`, `PERMISSION_DENIED`, `UNAUTHENTICATED`, see
//!   [`super::identity`]) → [`RPCError::Unreachable`]: openraft backs off
//!   ([`RaftNetwork::backoff`], 500 ms) before trying again;
//! - no answer within `RPCOption::hard_ttl()` → [`RPCError::Timeout`];
//! - any other transport failure (connection reset mid-call, h2 errors), a
//!   status sent by the peer's server, or an answer that fails its checksum
//!   or does not decode → [`RPCError::Network`]: retried on openraft's next
//!   tick without backoff;
//! - an AppendEntries rejected as too large (`OUT_OF_RANGE` from either
//!   side's message-size limit) → [`RPCError::PayloadTooLarge`] with half
//!   the entries, so openraft shrinks the batch and retries at once;
//! - the peer's Raft answered with an error (encoded in the answer as
//!   `Err(RaftError)`) → [`RPCError::RemoteError`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use raftlock_proto::internal::v1::RaftMessage;
use raftlock_proto::internal::v1::raft_transport_client::RaftTransportClient;
use raftlock_store::metrics::Histogram;
use raftlock_store::{NodeId, TypeConfig};
use tonic::transport::{Channel, Endpoint};

use super::wire::{Wire, pack, unpack};

/// Connection settings for peer channels. Every field bounds how long a
/// dead or slow peer can hold something up, so callers choose them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NetworkOptions {
    /// Upper bound on establishing a TCP connection to a peer.
    pub(crate) connect_timeout_ms: u64,
    /// HTTP/2 PING period on every peer connection, idle or not. A peer
    /// that vanished without closing its socket is noticed after about
    /// `keepalive_interval_ms + keepalive_timeout_ms`; until then calls on
    /// that connection only time out.
    pub(crate) keepalive_interval_ms: u64,
    /// How long a PING may go unanswered before the connection is closed.
    pub(crate) keepalive_timeout_ms: u64,
    /// Largest message this node sends or accepts on a peer channel. The
    /// servers must accept as much (`max_decoding_message_size`), and it
    /// must exceed openraft's `snapshot_max_chunk_size` plus a few KiB.
    pub(crate) max_message_bytes: usize,
    /// Peers dialed at an address other than the one their membership
    /// entry advertises (id → `host:port`): `NodeConfig::peer_dial`.
    pub(crate) dial_overrides: HashMap<NodeId, String>,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        NetworkOptions {
            connect_timeout_ms: 1_000,
            keepalive_interval_ms: 2_000,
            keepalive_timeout_ms: 2_000,
            // tonic's default receive limit, so a server left at its
            // defaults accepts everything we send.
            max_message_bytes: 4 * 1024 * 1024,
            dial_overrides: HashMap::new(),
        }
    }
}

/// The RPCs of the `RaftTransport` service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Forward,
    ReadIndex,
    KeepAlive,
}

impl Method {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Method::AppendEntries => "AppendEntries",
            Method::Vote => "Vote",
            Method::InstallSnapshot => "InstallSnapshot",
            Method::Forward => "Forward",
            Method::ReadIndex => "ReadIndex",
            Method::KeepAlive => "KeepAlive",
        }
    }
}

/// A cached channel and the generation it was created in, so that evicting
/// after a failure never removes a newer channel another caller put there.
struct Cached {
    channel: Channel,
    generation: u64,
}

#[derive(Default)]
struct Channels {
    by_addr: HashMap<String, Cached>,
    next_generation: u64,
}

/// What a peer said when asked before a bootstrap
/// ([`Network::ask_before_bootstrap`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerAnswer {
    /// It answered as the node `--peers` names and belongs to no cluster.
    New,
    /// It belongs to a cluster, or refused this node as a member it knows
    /// with another store (the text says which): never bootstrap.
    InCluster(String),
    /// No usable answer (the text says why): it may belong to a cluster.
    Unknown(String),
}

/// What the `Hello` to peer `id` at `addr` tells a node with a new store
/// ([`Network::ask_before_bootstrap`]). A peer that names a cluster is in
/// one whatever its version: a `PEER_VERSION_MISMATCH` refusal, from
/// either side of the `Hello`, carries the answering node's cluster id
/// ([`super::version::mismatch`]), and one that names a cluster is not
/// "no answer" (counting it so would let `--initial-cluster-state new`
/// bootstrap a second cluster beside a running one of another release).
pub(crate) fn judge_hello(
    id: NodeId,
    addr: &str,
    said: Result<String, tonic::Status>,
) -> PeerAnswer {
    match said {
        Ok(cluster) if cluster.is_empty() => PeerAnswer::New,
        Ok(cluster) => {
            PeerAnswer::InCluster(format!("node {id} at {addr} belongs to cluster {cluster}"))
        }
        Err(status) => {
            if let Some(cluster) = super::version::cluster_in(&status) {
                return PeerAnswer::InCluster(format!(
                    "node {id} at {addr} belongs to cluster {cluster} (and speaks no peer protocol version in common with this node: {})",
                    status.message()
                ));
            }
            if raftlock_proto::errors::classify(&status).known()
                == Some(raftlock_proto::errors::ErrorReason::ClusterMismatch)
            {
                return PeerAnswer::InCluster(format!(
                    "node {id} at {addr} refused this node: {}",
                    status.message()
                ));
            }
            // Unreachable, slow, another node at that address (`--peers`
            // differs between nodes), or a version refusal from a node in
            // no cluster: nothing known.
            PeerAnswer::Unknown(format!("{addr}: {:?}: {}", status.code(), status.message()))
        }
    }
}

/// What a peer said about itself in its `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Introduced {
    pub(crate) store_id: String,
    pub(crate) client_addr: String,
    /// The peer protocol versions it speaks (protocol 1 from a build
    /// before versioning, which announces none).
    pub(crate) protocol: super::version::ProtocolRange,
    /// Its release; empty from a build before versioning.
    pub(crate) build_version: String,
}

struct Inner {
    id: NodeId,
    options: NetworkOptions,
    /// Stamps outgoing messages and checks answers; `None` in the
    /// transport's unit tests.
    identity: Option<super::identity::PeerIdentity>,
    /// Dial peers with mutual TLS.
    tls: Option<Arc<crate::tls::Tls>>,
    /// Client address and store of each peer, from its latest `Hello`: the
    /// leader records them in the cluster's state.
    introduced: Mutex<BTreeMap<NodeId, Introduced>>,
    /// This node's client address, sent in its `Hello`s.
    client_addr: String,
    channels: Mutex<Channels>,
    /// Round trips of AppendEntries that carried entries, per peer (what
    /// a replicated write waits for: the wire both ways and the peer's
    /// append and flush).
    append_times: Mutex<BTreeMap<NodeId, Arc<Histogram>>>,
}

/// The node's peer network: openraft's network factory and a channel cache
/// shared by all its clones.
#[derive(Clone)]
pub(crate) struct Network {
    inner: Arc<Inner>,
}

/// Why [`Network::call`] got no answer to use: whether the peer answered
/// tells whether it handled the request.
#[derive(Debug)]
pub(crate) enum CallFailure {
    /// No answer came: the status was made locally (the peer could not be
    /// reached, the deadline passed, the connection failed mid-call) or
    /// sent by the peer's server instead of an answer.
    NoAnswer(tonic::Status),
    /// The peer answered, but its answer is not taken (a node of another
    /// cluster, a wiped store, a protocol version this node cannot read):
    /// the peer handled the request.
    AnswerRefused(tonic::Status),
}

impl CallFailure {
    /// The status of a call that got no answer (tests).
    #[cfg(test)]
    pub(crate) fn no_answer(self) -> tonic::Status {
        match self {
            CallFailure::NoAnswer(status) => status,
            CallFailure::AnswerRefused(status) => panic!("the peer answered: {status:?}"),
        }
    }
}

/// Why a call got no answer.
#[derive(Debug)]
enum CallError {
    /// Our deadline passed.
    Timeout(Duration),
    /// A failure status, made locally (transport) or sent by the peer.
    Status(tonic::Status),
    /// The peer's address is not a URI.
    BadAddress(tonic::Status),
}

impl Network {
    /// The network of node `id` (the id is named in timeout errors), with
    /// unstamped messages (the transport's unit tests).
    #[cfg(test)]
    pub(crate) fn new(id: NodeId, options: NetworkOptions) -> Self {
        Self::secured(id, options, None, None, String::new())
    }

    /// The network of node `id`, stamping its messages with `identity`,
    /// dialing with `tls` when set.
    pub(crate) fn secured(
        id: NodeId,
        options: NetworkOptions,
        identity: Option<super::identity::PeerIdentity>,
        tls: Option<Arc<crate::tls::Tls>>,
        client_addr: String,
    ) -> Self {
        Network {
            inner: Arc::new(Inner {
                id,
                options,
                identity,
                tls,
                introduced: Mutex::new(BTreeMap::new()),
                client_addr,
                channels: Mutex::new(Channels::default()),
                append_times: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The AppendEntries round-trip histogram of each peer this node has
    /// replicated entries to (as leader), by peer id.
    pub(crate) fn append_times(&self) -> BTreeMap<NodeId, Arc<Histogram>> {
        self.append_times_map().clone()
    }

    fn append_times_of(&self, peer: NodeId) -> Arc<Histogram> {
        Arc::clone(self.append_times_map().entry(peer).or_default())
    }

    fn append_times_map(&self) -> MutexGuard<'_, BTreeMap<NodeId, Arc<Histogram>>> {
        // Nothing panics while holding the lock.
        self.inner
            .append_times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The id of the node this network belongs to.
    pub(crate) fn id(&self) -> NodeId {
        self.inner.id
    }

    /// Where to dial node `id`, whose membership entry advertises
    /// `advertised`: its dial override if it has one, else `advertised`.
    pub(crate) fn dial_addr<'a>(&'a self, id: NodeId, advertised: &'a str) -> &'a str {
        self.inner
            .options
            .dial_overrides
            .get(&id)
            .map_or(advertised, String::as_str)
    }

    /// Sends `message` to `method` of the peer at `addr` and waits at most
    /// `timeout` for the answer (the deadline is also sent to the peer, so
    /// its server gives up too).
    ///
    /// Errors say whether the peer answered ([`CallFailure`]): with no
    /// answer, the gRPC status made locally for transport failures
    /// (`UNAVAILABLE` when the peer cannot be reached, `DEADLINE_EXCEEDED`
    /// when `timeout` passed) or sent by the peer instead of an answer.
    /// After a transport failure the peer's channel is dropped from the
    /// cache.
    pub(crate) async fn call(
        &self,
        target: NodeId,
        addr: &str,
        method: Method,
        message: RaftMessage,
        timeout: Duration,
    ) -> Result<RaftMessage, CallFailure> {
        let answer = self
            .call_unchecked(target, addr, method, message, timeout)
            .await
            .map_err(|e| {
                CallFailure::NoAnswer(match e {
                    CallError::Timeout(after) => tonic::Status::deadline_exceeded(format!(
                        "{} to {addr}: no answer within {after:?}",
                        method.name()
                    )),
                    CallError::Status(status) | CallError::BadAddress(status) => status,
                })
            })?;
        self.check_answer(&answer)
            .map_err(CallFailure::AnswerRefused)?;
        Ok(answer)
    }

    /// [`Network::call_unchecked`] whose answer passed [`Network::check_answer`].
    async fn call_inner(
        &self,
        target: NodeId,
        addr: &str,
        method: Method,
        message: RaftMessage,
        timeout: Duration,
    ) -> Result<RaftMessage, CallError> {
        let answer = self
            .call_unchecked(target, addr, method, message, timeout)
            .await?;
        self.check_answer(&answer).map_err(CallError::Status)?;
        Ok(answer)
    }

    /// One call, whose answer is not checked yet.
    async fn call_unchecked(
        &self,
        target: NodeId,
        addr: &str,
        method: Method,
        mut message: RaftMessage,
        timeout: Duration,
    ) -> Result<RaftMessage, CallError> {
        let (channel, generation) = self.channel(target, addr).map_err(CallError::BadAddress)?;
        let mut client = self.wrap(channel);
        self.stamp(&mut message);
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        let rpc = async {
            match method {
                Method::AppendEntries => client.append_entries(request).await,
                Method::Vote => client.vote(request).await,
                Method::InstallSnapshot => client.install_snapshot(request).await,
                Method::Forward => client.forward(request).await,
                Method::ReadIndex => client.read_index(request).await,
                Method::KeepAlive => client.keep_alive(request).await,
            }
        };
        match tokio::time::timeout(timeout, rpc).await {
            // No eviction on a timeout: a slow peer on a healthy connection
            // would otherwise cost a reconnect per timeout, and a dead
            // connection is closed by the HTTP/2 keepalive.
            Err(_elapsed) => Err(CallError::Timeout(timeout)),
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.failed(addr, method, generation, timeout, status)),
        }
    }

    fn stamp(&self, message: &mut RaftMessage) {
        if let Some(identity) = &self.inner.identity {
            identity.stamp(message);
        }
    }

    /// An answer from a node of another cluster, or from a node whose data
    /// was wiped, is never handed to Raft.
    fn check_answer(&self, answer: &RaftMessage) -> Result<(), tonic::Status> {
        match &self.inner.identity {
            Some(identity) => identity.check(answer),
            None => Ok(()),
        }
    }

    /// Introduces this node to peer `target` at `addr` and records what the
    /// peer says about itself (see [`Network::introduced`]); returns the
    /// peer's cluster id (empty while it has none). A peer of another
    /// cluster, or with a store the cluster does not know it by, is an
    /// error.
    pub(crate) async fn hello(
        &self,
        target: NodeId,
        addr: &str,
        timeout: Duration,
    ) -> Result<String, tonic::Status> {
        let Some(identity) = &self.inner.identity else {
            return Ok(String::new());
        };
        let (channel, generation) = self.channel(target, addr)?;
        let mut client = self.wrap(channel);
        let mut request = tonic::Request::new(raftlock_proto::internal::v1::HelloRequest {
            from_id: self.inner.id,
            target_id: target,
            cluster_id: identity.cluster_id(),
            client_addr: self.inner.client_addr.clone(),
            store_id: identity.store_id.clone(),
            protocol_min: identity.protocol.min,
            protocol_max: identity.protocol.max,
            build_version: env!("CARGO_PKG_VERSION").to_string(),
        });
        request.set_timeout(timeout);
        let answer = match tokio::time::timeout(timeout, client.hello(request)).await {
            Err(_) => {
                return Err(tonic::Status::deadline_exceeded(format!(
                    "Hello to {addr}: no answer within {timeout:?}"
                )));
            }
            Ok(Err(status)) => {
                if is_transport_failure(&status) {
                    self.evict(addr, generation);
                }
                return Err(status);
            }
            Ok(Ok(answer)) => answer.into_inner(),
        };
        if answer.node_id != target {
            return Err(tonic::Status::failed_precondition(format!(
                "{addr} is node {}, not node {target}",
                answer.node_id
            )));
        }
        identity.check_sender(target, &answer.cluster_id, &answer.store_id)?;
        let protocol =
            super::version::ProtocolRange::announced(answer.protocol_min, answer.protocol_max);
        if identity.protocol.common(protocol).is_none() {
            return Err(super::version::mismatch(
                identity.protocol,
                self.inner.id,
                protocol,
                target,
                &answer.build_version,
                &answer.cluster_id,
            ));
        }
        self.note_introduction(
            target,
            Introduced {
                store_id: answer.store_id,
                client_addr: answer.client_addr,
                protocol,
                build_version: answer.build_version,
            },
        );
        Ok(answer.cluster_id)
    }

    /// Asks every other member of `members` (all at once, each within
    /// `timeout`) whether it belongs to a cluster: what a node with a new
    /// store must know before it bootstraps (see `node::bootstrap`).
    pub(crate) async fn ask_before_bootstrap(
        &self,
        members: &BTreeMap<NodeId, String>,
        timeout: Duration,
    ) -> BTreeMap<NodeId, PeerAnswer> {
        let asks =
            members
                .iter()
                .filter(|(id, _)| **id != self.inner.id)
                .map(|(id, addr)| async move {
                    let addr = self.dial_addr(*id, addr);
                    // Without an identity `hello` asks nobody: that is no answer.
                    if self.inner.identity.is_none() {
                        return (
                            *id,
                            PeerAnswer::Unknown(format!("{addr}: not asked (no peer identity)")),
                        );
                    }
                    let said = self.hello(*id, addr, timeout).await;
                    (*id, judge_hello(*id, addr, said))
                });
        futures::future::join_all(asks).await.into_iter().collect()
    }

    /// Remembers what peer `id` said about itself (in a `Hello` it sent or
    /// answered).
    pub(crate) fn note_introduction(&self, id: NodeId, introduced: Introduced) {
        self.inner
            .introduced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, introduced);
    }

    /// Drops what peer `id` said about itself (it is no longer a member).
    pub(crate) fn forget_introduction(&self, id: NodeId) {
        self.inner
            .introduced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// The peer protocol version to send peer `id` messages in: the
    /// highest both speak, once it said which in a `Hello`; until then (or
    /// with none in common, which its Hello was refused for) the lowest
    /// this node speaks (1, which every build reads).
    pub(crate) fn speak_with(&self, id: NodeId) -> u32 {
        let ours = match &self.inner.identity {
            Some(identity) => identity.protocol,
            // The transport's unit tests: both ends are this build.
            None => return super::version::SUPPORTED.max,
        };
        // Never a version this build cannot write, whatever a test
        // override announces.
        let writable =
            |v: u32| v.clamp(super::version::SUPPORTED.min, super::version::SUPPORTED.max);
        // Runs for every Raft RPC: read the peer's range in place, no clone.
        let theirs = self
            .inner
            .introduced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .map(|i| i.protocol);
        writable(theirs.and_then(|p| ours.common(p)).unwrap_or(ours.min))
    }

    /// What peer `id` said about itself in its latest `Hello`.
    pub(crate) fn introduction(&self, id: NodeId) -> Option<Introduced> {
        self.inner
            .introduced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// Where clients reach peer `id`, as it said in its latest `Hello`.
    pub(crate) fn introduced_client_addr(&self, id: NodeId) -> Option<String> {
        self.inner
            .introduced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .map(|i| i.client_addr.clone())
            .filter(|a| !a.is_empty())
    }

    /// What each peer said about itself in its latest `Hello`.
    pub(crate) fn introduced(&self) -> BTreeMap<NodeId, Introduced> {
        self.inner
            .introduced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A failed call's status as a [`CallError`]; a transport failure also
    /// drops the peer's channel (of `generation`) from the cache.
    fn failed(
        &self,
        addr: &str,
        method: Method,
        generation: u64,
        timeout: Duration,
        status: tonic::Status,
    ) -> CallError {
        // tonic enforces the request's deadline itself too.
        if is_deadline(&status) {
            return CallError::Timeout(timeout);
        }
        if is_transport_failure(&status) {
            tracing::debug!(
                peer = addr,
                method = method.name(),
                code = ?status.code(),
                error = %status.message(),
                "transport failure, dropping the peer's channel"
            );
            self.evict(addr, generation);
        }
        CallError::Status(status)
    }

    /// Opens an `AppendEntriesStream` to the peer at `addr` with `first`
    /// as its first request (sent with the stream's headers, not after a
    /// round trip for them); returns once the peer's server has accepted
    /// the stream.
    async fn open_append_stream(
        &self,
        target: NodeId,
        addr: &str,
        timeout: Duration,
        first: RaftMessage,
    ) -> Result<AppendStream, CallError> {
        let (channel, generation) = self.channel(target, addr).map_err(CallError::BadAddress)?;
        let mut client = self.wrap(channel);
        let (requests, outbound) = tokio::sync::mpsc::channel(1);
        if requests.try_send(first).is_err() {
            unreachable!("a new channel of capacity 1 takes one message");
        }
        let answers = client
            .append_entries_stream(tokio_stream::wrappers::ReceiverStream::new(outbound))
            .await
            .map_err(|status| {
                self.failed(addr, Method::AppendEntries, generation, timeout, status)
            })?
            .into_inner();
        Ok(AppendStream {
            requests,
            answers,
            generation,
        })
    }

    fn wrap(&self, channel: Channel) -> RaftTransportClient<Channel> {
        let max = self.inner.options.max_message_bytes;
        RaftTransportClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    fn channels(&self) -> MutexGuard<'_, Channels> {
        // Nothing panics while holding the lock; a poisoned map is still a
        // valid map.
        self.inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached channel to `addr`, or a new one. With TLS, a new
    /// connection of it checks that the peer's certificate names `target`
    /// (0: any node), and uses the certificates current at that moment.
    fn channel(&self, target: NodeId, addr: &str) -> Result<(Channel, u64), tonic::Status> {
        let mut channels = self.channels();
        if let Some(cached) = channels.by_addr.get(addr) {
            return Ok((cached.channel.clone(), cached.generation));
        }
        let endpoint = self.endpoint(addr)?;
        // `connect_lazy` only spawns the channel's worker; it needs a tokio
        // runtime, which every caller here runs in.
        let channel = match &self.inner.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(crate::tls::PeerConnector::new(
                Arc::clone(tls),
                target,
            )),
            None => endpoint.connect_lazy(),
        };
        let generation = channels.next_generation;
        channels.next_generation += 1;
        channels.by_addr.insert(
            addr.to_string(),
            Cached {
                channel: channel.clone(),
                generation,
            },
        );
        Ok((channel, generation))
    }

    fn endpoint(&self, addr: &str) -> Result<Endpoint, tonic::Status> {
        let options = &self.inner.options;
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|e| {
            tonic::Status::invalid_argument(format!("peer address {addr:?} is not a URI: {e}"))
        })?;
        Ok(endpoint
            .connect_timeout(Duration::from_millis(options.connect_timeout_ms))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_millis(options.keepalive_interval_ms))
            .keep_alive_timeout(Duration::from_millis(options.keepalive_timeout_ms))
            .keep_alive_while_idle(true))
    }

    fn evict(&self, addr: &str, generation: u64) {
        let mut channels = self.channels();
        if channels
            .by_addr
            .get(addr)
            .is_some_and(|c| c.generation == generation)
        {
            channels.by_addr.remove(addr);
        }
    }
}

/// Whether tonic gave up on a call because its deadline passed.
fn is_deadline(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// A Raft request packed in peer protocol `version` with the id of the
/// node it is meant for.
fn addressed<Req: Wire>(
    request: &Req,
    target: NodeId,
    version: u32,
) -> Result<RaftMessage, super::wire::WireError> {
    let mut message = pack(request, version)?;
    message.target_id = target;
    Ok(message)
}

/// Whether a failed call failed in the transport (connecting, or the
/// connection breaking) rather than being answered by the peer's server.
/// tonic keeps the underlying error as the `source` of statuses it makes
/// locally; a status decoded from the peer's answer has none.
/// (A peer's own `UNAVAILABLE`, e.g. "no leader yet", keeps the channel.)
pub(crate) fn is_transport_failure(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            network: self.clone(),
            target,
            node: node.clone(),
            append_times: self.append_times_of(target),
            stream: None,
            next_seq: 1,
            unary: false,
            introduced: false,
            last_refusal_logged: None,
        }
    }
}

/// openraft's connection to one peer. Holds no channel of its own: every
/// RPC takes the peer's channel from the shared cache, so an evicted
/// channel is replaced on the next RPC. AppendEntries go over one
/// long-lived `AppendEntriesStream` (one DATA frame per request and per
/// answer instead of a whole HTTP/2 request: fewer system calls and
/// wake-ups per write), opened on first use and dropped on any failure or
/// timeout, so a late answer can never be read as the next request's.
pub(crate) struct PeerClient {
    network: Network,
    target: NodeId,
    node: BasicNode,
    append_times: Arc<Histogram>,
    stream: Option<AppendStream>,
    /// The `seq` of the next request sent on a stream.
    next_seq: u64,
    /// The peer answered `UNIMPLEMENTED` to the stream (a build without
    /// it): AppendEntries go as unary calls from then on.
    unary: bool,
    /// This client said `Hello` to the peer (and the peer answered).
    introduced: bool,
    /// When a refusal by (or of) this peer was last logged.
    last_refusal_logged: Option<std::time::Instant>,
}

/// A leader's open AppendEntries stream to one follower.
struct AppendStream {
    requests: tokio::sync::mpsc::Sender<RaftMessage>,
    answers: tonic::Streaming<RaftMessage>,
    /// The generation of the channel it runs on, for eviction.
    generation: u64,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerClient {
    /// One Raft RPC: `request` packed, the answer unpacked as
    /// `Result<Resp, RaftError<E>>`, every failure mapped as the module
    /// documentation says. openraft 0.9 keeps one client per peer for a
    /// whole leadership (its replication and snapshot clients are made
    /// once), so a peer that restarted (perhaps as another release) is
    /// heard from again only through a new `Hello`: after any failure the
    /// next call says `Hello` first and picks the version anew.
    async fn rpc<Req, Resp, E>(
        &mut self,
        method: Method,
        action: RPCTypes,
        request: &Req,
        entries: u64,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Wire,
        Result<Resp, RaftError<NodeId, E>>: Wire,
        E: std::error::Error,
    {
        let result = self
            .rpc_once(method, action, request, entries, option)
            .await;
        if matches!(&result, Err(e) if !matches!(e, RPCError::RemoteError(_))) {
            self.introduced = false;
        }
        result
    }

    /// [`PeerClient::rpc`], once.
    async fn rpc_once<Req, Resp, E>(
        &mut self,
        method: Method,
        action: RPCTypes,
        request: &Req,
        entries: u64,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Wire,
        Result<Resp, RaftError<NodeId, E>>: Wire,
        E: std::error::Error,
    {
        if !self.introduced {
            // First, and after any failure (see `rpc`): who the peer is,
            // which versions it speaks, where its clients reach it.
            match self
                .network
                .hello(
                    self.target,
                    self.network.dial_addr(self.target, &self.node.addr),
                    option.hard_ttl(),
                )
                .await
            {
                Ok(_) => self.introduced = true,
                Err(status) if super::identity::is_refusal(&status) => {
                    self.warn_refused(&status);
                    return Err(RPCError::Unreachable(Unreachable::new(
                        &self.peer_error(&status),
                    )));
                }
                // Unreachable, or a build without Hello: the RPC below
                // says which; introductions are retried on the next RPC.
                Err(_) => {}
            }
        }
        // Decided after the Hello above: the highest version both speak.
        let version = self.network.speak_with(self.target);
        let message = addressed(request, self.target, version)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer = if method == Method::AppendEntries && !self.unary {
            self.over_stream(message, option.hard_ttl()).await
        } else {
            self.network
                .call_inner(
                    self.target,
                    self.network.dial_addr(self.target, &self.node.addr),
                    method,
                    message,
                    option.hard_ttl(),
                )
                .await
        };
        let message = match answer {
            Ok(message) => message,
            Err(CallError::Timeout(timeout)) => {
                return Err(RPCError::Timeout(Timeout {
                    action,
                    id: self.network.id(),
                    target: self.target,
                    timeout,
                }));
            }
            Err(CallError::Status(status)) => return Err(self.map_status(action, entries, status)),
            // A membership naming an unusable address: nothing to retry
            // soon, so let openraft back off as for a dead peer.
            Err(CallError::BadAddress(status)) => {
                return Err(RPCError::Unreachable(Unreachable::new(
                    &self.peer_error(&status),
                )));
            }
        };
        let answer: Result<Resp, RaftError<NodeId, E>> =
            unpack(&message).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }

    /// One AppendEntries over the peer's stream (opened if there is none),
    /// all within `timeout`. Any failure drops the stream; the next call
    /// opens a new one.
    async fn over_stream(
        &mut self,
        mut message: RaftMessage,
        timeout: Duration,
    ) -> Result<RaftMessage, CallError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        message.seq = seq;
        self.network.stamp(&mut message);
        let target = self.target;
        let max = self.network.inner.options.max_message_bytes;
        let size = prost::Message::encoded_len(&message);
        if size > max {
            // As the unary call's encoder refuses it, so that openraft is
            // told to send fewer entries.
            return Err(CallError::Status(tonic::Status::out_of_range(format!(
                "AppendEntries of {size} bytes exceeds the {max}-byte message limit"
            ))));
        }
        // Borrowed, not cloned: this runs once per replicated write.
        let network = &self.network;
        let addr = network.dial_addr(self.target, &self.node.addr);
        let open = self.stream.take();
        let attempt = async {
            let mut stream = match open {
                Some(stream) => match stream.requests.send(message).await {
                    Ok(()) => stream,
                    // The stream is gone (its connection broke, the peer
                    // restarted): nothing was delivered, so the request
                    // goes on a new stream at once.
                    Err(tokio::sync::mpsc::error::SendError(message)) => {
                        network
                            .open_append_stream(target, addr, timeout, message)
                            .await?
                    }
                },
                None => {
                    network
                        .open_append_stream(target, addr, timeout, message)
                        .await?
                }
            };
            match stream.answers.message().await {
                Ok(Some(answer)) if answer.seq == seq => {
                    network.check_answer(&answer).map_err(CallError::Status)?;
                    Ok((answer, stream))
                }
                Ok(Some(answer)) => Err(CallError::Status(tonic::Status::internal(format!(
                    "AppendEntries stream: answer {} to request {seq}",
                    answer.seq
                )))),
                Ok(None) => Err(CallError::Status(tonic::Status::unavailable(
                    "the peer closed the AppendEntries stream",
                ))),
                Err(status) => Err(network.failed(
                    addr,
                    Method::AppendEntries,
                    stream.generation,
                    timeout,
                    status,
                )),
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok((answer, stream))) => {
                self.stream = Some(stream);
                Ok(answer)
            }
            Ok(Err(CallError::Status(status))) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(
                    peer = self.target,
                    "peer has no AppendEntriesStream; sending unary AppendEntries"
                );
                self.unary = true;
                Err(CallError::Status(status))
            }
            Ok(Err(e)) => Err(e),
            Err(_elapsed) => Err(CallError::Timeout(timeout)),
        }
    }

    fn peer_error(&self, status: &tonic::Status) -> PeerError {
        PeerError {
            target: self.target,
            addr: self.node.addr.clone(),
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// A peer that refuses this node as a member (or that this node
    /// refuses) is logged at most once a minute, as a warning: it needs an
    /// operator, and openraft retries it every backoff period.
    fn warn_refused(&mut self, status: &tonic::Status) {
        let now = std::time::Instant::now();
        if self
            .last_refusal_logged
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(60))
        {
            return;
        }
        self.last_refusal_logged = Some(now);
        tracing::warn!(
            peer = self.target,
            addr = %self.node.addr,
            code = ?status.code(),
            error = %status.message(),
            "peer refused (or refused by this node); not talking to it"
        );
    }

    fn map_status<E: std::error::Error>(
        &mut self,
        action: RPCTypes,
        entries: u64,
        status: tonic::Status,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        let error = self.peer_error(&status);
        if super::identity::is_refusal(&status) {
            self.warn_refused(&status);
            // Back off as for a dead peer: nothing changes until an
            // operator acts.
            return RPCError::Unreachable(Unreachable::new(&error));
        }
        match status.code() {
            tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&error)),
            tonic::Code::OutOfRange if action == RPCTypes::AppendEntries && entries > 1 => {
                RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(entries / 2).with_source_error(&error),
                )
            }
            _ => RPCError::Network(NetworkError::new(&error)),
        }
    }
}

/// A failed RPC to a peer, as openraft's errors carry it.
#[derive(Debug, thiserror::Error)]
#[error("raft RPC to node {target} at {addr}: {code:?}: {message}")]
struct PeerError {
    target: NodeId,
    addr: String,
    code: tonic::Code,
    message: String,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let entries = rpc.entries.len() as u64;
        let started = std::time::Instant::now();
        let answer = self
            .rpc(
                Method::AppendEntries,
                RPCTypes::AppendEntries,
                &rpc,
                entries,
                &option,
            )
            .await;
        // Heartbeats (no entries) are not on a write's path.
        if entries > 0 && answer.is_ok() {
            self.append_times.observe(started.elapsed());
        }
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        // The last chunk's answer waits for the peer to check and install
        // the whole snapshot: its call gets the deadline openraft gives it
        // (openraft patch 11), not the per-chunk one.
        let option = if rpc.done {
            let len = rpc.offset + rpc.data.len() as u64;
            RPCOption::new(openraft::network::snapshot_transport::last_chunk_ttl(
                option.hard_ttl(),
                len,
            ))
        } else {
            option
        };
        self.rpc(
            Method::InstallSnapshot,
            RPCTypes::InstallSnapshot,
            &rpc,
            0,
            &option,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(Method::Vote, RPCTypes::Vote, &rpc, 0, &option)
            .await
    }

    /// openraft's chunked transfer (`install_snapshot` per chunk), of data
    /// in the snapshot format the peer reads: builds of peer protocol 1
    /// (before 0.2) read snapshot data format 3 only, so it is re-encoded
    /// for them (and for a peer not yet heard from, which may be one).
    /// Chunks carry byte ranges of the data, so its format is chosen once,
    /// here, for the whole transfer.
    async fn full_snapshot(
        &mut self,
        vote: openraft::Vote<NodeId>,
        snapshot: raftlock_store::Snapshot,
        cancel: impl std::future::Future<Output = openraft::error::ReplicationClosed>
        + openraft::OptionalSend
        + 'static,
        option: RPCOption,
    ) -> Result<
        openraft::raft::SnapshotResponse<NodeId>,
        openraft::error::StreamingError<TypeConfig, openraft::error::Fatal<NodeId>>,
    > {
        use openraft::network::snapshot_transport::{Chunked, SnapshotTransport};
        let snapshot = if self.network.speak_with(self.target) == super::version::BINCODE {
            let raftlock_store::Snapshot { meta, snapshot } = snapshot;
            // A failure here concerns this peer only: openraft takes a
            // storage error for fatal and would stop the leader for every
            // follower, so it is reported as this peer being unreachable
            // (replication to it backs off and tries again).
            let target = self.target;
            let unsendable = |e: &dyn std::error::Error| {
                tracing::error!(
                    peer = target,
                    snapshot = %meta.snapshot_id,
                    error = %e,
                    "cannot re-encode the snapshot in format 3 for a peer of protocol 1"
                );
                openraft::error::StreamingError::Unreachable(Unreachable::new(
                    &openraft::AnyError::error(e),
                ))
            };
            let current = match snapshot.into_bytes().await {
                Ok(current) => current,
                Err(e) => return Err(unsendable(&e)),
            };
            // Decoding and encoding a whole state is blocking work.
            let for_old = meta.clone();
            let data = match tokio::task::spawn_blocking(move || {
                raftlock_store::snapshot_data_for_protocol_1(&for_old, &current)
            })
            .await
            {
                Ok(Ok(data)) => data,
                Ok(Err(damaged)) => return Err(unsendable(&damaged)),
                Err(join) => return Err(unsendable(&join)),
            };
            raftlock_store::Snapshot {
                meta,
                snapshot: Box::new(raftlock_store::SnapshotData::from_vec(data)),
            }
        } else {
            snapshot
        };
        Chunked::send_snapshot(self, vote, snapshot, cancel, option).await
    }
}
