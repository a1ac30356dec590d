//! Errors of a node's operations, and their gRPC form: a status code, a
//! stable machine-readable reason (google.rpc.ErrorInfo and the
//! `raftlock-reason` metadata key), and for leadership errors the leader's id
//! and address.

use std::collections::HashMap;

use raftlock_core::LockError;
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The domain of raftlock's ErrorInfo details.
pub const ERROR_DOMAIN: &str = "raftlock.dev";
/// Response metadata key carrying the reason, for clients without
/// rich-error support.
pub const REASON_KEY: &str = "raftlock-reason";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum NodeError {
    #[error(transparent)]
    Lock(#[from] LockError),

    #[error("this node is not the leader; the leader is node {leader_id} at {leader_addr}")]
    NotLeader { leader_id: u64, leader_addr: String },

    #[error("no leader is known right now (election in progress or no quorum); retry shortly")]
    NoLeader,

    #[error(
        "the call was forwarded to the leader, node {leader_id} at {leader_addr}, but its answer was lost ({detail}); it may or may not have been applied"
    )]
    OutcomeUnknown {
        leader_id: u64,
        leader_addr: String,
        detail: String,
    },

    #[error("waited {waited_ms} ms without a grant; the queued request was withdrawn{}",
        if *released_after_grant { " (it had just been granted; that grant was released)" } else { "" })]
    WaitTimeout {
        waited_ms: u64,
        released_after_grant: bool,
    },

    #[error(
        "the queued request {waiter} was dropped before it was granted (its lease ended or it was cancelled)"
    )]
    WaitDropped { waiter: u64 },

    #[error("lease {lease} is being expired by the leader and can no longer be kept alive")]
    LeaseExpiring { lease: u64 },

    #[error(
        "watch from revision {requested} is no longer available: this node keeps events from revision {oldest} on"
    )]
    Compacted { requested: u64, oldest: u64 },

    #[error(
        "the watcher fell more than {buffer} batches behind and was cut off; resume from the last revision received"
    )]
    SlowWatcher { buffer: usize },

    #[error("too many watch streams on this node (at most {max})")]
    TooManyWatchers { max: usize },

    #[error(
        "the cluster did not answer within {timeout_ms} ms; the request may or may not have been applied"
    )]
    Timeout { timeout_ms: u64 },

    #[error("the node is shutting down")]
    ShuttingDown,

    #[error("internal error: {0}")]
    Internal(String),
}

impl NodeError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        NodeError::Lock(LockError::InvalidArgument {
            field: field.to_string(),
            reason: reason.into(),
        })
    }

    /// Stable machine-readable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            NodeError::Lock(e) => e.reason(),
            NodeError::NotLeader { .. } => "NOT_LEADER",
            NodeError::NoLeader => "NO_LEADER",
            NodeError::OutcomeUnknown { .. } => "OUTCOME_UNKNOWN",
            NodeError::WaitTimeout { .. } => "WAIT_TIMEOUT",
            NodeError::WaitDropped { .. } => "WAIT_DROPPED",
            NodeError::LeaseExpiring { .. } => "LEASE_EXPIRING",
            NodeError::Compacted { .. } => "COMPACTED",
            NodeError::SlowWatcher { .. } => "SLOW_WATCHER",
            NodeError::TooManyWatchers { .. } => "LIMIT_EXCEEDED",
            NodeError::Timeout { .. } => "TIMEOUT",
            NodeError::ShuttingDown => "SHUTTING_DOWN",
            NodeError::Internal(_) => "INTERNAL",
        }
    }

    pub fn code(&self) -> Code {
        match self {
            NodeError::Lock(e) => match e {
                LockError::InvalidName { .. }
                | LockError::InvalidArgument { .. }
                | LockError::TooLarge { .. }
                | LockError::TtlOutOfRange { .. } => Code::InvalidArgument,
                LockError::LimitExceeded { .. } => Code::ResourceExhausted,
                LockError::LeaseNotFound { .. }
                | LockError::LockNotFound { .. }
                | LockError::WaiterNotFound { .. } => Code::NotFound,
                LockError::NotHolder { .. } | LockError::StaleToken { .. } => {
                    Code::PermissionDenied
                }
                LockError::Busy { .. }
                | LockError::KindConflict { .. }
                | LockError::PermitsMismatch { .. }
                | LockError::HeldInOtherMode { .. }
                | LockError::PartiallyHeld { .. }
                | LockError::AlreadyWaiting { .. } => Code::FailedPrecondition,
            },
            NodeError::NotLeader { .. }
            | NodeError::NoLeader
            | NodeError::OutcomeUnknown { .. }
            | NodeError::ShuttingDown => Code::Unavailable,
            NodeError::WaitTimeout { .. } | NodeError::Timeout { .. } => Code::DeadlineExceeded,
            NodeError::WaitDropped { .. } => Code::Aborted,
            NodeError::LeaseExpiring { .. } => Code::NotFound,
            NodeError::Compacted { .. } => Code::OutOfRange,
            NodeError::SlowWatcher { .. } | NodeError::TooManyWatchers { .. } => {
                Code::ResourceExhausted
            }
            NodeError::Internal(_) => Code::Internal,
        }
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
                m.insert("leader_id".into(), leader_id.to_string());
                m.insert("leader_addr".into(), leader_addr.clone());
            }
            NodeError::Lock(LockError::InvalidArgument { field, .. })
            | NodeError::Lock(LockError::TooLarge { field, .. }) => {
                m.insert("field".into(), field.clone());
            }
            NodeError::Lock(LockError::InvalidName { .. }) => {
                m.insert("field".into(), "name".into());
            }
            NodeError::Lock(LockError::TtlOutOfRange { .. }) => {
                m.insert("field".into(), "ttl_ms".into());
            }
            NodeError::Lock(LockError::Busy { name, .. })
            | NodeError::Lock(LockError::NotHolder { name, .. })
            | NodeError::Lock(LockError::StaleToken { name, .. }) => {
                m.insert("name".into(), name.clone());
            }
            NodeError::Compacted { oldest, .. } => {
                m.insert("oldest_revision".into(), oldest.to_string());
            }
            _ => {}
        }
        m
    }

    pub fn to_status(&self) -> Status {
        let details = ErrorDetails::with_error_info(self.reason(), ERROR_DOMAIN, self.details());
        let mut status = Status::with_error_details(self.code(), self.to_string(), details);
        if let Ok(v) = self.reason().parse() {
            status.metadata_mut().insert(REASON_KEY, v);
        }
        status
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        e.to_status()
    }
}

/// The reason of a status produced by [`NodeError::to_status`], if any.
pub fn status_reason(status: &Status) -> Option<String> {
    if let Some(info) = status.get_details_error_info() {
        return Some(info.reason);
    }
    status
        .metadata()
        .get(REASON_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_the_reason_and_the_leader() {
        let s = NodeError::NotLeader {
            leader_id: 2,
            leader_addr: "127.0.0.1:7002".into(),
        }
        .to_status();
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(status_reason(&s).as_deref(), Some("NOT_LEADER"));
        let info = s.get_details_error_info().unwrap();
        assert_eq!(info.metadata["leader_addr"], "127.0.0.1:7002");
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
}
