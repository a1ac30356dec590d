//! The records the state machine keeps: leases, locks, holds and waiters.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A lease (session) id: the stamp ([`crate::stamp`]) of the entry that
/// granted the lease.
pub type LeaseId = u64;
/// A fencing token: the stamp ([`crate::stamp`]) of the entry whose
/// application granted a hold: `token_epoch << 48 | index`.
pub type Token = u64;
/// A waiter id: the stamp of the entry that queued the request.
pub type WaiterId = u64;
/// A Raft log index.
pub type LogIndex = u64;

/// Small key/value metadata attached to a hold (total size is limited).
pub type Metadata = BTreeMap<String, String>;

/// How a request wants to hold a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mode {
    /// One holder at a time (the writer side of a readers/writer lock).
    Exclusive,
    /// Any number of shared holders together, never beside an exclusive one.
    Shared,
    /// One of `permits` places. The first acquirer fixes `permits` for as long as
    /// the lock exists.
    Semaphore { permits: u32 },
}

impl Mode {
    /// The kind of lock this mode needs the name to be.
    pub fn kind(self) -> LockKind {
        match self {
            Mode::Exclusive | Mode::Shared => LockKind::ReadWrite,
            Mode::Semaphore { permits } => LockKind::Semaphore { permits },
        }
    }
}

/// What a lock is while it exists: fixed by the request that created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// Exclusive and shared holds (a readers/writer lock; a plain mutex is one
    /// that is only ever taken exclusively).
    ReadWrite,
    /// A counting semaphore with a fixed number of permits.
    Semaphore { permits: u32 },
}

/// A lease: the liveness of one client. Holds and waits belong to it.
///
/// Strings that a lease shares with its holds are `Arc<str>`, one
/// allocation for all of them (issue 18: a million holds): `owner` is the
/// same allocation as each of its holds' `Hold::owner`, and each name in
/// `holds` the same as the lock's `Lock::name` and the state's key of that
/// lock. `State` keeps them shared when it grants and when it loads
/// (`State::from_bytes`, `State::from_records`). Serialized as the
/// `String`s they replace (same bytes in every format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: LeaseId,
    /// Free text naming the client (agent, process, host).
    pub owner: Arc<str>,
    /// The authenticated identity that granted the lease (empty when the
    /// node that took the call had auth off). Only it may use the lease.
    pub identity: String,
    /// How long the lease lives without a keep-alive. The leader keeps the
    /// deadline; the state keeps the ttl so a new leader can rebuild it.
    pub ttl_ms: u64,
    /// Wall-clock time the leader proposed the grant at (informational only).
    pub granted_at_wall_ms: u64,
    /// Names this lease holds.
    pub holds: BTreeSet<Arc<str>>,
    /// Requests of this lease that are queued.
    pub waits: BTreeSet<WaiterId>,
}

/// One lease's hold on one lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub lease: LeaseId,
    /// The lease's owner (the same allocation as `Lease::owner`).
    pub owner: Arc<str>,
    pub mode: Mode,
    /// Fencing token: the stamp of the entry that granted this hold.
    pub token: Token,
    /// Wall-clock time of the granting entry, as proposed by the leader
    /// (informational only; never used for safety).
    pub acquired_at_wall_ms: u64,
    /// `Box<str>`, not `String`: 16 bytes, nothing allocated when empty
    /// (most holds give no reason). Serialized as a string.
    pub reason: Box<str>,
    pub metadata: Metadata,
    /// How many acquire requests this hold has answered (1 + idempotent
    /// retries). The two counters are `u32` so that a `Hold` is 128 bytes,
    /// an allocator size class (issue 18; 160 at 144 bytes): they saturate
    /// at 4,294,967,295 (no hold lives through that many requests). Their
    /// encodings are those of the `u64`s they were (varint and protobuf
    /// `uint64` alike) for every value they can hold.
    pub acquisitions: u32,
    /// How many times the holder extended it (saturating, as above).
    pub extensions: u32,
    /// If the hold was granted to a queued request, that request's id; a
    /// cancel-wait naming it then releases this hold.
    pub from_waiter: Option<WaiterId>,
    /// The index of the latest Acquire entry this hold answers: the one
    /// that queued its request (or a retry that found it queued), or a
    /// retry answered with this hold. A cancel-wait issued for an earlier
    /// Acquire is stale and leaves the hold alone: a retry that was handed
    /// this hold must not lose it to its own earlier attempt's cancel.
    pub requested_at: LogIndex,
    /// How long the lock stays ungrantable if this hold ends by lease expiry.
    pub lock_delay_ms: u64,
}

/// A queued acquire request: one lease waiting for one or several locks,
/// granted all at once or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub id: WaiterId,
    pub lease: LeaseId,
    pub owner: String,
    /// The locks wanted, sorted by name, names unique.
    pub locks: Vec<(String, Mode)>,
    pub reason: String,
    pub metadata: Metadata,
    pub lock_delay_ms: u64,
    /// Wall-clock time the request was queued at (informational only).
    pub queued_at_wall_ms: u64,
    /// The index of the latest Acquire entry that asked for this request:
    /// the one that queued it, or a retry by the same lease that found it
    /// queued. A cancel-wait issued for an earlier Acquire is stale and
    /// leaves the request queued for the retry that now waits for it.
    pub requested_at: LogIndex,
}

impl Waiter {
    pub fn mode_on(&self, name: &str) -> Option<Mode> {
        self.locks
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, mode)| *mode)
    }
}

/// A lock exists while it has holders, waiters or a pending lock-delay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// The same allocation as the state's key of this lock and the name in
    /// each holder's `Lease::holds`.
    pub name: Arc<str>,
    pub kind: LockKind,
    /// Current holds, by lease.
    pub holds: HoldMap,
    /// Queued requests in arrival (log) order.
    pub queue: VecDeque<WaiterId>,
    /// After a holder's lease expired with a lock delay: the lock is not granted
    /// to anyone until the cluster clock reaches this point.
    pub delayed_until_ms: Option<u64>,
    /// Grants made on this lock since it came into existence.
    pub grants: u64,
    /// The highest fencing token ever granted on this lock while it existed.
    pub max_token: Token,
}

impl Lock {
    pub fn new(name: Arc<str>, kind: LockKind) -> Self {
        Lock {
            name,
            kind,
            holds: HoldMap::new(),
            queue: VecDeque::new(),
            delayed_until_ms: None,
            grants: 0,
            max_token: 0,
        }
    }

    /// A lock with nothing in it is dropped from the state.
    pub fn is_idle(&self) -> bool {
        self.holds.is_empty() && self.queue.is_empty() && self.delayed_until_ms.is_none()
    }

    pub fn has_exclusive_holder(&self) -> bool {
        self.holds.values().any(|h| h.mode == Mode::Exclusive)
    }
}

/// Why a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseEnd {
    /// Its client revoked it.
    Revoked,
    /// Keep-alives stopped and the leader proposed its expiry.
    Expired,
}

/// Counters over the whole state machine (for statistics and metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub leases_granted: u64,
    pub leases_revoked: u64,
    pub leases_expired: u64,
    pub grants: u64,
    pub grants_from_queue: u64,
    pub releases: u64,
    pub force_releases: u64,
    pub queued: u64,
    pub waits_cancelled: u64,
    pub rejected: u64,
}

/// Who the cluster is: its id, and per node the store it runs on and where
/// its clients reach it. Replicated, so every node checks its peers against
/// the same record (a node of another cluster, or a node whose data was
/// wiped, is refused before Raft sees its messages).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// Random, chosen by the cluster's first leader; empty until then.
    pub id: String,
    /// By node id.
    pub members: BTreeMap<u64, MemberRecord>,
}

/// What the cluster knows about one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The random id of the node's store, made when its data directory was
    /// created.
    pub store_id: String,
    /// The node's client address (`host:port`), for leader hints.
    pub client_addr: String,
}

/// The holds of one lock, by lease, in lease order: a sorted vector, not a
/// `BTreeMap`. Most locks have one holder, and a `BTreeMap` with one entry
/// still allocates a whole leaf node (11 slots of lease id and `Hold`, about
/// 1.8 KB); this allocates exactly what the holders need. Lookups are binary
/// searches over at most `max_permits` (or the readers) entries.
///
/// The key of each hold is its own `Hold::lease`, not a copy beside it.
///
/// Serialized as a map, exactly as the `BTreeMap` it replaces was (same
/// bincode bytes: peer protocol 1 and snapshot format 3 are unchanged).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct HoldMap {
    entries: Vec<Hold>,
}

impl HoldMap {
    pub fn new() -> Self {
        HoldMap::default()
    }

    fn position(&self, lease: &LeaseId) -> Result<usize, usize> {
        self.entries.binary_search_by(|h| h.lease.cmp(lease))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, lease: &LeaseId) -> Option<&Hold> {
        self.position(lease).ok().map(|i| &self.entries[i])
    }

    pub fn get_mut(&mut self, lease: &LeaseId) -> Option<&mut Hold> {
        match self.position(lease) {
            Ok(i) => Some(&mut self.entries[i]),
            Err(_) => None,
        }
    }

    pub fn contains_key(&self, lease: &LeaseId) -> bool {
        self.position(lease).is_ok()
    }

    /// Inserts or replaces; returns the hold it replaced. The hold is kept
    /// under `lease`: its own `lease` field is set to it.
    pub fn insert(&mut self, lease: LeaseId, mut hold: Hold) -> Option<Hold> {
        hold.lease = lease;
        match self.position(&lease) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i], hold)),
            Err(i) => {
                // The first holder gets a slot of its own (most locks keep
                // one holder for life); later ones grow the vector as usual,
                // so many readers cost amortized O(1) copies, not one
                // reallocation each.
                if self.entries.capacity() == 0 {
                    self.entries.reserve_exact(1);
                }
                self.entries.insert(i, hold);
                None
            }
        }
    }

    pub fn remove(&mut self, lease: &LeaseId) -> Option<Hold> {
        let i = self.position(lease).ok()?;
        let hold = self.entries.remove(i);
        if self.entries.is_empty() {
            // An emptied lock gives its memory back (it is usually dropped
            // next, but a queued or delayed lock stays).
            self.entries = Vec::new();
        }
        Some(hold)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&LeaseId, &Hold)> + ExactSizeIterator {
        self.entries.iter().map(|h| (&h.lease, h))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &LeaseId> + ExactSizeIterator {
        self.entries.iter().map(|h| &h.lease)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Hold> + ExactSizeIterator {
        self.entries.iter()
    }

    /// The holds, to change; a hold's `lease` is its key here and must not
    /// be changed through this.
    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut Hold> + ExactSizeIterator {
        self.entries.iter_mut()
    }

    /// Keeps the holds `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&LeaseId, &mut Hold) -> bool) {
        self.entries.retain_mut(|h| {
            let lease = h.lease;
            keep(&lease, h)
        });
    }
}

impl std::fmt::Debug for HoldMap {
    /// As a map, as the `BTreeMap` it replaces printed (fixtures' texts).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl FromIterator<(LeaseId, Hold)> for HoldMap {
    /// Later entries for the same lease replace earlier ones (as a map's
    /// `collect` does).
    fn from_iter<I: IntoIterator<Item = (LeaseId, Hold)>>(iter: I) -> Self {
        let mut map = HoldMap::new();
        for (lease, hold) in iter {
            map.insert(lease, hold);
        }
        map.entries.shrink_to_fit();
        map
    }
}

impl<'a> IntoIterator for &'a HoldMap {
    type Item = (&'a LeaseId, &'a Hold);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, Hold>, fn(&'a Hold) -> (&'a LeaseId, &'a Hold)>;
    fn into_iter(self) -> Self::IntoIter {
        fn pair(h: &Hold) -> (&LeaseId, &Hold) {
            (&h.lease, h)
        }
        self.entries.iter().map(pair)
    }
}

impl IntoIterator for HoldMap {
    type Item = (LeaseId, Hold);
    type IntoIter = std::iter::Map<std::vec::IntoIter<Hold>, fn(Hold) -> (LeaseId, Hold)>;
    fn into_iter(self) -> Self::IntoIter {
        fn pair(h: Hold) -> (LeaseId, Hold) {
            (h.lease, h)
        }
        self.entries.into_iter().map(pair)
    }
}

impl Serialize for HoldMap {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for hold in &self.entries {
            map.serialize_entry(&hold.lease, hold)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for HoldMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through a BTreeMap: the same acceptance as before (duplicate keys
        // keep the last, any order sorts). A hold kept under another lease
        // than its own was refused by the state's invariant check; the key
        // is no longer stored apart, so it is refused here.
        let map = BTreeMap::<LeaseId, Hold>::deserialize(deserializer)?;
        if let Some((key, hold)) = map.iter().find(|(k, h)| **k != h.lease) {
            return Err(serde::de::Error::custom(format!(
                "the hold under lease {key} belongs to lease {}",
                hold.lease
            )));
        }
        Ok(map.into_iter().collect())
    }
}

impl std::ops::Index<&LeaseId> for HoldMap {
    type Output = Hold;
    /// Panics when `lease` holds nothing here, as a map's index does: for
    /// callers that just checked it does.
    fn index(&self, lease: &LeaseId) -> &Hold {
        match self.get(lease) {
            Some(hold) => hold,
            None => panic!("lease {lease} holds nothing on this lock"),
        }
    }
}

#[cfg(test)]
mod hold_map_tests {
    use super::*;

    fn hold(lease: LeaseId, token: Token) -> Hold {
        Hold {
            lease,
            owner: format!("owner-{lease}").into(),
            mode: Mode::Shared,
            token,
            acquired_at_wall_ms: 0,
            reason: Box::default(),
            metadata: Metadata::new(),
            acquisitions: 1,
            extensions: 0,
            from_waiter: None,
            requested_at: token,
            lock_delay_ms: 0,
        }
    }

    #[test]
    fn a_hold_map_behaves_and_serializes_as_the_btree_map_it_replaces() {
        let mut map = HoldMap::new();
        let mut model = BTreeMap::new();
        // A fixed pseudo-random walk of inserts, replacements and removals.
        let mut x: u64 = 7;
        for step in 0..2_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let lease = (x >> 33) % 13;
            if (x >> 20).is_multiple_of(3) {
                assert_eq!(map.remove(&lease), model.remove(&lease), "step {step}");
            } else {
                let h = hold(lease, step);
                assert_eq!(
                    map.insert(lease, h.clone()),
                    model.insert(lease, h),
                    "step {step}"
                );
            }
            assert_eq!(map.len(), model.len());
            assert!(
                map.iter().eq(model.iter()),
                "step {step}: same entries, same order"
            );
            assert_eq!(map.get(&lease), model.get(&lease));
            assert_eq!(map.contains_key(&lease), model.contains_key(&lease));
            assert_eq!(format!("{map:?}"), format!("{model:?}"));
            assert_eq!(
                crate::encode(&map),
                crate::encode(&model),
                "step {step}: same bincode"
            );
            let back: HoldMap = crate::decode("holds", &crate::encode(&model)).expect("decodes");
            assert_eq!(back, map);
        }
    }

    #[test]
    fn one_holder_costs_one_entry_not_a_btree_leaf() {
        let mut map = HoldMap::new();
        map.insert(1, hold(1, 1));
        assert_eq!(map.entries.capacity(), 1);
        map.remove(&1);
        assert_eq!(
            map.entries.capacity(),
            0,
            "an emptied map gives its memory back"
        );
    }
}
