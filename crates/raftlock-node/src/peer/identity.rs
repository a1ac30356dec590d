//! Who a peer message comes from, and whether this node takes it.
//!
//! Every message between nodes, both ways, is stamped with the sender's
//! node id, cluster id and store id ([`PeerIdentity::stamp`]); the receiver
//! checks them against the replicated [`ClusterIdentity`]
//! ([`PeerIdentity::check`]) before Raft or the node's API sees the
//! message:
//! - a sender whose cluster id differs from this node's (both known) is a
//!   node of another cluster: refused;
//! - a sender the cluster has recorded with another store is a node whose
//!   data was wiped (or replaced) and that came back under its old id:
//!   refused. Raft would otherwise see a member whose log went backwards
//!   (openraft's leader panics on that), and the node could vote twice.
//!
//! Refusals are `FAILED_PRECONDITION` with reason `CLUSTER_MISMATCH`. A new
//! node (no cluster id yet, nothing recorded) is taken: it learns the
//! cluster id from the log like everything else.
//!
//! [`ClusterIdentity`]: raftlock_core::ClusterIdentity

use raftlock_proto::errors::ErrorReason;
use raftlock_proto::internal::v1::RaftMessage;
use raftlock_store::{NodeId, StateHandle};

/// This node's identity on the peer transport, and the cluster's record to
/// check others against.
#[derive(Clone)]
pub(crate) struct PeerIdentity {
    pub(crate) id: NodeId,
    pub(crate) store_id: String,
    /// The peer protocol versions this node speaks ([`super::version`]).
    pub(crate) protocol: super::version::ProtocolRange,
    state: StateHandle,
    /// The cluster id once applied: it never changes after that, so every
    /// message (AppendEntries included, the write path) stamps and checks
    /// it without taking the state's lock.
    cluster_id: std::sync::Arc<std::sync::OnceLock<String>>,
    /// Every message this node stamps (sends) and checks (receives) passes
    /// here, in both its client and server halves: counted per version.
    pub(crate) traffic: std::sync::Arc<super::version::Traffic>,
}

impl PeerIdentity {
    pub(crate) fn new(
        id: NodeId,
        store_id: String,
        protocol: super::version::ProtocolRange,
        state: StateHandle,
    ) -> Self {
        PeerIdentity {
            id,
            store_id,
            protocol,
            state,
            cluster_id: Default::default(),
            traffic: Default::default(),
        }
    }

    /// The cluster id this node has applied; empty before the first
    /// leader named the cluster.
    pub(crate) fn cluster_id(&self) -> String {
        if let Some(id) = self.cluster_id.get() {
            return id.clone();
        }
        let id = self.state.read(|s| s.cluster().id.clone());
        if !id.is_empty() {
            let _ = self.cluster_id.set(id.clone());
        }
        id
    }

    /// Marks `message` as sent by this node (and counts it: every peer
    /// message this node sends is stamped once, just before it leaves).
    pub(crate) fn stamp(&self, message: &mut RaftMessage) {
        self.traffic
            .sent(super::version::of_message(message.protocol));
        message.from_id = self.id;
        message.cluster_id = self.cluster_id();
        message.store_id.clone_from(&self.store_id);
    }

    /// Whether a message claiming to come from node `from` of cluster
    /// `cluster_id`, running on store `store_id`, may be taken.
    pub(crate) fn check_sender(
        &self,
        from: NodeId,
        cluster_id: &str,
        store_id: &str,
    ) -> Result<(), tonic::Status> {
        let ours = self.cluster_id();
        if !ours.is_empty() && !cluster_id.is_empty() && ours != cluster_id {
            return Err(mismatch(format!(
                "node {from} belongs to cluster {cluster_id}, node {} to cluster {ours}: nodes of different clusters never merge (check --peers, or wipe and re-add the node under a new id)",
                self.id
            )));
        }
        self.state.read(|s| {
            if let Some(known) = s.cluster().members.get(&from)
                && !known.store_id.is_empty()
                && known.store_id != store_id
            {
                return Err(mismatch(format!(
                    "node {from} now runs on store {store_id:?}, but the cluster knows it with store {}: its data was wiped or replaced. Remove it (raftlock cluster remove {from}) and add it back under a new id",
                    known.store_id
                )));
            }
            Ok(())
        })
    }

    /// [`PeerIdentity::check_sender`] of a stamped message, and whether
    /// its payload is in a protocol version this node speaks. An unstamped
    /// one (`from_id` 0) is taken only when the check has nothing to go on
    /// either way: it comes from a test transport, never from a node.
    pub(crate) fn check(&self, message: &RaftMessage) -> Result<(), tonic::Status> {
        let version = super::version::of_message(message.protocol);
        if !self.protocol.contains(version) {
            return Err(super::version::unreadable(
                self.protocol,
                self.id,
                version,
                message.from_id,
            ));
        }
        self.traffic.received(version);
        if message.from_id == 0 {
            return Ok(());
        }
        self.check_sender(message.from_id, &message.cluster_id, &message.store_id)
    }
}

/// A `CLUSTER_MISMATCH` refusal.
pub(crate) fn mismatch(message: String) -> tonic::Status {
    raftlock_proto::errors::status(ErrorReason::ClusterMismatch, message, Default::default())
}

/// Whether `status` is a peer's refusal of this node (another cluster, a
/// wiped store, a message for another node id, a certificate that does not
/// name this node): openraft backs off as for an unreachable peer.
pub(crate) fn is_refusal(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::FailedPrecondition
            | tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
    )
}

/// Who the connection of a peer call says the caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A plaintext connection (`--insecure`) or an in-process call:
    /// nothing verified.
    Unverified,
    /// Mutual TLS: the node the caller's certificate names.
    Node(NodeId),
    /// Mutual TLS with a certificate from the CA that is not a node's (a
    /// client certificate): never a peer.
    NotANode,
}

impl Caller {
    /// The caller of `request` on a listener that does (`tls`) or does not
    /// terminate TLS.
    pub(crate) fn of<T>(request: &tonic::Request<T>, tls: bool) -> Caller {
        if !tls {
            return Caller::Unverified;
        }
        match crate::conn::ConnInfo::of(request)
            .and_then(|c| c.cert.as_ref())
            .and_then(crate::tls::node_of)
        {
            Some(id) => Caller::Node(id),
            None => Caller::NotANode,
        }
    }

    /// A message claiming to come from `from_id` is taken only from the
    /// node its certificate names.
    pub(crate) fn check(self, from_id: NodeId) -> Result<(), tonic::Status> {
        match self {
            Caller::Unverified => Ok(()),
            Caller::Node(id) if id == from_id => Ok(()),
            Caller::Node(id) => Err(tonic::Status::permission_denied(format!(
                "a certificate for node {id} cannot speak as node {from_id}"
            ))),
            Caller::NotANode => Err(tonic::Status::permission_denied(
                "the peer port takes node certificates only (common name node-<id>, OU raftlock-node)",
            )),
        }
    }
}
