//! Forwarding a client's call to the leader, one hop. A follower sends a
//! write (Forward), a read-index request (ReadIndex) or a keep-alive
//! (KeepAlive) to the leader over the peer channels ([`Network::call`]);
//! the leader answers it here from its own state, never forwarding again.
//!
//! [`Network::call`]: super::client::Network::call

use std::time::Instant;

use raftlock_core::{Applied, Command, LeaseId};
use raftlock_proto::errors::never_sent;
use raftlock_proto::internal::v1::RaftMessage;
use serde::{Deserialize, Serialize};

use super::client::Method;
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
    /// A leader that could not even be connected to is NOT_LEADER naming it
    /// (nothing was sent: the client may retry there or elsewhere); any
    /// other failure is OUTCOME_UNKNOWN, since the leader may have applied
    /// the call and only its answer was lost.
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
            .map_err(|status| {
                tracing::debug!(leader_id, ?method, %status, "call to the leader failed");
                if never_sent(&status) {
                    // Nothing reached the leader: not applied, safe to retry.
                    NodeError::NotLeader {
                        leader_id,
                        leader_addr: addr.clone(),
                    }
                } else {
                    // The request may have reached the leader and been
                    // applied, with only the answer lost (a one-way
                    // partition, a reset connection, a timeout).
                    NodeError::OutcomeUnknown {
                        leader_id,
                        leader_addr: addr.clone(),
                        detail: status.message().to_string(),
                    }
                }
            })?;
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
            .expect_err("nobody listens");
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
            .expect_err("no answer");
        assert!(!never_sent(&lost), "{lost:?}");
        holder.abort();
    }
}
