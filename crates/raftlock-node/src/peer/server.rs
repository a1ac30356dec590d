//! The server half of the Raft RPCs: decode openraft's request from a
//! [`RaftMessage`], hand it to the local [`Raft`], and send back its whole
//! `Result<Resp, RaftError<..>>`, so the caller sees Raft's refusals as
//! `RPCError::RemoteError` and transport trouble as a gRPC status.
//!
//! The node's `RaftTransport` service ([`TransportService`], served as
//! [`transport_server`] builds it) delegates its three Raft methods here,
//! and the node's own peer messages (Forward, ReadIndex, KeepAlive) to its
//! `Api`.

use openraft::error::RaftError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest, VoteResponse,
};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use futures::{Stream, StreamExt};
use raftlock_proto::internal::v1 as internal;
use raftlock_proto::internal::v1::RaftMessage;
use raftlock_proto::internal::v1::raft_transport_server::RaftTransportServer;
use raftlock_store::metrics::Histogram;
use raftlock_store::{NodeId, TypeConfig};
use tokio::sync::watch;
use tonic::{Request, Response, Streaming};

use super::identity::{Caller, PeerIdentity};
use super::snapshot_in::SnapshotReceiver;
use super::version::{self, ProtocolRange};
use super::wire::{Wire, note_refused, pack, unpack};
use crate::Raft;
use crate::api::Api;

type Reply<T> = Result<Response<T>, tonic::Status>;

/// The server half of `AppendEntriesStream`.
pub(crate) type AnswerStream =
    Pin<Box<dyn Stream<Item = Result<RaftMessage, tonic::Status>> + Send>>;

/// Serves AppendEntries, Vote and InstallSnapshot for one node.
#[derive(Clone)]
pub(crate) struct RaftRpcs {
    raft: Raft,
    id: NodeId,
    /// Stamps answers and checks senders; `None` in the transport's unit
    /// tests, whose messages are not stamped.
    identity: Option<PeerIdentity>,
    /// How long this node's Raft took to take in (append and flush) each
    /// AppendEntries that carried entries.
    append_times: Arc<Histogram>,
    /// Messages refused before they reached Raft.
    refused: Arc<AtomicU64>,
    /// The snapshot being received.
    snapshots: Arc<SnapshotReceiver>,
}

impl RaftRpcs {
    /// Serves for node `id` without a histogram (the unit tests' servers).
    #[cfg(test)]
    pub(crate) fn new(raft: Raft, id: NodeId) -> Self {
        Self::with_append_times(raft, id, Arc::default())
    }

    /// `RaftRpcs::new` recording into the node's histogram.
    pub(crate) fn with_append_times(raft: Raft, id: NodeId, append_times: Arc<Histogram>) -> Self {
        RaftRpcs {
            raft,
            id,
            identity: None,
            append_times,
            refused: Arc::default(),
            snapshots: Arc::default(),
        }
    }

    /// Checks every sender against, and stamps every answer with, `identity`.
    pub(crate) fn with_identity(mut self, identity: PeerIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Packs an answer to `request` in the request's peer protocol
    /// version, stamped as this node's.
    fn answer<T: Wire>(
        &self,
        request: &RaftMessage,
        value: &T,
    ) -> Result<RaftMessage, tonic::Status> {
        let version = super::version::of_message(request.protocol);
        let mut message = pack(value, version).map_err(tonic::Status::from)?;
        if let Some(identity) = &self.identity {
            identity.stamp(&mut message);
        }
        Ok(message)
    }

    /// Whether a request may be taken: meant for this node, from the node
    /// the caller's certificate names, from this cluster, from the store the
    /// cluster knows for its sender.
    fn admit(&self, caller: Caller, message: &RaftMessage) -> Result<(), tonic::Status> {
        self.check_target(message)?;
        caller.check(message.from_id)?;
        if let Some(identity) = &self.identity {
            identity.check(message)?;
        }
        Ok(())
    }

    /// Counts refused messages into `refused` (the node's metric).
    pub(crate) fn counting_refusals(mut self, refused: Arc<AtomicU64>) -> Self {
        self.refused = refused;
        self
    }

    /// `status`, counted and logged as a refusal of a `method` message.
    fn refuse(&self, method: &'static str, status: tonic::Status) -> tonic::Status {
        note_refused(&self.refused, method, &status.message());
        status
    }

    /// A message meant for another node id (an old member whose address this
    /// node now has) is refused, never handed to Raft.
    fn check_target(&self, message: &RaftMessage) -> Result<(), tonic::Status> {
        if message.target_id != 0 && message.target_id != self.id {
            return Err(tonic::Status::failed_precondition(format!(
                "message for node {} reached node {} (the address now belongs to another node)",
                message.target_id, self.id
            )));
        }
        Ok(())
    }

    /// `AppendEntriesRequest` → `Result<AppendEntriesResponse, RaftError>`.
    /// A message that fails its checksum or does not decode is
    /// `INVALID_ARGUMENT`.
    pub(crate) async fn append_entries(
        &self,
        caller: Caller,
        message: RaftMessage,
    ) -> Result<RaftMessage, tonic::Status> {
        let answer = self.append_entries_answer(caller, &message).await?;
        self.answer(&message, &answer)
    }

    async fn append_entries_answer(
        &self,
        caller: Caller,
        message: &RaftMessage,
    ) -> Result<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>, tonic::Status> {
        let method = "AppendEntries";
        self.admit(caller, message)
            .map_err(|s| self.refuse(method, s))?;
        let request: AppendEntriesRequest<TypeConfig> =
            unpack(message).map_err(|e| self.refuse(method, e.into()))?;
        let entries = request.entries.len();
        let started = std::time::Instant::now();
        let answer = self.raft.append_entries(request).await;
        if entries > 0 {
            self.append_times.observe(started.elapsed());
        }
        Ok(answer)
    }

    /// The answers to a stream of AppendEntries requests
    /// (`AppendEntriesStream`), one at a time and in order, each with its
    /// request's `seq`. The stream ends when the sender closes or breaks
    /// its half. It ends with a status, which the sender reads as the
    /// answer to its request, when this node refuses a request (wrong
    /// target, bad checksum, too large: as the unary call would answer),
    /// when its Raft has stopped (`UNAVAILABLE`), and when `stopping`
    /// turns true between requests (`UNAVAILABLE`): a long-lived stream
    /// must not hold up the server's graceful shutdown.
    pub(crate) fn append_entries_stream(
        &self,
        caller: Caller,
        inbound: tonic::Streaming<RaftMessage>,
        stopping: Option<watch::Receiver<bool>>,
    ) -> AnswerStream {
        struct Serving {
            rpcs: RaftRpcs,
            inbound: tonic::Streaming<RaftMessage>,
            stopping: Option<watch::Receiver<bool>>,
        }
        let stopped = || tonic::Status::unavailable("the node is stopping");
        let serving = Serving {
            rpcs: self.clone(),
            inbound,
            stopping,
        };
        Box::pin(futures::stream::unfold(
            Some(serving),
            move |serving| async move {
                let mut serving = serving?;
                let next = match serving.stopping.as_mut() {
                    Some(stopping) => tokio::select! {
                        next = serving.inbound.next() => next,
                        // A dropped sender means the node is gone too.
                        _ = stopping.wait_for(|stop| *stop) => return Some((Err(stopped()), None)),
                    },
                    None => serving.inbound.next().await,
                };
                let message = match next? {
                    Ok(message) => message,
                    Err(status) => return Some((Err(status), None)),
                };
                let answer = match serving.rpcs.append_entries_answer(caller, &message).await {
                    Ok(Err(RaftError::Fatal(_))) => return Some((Err(stopped()), None)),
                    Ok(answer) => answer,
                    Err(status) => return Some((Err(status), None)),
                };
                let mut answer = match serving.rpcs.answer(&message, &answer) {
                    Ok(answer) => answer,
                    Err(status) => return Some((Err(status), None)),
                };
                answer.seq = message.seq;
                Some((Ok(answer), Some(serving)))
            },
        ))
    }

    /// `VoteRequest` → `Result<VoteResponse, RaftError>`.
    pub(crate) async fn vote(
        &self,
        caller: Caller,
        message: RaftMessage,
    ) -> Result<RaftMessage, tonic::Status> {
        self.admit(caller, &message)
            .map_err(|s| self.refuse("Vote", s))?;
        let request: VoteRequest<NodeId> =
            unpack(&message).map_err(|e| self.refuse("Vote", e.into()))?;
        let answer: Result<VoteResponse<NodeId>, RaftError<NodeId>> = self.raft.vote(request).await;
        self.answer(&message, &answer)
    }

    /// One chunk: `InstallSnapshotRequest` →
    /// `Result<InstallSnapshotResponse, RaftError<InstallSnapshotError>>`,
    /// collected and checked by [`SnapshotReceiver`] before Raft sees it.
    pub(crate) async fn install_snapshot(
        &self,
        caller: Caller,
        message: RaftMessage,
    ) -> Result<RaftMessage, tonic::Status> {
        self.admit(caller, &message)
            .map_err(|s| self.refuse("InstallSnapshot", s))?;
        let request: InstallSnapshotRequest<TypeConfig> =
            unpack(&message).map_err(|e| self.refuse("InstallSnapshot", e.into()))?;
        let answer = self
            .snapshots
            .receive(&self.raft, request)
            .await
            .map_err(|s| self.refuse("InstallSnapshot", s))?;
        self.answer(&message, &answer)
    }
}

// ----- the node's service ---------------------------------------------------

/// The node's `RaftTransport` service: the Raft RPCs go to [`RaftRpcs`],
/// the peer messages to the node's [`Api`].
pub(crate) struct TransportService {
    pub(crate) api: Arc<Api>,
    pub(crate) rpcs: RaftRpcs,
}

impl TransportService {
    /// Who is calling, as the connection says.
    fn caller<T>(&self, request: &Request<T>) -> Caller {
        Caller::of(request, self.api.tls.is_some())
    }

    /// A sender must be a member (voter or learner) of this node's
    /// membership, unless this node has none yet (a new node being added).
    /// Checked on votes (a removed node's campaigns never disturb the
    /// cluster) and on what followers send their leader (forwards), whose
    /// membership is the newest.
    fn check_member(&self, from: NodeId) -> Result<(), tonic::Status> {
        if from == 0 {
            return Ok(());
        }
        let metrics = self.api.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        if membership.nodes().next().is_none() || membership.get_node(&from).is_some() {
            Ok(())
        } else {
            Err(tonic::Status::permission_denied(format!(
                "node {from} is not a member of node {}'s cluster",
                self.api.id
            )))
        }
    }

    /// Checks a request fully (target, certificate, cluster, store,
    /// membership).
    fn admit(&self, request: &Request<RaftMessage>) -> Result<(), tonic::Status> {
        let message = request.get_ref();
        self.rpcs.admit(self.caller(request), message)?;
        self.check_member(message.from_id)
    }

    fn stamped(&self, mut message: RaftMessage) -> Response<RaftMessage> {
        self.api.peer_identity.stamp(&mut message);
        Response::new(message)
    }
}

#[tonic::async_trait]
impl internal::raft_transport_server::RaftTransport for TransportService {
    async fn append_entries(
        &self,
        request: Request<internal::RaftMessage>,
    ) -> Reply<internal::RaftMessage> {
        // No membership check: a leader's term speaks for it, and a node
        // being added back may not know the current leader as a member.
        let caller = self.caller(&request);
        self.rpcs
            .append_entries(caller, request.into_inner())
            .await
            .map(Response::new)
    }

    type AppendEntriesStreamStream = AnswerStream;

    async fn append_entries_stream(
        &self,
        request: Request<Streaming<internal::RaftMessage>>,
    ) -> Reply<Self::AppendEntriesStreamStream> {
        // The messages' senders are checked one by one (RaftRpcs::admit);
        // the certificate is the connection's.
        let caller = self.caller(&request);
        if caller == Caller::NotANode {
            return Err(caller.check(0).unwrap_err());
        }
        Ok(Response::new(self.rpcs.append_entries_stream(
            caller,
            request.into_inner(),
            Some(self.api.stopping.clone()),
        )))
    }

    async fn vote(&self, request: Request<internal::RaftMessage>) -> Reply<internal::RaftMessage> {
        self.check_member(request.get_ref().from_id)?;
        let caller = self.caller(&request);
        self.rpcs
            .vote(caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn install_snapshot(
        &self,
        request: Request<internal::RaftMessage>,
    ) -> Reply<internal::RaftMessage> {
        let caller = self.caller(&request);
        self.rpcs
            .install_snapshot(caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn forward(
        &self,
        request: Request<internal::RaftMessage>,
    ) -> Reply<internal::RaftMessage> {
        self.admit(&request)?;
        Ok(self.stamped(self.api.serve_forward(request.get_ref()).await))
    }

    async fn read_index(
        &self,
        request: Request<internal::RaftMessage>,
    ) -> Reply<internal::RaftMessage> {
        self.admit(&request)?;
        Ok(self.stamped(self.api.serve_read_index(request.get_ref()).await))
    }

    async fn keep_alive(
        &self,
        request: Request<internal::RaftMessage>,
    ) -> Reply<internal::RaftMessage> {
        self.admit(&request)?;
        Ok(self.stamped(self.api.serve_keep_alive(request.get_ref()).await))
    }

    async fn hello(
        &self,
        request: Request<internal::HelloRequest>,
    ) -> Reply<internal::HelloResponse> {
        let caller = self.caller(&request);
        let hello = request.get_ref();
        caller.check(hello.from_id)?;
        if hello.target_id != 0 && hello.target_id != self.api.id {
            return Err(tonic::Status::failed_precondition(format!(
                "hello for node {} reached node {} (the address now belongs to another node)",
                hello.target_id, self.api.id
            )));
        }
        let identity = &self.api.peer_identity;
        identity.check_sender(hello.from_id, &hello.cluster_id, &hello.store_id)?;
        let protocol = ProtocolRange::announced(hello.protocol_min, hello.protocol_max);
        if identity.protocol.common(protocol).is_none() {
            let status = version::mismatch(
                identity.protocol,
                self.api.id,
                protocol,
                hello.from_id,
                &hello.build_version,
                &identity.cluster_id(),
            );
            return Err(self.rpcs.refuse("Hello", status));
        }
        // A leader introduces itself before its first AppendEntries, so
        // its followers can name its client address to clients at once.
        self.api.network.note_introduction(
            hello.from_id,
            crate::peer::client::Introduced {
                store_id: hello.store_id.clone(),
                client_addr: hello.client_addr.clone(),
                protocol,
                build_version: hello.build_version.clone(),
            },
        );
        Ok(Response::new(internal::HelloResponse {
            node_id: self.api.id,
            cluster_id: identity.cluster_id(),
            client_addr: self.api.client_addr.clone(),
            store_id: identity.store_id.clone(),
            protocol_min: identity.protocol.min,
            protocol_max: identity.protocol.max,
            build_version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}

/// The node's `RaftTransport` service, ready to serve.
pub(crate) fn transport_server(api: &Arc<Api>) -> RaftTransportServer<TransportService> {
    RaftTransportServer::new(TransportService {
        api: Arc::clone(api),
        rpcs: RaftRpcs::with_append_times(
            api.raft.clone(),
            api.id,
            Arc::clone(&api.metrics.appends_taken),
        )
        .with_identity(api.peer_identity.clone())
        .counting_refusals(Arc::clone(&api.metrics.peer_refused)),
    })
    // Snapshot chunks and entry batches may be large.
    .max_decoding_message_size(64 * 1024 * 1024)
    .max_encoding_message_size(64 * 1024 * 1024)
}
