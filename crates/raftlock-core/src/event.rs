//! Events produced by applying entries, for watchers.

use serde::{Deserialize, Serialize};

use crate::types::{LeaseEnd, LeaseId, Mode, Token, WaiterId};

/// Something that happened at `revision` (the stamp of the entry that did it:
/// its index in token epoch 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub revision: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    LeaseGranted {
        lease: LeaseId,
        owner: String,
        ttl_ms: u64,
    },
    LeaseEnded {
        lease: LeaseId,
        how: LeaseEnd,
    },
    /// A hold was granted: directly, or to a queued request (`waiter`).
    Acquired {
        name: String,
        lease: LeaseId,
        owner: String,
        mode: Mode,
        token: Token,
        waiter: Option<WaiterId>,
    },
    /// A request was queued on this lock.
    Queued {
        name: String,
        lease: LeaseId,
        waiter: WaiterId,
        position: u32,
    },
    /// A queued request left the queue without being granted (cancelled, or
    /// its lease ended).
    WaitDropped {
        name: String,
        lease: LeaseId,
        waiter: WaiterId,
    },
    /// The holder released.
    Released {
        name: String,
        lease: LeaseId,
        token: Token,
    },
    /// The hold ended because its lease expired or was revoked.
    Expired {
        name: String,
        lease: LeaseId,
        token: Token,
        how: LeaseEnd,
    },
    /// An administrator removed the hold.
    ForceReleased {
        name: String,
        lease: LeaseId,
        token: Token,
        /// The identity that forced it (empty with auth off).
        by: String,
    },
    /// The lock is ungrantable until cluster time `until_ms` (lock-delay).
    Delayed {
        name: String,
        until_ms: u64,
    },
}

impl EventKind {
    /// The lock the event is about, if any (watchers filter on it).
    pub fn lock_name(&self) -> Option<&str> {
        match self {
            EventKind::LeaseGranted { .. } | EventKind::LeaseEnded { .. } => None,
            EventKind::Acquired { name, .. }
            | EventKind::Queued { name, .. }
            | EventKind::WaitDropped { name, .. }
            | EventKind::Released { name, .. }
            | EventKind::Expired { name, .. }
            | EventKind::ForceReleased { name, .. }
            | EventKind::Delayed { name, .. } => Some(name),
        }
    }
}
