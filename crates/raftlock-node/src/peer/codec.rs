//! Peer protocol 2's messages for the calls a follower forwards to the
//! leader (Forward, ReadIndex, KeepAlive): their answers carry this crate's
//! [`NodeError`], so their protobuf forms (`raftlock.storage.v1`'s
//! `ForwardAnswer`, `IndexAnswer`, `NodeFailure`, ...) are made here, on
//! raftlock-codec's envelope. Every other peer message is raftlock-codec's
//! own.

use raftlock_codec::{Codec, CodecError, pb};
use raftlock_core::{Applied, LockError};

use crate::error::NodeError;

/// A forwarded write's answer.
pub(crate) struct ForwardAnswer(pub(crate) Result<Applied, NodeError>);

/// A read index's or a forwarded keep-alive's answer.
pub(crate) struct IndexAnswer(pub(crate) Result<u64, NodeError>);

/// A forwarded keep-alive: the lease.
pub(crate) struct KeepAliveRequest(pub(crate) u64);

/// A read-index request.
pub(crate) struct ReadIndexRequest;

fn failure_to(e: &NodeError) -> Result<pb::NodeFailure, CodecError> {
    use pb::node_failure as f;
    use pb::node_failure::Error as E;
    let error = match e {
        NodeError::Lock(e) => E::Lock(e.to_proto()?),
        NodeError::NotLeader {
            leader_id,
            leader_addr,
        } => E::NotLeader(f::NotLeader {
            leader_id: *leader_id,
            leader_addr: leader_addr.clone(),
        }),
        NodeError::NoLeader => E::NoLeader(f::NoLeader {}),
        NodeError::OutcomeUnknown {
            leader_id,
            leader_addr,
            detail,
        } => E::OutcomeUnknown(f::OutcomeUnknown {
            leader_id: *leader_id,
            leader_addr: leader_addr.clone(),
            detail: detail.clone(),
        }),
        NodeError::WaitTimeout {
            waited_ms,
            released_after_grant,
        } => E::WaitTimeout(f::WaitTimeout {
            waited_ms: *waited_ms,
            released_after_grant: *released_after_grant,
        }),
        NodeError::WaitDropped { waiter } => E::WaitDropped(*waiter),
        NodeError::LeaseExpiring { lease } => E::LeaseExpiring(*lease),
        NodeError::Compacted { requested, oldest } => E::Compacted(f::Compacted {
            requested: *requested,
            oldest: *oldest,
        }),
        NodeError::SlowWatcher { buffer } => E::SlowWatcher(*buffer as u64),
        NodeError::TooManyWatchers { max } => E::TooManyWatchers(*max as u64),
        NodeError::Timeout { timeout_ms } => E::TimeoutMs(*timeout_ms),
        NodeError::ShuttingDown => E::ShuttingDown(f::ShuttingDown {}),
        NodeError::Denied {
            identity,
            missing,
            why,
        } => E::Denied(f::Denied {
            identity: identity.clone(),
            missing: missing.clone(),
            why: why.clone(),
        }),
        NodeError::Unauthenticated { detail } => E::Unauthenticated(detail.clone()),
        NodeError::RateLimited {
            identity,
            per_second,
        } => E::RateLimited(f::RateLimited {
            identity: identity.clone(),
            per_second: per_second.clone(),
        }),
        NodeError::Internal(m) => E::Internal(m.clone()),
    };
    Ok(pb::NodeFailure { error: Some(error) })
}

fn usize_from(v: u64, field: &'static str) -> Result<usize, CodecError> {
    usize::try_from(v).map_err(|_| CodecError::Invalid {
        field,
        detail: format!("{v} does not fit this machine's usize"),
    })
}

fn failure_from(f: pb::NodeFailure) -> Result<NodeError, CodecError> {
    use pb::node_failure::Error as E;
    let Some(error) = f.error else {
        return Err(CodecError::Missing {
            field: "NodeFailure.error",
        });
    };
    Ok(match error {
        E::Lock(e) => NodeError::Lock(LockError::from_proto(e)?),
        E::NotLeader(n) => NodeError::NotLeader {
            leader_id: n.leader_id,
            leader_addr: n.leader_addr,
        },
        E::NoLeader(_) => NodeError::NoLeader,
        E::OutcomeUnknown(o) => NodeError::OutcomeUnknown {
            leader_id: o.leader_id,
            leader_addr: o.leader_addr,
            detail: o.detail,
        },
        E::WaitTimeout(w) => NodeError::WaitTimeout {
            waited_ms: w.waited_ms,
            released_after_grant: w.released_after_grant,
        },
        E::WaitDropped(waiter) => NodeError::WaitDropped { waiter },
        E::LeaseExpiring(lease) => NodeError::LeaseExpiring { lease },
        E::Compacted(c) => NodeError::Compacted {
            requested: c.requested,
            oldest: c.oldest,
        },
        E::SlowWatcher(b) => NodeError::SlowWatcher {
            buffer: usize_from(b, "NodeFailure.slow_watcher")?,
        },
        E::TooManyWatchers(m) => NodeError::TooManyWatchers {
            max: usize_from(m, "NodeFailure.too_many_watchers")?,
        },
        E::TimeoutMs(timeout_ms) => NodeError::Timeout { timeout_ms },
        E::ShuttingDown(_) => NodeError::ShuttingDown,
        E::Denied(d) => NodeError::Denied {
            identity: d.identity,
            missing: d.missing,
            why: d.why,
        },
        E::Unauthenticated(detail) => NodeError::Unauthenticated { detail },
        E::RateLimited(r) => NodeError::RateLimited {
            identity: r.identity,
            per_second: r.per_second,
        },
        E::Internal(m) => NodeError::Internal(m),
    })
}

impl Codec for ForwardAnswer {
    const KIND: pb::BodyKind = pb::BodyKind::ForwardAnswer;
    const WHAT: &'static str = "forwarded write's answer";
    type Proto = pb::ForwardAnswer;
    fn to_proto(&self) -> Result<pb::ForwardAnswer, CodecError> {
        use pb::forward_answer::Result as R;
        Ok(pb::ForwardAnswer {
            result: Some(match &self.0 {
                Ok(applied) => R::Applied(applied.to_proto()?),
                Err(e) => R::Failure(failure_to(e)?),
            }),
        })
    }
    fn from_proto(proto: pb::ForwardAnswer) -> Result<Self, CodecError> {
        use pb::forward_answer::Result as R;
        match proto.result {
            Some(R::Applied(a)) => Ok(ForwardAnswer(Ok(Applied::from_proto(a)?))),
            Some(R::Failure(f)) => Ok(ForwardAnswer(Err(failure_from(f)?))),
            None => Err(CodecError::Missing {
                field: "ForwardAnswer.result",
            }),
        }
    }
}

impl Codec for IndexAnswer {
    const KIND: pb::BodyKind = pb::BodyKind::IndexAnswer;
    const WHAT: &'static str = "read index's or keep-alive's answer";
    type Proto = pb::IndexAnswer;
    fn to_proto(&self) -> Result<pb::IndexAnswer, CodecError> {
        use pb::index_answer::Result as R;
        Ok(pb::IndexAnswer {
            result: Some(match &self.0 {
                Ok(v) => R::Value(*v),
                Err(e) => R::Failure(failure_to(e)?),
            }),
        })
    }
    fn from_proto(proto: pb::IndexAnswer) -> Result<Self, CodecError> {
        use pb::index_answer::Result as R;
        match proto.result {
            Some(R::Value(v)) => Ok(IndexAnswer(Ok(v))),
            Some(R::Failure(f)) => Ok(IndexAnswer(Err(failure_from(f)?))),
            None => Err(CodecError::Missing {
                field: "IndexAnswer.result",
            }),
        }
    }
}

impl Codec for KeepAliveRequest {
    const KIND: pb::BodyKind = pb::BodyKind::KeepAliveRequest;
    const WHAT: &'static str = "forwarded keep-alive";
    type Proto = pb::KeepAliveRequest;
    fn to_proto(&self) -> Result<pb::KeepAliveRequest, CodecError> {
        Ok(pb::KeepAliveRequest { lease: self.0 })
    }
    fn from_proto(proto: pb::KeepAliveRequest) -> Result<Self, CodecError> {
        Ok(KeepAliveRequest(proto.lease))
    }
}

impl Codec for ReadIndexRequest {
    const KIND: pb::BodyKind = pb::BodyKind::ReadIndexRequest;
    const WHAT: &'static str = "read-index request";
    type Proto = pb::ReadIndexRequest;
    fn to_proto(&self) -> Result<pb::ReadIndexRequest, CodecError> {
        Ok(pb::ReadIndexRequest {})
    }
    fn from_proto(_: pb::ReadIndexRequest) -> Result<Self, CodecError> {
        Ok(ReadIndexRequest)
    }
}
