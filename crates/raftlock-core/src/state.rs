//! The lock state machine: `State::apply` takes one log entry and returns the
//! reply and the events. No clock, no disk, no network: applying the same log
//! gives the same state, byte for byte, on every replica.
//!
//! Rules (docs/safety.md explains them in plain words):
//! - A command that fails changes nothing but `last_applied` and the cluster
//!   clock (and lets lock-delays that ended hand their locks over).
//! - Fencing token of a hold = stamp of the entry that granted it:
//!   `token_epoch << 48 | index` (see [`stamp`]). Lease ids, waiter ids and
//!   event revisions are stamps too; `requested_at` and `as_of` stay raw
//!   indexes (they are compared with each other only).
//! - Every lock's queue is in log order. A waiter is granted when it is in the
//!   grantable head run of *every* lock it names, all at once. The oldest
//!   waiter is first in all of its queues, so it waits only for holders,
//!   never for another waiter: no deadlock, no starvation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::batch::BatchPlan;
use crate::command::{Applied, Command, Granted, LockSpec, Request, Response};
use crate::error::{Limit, LockError};
use crate::event::{Event, EventKind};
use crate::limits::{IdentityLimits, Limits, MAX_IDENTITY_BYTES};
use crate::types::{
    ClusterIdentity, Counters, Hold, Lease, LeaseEnd, LeaseId, Lock, LockKind, LogIndex,
    MemberRecord, Metadata, Mode, Token, Waiter, WaiterId,
};

/// The whole replicated state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Index of the last entry applied (0 before the first).
    last_applied: u64,
    /// Highest cluster-clock value seen in an applied entry.
    cluster_ms: u64,
    limits: Limits,
    counters: Counters,
    cluster: ClusterIdentity,
    leases: BTreeMap<LeaseId, Lease>,
    /// By name. The key is the lock's own `name` (one allocation, shared
    /// with its holders' `Lease::holds`), and the lock is boxed: a B-tree
    /// node has 11 slots and about a third of them are empty, so a slot is
    /// 24 bytes, not the whole lock (issue 18). A clone of the state (the
    /// snapshot builder's) shares the names and owners instead of copying
    /// them. Serialized as the `BTreeMap<String, Lock>` it was (same
    /// bytes).
    locks: BTreeMap<Arc<str>, Box<Lock>>,
    waiters: BTreeMap<WaiterId, Waiter>,
    /// The high 16 bits of every stamp. Raised (never lowered) by
    /// `RaiseTokenEpoch` and by a restore from a backup, so that tokens and
    /// ids stay above those of a cluster whose log indexes this one reuses.
    /// Last of the serialized fields: bincode encodes fields in order.
    token_epoch: u16,
    /// Derived index of pending lock-delays: (until, name). Rebuilt on load.
    #[serde(skip)]
    delays: BTreeSet<(u64, String)>,
    /// Derived index of the leases of each identity (empty identities,
    /// granted with auth off, are left out), so an identity's usage is
    /// counted over its own leases only. Rebuilt on load.
    #[serde(skip)]
    by_identity: BTreeMap<String, BTreeSet<LeaseId>>,
    /// Records changed since the last `take_dirty` (for incremental persistence).
    #[serde(skip)]
    dirty: Dirty,
}

impl PartialEq for State {
    /// Equality of the replicated content (derived indexes and the dirty set
    /// are not part of it).
    fn eq(&self, other: &Self) -> bool {
        self.last_applied == other.last_applied
            && self.cluster_ms == other.cluster_ms
            && self.limits == other.limits
            && self.counters == other.counters
            && self.cluster == other.cluster
            && self.leases == other.leases
            && self.locks == other.locks
            && self.waiters == other.waiters
            && self.token_epoch == other.token_epoch
    }
}
impl Eq for State {}

/// The small part of the state that changes with every entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub last_applied: u64,
    pub cluster_ms: u64,
    pub limits: Limits,
    pub counters: Counters,
    pub cluster: ClusterIdentity,
    pub token_epoch: u16,
}

/// What one identity uses now, over all its leases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdentityUsage {
    pub leases: usize,
    /// Names held or waited for, together.
    pub holds: usize,
    /// Queued requests.
    pub waiters: usize,
}

/// Names of the records changed since the last `take_dirty`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirty {
    pub locks: BTreeSet<String>,
    pub leases: BTreeSet<LeaseId>,
    pub waiters: BTreeSet<WaiterId>,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty() && self.leases.is_empty() && self.waiters.is_empty()
    }
}

/// One stored record of the state, for incremental persistence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    Lock(Lock),
    Lease(Lease),
    Waiter(Waiter),
}

/// Index bits of a stamp: entries at `MAX_INDEX` or above grant nothing.
pub const MAX_INDEX: u64 = 1 << 48;

/// The stamp of the entry at `index` in `epoch`: what tokens, lease ids,
/// waiter ids and revisions are. Epoch 0 gives the index itself, so a
/// cluster that never raised its epoch hands out the values it always did.
/// For `index < MAX_INDEX` stamps order as (epoch, index) do.
pub fn stamp(epoch: u16, index: u64) -> u64 {
    (u64::from(epoch) << 48) | (index & (MAX_INDEX - 1))
}

/// The epoch whose every stamp is above `floor`: `(floor >> 48) + 1`, or
/// `None` if no 16-bit epoch is (a floor in epoch 65535).
pub fn epoch_above(floor: u64) -> Option<u16> {
    u16::try_from((floor >> 48) + 1).ok()
}

/// Per-entry scratch: the entry's index, stamp and wall time, and what it
/// produced.
struct Cx {
    /// The raw log index (for `requested_at`, compared with `as_of`).
    index: u64,
    /// The entry's stamp (tokens, lease ids, waiter ids, revisions).
    stamp: u64,
    wall_ms: u64,
    events: Vec<Event>,
    /// Locks whose holders or queues changed: candidates for granting.
    touched: BTreeSet<String>,
}

impl Cx {
    fn emit(&mut self, kind: EventKind) {
        self.events.push(Event {
            revision: self.stamp,
            kind,
        });
    }
}

/// Errors decoding stored or transferred state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("undecodable {what}: {reason}")]
    Undecodable { what: &'static str, reason: String },
    #[error("state violates an invariant: {0}")]
    Invariant(String),
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encode any serde value with the encoding used for state and log payloads.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail: no I/O, no size limit.
    bincode::serde::encode_to_vec(value, bincode_config())
        .unwrap_or_else(|e| unreachable!("encoding to a Vec failed: {e}"))
}

/// Decode a value written by [`encode`]; trailing bytes are an error.
///
/// The input's length bounds what the decode may allocate (see
/// [`decode_bounded`]): a length prefix claiming more than the input could
/// hold is an error, never an allocation of that size.
pub fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    let (value, read) = decode_bounded(bytes).map_err(|e| DecodeError::Undecodable {
        what,
        reason: e.to_string(),
    })?;
    if read != bytes.len() {
        return Err(DecodeError::Undecodable {
            what,
            reason: format!("{} trailing bytes", bytes.len() - read),
        });
    }
    Ok(value)
}

/// How many bytes of claims bincode counts, at most, per input byte: each
/// primitive claims its in-memory size (a u128 in one varint byte claims
/// 16), each string or byte buffer its length, which it then reads.
const CLAIMS_PER_INPUT_BYTE: usize = 16;

/// `decode_from_slice` with bincode's byte limit set from the input's
/// length. bincode 2 without a limit allocates a string's or byte buffer's
/// length prefix before reading it (`vec![0u8; len]`), so 20 bytes on the
/// wire claiming a 2^40-byte String would abort the whole process on the
/// failed allocation. A valid encoding claims at most
/// [`CLAIMS_PER_INPUT_BYTE`] per byte of input, so a limit of that much
/// never refuses one, and anything claiming more is `LimitExceeded` before
/// it allocates. The limit is a const generic, hence the steps (each at
/// most 8 times the one below, so a hostile input gets at most 128 times
/// its size allocated, briefly, before the read fails).
fn decode_bounded<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    let need = bytes.len().saturating_mul(CLAIMS_PER_INPUT_BYTE);
    macro_rules! first_limit_above_need {
        ($($bits:literal),*) => {
            $(
                if need <= 1usize << $bits {
                    return bincode::serde::decode_from_slice(
                        bytes,
                        bincode_config().with_limit::<{ 1usize << $bits }>(),
                    );
                }
            )*
        };
    }
    first_limit_above_need!(16, 20, 24, 27, 30, 33, 36, 40);
    // More than 64 GiB of input: nothing we send or store is that big.
    Err(bincode::error::DecodeError::LimitExceeded)
}

impl State {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_limits(limits: Limits) -> Result<Self, LockError> {
        limits.validate()?;
        Ok(State {
            limits,
            ..Self::default()
        })
    }

    // ----- reading -------------------------------------------------------

    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }
    pub fn cluster_ms(&self) -> u64 {
        self.cluster_ms
    }
    /// The epoch of the stamps granted from now on.
    pub fn token_epoch(&self) -> u16 {
        self.token_epoch
    }
    /// The stamp of `index` in the current epoch.
    pub fn stamp(&self, index: u64) -> u64 {
        stamp(self.token_epoch, index)
    }
    /// The stamp of the last applied entry: no token, lease id, waiter id
    /// or revision handed out so far is above it. What to pass as
    /// `--token-floor` to a cluster that replaces this one.
    pub fn token_high_water(&self) -> u64 {
        // Entries at MAX_INDEX and above grant nothing.
        self.stamp(self.last_applied.min(MAX_INDEX - 1))
    }
    /// The cluster's id and what it knows of each node.
    pub fn cluster(&self) -> &ClusterIdentity {
        &self.cluster
    }
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    pub fn lease(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id)
    }
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }
    pub fn lock_count(&self) -> usize {
        self.locks.len()
    }
    pub fn waiter_count(&self) -> usize {
        self.waiters.len()
    }
    pub fn lock(&self, name: &str) -> Option<&Lock> {
        self.locks.get(name).map(|l| &**l)
    }
    pub fn waiter(&self, id: WaiterId) -> Option<&Waiter> {
        self.waiters.get(&id)
    }
    /// Every queued request, by id (a codec walks the whole state with it).
    pub fn waiters(&self) -> impl Iterator<Item = &Waiter> {
        self.waiters.values()
    }
    /// Every lock, in name order.
    pub fn locks(&self) -> impl Iterator<Item = &Lock> {
        self.locks.values().map(|l| &**l)
    }
    /// Locks whose name starts with `prefix`, in name order.
    pub fn locks_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Lock> {
        self.locks
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(name, _)| name.starts_with(prefix))
            .map(|(_, lock)| &**lock)
    }
    /// The leases granted by `identity`.
    pub fn leases_of<'a>(&'a self, identity: &str) -> impl Iterator<Item = &'a Lease> + 'a {
        self.by_identity
            .get(identity)
            .into_iter()
            .flatten()
            .filter_map(|id| self.leases.get(id))
    }
    /// What `identity` uses now (leases, names held or waited for, queued
    /// requests), counted over its own leases.
    pub fn identity_usage(&self, identity: &str) -> IdentityUsage {
        let mut usage = IdentityUsage::default();
        for lease in self.leases_of(identity) {
            usage.leases += 1;
            usage.holds += lease.holds.len();
            usage.waiters += lease.waits.len();
            usage.holds += lease
                .waits
                .iter()
                .filter_map(|w| self.waiters.get(w))
                .map(|w| w.locks.len())
                .sum::<usize>();
        }
        usage
    }
    /// The earliest cluster time at which a lock-delay ends, so the leader
    /// knows when to propose a `Tick`.
    pub fn next_delay_end_ms(&self) -> Option<u64> {
        self.delays.first().map(|(until, _)| *until)
    }
    pub fn header(&self) -> Header {
        Header {
            last_applied: self.last_applied,
            cluster_ms: self.cluster_ms,
            limits: self.limits.clone(),
            counters: self.counters.clone(),
            cluster: self.cluster.clone(),
            token_epoch: self.token_epoch,
        }
    }

    // ----- recovery ------------------------------------------------------

    /// Makes this state (decoded from a backup) the first state of a NEW
    /// cluster: its id becomes `cluster_id`, it knows no node's store yet
    /// (the new nodes record themselves), and its token epoch is raised to
    /// at least `min_epoch`. Holds, leases and waiters keep their tokens and
    /// ids; every stamp granted from here on is above every stamp of the
    /// old cluster's epochs below `min_epoch`, whatever index it reached.
    /// Offline only (restore): a running cluster raises its epoch through
    /// `Command::RaiseTokenEpoch`.
    pub fn into_new_cluster(mut self, cluster_id: String, min_epoch: u16) -> State {
        self.cluster = ClusterIdentity {
            id: cluster_id,
            members: BTreeMap::new(),
        };
        self.token_epoch = self.token_epoch.max(min_epoch);
        self
    }

    // ----- persistence ---------------------------------------------------

    /// The records changed since the last call; the caller stores each (or
    /// deletes it when `record_bytes` returns `None`) with the header.
    pub fn take_dirty(&mut self) -> Dirty {
        std::mem::take(&mut self.dirty)
    }

    pub fn lock_bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.locks.get(name).map(|l| encode(&RecordRef::Lock(l)))
    }
    pub fn lease_bytes(&self, id: LeaseId) -> Option<Vec<u8>> {
        self.leases.get(&id).map(|l| encode(&RecordRef::Lease(l)))
    }
    pub fn waiter_bytes(&self, id: WaiterId) -> Option<Vec<u8>> {
        self.waiters.get(&id).map(|w| encode(&RecordRef::Waiter(w)))
    }

    /// Rebuild a state from its header and all its records (as stored by the
    /// incremental writer), and check its invariants.
    pub fn from_records(
        header: Header,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<Self, DecodeError> {
        let mut state = State {
            last_applied: header.last_applied,
            cluster_ms: header.cluster_ms,
            limits: header.limits,
            counters: header.counters,
            cluster: header.cluster,
            token_epoch: header.token_epoch,
            ..State::default()
        };
        for record in records {
            match record {
                Record::Lock(l) => {
                    state.locks.insert(l.name.clone(), Box::new(l));
                }
                Record::Lease(l) => {
                    state.leases.insert(l.id, l);
                }
                Record::Waiter(w) => {
                    state.waiters.insert(w.id, w);
                }
            }
        }
        state.rebuild_derived();
        check_invariants(&state).map_err(DecodeError::Invariant)?;
        Ok(state)
    }

    /// The whole state as bytes (snapshots). Equal states give equal bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut state: State = decode("state", bytes)?;
        state.rebuild_derived();
        check_invariants(&state).map_err(DecodeError::Invariant)?;
        Ok(state)
    }

    fn rebuild_derived(&mut self) {
        self.share_strings();
        self.delays = self
            .locks
            .values()
            .filter_map(|l| l.delayed_until_ms.map(|t| (t, l.name.to_string())))
            .collect();
        self.by_identity = BTreeMap::new();
        for lease in self.leases.values() {
            if !lease.identity.is_empty() {
                self.by_identity
                    .entry(lease.identity.clone())
                    .or_default()
                    .insert(lease.id);
            }
        }
        self.dirty = Dirty::default();
    }

    /// Makes the strings a loaded state repeats one allocation each, as
    /// granting makes them (decoding gives every copy its own): each lock's
    /// key and `name` and the names in its holders' `Lease::holds`, and
    /// each hold's `owner` and its lease's.
    fn share_strings(&mut self) {
        for (key, lock) in self.locks.iter_mut() {
            // Equal to the key (`from_records` files each lock under its
            // name; a decoded map whose key differs is refused by
            // check_invariants, which compares them by value).
            if **key == *lock.name {
                lock.name = key.clone();
            }
            for hold in lock.holds.values_mut() {
                if let Some(lease) = self.leases.get(&hold.lease)
                    && lease.owner == hold.owner
                {
                    hold.owner = lease.owner.clone();
                }
            }
        }
        for lease in self.leases.values_mut() {
            lease.holds = std::mem::take(&mut lease.holds)
                .into_iter()
                .map(|name| {
                    self.locks
                        .get_key_value(&*name)
                        .map_or(name, |(key, _)| key.clone())
                })
                .collect();
        }
    }

    // ----- applying ------------------------------------------------------

    /// Apply an entry that carries no command (a Raft blank or membership
    /// entry): only the applied index moves.
    pub fn apply_noop(&mut self, index: u64) -> Applied {
        if let Err(e) = self.check_index(index) {
            return Applied {
                index,
                result: Err(e),
                events: Vec::new(),
                revision: self.stamp(index),
            };
        }
        self.last_applied = index;
        Applied {
            index,
            result: Ok(Response::Nothing),
            events: Vec::new(),
            revision: self.stamp(index),
        }
    }

    /// Apply the command of the entry at `index`.
    pub fn apply(&mut self, index: u64, request: &Request) -> Applied {
        if let Err(e) = self.check_index(index) {
            return Applied {
                index,
                result: Err(e),
                events: Vec::new(),
                revision: self.stamp(index),
            };
        }
        self.last_applied = index;
        self.cluster_ms = self.cluster_ms.max(request.cluster_ms);
        if index >= MAX_INDEX {
            // Its stamp would wrap into the epoch bits: a token below
            // earlier ones. Refuse the command (the entry is still applied,
            // as Raft requires); a restore into a new cluster restarts the
            // index.
            self.counters.rejected += 1;
            return Applied {
                index,
                result: Err(LockError::LimitExceeded {
                    limit: Limit::LogIndex,
                    max: MAX_INDEX - 1,
                }),
                events: Vec::new(),
                revision: self.stamp(index),
            };
        }
        // A raise takes effect for the whole entry that carries it, before
        // anything in it is stamped (a raise never shares an entry: it is
        // not batchable).
        match request.command.token_epoch_after(self.token_epoch) {
            Some(epoch) => self.token_epoch = epoch,
            None => {
                // 65535 raises: refused whole (the node checks this before
                // forcing, so it never writes such an entry).
                self.counters.rejected += 1;
                return Applied {
                    index,
                    result: Err(LockError::LimitExceeded {
                        limit: Limit::TokenEpoch,
                        max: u64::from(u16::MAX),
                    }),
                    events: Vec::new(),
                    revision: self.stamp(index),
                };
            }
        }
        let mut cx = Cx {
            index,
            stamp: self.stamp(index),
            wall_ms: request.wall_ms,
            events: Vec::new(),
            touched: BTreeSet::new(),
        };
        // Lock-delays that ended make their locks grantable again. Waiters are
        // granted only once, after the command: every grant of an entry comes
        // after every release of that entry, so no hold is granted and taken
        // back within one entry, and an exclusive token stays strictly above
        // every earlier token on its name. Queued requests still keep their
        // turn: a newcomer in the command is granted only behind them.
        self.lift_ended_delays(&mut cx);

        let result = self.apply_command(&request.command, &mut cx);
        self.grant_waiters(&mut cx);
        if result.is_err() {
            self.counters.rejected += 1;
        }
        debug_assert_eq!(check_invariants(self), Ok(()), "after applying {index}");
        Applied {
            index,
            result,
            events: cx.events,
            revision: cx.stamp,
        }
    }

    /// One command's effect within an entry (the entry's grant pass comes
    /// after). A batch's commands come here one by one.
    fn apply_command(&mut self, command: &Command, cx: &mut Cx) -> Result<Response, LockError> {
        match command {
            Command::GrantLease {
                ttl_ms,
                owner,
                identity,
                quota,
            } => self.grant_lease(*ttl_ms, owner, identity, quota, cx),
            Command::RevokeLease { lease } => self.revoke_lease(*lease, cx),
            Command::ExpireLeases { leases } => Ok(self.expire_leases(leases, cx)),
            Command::Acquire {
                lease,
                locks,
                wait,
                reason,
                metadata,
                lock_delay_ms,
                quota,
            } => self.acquire(
                AcquireArgs {
                    lease: *lease,
                    locks,
                    wait: *wait,
                    reason,
                    metadata,
                    lock_delay_ms: *lock_delay_ms,
                    quota,
                },
                cx,
            ),
            Command::Release {
                lease,
                token,
                names,
            } => self.release(*lease, *token, names, cx),
            Command::Extend {
                lease,
                name,
                token,
                ttl_ms,
            } => self.extend(*lease, name, *token, *ttl_ms),
            Command::CancelWait {
                lease,
                waiter,
                as_of,
            } => self.cancel_wait(*lease, *waiter, *as_of, cx),
            Command::ForceRelease { name, lease, by } => self.force_release(name, *lease, by, cx),
            Command::Tick => Ok(Response::Ticked),
            Command::SetLimits { limits } => limits.validate().map(|()| {
                self.limits = limits.clone();
                Response::LimitsSet
            }),
            Command::InitCluster { cluster_id } => {
                if self.cluster.id.is_empty() {
                    self.cluster.id = cluster_id.clone();
                }
                Ok(Response::ClusterInit {
                    cluster_id: self.cluster.id.clone(),
                })
            }
            Command::RecordMember {
                node,
                store_id,
                client_addr,
            } => {
                let record = self.cluster.members.entry(*node).or_default();
                if !record.store_id.is_empty() && record.store_id != *store_id {
                    return Ok(Response::MemberRecorded {
                        conflict: Some(record.store_id.clone()),
                    });
                }
                record.store_id = store_id.clone();
                record.client_addr = client_addr.clone();
                Ok(Response::MemberRecorded { conflict: None })
            }
            Command::ForgetMember { node } => Ok(Response::MemberForgotten {
                existed: self.cluster.members.remove(node).is_some(),
            }),
            // Applied in `apply`, before the entry's stamp was taken.
            Command::RaiseTokenEpoch { .. } => Ok(Response::TokenEpochRaised {
                epoch: self.token_epoch,
            }),
            // The epoch was raised in `apply`, before the entry's stamp.
            Command::ForceNewCluster {
                cluster_id,
                node,
                store_id,
                client_addr,
            } => {
                self.cluster = ClusterIdentity {
                    id: cluster_id.clone(),
                    members: BTreeMap::from([(
                        *node,
                        MemberRecord {
                            store_id: store_id.clone(),
                            client_addr: client_addr.clone(),
                        },
                    )]),
                };
                Ok(Response::ClusterForced {
                    cluster_id: cluster_id.clone(),
                    epoch: self.token_epoch,
                })
            }
            Command::Batch { commands } => {
                BatchPlan::check(commands).map_err(|reason| LockError::InvalidArgument {
                    field: "batch".to_string(),
                    reason,
                })?;
                let results = commands
                    .iter()
                    .map(|c| {
                        let r = self.apply_command(c, cx);
                        if r.is_err() {
                            self.counters.rejected += 1;
                        }
                        r
                    })
                    .collect();
                Ok(Response::Batch { results })
            }
        }
    }

    fn check_index(&self, index: u64) -> Result<(), LockError> {
        if index <= self.last_applied {
            return Err(LockError::InvalidArgument {
                field: "index".to_string(),
                reason: format!(
                    "entry {index} is at or below the last applied index {}",
                    self.last_applied
                ),
            });
        }
        Ok(())
    }

    // ----- leases --------------------------------------------------------

    fn grant_lease(
        &mut self,
        ttl_ms: u64,
        owner: &str,
        identity: &str,
        quota: &IdentityLimits,
        cx: &mut Cx,
    ) -> Result<Response, LockError> {
        self.limits.check_ttl(ttl_ms)?;
        self.limits.check_text("owner", owner)?;
        if identity.len() > MAX_IDENTITY_BYTES {
            return Err(LockError::TooLarge {
                field: "identity".to_string(),
                size: identity.len() as u64,
                max: MAX_IDENTITY_BYTES as u64,
            });
        }
        if self.leases.len() >= self.limits.max_leases as usize {
            return Err(LockError::LimitExceeded {
                limit: Limit::Leases,
                max: self.limits.max_leases as u64,
            });
        }
        if let Some(max) = quota.max_leases
            && self.identity_usage(identity).leases >= max as usize
        {
            return Err(LockError::IdentityLimitExceeded {
                identity: identity.to_string(),
                limit: Limit::LeasesPerIdentity,
                max: max as u64,
            });
        }
        let id = cx.stamp;
        if !identity.is_empty() {
            self.by_identity
                .entry(identity.to_string())
                .or_default()
                .insert(id);
        }
        self.leases.insert(
            id,
            Lease {
                id,
                owner: Arc::from(owner),
                identity: identity.to_string(),
                ttl_ms,
                granted_at_wall_ms: cx.wall_ms,
                holds: BTreeSet::new(),
                waits: BTreeSet::new(),
            },
        );
        self.dirty.leases.insert(id);
        self.counters.leases_granted += 1;
        cx.emit(EventKind::LeaseGranted {
            lease: id,
            owner: owner.to_string(),
            ttl_ms,
        });
        Ok(Response::LeaseGranted { lease: id, ttl_ms })
    }

    fn revoke_lease(&mut self, lease: LeaseId, cx: &mut Cx) -> Result<Response, LockError> {
        if !self.leases.contains_key(&lease) {
            return Err(LockError::LeaseNotFound { lease });
        }
        let released = self.end_lease(lease, LeaseEnd::Revoked, cx);
        Ok(Response::LeaseEnded {
            lease,
            how: LeaseEnd::Revoked,
            released,
        })
    }

    fn expire_leases(&mut self, leases: &[LeaseId], cx: &mut Cx) -> Response {
        let mut expired = Vec::new();
        for &lease in leases {
            // Skips ids already gone, including duplicates in the batch.
            if self.leases.contains_key(&lease) {
                self.end_lease(lease, LeaseEnd::Expired, cx);
                expired.push(lease);
            }
        }
        Response::LeasesExpired { leases: expired }
    }

    /// Release every hold of the lease and drop its waits. The freed locks
    /// are granted to their waiters after the whole command.
    fn end_lease(&mut self, id: LeaseId, how: LeaseEnd, cx: &mut Cx) -> Vec<Granted> {
        let Some(lease) = self.leases.remove(&id) else {
            return Vec::new();
        };
        if let Some(ids) = self.by_identity.get_mut(&lease.identity) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_identity.remove(&lease.identity);
            }
        }
        self.dirty.leases.insert(id);
        for waiter in &lease.waits {
            self.drop_waiter(*waiter, cx);
        }
        let mut released = Vec::new();
        for name in &lease.holds {
            let Some(hold) = self.remove_hold(name, id) else {
                continue;
            };
            cx.emit(EventKind::Expired {
                name: name.to_string(),
                lease: id,
                token: hold.token,
                how,
            });
            if how == LeaseEnd::Expired && hold.lock_delay_ms > 0 {
                self.delay_lock(name, self.cluster_ms + hold.lock_delay_ms, cx);
            }
            released.push(Granted {
                name: name.to_string(),
                mode: hold.mode,
                token: hold.token,
            });
            cx.touched.insert(name.to_string());
        }
        match how {
            LeaseEnd::Revoked => self.counters.leases_revoked += 1,
            LeaseEnd::Expired => self.counters.leases_expired += 1,
        }
        cx.emit(EventKind::LeaseEnded { lease: id, how });
        released
    }

    // ----- acquire -------------------------------------------------------

    fn acquire(&mut self, args: AcquireArgs<'_>, cx: &mut Cx) -> Result<Response, LockError> {
        let lease = self
            .leases
            .get(&args.lease)
            .ok_or(LockError::LeaseNotFound { lease: args.lease })?;
        let wanted = self.validate_acquire(&args)?;

        // An idempotent retry: the lease holds every named lock already.
        let held: Vec<&String> = wanted
            .iter()
            .map(|(n, _)| n)
            .filter(|n| lease.holds.contains(n.as_str()))
            .collect();
        if let Some(first) = held.first() {
            if held.len() != wanted.len() {
                return Err(LockError::PartiallyHeld {
                    name: (*first).clone(),
                    lease: args.lease,
                });
            }
            return self.acquire_retry(args.lease, &wanted, cx.index);
        }

        // A retry of a queued request keeps its place, and owns it from now
        // on: a cancel issued for an earlier attempt no longer withdraws it.
        for waiter_id in &lease.waits {
            let waiter = &self.waiters[waiter_id];
            if waiter.locks == wanted {
                let (id, position) = (waiter.id, self.position_of(waiter));
                if let Some(w) = self.waiters.get_mut(&id) {
                    w.requested_at = cx.index;
                }
                self.dirty.waiters.insert(id);
                return Ok(Response::Queued {
                    waiter: id,
                    position,
                    retry: true,
                });
            }
            if let Some((name, _)) = wanted.iter().find(|(n, _)| waiter.mode_on(n).is_some()) {
                return Err(LockError::AlreadyWaiting {
                    name: name.clone(),
                    lease: args.lease,
                    waiter: waiter.id,
                });
            }
        }

        let in_use: usize = lease.holds.len()
            + lease
                .waits
                .iter()
                .map(|w| self.waiters[w].locks.len())
                .sum::<usize>();
        if in_use + wanted.len() > self.limits.max_holds_per_lease as usize {
            return Err(LockError::LimitExceeded {
                limit: Limit::HoldsPerLease,
                max: self.limits.max_holds_per_lease as u64,
            });
        }
        let identity = lease.identity.clone();
        // Counted only for an identity with such limits (auth on).
        let usage = if args.quota.max_holds.is_some() || args.quota.max_waiters.is_some() {
            self.identity_usage(&identity)
        } else {
            IdentityUsage::default()
        };
        if let Some(max) = args.quota.max_holds
            && usage.holds + wanted.len() > max as usize
        {
            return Err(LockError::IdentityLimitExceeded {
                identity,
                limit: Limit::HoldsPerIdentity,
                max: max as u64,
            });
        }

        let blocked = wanted
            .iter()
            .find(|(name, mode)| !self.grantable_to_newcomer(name, *mode));
        let owner = lease.owner.clone();
        let Some((blocked_name, _)) = blocked else {
            let token = cx.stamp;
            let mut holds = Vec::with_capacity(wanted.len());
            for (name, mode) in &wanted {
                self.grant_hold(
                    name,
                    NewHold {
                        lease: args.lease,
                        owner: &owner,
                        mode: *mode,
                        reason: args.reason,
                        metadata: args.metadata,
                        lock_delay_ms: args.lock_delay_ms,
                        from_waiter: None,
                        requested_at: cx.index,
                    },
                    cx,
                );
                holds.push(Granted {
                    name: name.clone(),
                    mode: *mode,
                    token,
                });
            }
            return Ok(Response::Acquired {
                token,
                holds,
                retry: false,
            });
        };
        if !args.wait {
            return Err(self.busy(blocked_name));
        }
        if let Some(max) = args.quota.max_waiters
            && usage.waiters >= max as usize
        {
            return Err(LockError::IdentityLimitExceeded {
                identity,
                limit: Limit::WaitersPerIdentity,
                max: max as u64,
            });
        }
        for (name, _) in &wanted {
            if let Some(lock) = self.locks.get::<str>(name)
                && lock.queue.len() >= self.limits.max_waiters_per_lock as usize
            {
                return Err(LockError::LimitExceeded {
                    limit: Limit::WaitersPerLock,
                    max: self.limits.max_waiters_per_lock as u64,
                });
            }
        }
        let waiter = Waiter {
            id: cx.stamp,
            lease: args.lease,
            owner: owner.to_string(),
            locks: wanted,
            reason: args.reason.to_string(),
            metadata: args.metadata.clone(),
            lock_delay_ms: args.lock_delay_ms,
            queued_at_wall_ms: cx.wall_ms,
            requested_at: cx.index,
        };
        Ok(self.enqueue(waiter, cx))
    }

    /// Checks every argument of an acquire and the kinds of existing locks;
    /// returns the wanted locks sorted by name.
    fn validate_acquire(&self, args: &AcquireArgs<'_>) -> Result<Vec<(String, Mode)>, LockError> {
        let limits = &self.limits;
        if args.locks.is_empty() {
            return Err(LockError::InvalidArgument {
                field: "locks".to_string(),
                reason: "an acquire must name at least one lock".to_string(),
            });
        }
        if args.locks.len() > limits.max_locks_per_request as usize {
            return Err(LockError::LimitExceeded {
                limit: Limit::LocksPerRequest,
                max: limits.max_locks_per_request as u64,
            });
        }
        limits.check_text("reason", args.reason)?;
        limits.check_metadata(args.metadata)?;
        limits.check_lock_delay(args.lock_delay_ms)?;
        let mut wanted: Vec<(String, Mode)> = Vec::with_capacity(args.locks.len());
        for spec in args.locks {
            limits.check_name(&spec.name)?;
            limits.check_mode(spec.mode)?;
            if let Some(lock) = self.locks.get::<str>(&spec.name) {
                check_kind(lock, spec.mode)?;
            }
            wanted.push((spec.name.clone(), spec.mode));
        }
        wanted.sort();
        if let Some(pair) = wanted.windows(2).find(|p| p[0].0 == p[1].0) {
            return Err(LockError::InvalidArgument {
                field: "locks".to_string(),
                reason: format!("lock \"{}\" is named twice", pair[0].0),
            });
        }
        Ok(wanted)
    }

    fn acquire_retry(
        &mut self,
        lease: LeaseId,
        wanted: &[(String, Mode)],
        index: LogIndex,
    ) -> Result<Response, LockError> {
        for (name, mode) in wanted {
            let hold = &self.locks[name.as_str()].holds[&lease];
            if hold.mode != *mode {
                return Err(LockError::HeldInOtherMode {
                    name: name.clone(),
                    lease,
                    held: hold.mode,
                    requested: *mode,
                });
            }
        }
        let mut holds = Vec::with_capacity(wanted.len());
        for (name, _) in wanted {
            let hold = self
                .lock_mut(name)
                .and_then(|l| l.holds.get_mut(&lease))
                .unwrap_or_else(|| unreachable!("hold checked above"));
            hold.acquisitions = hold.acquisitions.saturating_add(1);
            hold.requested_at = index;
            holds.push(Granted {
                name: name.clone(),
                mode: hold.mode,
                token: hold.token,
            });
        }
        let token = holds.iter().map(|g| g.token).max().unwrap_or(0);
        Ok(Response::Acquired {
            token,
            holds,
            retry: true,
        })
    }

    fn busy(&self, name: &str) -> LockError {
        let (holders, waiters, delayed_until_ms) = match self.locks.get(name) {
            Some(l) => (
                l.holds.len() as u32,
                l.queue.len() as u32,
                l.delayed_until_ms,
            ),
            None => (0, 0, None),
        };
        LockError::Busy {
            name: name.to_string(),
            holders,
            waiters,
            delayed_until_ms,
        }
    }

    fn enqueue(&mut self, waiter: Waiter, cx: &mut Cx) -> Response {
        let id = waiter.id;
        let mut position = 0u32;
        for (name, mode) in &waiter.locks {
            let lock = self.lock_entry(name, mode.kind());
            lock.queue.push_back(id);
            let pos = (lock.queue.len() - 1) as u32;
            position = position.max(pos);
            cx.emit(EventKind::Queued {
                name: name.clone(),
                lease: waiter.lease,
                waiter: id,
                position: pos,
            });
        }
        if let Some(lease) = self.lease_mut(waiter.lease) {
            lease.waits.insert(id);
        }
        self.counters.queued += 1;
        self.dirty.waiters.insert(id);
        self.waiters.insert(id, waiter);
        Response::Queued {
            waiter: id,
            position,
            retry: false,
        }
    }

    fn position_of(&self, waiter: &Waiter) -> u32 {
        waiter
            .locks
            .iter()
            .filter_map(|(name, _)| {
                let queue = &self.locks.get::<str>(name)?.queue;
                queue.iter().position(|w| *w == waiter.id)
            })
            .max()
            .unwrap_or(0) as u32
    }

    // ----- release, extend, cancel, force ---------------------------------

    fn release(
        &mut self,
        lease: LeaseId,
        token: Token,
        names: &[String],
        cx: &mut Cx,
    ) -> Result<Response, LockError> {
        if !self.leases.contains_key(&lease) {
            return Err(LockError::LeaseNotFound { lease });
        }
        if names.is_empty() {
            return Err(LockError::InvalidArgument {
                field: "names".to_string(),
                reason: "a release must name at least one lock".to_string(),
            });
        }
        if names.len() > self.limits.max_locks_per_request as usize {
            return Err(LockError::LimitExceeded {
                limit: Limit::LocksPerRequest,
                max: self.limits.max_locks_per_request as u64,
            });
        }
        let mut sorted: Vec<&String> = names.iter().collect();
        sorted.sort();
        sorted.dedup();
        for name in &sorted {
            self.check_holder(lease, name, token)?;
        }
        for name in &sorted {
            if let Some(hold) = self.remove_hold(name, lease) {
                cx.emit(EventKind::Released {
                    name: (*name).clone(),
                    lease,
                    token: hold.token,
                });
                self.counters.releases += 1;
                cx.touched.insert((*name).clone());
            }
        }
        Ok(Response::Released {
            names: sorted.into_iter().cloned().collect(),
        })
    }

    /// Only the holder, with the token of its hold, may release or extend.
    fn check_holder(&self, lease: LeaseId, name: &str, token: Token) -> Result<&Hold, LockError> {
        self.limits.check_name(name)?;
        let hold = self
            .locks
            .get(name)
            .and_then(|l| l.holds.get(&lease))
            .ok_or_else(|| LockError::NotHolder {
                name: name.to_string(),
                lease,
            })?;
        if hold.token != token {
            return Err(LockError::StaleToken {
                name: name.to_string(),
                lease,
                presented: token,
                current: hold.token,
            });
        }
        Ok(hold)
    }

    fn extend(
        &mut self,
        lease: LeaseId,
        name: &str,
        token: Token,
        ttl_ms: Option<u64>,
    ) -> Result<Response, LockError> {
        if !self.leases.contains_key(&lease) {
            return Err(LockError::LeaseNotFound { lease });
        }
        self.check_holder(lease, name, token)?;
        if let Some(ttl_ms) = ttl_ms {
            self.limits.check_ttl(ttl_ms)?;
        }
        let hold = self
            .lock_mut(name)
            .and_then(|l| l.holds.get_mut(&lease))
            .unwrap_or_else(|| unreachable!("holder checked above"));
        hold.extensions = hold.extensions.saturating_add(1);
        let extensions = u64::from(hold.extensions);
        let lease_record = self
            .lease_mut(lease)
            .unwrap_or_else(|| unreachable!("lease checked above"));
        if let Some(ttl_ms) = ttl_ms {
            lease_record.ttl_ms = ttl_ms;
        }
        Ok(Response::Extended {
            lease,
            ttl_ms: lease_record.ttl_ms,
            extensions,
        })
    }

    fn cancel_wait(
        &mut self,
        lease: LeaseId,
        waiter: WaiterId,
        as_of: LogIndex,
        cx: &mut Cx,
    ) -> Result<Response, LockError> {
        let Some(lease_record) = self.leases.get(&lease) else {
            return Err(LockError::LeaseNotFound { lease });
        };
        if lease_record.waits.contains(&waiter) {
            if self
                .waiters
                .get(&waiter)
                .is_some_and(|w| w.requested_at > as_of)
            {
                return Ok(Response::CancelSuperseded { waiter });
            }
            self.drop_waiter(waiter, cx);
            if let Some(l) = self.lease_mut(lease) {
                l.waits.remove(&waiter);
            }
            self.counters.waits_cancelled += 1;
            return Ok(Response::WaitCancelled { waiter });
        }
        // Granted before the cancel arrived: the requester gave up and will
        // never use these holds, so release exactly the holds it was granted.
        let granted: Vec<(String, Token)> = lease_record
            .holds
            .iter()
            .filter_map(|name| {
                let hold = &self.locks.get(name)?.holds.get(&lease)?;
                (hold.from_waiter == Some(waiter)).then(|| (name.to_string(), hold.token))
            })
            .collect();
        if granted.is_empty() {
            return Err(LockError::WaiterNotFound { waiter, lease });
        }
        let superseded = granted.iter().any(|(name, _)| {
            self.locks
                .get::<str>(name)
                .and_then(|l| l.holds.get(&lease))
                .is_some_and(|h| h.requested_at > as_of)
        });
        if superseded {
            return Ok(Response::CancelSuperseded { waiter });
        }
        let mut released = Vec::with_capacity(granted.len());
        for (name, token) in granted {
            if let Some(hold) = self.remove_hold(&name, lease) {
                cx.emit(EventKind::Released {
                    name: name.clone(),
                    lease,
                    token,
                });
                self.counters.releases += 1;
                released.push(Granted {
                    name: name.clone(),
                    mode: hold.mode,
                    token,
                });
                cx.touched.insert(name);
            }
        }
        Ok(Response::ReleasedAfterGrant { waiter, released })
    }

    fn force_release(
        &mut self,
        name: &str,
        lease: Option<LeaseId>,
        by: &str,
        cx: &mut Cx,
    ) -> Result<Response, LockError> {
        self.limits.check_name(name)?;
        let lock = self
            .locks
            .get(name)
            .ok_or_else(|| LockError::LockNotFound {
                name: name.to_string(),
            })?;
        let leases: Vec<LeaseId> = match lease {
            Some(id) if lock.holds.contains_key(&id) => vec![id],
            Some(id) => {
                return Err(LockError::NotHolder {
                    name: name.to_string(),
                    lease: id,
                });
            }
            None => lock.holds.keys().copied().collect(),
        };
        let mut released = Vec::with_capacity(leases.len());
        for id in leases {
            if let Some(hold) = self.remove_hold(name, id) {
                cx.emit(EventKind::ForceReleased {
                    name: name.to_string(),
                    lease: id,
                    token: hold.token,
                    by: by.to_string(),
                });
                self.counters.force_releases += 1;
                released.push(hold);
            }
        }
        cx.touched.insert(name.to_string());
        Ok(Response::ForceReleased { released })
    }

    // ----- lock-delay ----------------------------------------------------

    fn delay_lock(&mut self, name: &str, until_ms: u64, cx: &mut Cx) {
        let Some(lock) = self.lock_mut(name) else {
            return;
        };
        let previous = lock.delayed_until_ms;
        let until_ms = previous.map_or(until_ms, |p| p.max(until_ms));
        lock.delayed_until_ms = Some(until_ms);
        if let Some(p) = previous {
            self.delays.remove(&(p, name.to_string()));
        }
        self.delays.insert((until_ms, name.to_string()));
        cx.emit(EventKind::Delayed {
            name: name.to_string(),
            until_ms,
        });
    }

    fn lift_ended_delays(&mut self, cx: &mut Cx) {
        while let Some((until, _)) = self.delays.first() {
            if *until > self.cluster_ms {
                break;
            }
            let Some((_, name)) = self.delays.pop_first() else {
                break;
            };
            if let Some(lock) = self.lock_mut(&name) {
                lock.delayed_until_ms = None;
            }
            cx.touched.insert(name.clone());
            self.remove_if_idle(&name);
        }
    }

    // ----- granting ------------------------------------------------------

    /// Can a request that is not queued be granted `mode` on `name` now?
    /// Only if it would be in the grantable head run when appended to the
    /// queue: it then overtakes nobody (everyone ahead of it could be let in
    /// beside it, e.g. readers waiting only for another of their locks).
    fn grantable_to_newcomer(&self, name: &str, mode: Mode) -> bool {
        let Some(lock) = self.locks.get(name) else {
            return true;
        };
        if lock.delayed_until_ms.is_some() {
            return false;
        }
        let ahead = lock.queue.len();
        if ahead > 0 {
            if mode == Mode::Exclusive {
                return false;
            }
            let run = self.head_run(lock);
            // A run that holds an exclusive request is that request alone,
            // so a newcomer behind it is never in it, even when that request
            // could be let in here now and waits only for another lock.
            let run_is_exclusive = run
                .first()
                .and_then(|id| self.waiters.get(id))
                .and_then(|w| w.mode_on(&lock.name))
                == Some(Mode::Exclusive);
            if run.len() != ahead || run_is_exclusive {
                return false;
            }
        }
        fits_holders(lock, mode, ahead)
    }

    /// The queued requests at the head of the lock that could all be granted
    /// on this lock together: one exclusive request, or a run of shared
    /// ones, or as many semaphore requests as there are free permits.
    fn head_run(&self, lock: &Lock) -> Vec<WaiterId> {
        if lock.delayed_until_ms.is_some() {
            return Vec::new();
        }
        let mut run = Vec::new();
        for (ahead, waiter_id) in lock.queue.iter().enumerate() {
            let Some(mode) = self
                .waiters
                .get(waiter_id)
                .and_then(|w| w.mode_on(&lock.name))
            else {
                break;
            };
            let compatible_with_run = match mode {
                Mode::Exclusive => ahead == 0,
                Mode::Shared | Mode::Semaphore { .. } => true,
            };
            if !compatible_with_run || !fits_holders(lock, mode, ahead) {
                break;
            }
            run.push(*waiter_id);
            if mode == Mode::Exclusive {
                break;
            }
        }
        run
    }

    /// Grant every queued request that is in the head run of all of its
    /// locks, oldest first, until no more can be granted.
    fn grant_waiters(&mut self, cx: &mut Cx) {
        // Bounded: every round grants at least one waiter or stops.
        for _round in 0..=self.waiters.len() {
            let touched = std::mem::take(&mut cx.touched);
            let mut candidates: BTreeSet<WaiterId> = BTreeSet::new();
            for name in &touched {
                if let Some(lock) = self.locks.get::<str>(name) {
                    candidates.extend(self.head_run(lock));
                }
            }
            let mut granted_any = false;
            for waiter_id in candidates {
                if self.ready(waiter_id) {
                    self.grant_waiter(waiter_id, cx);
                    granted_any = true;
                }
            }
            for name in touched {
                self.remove_if_idle(&name);
            }
            if !granted_any {
                break;
            }
        }
        // Locks touched by the last round's grants (nothing more to grant
        // there, or the loop would have gone on) may now be idle.
        for name in std::mem::take(&mut cx.touched) {
            self.remove_if_idle(&name);
        }
    }

    /// Is the waiter in the grantable head run of every lock it names?
    fn ready(&self, waiter_id: WaiterId) -> bool {
        let Some(waiter) = self.waiters.get(&waiter_id) else {
            return false;
        };
        waiter.locks.iter().all(|(name, _)| {
            self.locks
                .get::<str>(name)
                .is_some_and(|lock| self.head_run(lock).contains(&waiter_id))
        })
    }

    fn grant_waiter(&mut self, waiter_id: WaiterId, cx: &mut Cx) {
        let Some(waiter) = self.waiters.remove(&waiter_id) else {
            return;
        };
        self.dirty.waiters.insert(waiter_id);
        if let Some(lease) = self.lease_mut(waiter.lease) {
            lease.waits.remove(&waiter_id);
        }
        for (name, mode) in &waiter.locks {
            if let Some(lock) = self.lock_mut(name) {
                lock.queue.retain(|w| *w != waiter_id);
            }
            self.grant_hold(
                name,
                NewHold {
                    lease: waiter.lease,
                    owner: &waiter.owner,
                    mode: *mode,
                    reason: &waiter.reason,
                    metadata: &waiter.metadata,
                    lock_delay_ms: waiter.lock_delay_ms,
                    from_waiter: Some(waiter_id),
                    requested_at: waiter.requested_at,
                },
                cx,
            );
            // Granting may let the rest of a shared or semaphore run in.
            cx.touched.insert(name.clone());
        }
        self.counters.grants_from_queue += 1;
    }

    fn grant_hold(&mut self, name: &str, new: NewHold<'_>, cx: &mut Cx) {
        let token = cx.stamp;
        let wall_ms = cx.wall_ms;
        // The hold shares its lease's owner string (it is the lease's
        // owner, copied through a queued request when granted from there).
        let owner = self
            .leases
            .get(&new.lease)
            .map(|l| l.owner.clone())
            .filter(|o| **o == *new.owner)
            .unwrap_or_else(|| Arc::from(new.owner));
        let lock = self.lock_entry(name, new.mode.kind());
        let shared_name = lock.name.clone();
        lock.holds.insert(
            new.lease,
            Hold {
                lease: new.lease,
                owner,
                mode: new.mode,
                token,
                acquired_at_wall_ms: wall_ms,
                reason: new.reason.into(),
                metadata: new.metadata.clone(),
                acquisitions: 1,
                extensions: 0,
                from_waiter: new.from_waiter,
                lock_delay_ms: new.lock_delay_ms,
                requested_at: new.requested_at,
            },
        );
        lock.grants += 1;
        lock.max_token = lock.max_token.max(token);
        if let Some(lease) = self.lease_mut(new.lease) {
            lease.holds.insert(shared_name);
        }
        self.counters.grants += 1;
        cx.emit(EventKind::Acquired {
            name: name.to_string(),
            lease: new.lease,
            owner: new.owner.to_string(),
            mode: new.mode,
            token,
            waiter: new.from_waiter,
        });
    }

    // ----- record plumbing (every mutation marks its record dirty) --------

    fn lock_mut(&mut self, name: &str) -> Option<&mut Lock> {
        let lock = self.locks.get_mut(name)?;
        self.dirty.locks.insert(name.to_string());
        Some(lock)
    }

    fn lease_mut(&mut self, id: LeaseId) -> Option<&mut Lease> {
        let lease = self.leases.get_mut(&id)?;
        self.dirty.leases.insert(id);
        Some(lease)
    }

    fn lock_entry(&mut self, name: &str, kind: LockKind) -> &mut Lock {
        self.dirty.locks.insert(name.to_string());
        if !self.locks.contains_key(name) {
            let key: Arc<str> = Arc::from(name);
            self.locks
                .insert(key.clone(), Box::new(Lock::new(key, kind)));
        }
        match self.locks.get_mut(name) {
            Some(lock) => lock,
            // Inserted just above.
            None => unreachable!("lock {name} was just inserted"),
        }
    }

    /// Removes the hold from the lock and from its lease's list.
    fn remove_hold(&mut self, name: &str, lease: LeaseId) -> Option<Hold> {
        let hold = self.lock_mut(name)?.holds.remove(&lease)?;
        if let Some(l) = self.lease_mut(lease) {
            l.holds.remove(name);
        }
        Some(hold)
    }

    /// Takes a queued request out of every queue (its lease's list is the
    /// caller's business).
    fn drop_waiter(&mut self, waiter_id: WaiterId, cx: &mut Cx) {
        let Some(waiter) = self.waiters.remove(&waiter_id) else {
            return;
        };
        self.dirty.waiters.insert(waiter_id);
        for (name, _) in &waiter.locks {
            if let Some(lock) = self.lock_mut(name) {
                lock.queue.retain(|w| *w != waiter_id);
            }
            cx.emit(EventKind::WaitDropped {
                name: name.clone(),
                lease: waiter.lease,
                waiter: waiter_id,
            });
            // The next in line may now be at the head.
            cx.touched.insert(name.clone());
        }
    }

    fn remove_if_idle(&mut self, name: &str) {
        if self.locks.get(name).is_some_and(|l| l.is_idle()) {
            self.locks.remove(name);
            self.dirty.locks.insert(name.to_string());
        }
    }
}

struct AcquireArgs<'a> {
    lease: LeaseId,
    locks: &'a [LockSpec],
    wait: bool,
    reason: &'a str,
    metadata: &'a Metadata,
    lock_delay_ms: u64,
    quota: &'a IdentityLimits,
}

struct NewHold<'a> {
    lease: LeaseId,
    owner: &'a str,
    mode: Mode,
    reason: &'a str,
    metadata: &'a Metadata,
    lock_delay_ms: u64,
    from_waiter: Option<WaiterId>,
    requested_at: LogIndex,
}

/// Borrowed form of [`Record`], so encoding needs no clone. Must stay
/// field-for-field the same as `Record` (bincode encodes both alike).
#[derive(Serialize)]
enum RecordRef<'a> {
    Lock(&'a Lock),
    Lease(&'a Lease),
    Waiter(&'a Waiter),
}

fn check_kind(lock: &Lock, mode: Mode) -> Result<(), LockError> {
    match (lock.kind, mode.kind()) {
        (LockKind::Semaphore { permits: have }, LockKind::Semaphore { permits: want })
            if have != want =>
        {
            Err(LockError::PermitsMismatch {
                name: lock.name.to_string(),
                existing: have,
                requested: want,
            })
        }
        (have, want) if have != want => Err(LockError::KindConflict {
            name: lock.name.to_string(),
            existing: have,
            requested: mode,
        }),
        _ => Ok(()),
    }
}

/// Would `mode` fit beside the current holders, with `ahead` compatible
/// requests granted before it?
fn fits_holders(lock: &Lock, mode: Mode, ahead: usize) -> bool {
    match mode {
        Mode::Exclusive => lock.holds.is_empty() && ahead == 0,
        Mode::Shared => !lock.has_exclusive_holder(),
        Mode::Semaphore { permits } => lock.holds.len() + ahead < permits as usize,
    }
}

/// Checks what must always hold; returns the first violation found.
pub fn check_invariants(state: &State) -> Result<(), String> {
    for (name, lock) in &state.locks {
        if &lock.name != name {
            return Err(format!("lock stored as {name:?} is named {:?}", lock.name));
        }
        if lock.is_idle() {
            return Err(format!("idle lock {name:?} was kept"));
        }
        if lock.has_exclusive_holder() && lock.holds.len() > 1 {
            return Err(format!(
                "lock {name:?} has an exclusive holder and {} holders",
                lock.holds.len()
            ));
        }
        if let LockKind::Semaphore { permits } = lock.kind
            && lock.holds.len() > permits as usize
        {
            return Err(format!(
                "semaphore {name:?} has {} holders for {permits} permits",
                lock.holds.len()
            ));
        }
        for (lease_id, hold) in &lock.holds {
            if hold.lease != *lease_id || hold.mode.kind() != lock.kind {
                return Err(format!(
                    "hold of lease {lease_id} on {name:?} is inconsistent"
                ));
            }
            if hold.token > state.token_high_water() || hold.token > lock.max_token {
                return Err(format!(
                    "hold of lease {lease_id} on {name:?} has token {} above the applied stamp {} or the lock's maximum {}",
                    hold.token,
                    state.token_high_water(),
                    lock.max_token
                ));
            }
            if !state
                .leases
                .get(lease_id)
                .is_some_and(|l| l.holds.contains(name))
            {
                return Err(format!(
                    "lock {name:?} is held by lease {lease_id}, which does not list it"
                ));
            }
        }
        let mut previous = 0;
        for waiter_id in &lock.queue {
            if *waiter_id <= previous {
                return Err(format!("queue of {name:?} is not in log order"));
            }
            previous = *waiter_id;
            let Some(waiter) = state.waiters.get(waiter_id) else {
                return Err(format!(
                    "queue of {name:?} names unknown waiter {waiter_id}"
                ));
            };
            if !waiter.mode_on(name).is_some_and(|m| m.kind() == lock.kind) {
                return Err(format!(
                    "waiter {waiter_id} is queued on {name:?} by mistake"
                ));
            }
            if lock.holds.contains_key(&waiter.lease) {
                return Err(format!(
                    "lease {} both holds and waits for {name:?}",
                    waiter.lease
                ));
            }
        }
        if let Some(until) = lock.delayed_until_ms
            && !state.delays.contains(&(until, name.to_string()))
        {
            return Err(format!("delay of {name:?} is missing from the index"));
        }
    }
    if state.delays.len()
        != state
            .locks
            .values()
            .filter(|l| l.delayed_until_ms.is_some())
            .count()
    {
        return Err("the delay index has stale entries".to_string());
    }
    for (id, lease) in &state.leases {
        if lease.id != *id {
            return Err(format!("lease stored as {id} has id {}", lease.id));
        }
        if *id > state.token_high_water() {
            return Err(format!(
                "lease id {id} is above the applied stamp {}",
                state.token_high_water()
            ));
        }
        if !lease.identity.is_empty()
            && !state
                .by_identity
                .get(&lease.identity)
                .is_some_and(|ids| ids.contains(id))
        {
            return Err(format!("lease {id} is missing from its identity's index"));
        }
        for name in &lease.holds {
            if !state
                .locks
                .get(name)
                .is_some_and(|l| l.holds.contains_key(id))
            {
                return Err(format!("lease {id} lists {name:?}, which it does not hold"));
            }
        }
        for waiter in &lease.waits {
            if state.waiters.get(waiter).map(|w| w.lease) != Some(*id) {
                return Err(format!(
                    "lease {id} lists waiter {waiter}, which is not its"
                ));
            }
        }
    }
    for (identity, ids) in &state.by_identity {
        if ids.is_empty()
            || ids
                .iter()
                .any(|id| state.leases.get(id).map(|l| &l.identity) != Some(identity))
        {
            return Err(format!("the index of identity {identity:?} is stale"));
        }
    }
    for (id, waiter) in &state.waiters {
        if waiter.id != *id || *id > state.token_high_water() {
            return Err(format!("waiter {id} is inconsistent"));
        }
        if !state
            .leases
            .get(&waiter.lease)
            .is_some_and(|l| l.waits.contains(id))
        {
            return Err(format!(
                "waiter {id} belongs to a lease that does not list it"
            ));
        }
        for (name, _) in &waiter.locks {
            if !state
                .locks
                .get::<str>(name)
                .is_some_and(|l| l.queue.contains(id))
            {
                return Err(format!("waiter {id} is missing from the queue of {name:?}"));
            }
        }
        if state.ready(*id) {
            return Err(format!("waiter {id} could be granted but is still waiting"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod sharing_tests {
    //! A million holds must not cost a million copies of what they repeat
    //! (issue 18): a lock's name is one allocation (the map's key, the
    //! lock's `name`, its holders' `Lease::holds`), a hold's owner is its
    //! lease's. These fail if a change brings a copy back.
    use super::*;
    use crate::command::LockSpec;

    fn loaded() -> (State, LeaseId) {
        let mut state = State::new();
        let granted = state.apply(
            1,
            &Request::new(
                1,
                1,
                Command::GrantLease {
                    ttl_ms: 10_000,
                    owner: "worker-1".into(),
                    identity: String::new(),
                    quota: Default::default(),
                },
            ),
        );
        let Ok(Response::LeaseGranted { lease, .. }) = granted.result else {
            panic!("grant: {:?}", granted.result);
        };
        let locks = ["jobs/a", "jobs/b"]
            .iter()
            .map(|n| LockSpec {
                name: n.to_string(),
                mode: Mode::Exclusive,
            })
            .collect();
        let acquired = state.apply(
            2,
            &Request::new(
                2,
                2,
                Command::Acquire {
                    lease,
                    locks,
                    wait: false,
                    reason: String::new(),
                    metadata: Metadata::new(),
                    lock_delay_ms: 0,
                    quota: Default::default(),
                },
            ),
        );
        assert!(acquired.result.is_ok(), "{:?}", acquired.result);
        (state, lease)
    }

    fn assert_shared(state: &State, lease: LeaseId, how: &str) {
        let record = &state.leases[&lease];
        assert_eq!(record.holds.len(), 2, "{how}");
        for (key, lock) in &state.locks {
            assert!(
                Arc::ptr_eq(key, &lock.name),
                "{how}: the key is the lock's name"
            );
            let in_lease = record.holds.get(&**key).expect("the lease lists the name");
            assert!(
                Arc::ptr_eq(in_lease, key),
                "{how}: the lease's name is the lock's"
            );
            let hold = &lock.holds[&lease];
            assert!(
                Arc::ptr_eq(&hold.owner, &record.owner),
                "{how}: the hold's owner is the lease's"
            );
        }
    }

    #[test]
    fn a_lock_and_its_holders_share_one_name_and_one_owner_when_granted() {
        let (state, lease) = loaded();
        assert_shared(&state, lease, "granted");
    }

    #[test]
    fn a_loaded_state_shares_them_again() {
        let (state, lease) = loaded();
        let from_bytes = State::from_bytes(&state.to_bytes()).expect("decodes");
        assert_eq!(from_bytes, state);
        assert_shared(&from_bytes, lease, "from_bytes");

        // Records decoded one by one, as the store loads them.
        let mut records = Vec::new();
        for lock in state.locks() {
            let bytes = state.lock_bytes(&lock.name).expect("a lock record");
            records.push(decode::<Record>("lock", &bytes).expect("decodes"));
        }
        let bytes = state.lease_bytes(lease).expect("a lease record");
        records.push(decode::<Record>("lease", &bytes).expect("decodes"));
        let from_records = State::from_records(state.header(), records).expect("loads");
        assert_eq!(from_records, state);
        assert_shared(&from_records, lease, "from_records");
    }

    #[test]
    fn per_hold_records_stay_small() {
        // Hold and Lock do not grow back past their sizes of issue 18: 128
        // and 112 bytes are size classes of mimalloc (the allocator of
        // `raftlock serve`); one byte more costs the next (160, 128).
        assert!(
            size_of::<Hold>() <= 128,
            "Hold is {} bytes",
            size_of::<Hold>()
        );
        assert!(
            size_of::<Lock>() <= 112,
            "Lock is {} bytes",
            size_of::<Lock>()
        );
        // A B-tree slot of the locks map is a key and a box, not a lock.
        assert_eq!(size_of::<(Arc<str>, Box<Lock>)>(), 24, "a locks-map slot");
    }
}
