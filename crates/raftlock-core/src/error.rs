//! Typed errors of the state machine. They travel inside Raft responses, so
//! they are plain data (serde), and each says what a person needs to act.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::types::{LeaseId, LockKind, Mode, Token, WaiterId};

/// Which configured maximum a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    WaitersPerLock,
    HoldsPerLease,
    Leases,
    LocksPerRequest,
    PermitsPerSemaphore,
    LeasesPerIdentity,
    HoldsPerIdentity,
    WaitersPerIdentity,
    /// Checked by the node that serves the watch streams, not replicated.
    WatchersPerIdentity,
    /// Log indexes: a stamp keeps 48 bits for the index, so an entry at
    /// 2^48 or above can grant nothing (its stamp would wrap into the epoch).
    LogIndex,
    /// Token epochs: 16 bits, raised by restores, forced clusters and
    /// `--token-floor`.
    TokenEpoch,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::WaitersPerLock => "waiters per lock",
            Limit::HoldsPerLease => "holds and waits per lease",
            Limit::Leases => "leases in total",
            Limit::LocksPerRequest => "locks per request",
            Limit::PermitsPerSemaphore => "permits per semaphore",
            Limit::LeasesPerIdentity => "leases of one identity",
            Limit::HoldsPerIdentity => "names held or waited for by one identity",
            Limit::WaitersPerIdentity => "queued requests of one identity",
            Limit::WatchersPerIdentity => "watch streams of one identity on this node",
            Limit::LogIndex => "log index for a command (the 48 bits of a token's index)",
            Limit::TokenEpoch => "token epoch (the 16 high bits of a token)",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum LockError {
    #[error("invalid lock name \"{name}\": {reason}")]
    InvalidName { name: String, reason: String },

    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },

    #[error("{field} is {size} bytes, the limit is {max}")]
    TooLarge { field: String, size: u64, max: u64 },

    #[error("ttl of {ttl_ms} ms is outside the allowed range {min_ms}..={max_ms} ms")]
    TtlOutOfRange {
        ttl_ms: u64,
        min_ms: u64,
        max_ms: u64,
    },

    #[error("limit exceeded: at most {max} {limit}")]
    LimitExceeded { limit: Limit, max: u64 },

    #[error("limit exceeded for identity \"{identity}\": at most {max} {limit}")]
    IdentityLimitExceeded {
        identity: String,
        limit: Limit,
        max: u64,
    },

    #[error("lease {lease} does not exist (it expired, was revoked, or never existed)")]
    LeaseNotFound { lease: LeaseId },

    #[error("lock \"{name}\" is busy ({holders} holder(s), {waiters} waiter(s){})",
        match delayed_until_ms { Some(t) => format!(", lock-delay until cluster time {t} ms"), None => String::new() })]
    Busy {
        name: String,
        holders: u32,
        waiters: u32,
        delayed_until_ms: Option<u64>,
    },

    #[error("lease {lease} does not hold lock \"{name}\"")]
    NotHolder { name: String, lease: LeaseId },

    #[error(
        "stale fencing token {presented} for lock \"{name}\": lease {lease} holds it with token {current}"
    )]
    StaleToken {
        name: String,
        lease: LeaseId,
        presented: Token,
        current: Token,
    },

    #[error("lock \"{name}\" is a {existing:?} lock; a {requested:?} request does not fit it")]
    KindConflict {
        name: String,
        existing: LockKind,
        requested: Mode,
    },

    #[error(
        "semaphore \"{name}\" has {existing} permits; this request asked for {requested} (the first acquirer fixes the count while the lock exists)"
    )]
    PermitsMismatch {
        name: String,
        existing: u32,
        requested: u32,
    },

    #[error(
        "lease {lease} already holds lock \"{name}\" in mode {held:?}, not {requested:?} (release it first)"
    )]
    HeldInOtherMode {
        name: String,
        lease: LeaseId,
        held: Mode,
        requested: Mode,
    },

    #[error(
        "lease {lease} already holds \"{name}\" but not every lock named in this request; an atomic acquire must name either all held locks or none"
    )]
    PartiallyHeld { name: String, lease: LeaseId },

    #[error("lease {lease} is already waiting for \"{name}\" in another request ({waiter})")]
    AlreadyWaiting {
        name: String,
        lease: LeaseId,
        waiter: WaiterId,
    },

    #[error("request {waiter} of lease {lease} is not queued and holds nothing")]
    WaiterNotFound { waiter: WaiterId, lease: LeaseId },

    #[error("lock \"{name}\" does not exist")]
    LockNotFound { name: String },
}
