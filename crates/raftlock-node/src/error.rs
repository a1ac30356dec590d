//! Errors of a node's operations, and their gRPC form: each maps to one
//! [`ErrorReason`] of the API's error contract (raftlock-proto's `errors`,
//! which gives its status code), with the facts a caller acts on
//! (the leader, the field, the name) in the ErrorInfo detail.

use std::collections::HashMap;

use raftlock_core::LockError;
use raftlock_proto::errors::{self, ErrorReason, detail};
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

/// Why an operation of a node failed. Each variant is one [`ErrorReason`]
/// ([`NodeError::reason`]), which the contract maps to a status code and to
/// whether the call may have been applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum NodeError {
    /// The state machine refused the command.
    #[error(transparent)]
    Lock(#[from] LockError),

    /// This node does not lead; retry at the leader. Not applied.
    #[error("this node is not the leader; the leader is node {leader_id} at {leader_addr}")]
    NotLeader {
        /// The leader's node id.
        leader_id: u64,
        /// The leader's advertised address.
        leader_addr: String,
    },

    /// No leader is known (an election is under way or there is no quorum).
    /// Not applied.
    #[error("no leader is known right now (election in progress or no quorum); retry shortly")]
    NoLeader,

    /// The call was forwarded to the leader and its answer was lost: it may
    /// or may not have been applied.
    #[error(
        "the call was forwarded to the leader, node {leader_id} at {leader_addr}, but its answer was lost ({detail}); it may or may not have been applied"
    )]
    OutcomeUnknown {
        /// The leader's node id.
        leader_id: u64,
        /// The leader's advertised address.
        leader_addr: String,
        /// What became of the call, as the transport reported it.
        detail: String,
    },

    /// A waiting acquire timed out and its queued request was withdrawn.
    #[error("waited {waited_ms} ms without a grant; the queued request was withdrawn{}",
        if *released_after_grant { " (it had just been granted; that grant was released)" } else { "" })]
    WaitTimeout {
        /// How long the acquire waited, in milliseconds.
        waited_ms: u64,
        /// The request had been granted just before it was withdrawn, and
        /// that grant was released.
        released_after_grant: bool,
    },

    /// A queued request was dropped before it was granted (its lease ended
    /// or it was cancelled).
    #[error(
        "the queued request {waiter} was dropped before it was granted (its lease ended or it was cancelled)"
    )]
    WaitDropped {
        /// The queued request.
        waiter: u64,
    },

    /// The leader is expiring the lease, which can no longer be kept alive.
    #[error("lease {lease} is being expired by the leader and can no longer be kept alive")]
    LeaseExpiring {
        /// The lease.
        lease: u64,
    },

    /// A watch asked for events older than this node keeps.
    #[error(
        "watch from revision {requested} is no longer available: this node keeps events from revision {oldest} on"
    )]
    Compacted {
        /// The revision the watch asked to start from.
        requested: u64,
        /// The oldest revision this node can replay from.
        oldest: u64,
    },

    /// A watcher fell too far behind and was cut off.
    #[error(
        "the watcher fell more than {buffer} batches behind and was cut off; resume from the last revision received"
    )]
    SlowWatcher {
        /// Event batches a watcher may have pending.
        buffer: usize,
    },

    /// This node already serves as many watch streams as it may.
    #[error("too many watch streams on this node (at most {max})")]
    TooManyWatchers {
        /// The most watch streams this node serves.
        max: usize,
    },

    /// The cluster did not answer within the write timeout: the call may or
    /// may not have been applied.
    #[error(
        "the cluster did not answer within {timeout_ms} ms; the request may or may not have been applied"
    )]
    Timeout {
        /// The timeout that passed, in milliseconds.
        timeout_ms: u64,
    },

    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,

    /// The caller's identity may not do this. Not applied.
    #[error("permission denied to identity \"{identity}\": {why}")]
    Denied {
        /// The identity the node saw.
        identity: String,
        /// The rule it lacks (`lock on billing/x`, `ownership of lease 7`).
        missing: String,
        /// The explanation for people.
        why: String,
    },

    /// The call names no acceptable identity (auth is on). Not applied.
    #[error("{detail}")]
    Unauthenticated {
        /// What was wrong with the credentials.
        detail: String,
    },

    /// The identity sent more requests than its rate allows on this node.
    /// Not applied; retry after a pause.
    #[error(
        "identity \"{identity}\" is over its request rate ({per_second} per second on this node); retry after a pause"
    )]
    RateLimited {
        /// The identity.
        identity: String,
        /// Its rate, as the auth file gives it.
        per_second: String,
    },

    /// A bug or an unexpected answer; the text says what.
    #[error("internal error: {0}")]
    Internal(String),
}

impl NodeError {
    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        NodeError::Lock(LockError::InvalidArgument {
            field: field.to_string(),
            reason: reason.into(),
        })
    }

    /// The reason of the API's error contract.
    pub fn reason(&self) -> ErrorReason {
        match self {
            NodeError::Lock(e) => lock_reason(e),
            NodeError::NotLeader { .. } => ErrorReason::NotLeader,
            NodeError::NoLeader => ErrorReason::NoLeader,
            NodeError::OutcomeUnknown { .. } => ErrorReason::OutcomeUnknown,
            NodeError::WaitTimeout { .. } => ErrorReason::WaitTimeout,
            NodeError::WaitDropped { .. } => ErrorReason::WaitDropped,
            NodeError::LeaseExpiring { .. } => ErrorReason::LeaseExpiring,
            NodeError::Compacted { .. } => ErrorReason::Compacted,
            NodeError::SlowWatcher { .. } => ErrorReason::SlowWatcher,
            NodeError::TooManyWatchers { .. } => ErrorReason::LimitExceeded,
            NodeError::Timeout { .. } => ErrorReason::Timeout,
            NodeError::ShuttingDown => ErrorReason::ShuttingDown,
            NodeError::Internal(_) => ErrorReason::Internal,
            NodeError::Denied { .. } => ErrorReason::Denied,
            NodeError::Unauthenticated { .. } => ErrorReason::Unauthenticated,
            NodeError::RateLimited { .. } => ErrorReason::RateLimited,
        }
    }

    /// The status code, as the contract gives it for the reason.
    pub fn code(&self) -> Code {
        self.reason().code()
    }

    /// Extra facts for the ErrorInfo metadata.
    fn details(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        match self {
            NodeError::NotLeader {
                leader_id,
                leader_addr,
            }
            | NodeError::OutcomeUnknown {
                leader_id,
                leader_addr,
                ..
            } => {
                m.insert(detail::LEADER_ID.into(), leader_id.to_string());
                m.insert(detail::LEADER_ADDR.into(), leader_addr.clone());
            }
            NodeError::Lock(LockError::InvalidArgument { field, .. })
            | NodeError::Lock(LockError::TooLarge { field, .. }) => {
                m.insert(detail::FIELD.into(), field.clone());
            }
            NodeError::Lock(LockError::InvalidName { .. }) => {
                m.insert(detail::FIELD.into(), "name".into());
            }
            NodeError::Lock(LockError::TtlOutOfRange { .. }) => {
                m.insert(detail::FIELD.into(), "ttl_ms".into());
            }
            NodeError::Lock(LockError::Busy { name, .. })
            | NodeError::Lock(LockError::NotHolder { name, .. })
            | NodeError::Lock(LockError::StaleToken { name, .. }) => {
                m.insert(detail::NAME.into(), name.clone());
            }
            NodeError::Compacted { oldest, .. } => {
                m.insert(detail::OLDEST_REVISION.into(), oldest.to_string());
            }
            NodeError::Denied {
                identity, missing, ..
            } => {
                m.insert(detail::MISSING.into(), missing.clone());
                m.insert(detail::IDENTITY.into(), identity.clone());
            }
            NodeError::RateLimited { identity, .. } => {
                m.insert(detail::IDENTITY.into(), identity.clone());
            }
            _ => {}
        }
        m
    }

    /// The gRPC status of this error: the contract's code, the message,
    /// and an ErrorInfo with the reason and the facts of the error.
    pub fn to_status(&self) -> Status {
        errors::status(self.reason(), self.to_string(), self.details())
    }
}

/// The reason of a state-machine error: one per variant.
fn lock_reason(e: &LockError) -> ErrorReason {
    match e {
        LockError::InvalidName { .. } => ErrorReason::InvalidName,
        LockError::InvalidArgument { .. } => ErrorReason::InvalidArgument,
        LockError::TooLarge { .. } => ErrorReason::TooLarge,
        LockError::TtlOutOfRange { .. } => ErrorReason::TtlOutOfRange,
        LockError::LimitExceeded { .. } | LockError::IdentityLimitExceeded { .. } => {
            ErrorReason::LimitExceeded
        }
        LockError::LeaseNotFound { .. } => ErrorReason::LeaseNotFound,
        LockError::Busy { .. } => ErrorReason::LockBusy,
        LockError::NotHolder { .. } => ErrorReason::NotHolder,
        LockError::StaleToken { .. } => ErrorReason::StaleToken,
        LockError::KindConflict { .. } => ErrorReason::KindConflict,
        LockError::PermitsMismatch { .. } => ErrorReason::PermitsMismatch,
        LockError::HeldInOtherMode { .. } => ErrorReason::HeldInOtherMode,
        LockError::PartiallyHeld { .. } => ErrorReason::PartiallyHeld,
        LockError::AlreadyWaiting { .. } => ErrorReason::AlreadyWaiting,
        LockError::WaiterNotFound { .. } => ErrorReason::WaiterNotFound,
        LockError::LockNotFound { .. } => ErrorReason::LockNotFound,
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftlock_proto::errors::{Applied, REASON_KEY, Reason, Retry, classify};
    use tonic_types::StatusExt;

    #[test]
    fn statuses_carry_the_reason_and_the_leader() {
        let s = NodeError::NotLeader {
            leader_id: 2,
            leader_addr: "127.0.0.1:7002".into(),
        }
        .to_status();
        assert_eq!(s.code(), Code::Unavailable);
        let c = classify(&s);
        assert_eq!(c.reason, Reason::Known(ErrorReason::NotLeader));
        assert_eq!(c.retry, Retry::AtLeader);
        assert_eq!(c.leader.unwrap().addr, "127.0.0.1:7002");
        let info = s.get_details_error_info().unwrap();
        assert_eq!(info.metadata[detail::LEADER_ADDR], "127.0.0.1:7002");
        let s = NodeError::Lock(LockError::StaleToken {
            name: "x".into(),
            lease: 1,
            presented: 2,
            current: 3,
        })
        .to_status();
        assert_eq!(s.code(), Code::PermissionDenied);
        assert_eq!(s.metadata().get(REASON_KEY).unwrap(), "STALE_TOKEN");
    }

    #[test]
    fn state_machine_errors_keep_their_stable_reasons() {
        let e = NodeError::Lock(LockError::NotHolder {
            name: "x".into(),
            lease: 1,
        });
        assert_eq!(e.reason().name(), "NOT_HOLDER");
        let e = NodeError::Lock(LockError::Busy {
            name: "x".into(),
            holders: 1,
            waiters: 0,
            delayed_until_ms: None,
        });
        assert_eq!(e.reason().name(), "LOCK_BUSY");
        assert_eq!(e.code(), Code::FailedPrecondition);
    }

    #[test]
    fn a_forward_whose_answer_was_lost_is_unknown_but_not_leader_is_not_applied() {
        let lost = NodeError::OutcomeUnknown {
            leader_id: 1,
            leader_addr: "a:1".into(),
            detail: "reset".into(),
        };
        assert_eq!(classify(&lost.to_status()).applied, Applied::Unknown);
        let refused = NodeError::NoLeader;
        assert_eq!(classify(&refused.to_status()).applied, Applied::No);
    }
}
