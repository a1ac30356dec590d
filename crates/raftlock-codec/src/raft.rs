//! openraft 0.9's types, with raftlock's node id (u64) and node
//! (`BasicNode`): log ids, votes, memberships, snapshot metadata, entries.

use std::collections::{BTreeMap, BTreeSet};

use openraft::entry::EntryPayload;
use openraft::{
    BasicNode, CommittedLeaderId, Entry, LeaderId, LogId, Membership, RaftTypeConfig, SnapshotMeta,
    StoredMembership, Vote,
};
use raftlock_core::Request;

use crate::core_types::{request_from, request_to};
use crate::{Codec, CodecError, pb, required, strictly_increasing};

fn leader_to(term: u64, node_id: u64) -> pb::LeaderId {
    pb::LeaderId { term, node_id }
}

pub(crate) fn log_id_to(l: &LogId<u64>) -> pb::LogId {
    pb::LogId {
        leader_id: Some(leader_to(l.leader_id.term, l.leader_id.node_id)),
        index: l.index,
    }
}

pub(crate) fn log_id_from(l: pb::LogId, field: &'static str) -> Result<LogId<u64>, CodecError> {
    let leader = required(l.leader_id, field)?;
    Ok(LogId::new(
        CommittedLeaderId::new(leader.term, leader.node_id),
        l.index,
    ))
}

fn membership_to(m: &Membership<u64, BasicNode>) -> pb::Membership {
    pb::Membership {
        configs: m
            .get_joint_config()
            .iter()
            .map(|c| pb::NodeIdSet {
                ids: c.iter().copied().collect(),
            })
            .collect(),
        nodes: m
            .nodes()
            .map(|(id, n)| {
                (
                    *id,
                    pb::BasicNode {
                        addr: n.addr.clone(),
                    },
                )
            })
            .collect(),
    }
}

fn membership_from(
    m: Option<pb::Membership>,
    field: &'static str,
) -> Result<Membership<u64, BasicNode>, CodecError> {
    let m = required(m, field)?;
    let mut configs = Vec::with_capacity(m.configs.len());
    for c in m.configs {
        strictly_increasing(&c.ids, "Membership.configs.ids")?;
        configs.push(c.ids.into_iter().collect::<BTreeSet<u64>>());
    }
    // openraft gives every voter a node (`Membership::new` adds a default
    // one); a voter without one was not written by openraft, and accepting
    // it would invent an empty address.
    if let Some(voter) = configs
        .iter()
        .flatten()
        .find(|id| !m.nodes.contains_key(id))
    {
        return Err(CodecError::Invalid {
            field: "Membership.nodes",
            detail: format!("voter {voter} has no node"),
        });
    }
    let nodes: BTreeMap<u64, BasicNode> = m
        .nodes
        .into_iter()
        .map(|(id, n)| (id, BasicNode { addr: n.addr }))
        .collect();
    Ok(Membership::new(configs, nodes))
}

pub(crate) fn stored_membership_to(m: &StoredMembership<u64, BasicNode>) -> pb::StoredMembership {
    pb::StoredMembership {
        log_id: m.log_id().as_ref().map(log_id_to),
        membership: Some(membership_to(m.membership())),
    }
}

pub(crate) fn stored_membership_from(
    m: Option<pb::StoredMembership>,
    field: &'static str,
) -> Result<StoredMembership<u64, BasicNode>, CodecError> {
    let m = required(m, field)?;
    Ok(StoredMembership::new(
        m.log_id
            .map(|l| log_id_from(l, "StoredMembership.log_id"))
            .transpose()?,
        membership_from(m.membership, "StoredMembership.membership")?,
    ))
}

impl Codec for LogId<u64> {
    const KIND: pb::BodyKind = pb::BodyKind::LogId;
    const WHAT: &'static str = "log id";
    type Proto = pb::LogId;
    fn to_proto(&self) -> Result<pb::LogId, CodecError> {
        Ok(log_id_to(self))
    }
    fn from_proto(proto: pb::LogId) -> Result<Self, CodecError> {
        log_id_from(proto, "LogId.leader_id")
    }
}

/// The store keeps optional log ids (committed, last purged) under fixed
/// keys.
impl Codec for Option<LogId<u64>> {
    const KIND: pb::BodyKind = pb::BodyKind::OptionalLogId;
    const WHAT: &'static str = "optional log id";
    type Proto = pb::OptionalLogId;
    fn to_proto(&self) -> Result<pb::OptionalLogId, CodecError> {
        Ok(pb::OptionalLogId {
            log_id: self.as_ref().map(log_id_to),
        })
    }
    fn from_proto(proto: pb::OptionalLogId) -> Result<Self, CodecError> {
        proto
            .log_id
            .map(|l| log_id_from(l, "OptionalLogId.log_id.leader_id"))
            .transpose()
    }
}

pub(crate) fn vote_to(v: &Vote<u64>) -> pb::Vote {
    pb::Vote {
        leader_id: Some(leader_to(v.leader_id.term, v.leader_id.node_id)),
        committed: v.committed,
    }
}

pub(crate) fn vote_from(v: Option<pb::Vote>, field: &'static str) -> Result<Vote<u64>, CodecError> {
    let v = required(v, field)?;
    let leader = required(v.leader_id, "Vote.leader_id")?;
    Ok(Vote {
        leader_id: LeaderId::new(leader.term, leader.node_id),
        committed: v.committed,
    })
}

impl Codec for Vote<u64> {
    const KIND: pb::BodyKind = pb::BodyKind::Vote;
    const WHAT: &'static str = "vote";
    type Proto = pb::Vote;
    fn to_proto(&self) -> Result<pb::Vote, CodecError> {
        Ok(vote_to(self))
    }
    fn from_proto(proto: pb::Vote) -> Result<Self, CodecError> {
        vote_from(Some(proto), "Vote")
    }
}

impl Codec for Membership<u64, BasicNode> {
    const KIND: pb::BodyKind = pb::BodyKind::Membership;
    const WHAT: &'static str = "membership";
    type Proto = pb::Membership;
    fn to_proto(&self) -> Result<pb::Membership, CodecError> {
        Ok(membership_to(self))
    }
    fn from_proto(proto: pb::Membership) -> Result<Self, CodecError> {
        membership_from(Some(proto), "Membership")
    }
}

impl Codec for StoredMembership<u64, BasicNode> {
    const KIND: pb::BodyKind = pb::BodyKind::StoredMembership;
    const WHAT: &'static str = "stored membership";
    type Proto = pb::StoredMembership;
    fn to_proto(&self) -> Result<pb::StoredMembership, CodecError> {
        Ok(stored_membership_to(self))
    }
    fn from_proto(proto: pb::StoredMembership) -> Result<Self, CodecError> {
        stored_membership_from(Some(proto), "StoredMembership")
    }
}

pub(crate) fn meta_to(m: &SnapshotMeta<u64, BasicNode>) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        last_log_id: m.last_log_id.as_ref().map(log_id_to),
        last_membership: Some(stored_membership_to(&m.last_membership)),
        snapshot_id: m.snapshot_id.clone(),
    }
}

pub(crate) fn meta_from(
    m: Option<pb::SnapshotMeta>,
    field: &'static str,
) -> Result<SnapshotMeta<u64, BasicNode>, CodecError> {
    let m = required(m, field)?;
    Ok(SnapshotMeta {
        last_log_id: m
            .last_log_id
            .map(|l| log_id_from(l, "SnapshotMeta.last_log_id.leader_id"))
            .transpose()?,
        last_membership: stored_membership_from(m.last_membership, "SnapshotMeta.last_membership")?,
        snapshot_id: m.snapshot_id,
    })
}

impl Codec for SnapshotMeta<u64, BasicNode> {
    const KIND: pb::BodyKind = pb::BodyKind::SnapshotMeta;
    const WHAT: &'static str = "snapshot metadata";
    type Proto = pb::SnapshotMeta;
    fn to_proto(&self) -> Result<pb::SnapshotMeta, CodecError> {
        Ok(meta_to(self))
    }
    fn from_proto(proto: pb::SnapshotMeta) -> Result<Self, CodecError> {
        meta_from(Some(proto), "SnapshotMeta")
    }
}

pub(crate) fn entry_to<C>(e: &Entry<C>) -> Result<pb::Entry, CodecError>
where
    C: RaftTypeConfig<D = Request, NodeId = u64, Node = BasicNode>,
{
    use pb::entry::Payload as P;
    Ok(pb::Entry {
        log_id: Some(log_id_to(&e.log_id)),
        payload: Some(match &e.payload {
            EntryPayload::Blank => P::Blank(pb::entry::Blank {}),
            EntryPayload::Normal(request) => P::Normal(request_to(request)?),
            EntryPayload::Membership(m) => P::Membership(membership_to(m)),
        }),
    })
}

pub(crate) fn entry_from<C>(e: pb::Entry) -> Result<Entry<C>, CodecError>
where
    C: RaftTypeConfig<D = Request, NodeId = u64, Node = BasicNode>,
{
    use pb::entry::Payload as P;
    Ok(Entry {
        log_id: log_id_from(
            required(e.log_id, "Entry.log_id")?,
            "Entry.log_id.leader_id",
        )?,
        payload: match required(e.payload, "Entry.payload")? {
            P::Blank(_) => EntryPayload::Blank,
            P::Normal(r) => EntryPayload::Normal(request_from(r)?),
            P::Membership(m) => {
                EntryPayload::Membership(membership_from(Some(m), "Entry.membership")?)
            }
        },
    })
}

/// A log entry of any type configuration with raftlock's payload, node id
/// and node (the store declares the configuration; this crate does not
/// depend on the store).
impl<C> Codec for Entry<C>
where
    C: RaftTypeConfig<D = Request, NodeId = u64, Node = BasicNode>,
{
    const KIND: pb::BodyKind = pb::BodyKind::Entry;
    const WHAT: &'static str = "log entry";
    type Proto = pb::Entry;
    fn to_proto(&self) -> Result<pb::Entry, CodecError> {
        entry_to(self)
    }
    fn from_proto(proto: pb::Entry) -> Result<Self, CodecError> {
        entry_from(proto)
    }
}
