//! Forwarding a client's call to the leader, one hop. A follower sends a
//! write (Forward), a read-index request (ReadIndex) or a keep-alive
//! (KeepAlive) to the leader over the peer channels ([`Network::call`]);
//! the leader answers it here from its own state, never forwarding again.
//!
//! [`Network::call`]: super::client::Network::call

use std::time::Instant;

use raftlock_core::{Applied, Command, LeaseId};
use raftlock_proto::errors::{ErrorReason, never_sent};
use raftlock_proto::internal::v1::RaftMessage;
use serde::{Deserialize, Serialize};

use super::client::{CallFailure, Method};
use super::wire::{Answer, Wire, note_refused, pack, unpack};
use crate::api::Api;
use crate::error::NodeError;

/// What a follower gets back from the leader for a forwarded write.
type ForwardResult = Result<Applied, NodeError>;

/// The answer to a read-index request: the index to apply before reading.
type ReadIndexResult = Result<u64, NodeError>;

/// The answer to a forwarded keep-alive: the lease's ttl.
type KeepAliveResult = Result<u64, NodeError>;

/// A keep-alive on its way to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeepAliveForward {
    pub(crate) lease: LeaseId,
}

impl Api {
    /// `command` proposed by the leader (Forward).
    pub(crate) async fn forward_write(&self, command: &Command) -> Result<Applied, NodeError> {
        self.call_leader::<_, ForwardResult>(Method::Forward, command)
            .await?
    }

    /// The leader's read index (ReadIndex).
    pub(crate) async fn forward_read_index(&self) -> Result<u64, NodeError> {
        self.call_leader::<_, ReadIndexResult>(Method::ReadIndex, &())
            .await?
    }

    /// `lease` kept alive by the leader (KeepAlive); returns its ttl.
    pub(crate) async fn forward_keep_alive(&self, lease: LeaseId) -> Result<u64, NodeError> {
        self.call_leader::<_, KeepAliveResult>(Method::KeepAlive, &KeepAliveForward { lease })
            .await?
    }

    /// Send an internal call to the leader (one hop) and decode its answer.
    /// Failures: see [`lost_call`].
    async fn call_leader<R: Wire, T: Wire>(
        &self,
        method: Method,
        request: &R,
    ) -> Result<T, NodeError> {
        let (leader_id, peer_addr) = match self.leader_peer() {
            Some((id, addr)) if id != self.id => (id, addr),
            _ => return Err(NodeError::NoLeader),
        };
        let message = pack(request, self.network.speak_with(leader_id))
            .map_err(|e| NodeError::invalid("command", e.to_string()))?;
        // What clients are told: the leader's client address, or no hint.
        let addr = self.client_addr_of(leader_id).unwrap_or_default();
        let reply = self
            .network
            .call(
                leader_id,
                self.network.dial_addr(leader_id, &peer_addr),
                method,
                message,
                self.config.write_timeout,
            )
            .await
            .map_err(|failure| lost_call(method, leader_id, addr, failure))?;
        unpack::<T>(&reply).map_err(|e| NodeError::Internal(format!("{}: {e}", method.name())))
    }

    /// Answer a forwarded write (Forward RPC). Only the commands a
    /// follower builds for its clients are taken: the leader's own
    /// (ExpireLeases, Tick, SetLimits) and batches, which only the
    /// leader's batcher forms, are refused whoever sends them, so no peer
    /// can end leases or change limits through this call.
    pub(crate) async fn serve_forward(&self, message: &RaftMessage) -> RaftMessage {
        let result: ForwardResult = match unpack::<Command>(message) {
            Ok(command) => match forwardable(&command) {
                Ok(()) => self.propose(command).await,
                Err(e) => {
                    tracing::warn!(target: "audit", method = "Forward", result = "refused", error = %e);
                    Err(e)
                }
            },
            Err(e) => {
                note_refused(&self.metrics.peer_refused, "Forward", &e);
                Err(NodeError::invalid("command", e.to_string()))
            }
        };
        answer(message, &result)
    }

    /// Answer a read-index request (ReadIndex RPC).
    pub(crate) async fn serve_read_index(&self, message: &RaftMessage) -> RaftMessage {
        let result: ReadIndexResult = match unpack::<()>(message) {
            Ok(()) => self.read_index_local().await,
            Err(e) => {
                note_refused(&self.metrics.peer_refused, "ReadIndex", &e);
                Err(NodeError::invalid("read index", e.to_string()))
            }
        };
        answer(message, &result)
    }

    /// Answer a forwarded keep-alive (KeepAlive RPC).
    pub(crate) async fn serve_keep_alive(&self, message: &RaftMessage) -> RaftMessage {
        let received_at = Instant::now();
        let result: KeepAliveResult = match unpack::<KeepAliveForward>(message) {
            Ok(k) if self.is_leader() => self.keep_alive_local(k.lease, received_at).await,
            Ok(_) => Err(self.not_leader(None)),
            Err(e) => {
                note_refused(&self.metrics.peer_refused, "KeepAlive", &e);
                Err(NodeError::invalid("keep-alive", e.to_string()))
            }
        };
        answer(message, &result)
    }
}

/// What a client is told when the call forwarded to the leader, node
/// `leader_id` (whose client address is `leader_addr`, or empty), got no
/// answer to use:
/// - nothing reached the leader (the connection could not be opened), or
///   the leader refused the request at admission
///   ([`refused_at_admission`]): NOT_LEADER naming it. The call was not
///   applied, and the client can make it at the leader itself (its client
///   port speaks no peer protocol and needs no cluster check between
///   nodes);
/// - anything else: OUTCOME_UNKNOWN, since the leader may have applied
///   the call and only its answer was lost (a one-way partition, a reset
///   connection, a timeout) or refused (an answer this node does not take
///   comes from a leader that handled the request).
fn lost_call(
    method: Method,
    leader_id: u64,
    leader_addr: String,
    failure: CallFailure,
) -> NodeError {
    match failure {
        CallFailure::NoAnswer(status) if never_sent(&status) => {
            tracing::debug!(leader_id, ?method, %status, "the leader could not be reached");
            NodeError::NotLeader {
                leader_id,
                leader_addr,
            }
        }
        CallFailure::NoAnswer(status) if refused_at_admission(&status) => {
            tracing::warn!(leader_id, ?method, %status, "the leader refused a call this node forwarded");
            NodeError::NotLeader {
                leader_id,
                leader_addr,
            }
        }
        CallFailure::NoAnswer(status) | CallFailure::AnswerRefused(status) => {
            tracing::debug!(leader_id, ?method, %status, "call to the leader failed");
            NodeError::OutcomeUnknown {
                leader_id,
                leader_addr,
                detail: status.message().to_string(),
            }
        }
    }
}

/// Whether `status`, which the leader sent instead of an answer, refused
/// the request before anything of it was proposed. The leader's
/// Forward, ReadIndex and KeepAlive handlers answer every request they
/// admitted in the answer itself (a `NodeError` inside it); a status comes
/// only from admission (`TransportService::admit`) or from the transport.
/// The admission checks that name a reason are provably the leader's:
/// the sender's cluster or store (CLUSTER_MISMATCH) and the message's
/// peer protocol version (PEER_VERSION_MISMATCH). Admission refusals
/// without a reason (a message for another node id, a certificate, a
/// sender not in the membership) cannot be told from a proxy's status and
/// stay unknown.
fn refused_at_admission(status: &tonic::Status) -> bool {
    matches!(
        raftlock_proto::errors::classify(status).known(),
        Some(ErrorReason::ClusterMismatch | ErrorReason::PeerVersionMismatch)
    )
}

/// `result` packed in the peer protocol version of `request`. Answers
/// always encode (only a command nested deeper than any node writes could
/// fail); if one did not, the caller gets an internal error in the failure
/// form of the same answer type ([`Answer::failure`]), so it decodes as
/// the answer the caller waits for: in the request's version, or else in
/// protocol 1, which every build of this range reads.
fn answer<T: Answer>(request: &RaftMessage, result: &T) -> RaftMessage {
    let version = super::version::of_message(request.protocol);
    pack(result, version).unwrap_or_else(|e| {
        tracing::warn!(what = T::WHAT, version, "an answer did not encode: {e}");
        let failure = T::failure(NodeError::Internal(format!(
            "the leader could not encode its {}: {e}",
            T::WHAT
        )));
        pack(&failure, version)
            .or_else(|_| pack(&failure, super::version::BINCODE))
            // bincode encodes every value: the default is never used.
            .unwrap_or_default()
    })
}

/// Whether a follower may forward `command`: the client commands only.
pub(crate) fn forwardable(command: &Command) -> Result<(), NodeError> {
    match command {
        Command::GrantLease { .. }
        | Command::RevokeLease { .. }
        | Command::Acquire { .. }
        | Command::Release { .. }
        | Command::Extend { .. }
        | Command::CancelWait { .. }
        | Command::ForceRelease { .. } => Ok(()),
        Command::ExpireLeases { .. }
        | Command::Tick
        | Command::SetLimits { .. }
        | Command::InitCluster { .. }
        | Command::RecordMember { .. }
        | Command::ForgetMember { .. }
        | Command::RaiseTokenEpoch { .. }
        | Command::ForceNewCluster { .. } => Err(NodeError::invalid(
            "command",
            "a leader-only command (ExpireLeases, Tick, SetLimits, InitCluster, RecordMember, ForgetMember, RaiseTokenEpoch, ForceNewCluster) is never accepted from another node",
        )),
        Command::Batch { .. } => Err(NodeError::invalid(
            "command",
            "batches are formed by the leader only and are never accepted from another node",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::collections::BTreeMap;

    use raftlock_core::{Applied, Command, Limits, LockError};
    use raftlock_proto::errors::never_sent;

    use crate::error::NodeError;
    use crate::peer::client::{Method, Network, NetworkOptions};
    use crate::peer::version::{BINCODE, PROTOBUF};
    use crate::peer::wire::{Answer, Wire, WireError, pack, pack1, unpack};
    use crate::{Node, NodeConfig};

    /// A peer's Forward carries only client commands: the leader refuses
    /// its own commands (which would end any lease now, or change the
    /// limits) and batches, and applies nothing of them.
    #[tokio::test]
    async fn the_leader_refuses_leader_only_commands_and_batches_from_peers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let peer_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client_addr = listener.local_addr().expect("addr").to_string();
        // Forwards arrive on the peer port.
        let addr = peer_listener.local_addr().expect("addr").to_string();
        let mut config = NodeConfig::new(1, dir.path(), client_addr);
        config.peer_listen = addr.clone();
        config.initial_members = BTreeMap::from([(1, addr.clone())]);
        let node = Node::start_on(config, listener, peer_listener)
            .await
            .expect("starts");
        let api = node.api();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !api.is_leader() {
            assert!(std::time::Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (lease, _) = api
            .grant_lease(10_000, "victim".into())
            .await
            .expect("lease");
        let limits_before = api.state.read(|s| s.limits().clone());

        let peer = Network::new(2, NetworkOptions::default());
        let forward = |command: Command| {
            let (peer, addr) = (peer.clone(), addr.clone());
            async move {
                let reply = peer
                    .call(
                        1,
                        &addr,
                        Method::Forward,
                        pack1(&command),
                        Duration::from_secs(5),
                    )
                    .await
                    .expect("the leader answers");
                unpack::<Result<Applied, NodeError>>(&reply).expect("decodes")
            }
        };
        let tighter = Limits {
            max_leases: 1,
            ..Limits::default()
        };
        for command in [
            Command::ExpireLeases {
                leases: vec![lease],
            },
            Command::Tick,
            Command::SetLimits { limits: tighter },
            Command::InitCluster {
                cluster_id: "forged".into(),
            },
            Command::RecordMember {
                node: 1,
                store_id: "forged".into(),
                client_addr: "127.0.0.1:1".into(),
            },
            Command::ForgetMember { node: 1 },
            Command::Batch {
                commands: vec![Command::RevokeLease { lease }],
            },
        ] {
            let what = format!("{command:?}");
            match forward(command).await {
                Err(NodeError::Lock(LockError::InvalidArgument { reason, .. })) => {
                    assert!(
                        reason.contains("never accepted from another node"),
                        "{what}: {reason}"
                    )
                }
                other => panic!("{what} was not refused: {other:?}"),
            }
        }
        assert!(
            api.state.read(|s| s.lease(lease).is_some()),
            "the lease lives"
        );
        assert_eq!(api.state.read(|s| s.limits().clone()), limits_before);

        // A client command a follower forwards is still applied.
        let applied = forward(Command::RevokeLease { lease })
            .await
            .expect("a client command is taken");
        assert!(applied.result.is_ok(), "{applied:?}");
        node.shutdown().await;
    }

    /// Node `id` listening on ports of its own, the cluster of `members`
    /// (`id` → peer address; `None`: only itself), dialing peers at
    /// `dial`.
    async fn start_node(
        id: u64,
        dir: &std::path::Path,
        peer_listener: tokio::net::TcpListener,
        members: Option<BTreeMap<u64, String>>,
        dial: BTreeMap<u64, String>,
    ) -> crate::NodeHandle {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client_addr = listener.local_addr().expect("addr").to_string();
        let peer_addr = peer_listener.local_addr().expect("addr").to_string();
        let mut config = NodeConfig::new(id, dir, client_addr);
        config.peer_listen = peer_addr.clone();
        config.initial_members = members.unwrap_or_else(|| BTreeMap::from([(id, peer_addr)]));
        config.peer_dial = dial;
        // Elections within a second (this crate's types, not testkit's
        // build of them).
        config.raft = crate::RaftTiming {
            heartbeat: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            rpc_timeout: Duration::from_millis(500),
        };
        Node::start_on(config, listener, peer_listener)
            .await
            .expect("starts")
    }

    /// A follower whose forwards reach a node of another cluster (its dial
    /// address for the leader now belongs to that node: the leader's peer
    /// port was given to another cluster's node 1) is refused at
    /// admission, before anything is proposed: the client is told
    /// NOT_LEADER (not applied, call the leader), never OUTCOME_UNKNOWN.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forward_refused_at_admission_by_the_leader_is_not_applied() {
        let dirs: Vec<tempfile::TempDir> = (0..3)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let bind = || async {
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind")
        };
        // Another cluster's node 1.
        let stranger_listener = bind().await;
        let stranger_addr = stranger_listener.local_addr().expect("addr").to_string();
        let stranger =
            start_node(1, dirs[2].path(), stranger_listener, None, BTreeMap::new()).await;
        let (l1, l2) = (bind().await, bind().await);
        let members = BTreeMap::from([
            (1, l1.local_addr().expect("addr").to_string()),
            (2, l2.local_addr().expect("addr").to_string()),
        ]);
        let leader = start_node(
            1,
            dirs[0].path(),
            l1,
            Some(members.clone()),
            BTreeMap::new(),
        )
        .await;
        // Node 2 hears node 1 (it replicates to node 2) but dials the
        // stranger for it.
        let follower = start_node(
            2,
            dirs[1].path(),
            l2,
            Some(members),
            BTreeMap::from([(1, stranger_addr)]),
        )
        .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let both = !stranger.cluster_id().is_empty()
                && !follower.cluster_id().is_empty()
                && follower.api().leader_peer().map(|(id, _)| id) == Some(1)
                && leader.api().is_leader();
            if both {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no cluster of 1 and 2"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_ne!(stranger.cluster_id(), follower.cluster_id());
        let api = follower.api();
        let grant = Command::GrantLease {
            ttl_ms: 60_000,
            owner: "refused".into(),
            identity: String::new(),
            quota: Default::default(),
        };
        for (what, result) in [
            ("Forward", api.forward_write(&grant).await.map(|_| ())),
            ("ReadIndex", api.forward_read_index().await.map(|_| ())),
            ("KeepAlive", api.forward_keep_alive(1).await.map(|_| ())),
        ] {
            match result {
                Err(NodeError::NotLeader { leader_id: 1, .. }) => {}
                other => panic!("{what} refused by another cluster's node: {other:?}"),
            }
        }
        assert_eq!(
            leader.api().state.read(|s| s.lease_count()),
            0,
            "the refused grant was applied"
        );
        follower.shutdown().await;
        leader.shutdown().await;
        stranger.shutdown().await;
    }

    /// Which failures of a forwarded call are definite: the leader's
    /// admission refusals (sent instead of an answer) are not applied; the
    /// same refusal of the leader's answer, a reset, or an admission
    /// refusal that names no reason may have been applied.
    #[test]
    fn only_a_reasoned_admission_refusal_or_a_failed_connect_is_not_applied() {
        use super::{CallFailure, lost_call};
        use crate::peer::version::ProtocolRange;
        let r = |min, max| ProtocolRange { min, max };
        let version = crate::peer::version::mismatch(r(2, 2), 1, r(1, 1), 2, "", "c");
        let cluster = crate::peer::identity::mismatch("another cluster".into());
        let lost = |failure| lost_call(Method::Forward, 1, "127.0.0.1:7401".into(), failure);
        let is_not_leader = |e: &NodeError| matches!(e, NodeError::NotLeader { leader_id: 1, .. });
        for refusal in [version.clone(), cluster.clone()] {
            let e = lost(CallFailure::NoAnswer(refusal.clone()));
            assert!(is_not_leader(&e), "{e:?}");
            let c = raftlock_proto::errors::classify(&e.to_status());
            assert_eq!(c.applied, raftlock_proto::errors::Applied::No);
            let e = lost(CallFailure::AnswerRefused(refusal));
            assert!(matches!(e, NodeError::OutcomeUnknown { .. }), "{e:?}");
        }
        for unknown in [
            tonic::Status::unavailable("connection reset"),
            tonic::Status::failed_precondition("message for node 3 reached node 1"),
            tonic::Status::permission_denied("node 2 is not a member"),
        ] {
            let e = lost(CallFailure::NoAnswer(unknown));
            assert!(matches!(e, NodeError::OutcomeUnknown { .. }), "{e:?}");
        }
    }

    /// An answer that stands in for one whose success form does not
    /// encode (in any protocol) while its failures do.
    #[derive(Debug)]
    struct Unencodable(Result<Applied, NodeError>);

    impl Wire for Unencodable {
        const WHAT: &'static str = "forward answer";
        fn encode_as(&self, version: u32) -> Result<Vec<u8>, WireError> {
            match &self.0 {
                Ok(_) => Err(WireError::Version {
                    what: Self::WHAT,
                    version: 99,
                }),
                failure => failure.encode_as(version),
            }
        }
        fn decode_from(version: u32, bytes: &[u8]) -> Result<Self, WireError> {
            Result::<Applied, NodeError>::decode_from(version, bytes).map(Unencodable)
        }
    }

    impl Answer for Unencodable {
        fn failure(error: NodeError) -> Self {
            Unencodable(Err(error))
        }
    }

    /// A Forward answer that cannot be encoded reaches the follower as an
    /// internal error in the shape of a Forward answer, in the protocol
    /// version of its request (not as another call's answer, nor in
    /// another version than the one asked in).
    #[test]
    fn an_answer_that_does_not_encode_is_a_failure_of_the_same_answer_type_in_the_request_version()
    {
        let applied = Applied {
            index: 7,
            result: Err(LockError::LockNotFound { name: "x".into() }),
            events: Vec::new(),
            revision: 7,
        };
        for version in [BINCODE, PROTOBUF] {
            let request = pack(&Command::RevokeLease { lease: 1 }, version).expect("encodes");
            let reply = super::answer(&request, &Unencodable(Ok(applied.clone())));
            assert_eq!(reply.protocol, version);
            match unpack::<Result<Applied, NodeError>>(&reply) {
                Ok(Err(NodeError::Internal(why))) => {
                    assert!(why.contains("could not encode its forward answer"), "{why}")
                }
                other => panic!("protocol {version}: {other:?}"),
            }
        }
    }

    /// A refused connection means nothing reached the leader (NOT_LEADER is
    /// true); a peer that took the request and never answered may have
    /// applied it (OUTCOME_UNKNOWN).
    #[tokio::test]
    async fn only_a_failed_connect_counts_as_never_sent() {
        let network = Network::new(1, NetworkOptions::default());

        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed_addr = closed.local_addr().expect("addr").to_string();
        drop(closed);
        let refused = network
            .call(
                0,
                &closed_addr,
                Method::Forward,
                pack1(&()),
                Duration::from_secs(2),
            )
            .await
            .expect_err("nobody listens")
            .no_answer();
        assert!(never_sent(&refused), "{refused:?}");

        // Accepts the connection, reads, never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let silent_addr = silent.local_addr().expect("addr").to_string();
        let holder = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                kept.push(stream);
            }
        });
        let lost = network
            .call(
                0,
                &silent_addr,
                Method::Forward,
                pack1(&()),
                Duration::from_millis(300),
            )
            .await
            .expect_err("no answer")
            .no_answer();
        assert!(!never_sent(&lost), "{lost:?}");
        holder.abort();
    }
}
