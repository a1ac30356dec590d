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
//!   a bad address, `UNAVAILABLE`) → [`RPCError::Unreachable`]: openraft
//!   backs off ([`RaftNetwork::backoff`], 500 ms) before trying again;
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
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use super::wire::{pack, unpack};

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

struct Inner {
    id: NodeId,
    options: NetworkOptions,
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
    /// The network of node `id` (the id is named in timeout errors).
    pub(crate) fn new(id: NodeId, options: NetworkOptions) -> Self {
        Network {
            inner: Arc::new(Inner {
                id,
                options,
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
    /// Errors are the gRPC status: made locally for transport failures
    /// (`UNAVAILABLE` when the peer cannot be reached, `DEADLINE_EXCEEDED`
    /// when `timeout` passed) or sent by the peer. After a transport
    /// failure the peer's channel is dropped from the cache.
    pub(crate) async fn call(
        &self,
        addr: &str,
        method: Method,
        message: RaftMessage,
        timeout: Duration,
    ) -> Result<RaftMessage, tonic::Status> {
        self.call_inner(addr, method, message, timeout)
            .await
            .map_err(|e| match e {
                CallError::Timeout(after) => tonic::Status::deadline_exceeded(format!(
                    "{} to {addr}: no answer within {after:?}",
                    method.name()
                )),
                CallError::Status(status) | CallError::BadAddress(status) => status,
            })
    }

    async fn call_inner(
        &self,
        addr: &str,
        method: Method,
        message: RaftMessage,
        timeout: Duration,
    ) -> Result<RaftMessage, CallError> {
        let (channel, generation) = self.channel(addr).map_err(CallError::BadAddress)?;
        let mut client = self.wrap(channel);
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
        addr: &str,
        timeout: Duration,
        first: RaftMessage,
    ) -> Result<AppendStream, CallError> {
        let (channel, generation) = self.channel(addr).map_err(CallError::BadAddress)?;
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

    fn channel(&self, addr: &str) -> Result<(Channel, u64), tonic::Status> {
        let mut channels = self.channels();
        if let Some(cached) = channels.by_addr.get(addr) {
            return Ok((cached.channel.clone(), cached.generation));
        }
        let endpoint = self.endpoint(addr)?;
        // `connect_lazy` only spawns the channel's worker; it needs a tokio
        // runtime, which every caller here runs in.
        let channel = endpoint.connect_lazy();
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

/// A Raft request packed with the id of the node it is meant for.
fn addressed<Req: Serialize>(request: &Req, target: NodeId) -> RaftMessage {
    let mut message = pack(request);
    message.target_id = target;
    message
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
    /// documentation says.
    async fn rpc<Req, Resp, E>(
        &mut self,
        method: Method,
        action: RPCTypes,
        request: &Req,
        entries: u64,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let message = addressed(request, self.target);
        let answer = if method == Method::AppendEntries && !self.unary {
            self.over_stream(message, option.hard_ttl()).await
        } else {
            self.network
                .call_inner(
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
        let answer: Result<Resp, RaftError<NodeId, E>> = unpack(answer_name(method), &message)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
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
                        network.open_append_stream(addr, timeout, message).await?
                    }
                },
                None => network.open_append_stream(addr, timeout, message).await?,
            };
            match stream.answers.message().await {
                Ok(Some(answer)) if answer.seq == seq => Ok((answer, stream)),
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

    fn map_status<E: std::error::Error>(
        &self,
        action: RPCTypes,
        entries: u64,
        status: tonic::Status,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        let error = self.peer_error(&status);
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

fn answer_name(method: Method) -> &'static str {
    match method {
        Method::AppendEntries => "append entries answer",
        Method::Vote => "vote answer",
        Method::InstallSnapshot => "install snapshot answer",
        Method::Forward => "forward answer",
        Method::ReadIndex => "read index answer",
        Method::KeepAlive => "keep alive answer",
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
}
