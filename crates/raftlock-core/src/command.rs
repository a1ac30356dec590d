//! What goes into the Raft log, and what applying it answers.

use serde::{Deserialize, Serialize};

use crate::error::LockError;
use crate::event::Event;
use crate::limits::{IdentityLimits, Limits};
use crate::types::{Hold, LeaseEnd, LeaseId, LogIndex, Metadata, Mode, Token, WaiterId};

/// One log entry's payload. The leader stamps it with two times so that the
/// state machine never reads a clock:
/// - `cluster_ms`: the cluster clock, a monotonic millisecond count that a
///   leader continues from the highest value already in the log and advances
///   with its own monotonic clock. It only decides when a lock-delay ends.
/// - `wall_ms`: the leader's Unix time, recorded in holds for people to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub cluster_ms: u64,
    pub wall_ms: u64,
    pub command: Command,
}

impl Request {
    pub fn new(cluster_ms: u64, wall_ms: u64, command: Command) -> Self {
        Request {
            cluster_ms,
            wall_ms,
            command,
        }
    }
}

/// One lock to acquire, in a (possibly multi-lock) acquire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockSpec {
    pub name: String,
    pub mode: Mode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Start a lease. Its id is the index of this entry. `identity` is the
    /// authenticated caller that grants it (empty with auth off): only that
    /// identity may use the lease. `quota` is that identity's limits, from
    /// the auth file of the node that took the call, checked here so that
    /// concurrent grants cannot exceed them.
    GrantLease {
        ttl_ms: u64,
        owner: String,
        identity: String,
        quota: IdentityLimits,
    },
    /// End a lease at its client's request: release its holds, drop its waits.
    RevokeLease { lease: LeaseId },
    /// End leases whose keep-alives stopped, as decided by the leader. Ids that
    /// no longer exist are skipped (a retried proposal is harmless).
    ExpireLeases { leases: Vec<LeaseId> },
    /// Acquire one or several locks, all or none, for a lease.
    /// With `wait`, a request that cannot be granted now is queued on every
    /// named lock; without it, it fails with `Busy`.
    Acquire {
        lease: LeaseId,
        locks: Vec<LockSpec>,
        wait: bool,
        reason: String,
        metadata: Metadata,
        /// If the lease expires while holding, keep these locks ungrantable
        /// for this long (Chubby/Consul lock-delay). 0 for none.
        lock_delay_ms: u64,
        /// The limits of the identity the lease belongs to (holds and
        /// waiters over all its leases), as the node that took the call
        /// knows them.
        quota: IdentityLimits,
    },
    /// Release the named holds of a lease, all granted with `token`.
    Release {
        lease: LeaseId,
        token: Token,
        names: Vec<String>,
    },
    /// Record an extension of a hold; optionally give its lease a new ttl.
    /// The leader restarts the lease's deadline when it applies this.
    Extend {
        lease: LeaseId,
        name: String,
        token: Token,
        ttl_ms: Option<u64>,
    },
    /// Withdraw a queued request. If it was granted meanwhile, the holds it
    /// was granted (and only those) are released instead. `as_of` is the
    /// index of the Acquire entry whose caller gave up; if a later Acquire
    /// (a retry by the same lease) has since found the request queued or
    /// been answered with its holds, the cancel is stale and changes
    /// nothing (`CancelSuperseded`).
    CancelWait {
        lease: LeaseId,
        waiter: WaiterId,
        as_of: LogIndex,
    },
    /// Administrative: remove holds on a lock regardless of token; all of
    /// them, or only the given lease's.
    ForceRelease {
        name: String,
        lease: Option<LeaseId>,
        /// The identity that forced it (empty with auth off), for the
        /// watch stream and the audit trail.
        by: String,
    },
    /// Nothing but the passing of cluster time: lets lock-delays that have
    /// ended hand their locks to waiters.
    Tick,
    /// Administrative: change the limits.
    SetLimits { limits: Limits },
    /// The leader's: name the cluster. Applied only while the cluster has
    /// no id (the first leader's proposal wins; later ones change nothing
    /// and are answered with the id in force).
    InitCluster { cluster_id: String },
    /// The leader's: remember which store node `node` runs on (a random id
    /// made with its data directory) and where its clients reach it. A
    /// node already recorded with another store keeps its record (its data
    /// was wiped or replaced: it must come back under a new id); the
    /// answer says so.
    RecordMember {
        node: u64,
        store_id: String,
        client_addr: String,
    },
    /// Independent client commands in one entry, applied in order, each
    /// answered as if alone (see `batch.rs` for what may share an entry).
    /// Holds granted by the entry share its stamp as their token.
    Batch { commands: Vec<Command> },
    /// Administrative: drop the cluster's record of node `node` (its store
    /// and client address), so that the id can come back with a new store
    /// (a node whose data was lost, re-added under its old id). The store
    /// refuses it while `node` is a voter or learner of the membership in
    /// force where it is applied. (New variants go last: bincode numbers
    /// variants by position.)
    ForgetMember { node: u64 },
    /// The leader's: raise the token epoch to at least `at_least` (never
    /// lower it). Takes effect for the whole entry that carries it, so
    /// every stamp from this entry on is above every stamp of a lower
    /// epoch: what `--token-floor` and a restored backup rely on.
    RaiseTokenEpoch { at_least: u16 },
    /// Written offline by `raftlock serve --force-new-cluster` into a
    /// surviving member's own log (never proposed): the cluster becomes a
    /// new one, `cluster_id`, whose only recorded member is `node` (its
    /// store and client address), and the token epoch goes up by one for
    /// this whole entry, so every stamp from here on is above every stamp
    /// the old cluster handed out, on any node, whatever index it reached.
    ForceNewCluster {
        cluster_id: String,
        node: u64,
        store_id: String,
        client_addr: String,
    },
}

impl Command {
    /// The token epoch of an entry carrying this command, given the epoch
    /// before it: a raise takes effect for its whole entry, before anything
    /// in it is stamped. `None`: a force past the last epoch (65535), which
    /// is refused whole.
    pub fn token_epoch_after(&self, epoch: u16) -> Option<u16> {
        match self {
            Command::RaiseTokenEpoch { at_least } => Some(epoch.max(*at_least)),
            Command::ForceNewCluster { .. } => epoch.checked_add(1),
            _ => Some(epoch),
        }
    }

    /// Whether the command names the cluster or records its members (its
    /// id, and each member's store and address), rather than acting on
    /// locks, leases or limits. `--force-new-cluster` must not carry such a
    /// command of the old cluster into the new one. Every variant is listed:
    /// a new one must be classified.
    pub fn is_about_the_cluster(&self) -> bool {
        match self {
            Command::InitCluster { .. }
            | Command::RecordMember { .. }
            | Command::ForgetMember { .. }
            | Command::ForceNewCluster { .. } => true,
            Command::GrantLease { .. }
            | Command::RevokeLease { .. }
            | Command::ExpireLeases { .. }
            | Command::Acquire { .. }
            | Command::Release { .. }
            | Command::Extend { .. }
            | Command::CancelWait { .. }
            | Command::ForceRelease { .. }
            | Command::Tick
            | Command::SetLimits { .. }
            | Command::Batch { .. }
            | Command::RaiseTokenEpoch { .. } => false,
        }
    }
}

/// A hold as reported to its acquirer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    pub name: String,
    pub mode: Mode,
    pub token: Token,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    LeaseGranted {
        lease: LeaseId,
        ttl_ms: u64,
    },
    LeaseEnded {
        lease: LeaseId,
        how: LeaseEnd,
        released: Vec<Granted>,
    },
    LeasesExpired {
        leases: Vec<LeaseId>,
    },
    /// All requested locks are held, with one token. `retry` is true when the
    /// lease already held them all (an idempotent retry): nothing changed.
    Acquired {
        token: Token,
        holds: Vec<Granted>,
        retry: bool,
    },
    /// The request waits in the queues of its locks. `position` is its place in
    /// the longest of those queues (0 = first). `retry` when it already waited.
    Queued {
        waiter: WaiterId,
        position: u32,
        retry: bool,
    },
    Released {
        names: Vec<String>,
    },
    Extended {
        lease: LeaseId,
        ttl_ms: u64,
        extensions: u64,
    },
    WaitCancelled {
        waiter: WaiterId,
    },
    /// The cancel was stale: a retry by the same lease, applied after the
    /// Acquire the cancel was issued for, now owns the request (still
    /// queued, or granted and handed to that retry). Nothing changed.
    CancelSuperseded {
        waiter: WaiterId,
    },
    /// The cancel came after the request was granted: the holds it got were
    /// released (the requester never learned it held them).
    ReleasedAfterGrant {
        waiter: WaiterId,
        released: Vec<Granted>,
    },
    ForceReleased {
        released: Vec<Hold>,
    },
    Ticked,
    LimitsSet,
    /// The cluster's id after `InitCluster` (the proposed one, or the one
    /// already in force).
    ClusterInit {
        cluster_id: String,
    },
    /// `RecordMember`: `conflict` is the store already recorded for the
    /// node when it differs from the proposed one (nothing changed then).
    MemberRecorded {
        conflict: Option<String>,
    },
    /// The answers of a `Batch`'s commands, in order.
    Batch {
        results: Vec<Result<Response, LockError>>,
    },
    /// Entries that are not commands (Raft blanks and membership changes).
    Nothing,
    /// `ForgetMember`: whether the node had a record (forgetting an id the
    /// cluster never recorded changes nothing and is not an error).
    MemberForgotten {
        existed: bool,
    },
    /// `RaiseTokenEpoch`: the epoch in force after it.
    TokenEpochRaised {
        epoch: u16,
    },
    /// `ForceNewCluster`: the new cluster's id and token epoch.
    ClusterForced {
        cluster_id: String,
        epoch: u16,
    },
}

/// The outcome of applying one entry: the reply to its proposer, and the
/// events it caused (for watchers), all at `revision`, the entry's stamp
/// (`token_epoch << 48 | index`; equal to the index in epoch 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: u64,
    pub result: Result<Response, LockError>,
    pub events: Vec<Event>,
    pub revision: u64,
}
