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

use super::snapshot_in::SnapshotReceiver;
use super::wire::{note_refused, pack, unpack};
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
            append_times,
            refused: Arc::default(),
            snapshots: Arc::default(),
        }
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
        message: RaftMessage,
    ) -> Result<RaftMessage, tonic::Status> {
        self.append_entries_answer(&message)
            .await
            .map(|answer| pack(&answer))
    }

    async fn append_entries_answer(
        &self,
        message: &RaftMessage,
    ) -> Result<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>, tonic::Status> {
        let method = "AppendEntries";
        self.check_target(message)
            .map_err(|s| self.refuse(method, s))?;
        let request: AppendEntriesRequest<TypeConfig> =
            unpack("append entries request", message).map_err(|e| self.refuse(method, e.into()))?;
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
                let answer = match serving.rpcs.append_entries_answer(&message).await {
                    Ok(Err(RaftError::Fatal(_))) => return Some((Err(stopped()), None)),
                    Ok(answer) => answer,
                    Err(status) => return Some((Err(status), None)),
                };
                let mut answer = pack(&answer);
                answer.seq = message.seq;
                Some((Ok(answer), Some(serving)))
            },
        ))
    }

    /// `VoteRequest` → `Result<VoteResponse, RaftError>`.
    pub(crate) async fn vote(&self, message: RaftMessage) -> Result<RaftMessage, tonic::Status> {
        self.check_target(&message)
            .map_err(|s| self.refuse("Vote", s))?;
        let request: VoteRequest<NodeId> =
            unpack("vote request", &message).map_err(|e| self.refuse("Vote", e.into()))?;
        let answer: Result<VoteResponse<NodeId>, RaftError<NodeId>> = self.raft.vote(request).await;
        Ok(pack(&answer))
    }

    /// One chunk: `InstallSnapshotRequest` →
    /// `Result<InstallSnapshotResponse, RaftError<InstallSnapshotError>>`,
    /// collected and checked by [`SnapshotReceiver`] before Raft sees it.
    pub(crate) async fn install_snapshot(
        &self,
        message: RaftMessage,
    ) -> Result<RaftMessage, tonic::Status> {
        self.check_target(&message)
            .map_err(|s| self.refuse("InstallSnapshot", s))?;
        let request: InstallSnapshotRequest<TypeConfig> =
            unpack("install snapshot request", &message)
                .map_err(|e| self.refuse("InstallSnapshot", e.into()))?;
        let answer = self
            .snapshots
            .receive(&self.raft, request)
            .await
            .map_err(|s| self.refuse("InstallSnapshot", s))?;
        Ok(pack(&answer))
    }
}

// ----- the node's service ---------------------------------------------------

/// The node's `RaftTransport` service: the Raft RPCs go to [`RaftRpcs`],
/// the peer messages to the node's [`Api`].
pub(crate) struct TransportService {
    pub(crate) api: Arc<Api>,
    pub(crate) rpcs: RaftRpcs,
}

#[tonic::async_trait]
impl internal::raft_transport_server::RaftTransport for TransportService {
    async fn append_entries(
        &self,
        request: Request<internal::RaftMessage>,
    ) -> Reply<internal::RaftMessage> {
        self.rpcs
            .append_entries(request.into_inner())
            .await
            .map(Response::new)
    }

    type AppendEntriesStreamStream = AnswerStream;

    async fn append_entries_stream(
        &self,
        request: Request<Streaming<internal::RaftMessage>>,
    ) -> Reply<Self::AppendEntriesStreamStream> {
        Ok(Response::new(self.rpcs.append_entries_stream(
            request.into_inner(),
            Some(self.api.stopping.clone()),
        )))
    }

    async fn vote(&self, request: Request<internal::RaftMessage>) -> Reply<internal::RaftMessage> {
        self.rpcs
            .vote(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn install_snapshot(
        &self,
        request: Request<internal::RaftMessage>,
    ) -> Reply<internal::RaftMessage> {
        self.rpcs
            .install_snapshot(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn forward(
        &self,
        request: Request<internal::RaftMessage>,
    ) -> Reply<internal::RaftMessage> {
        Ok(Response::new(
            self.api.serve_forward(request.get_ref()).await,
        ))
    }

    async fn read_index(
        &self,
        _request: Request<internal::RaftMessage>,
    ) -> Reply<internal::RaftMessage> {
        Ok(Response::new(self.api.serve_read_index().await))
    }

    async fn keep_alive(
        &self,
        request: Request<internal::RaftMessage>,
    ) -> Reply<internal::RaftMessage> {
        Ok(Response::new(
            self.api.serve_keep_alive(request.get_ref()).await,
        ))
    }

    async fn hello(
        &self,
        _request: Request<internal::HelloRequest>,
    ) -> Reply<internal::HelloResponse> {
        Ok(Response::new(internal::HelloResponse {
            node_id: self.api.id,
            cluster_id: String::new(),
            client_addr: self
                .api
                .config
                .advertise
                .clone()
                .unwrap_or_else(|| self.api.config.listen.clone()),
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
        .counting_refusals(Arc::clone(&api.metrics.peer_refused)),
    })
    // Snapshot chunks and entry batches may be large.
    .max_decoding_message_size(64 * 1024 * 1024)
    .max_encoding_message_size(64 * 1024 * 1024)
}
