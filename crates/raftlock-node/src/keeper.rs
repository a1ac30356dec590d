//! The leader's lease keeper and cluster clock (docs/safety.md, "Time").
//!
//! Only the leader keeps lease deadlines, in memory, on its monotonic clock:
//! - on becoming leader every lease gets now + ttl (a lease can only live
//!   longer than its client thinks, never shorter);
//! - a keep-alive received at `t` (answered only after the leader confirmed
//!   its leadership) moves the deadline to at least `t + ttl`;
//! - when deadlines pass, the leader marks the leases *expiring* and proposes
//!   one `ExpireLeases` entry for them; an expiring lease is never renewed
//!   again, so no client is told "renewed" about a lease whose end is already
//!   in the log.
//!
//! The cluster clock stamped on every entry continues, on a new leader, from
//! the highest value in the applied state and advances with the leader's
//! monotonic clock: it never goes back and never runs ahead of real time, so a
//! leader change can only lengthen a lock-delay.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use raftlock_core::{EventKind, LeaseId, State};

use crate::error::NodeError;

#[derive(Default)]
pub(crate) struct Keeper {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Set while this node is leader: the term it leads.
    term: Option<u64>,
    deadline_of: HashMap<LeaseId, Instant>,
    by_deadline: BTreeSet<(Instant, LeaseId)>,
    /// Leases whose expiry was proposed in this term.
    expiring: HashSet<LeaseId>,
    /// Cluster clock: value at `base_at`.
    base_ms: u64,
    base_at: Option<Instant>,
}

impl Inner {
    fn set_deadline(&mut self, lease: LeaseId, deadline: Instant) {
        if let Some(old) = self.deadline_of.insert(lease, deadline) {
            self.by_deadline.remove(&(old, lease));
        }
        self.by_deadline.insert((deadline, lease));
    }

    fn forget(&mut self, lease: LeaseId) {
        if let Some(old) = self.deadline_of.remove(&lease) {
            self.by_deadline.remove(&(old, lease));
        }
        self.expiring.remove(&lease);
    }
}

/// What the keeper wants proposed now.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Due {
    pub(crate) expire: Vec<LeaseId>,
    pub(crate) tick: bool,
}

impl Keeper {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The critical sections below never panic; a poisoned mutex still
        // holds consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn leader_term(&self) -> Option<u64> {
        self.lock().term
    }

    /// This node became leader of `term`: every lease in `state` gets a fresh
    /// deadline of now + ttl, and the cluster clock continues from the state.
    /// Called with the state read in the same critical section, so that
    /// events applied later reach [`Keeper::on_event`] with `term` set.
    pub(crate) fn become_leader(&self, term: u64, state: &State) {
        let now = Instant::now();
        let mut inner = self.lock();
        *inner = Inner {
            term: Some(term),
            base_ms: state.cluster_ms(),
            base_at: Some(now),
            ..Inner::default()
        };
        for lease in state.leases() {
            inner.set_deadline(lease.id, now + Duration::from_millis(lease.ttl_ms));
        }
        tracing::info!(
            term,
            leases = inner.deadline_of.len(),
            "lease keeper took over"
        );
    }

    pub(crate) fn step_down(&self) {
        let mut inner = self.lock();
        if inner.term.is_some() {
            tracing::info!(term = inner.term, "lease keeper stepped down");
        }
        *inner = Inner::default();
    }

    /// The cluster-clock value to stamp on an entry proposed now. On a
    /// non-leader the value does not matter (the proposal fails) but is still
    /// never below the state's.
    pub(crate) fn stamp(&self, state_cluster_ms: u64) -> u64 {
        let now = Instant::now();
        let mut inner = self.lock();
        let Some(at) = inner.base_at else {
            return state_cluster_ms;
        };
        let elapsed_ms = now.saturating_duration_since(at).as_millis() as u64;
        let value = inner.base_ms.saturating_add(elapsed_ms);
        if state_cluster_ms > value {
            // Entries of an earlier leader were applied after we took over:
            // continue from their (real) times.
            inner.base_ms = state_cluster_ms;
            inner.base_at = Some(now);
            return state_cluster_ms;
        }
        value
    }

    /// Applied events keep the deadlines in step with the state.
    pub(crate) fn on_event(&self, kind: &EventKind) {
        let mut inner = self.lock();
        if inner.term.is_none() {
            return;
        }
        match kind {
            EventKind::LeaseGranted { lease, ttl_ms, .. } => {
                // Counted from the apply, later than the receipt of the grant:
                // the lease lives at least as long as its client thinks.
                let deadline = Instant::now() + Duration::from_millis(*ttl_ms);
                inner.set_deadline(*lease, deadline);
            }
            EventKind::LeaseEnded { lease, .. } => inner.forget(*lease),
            _ => {}
        }
    }

    /// A keep-alive received at `received_at`, after this node confirmed it
    /// leads `term`: the lease lives at least `ttl` from then. `in_state`
    /// says whether the applied state has the lease; the caller reads it
    /// while holding the state's read lock (lock order: state, then keeper),
    /// so an expiry applied meanwhile cannot be missed.
    pub(crate) fn renew(
        &self,
        term: u64,
        lease: LeaseId,
        ttl: Duration,
        received_at: Instant,
        in_state: bool,
    ) -> Result<(), NodeError> {
        let mut inner = self.lock();
        if inner.term != Some(term) {
            return Err(NodeError::NoLeader);
        }
        if inner.expiring.contains(&lease) {
            return Err(NodeError::LeaseExpiring { lease });
        }
        if !in_state {
            return Err(NodeError::Lock(raftlock_core::LockError::LeaseNotFound {
                lease,
            }));
        }
        // A lease whose grant event is still on its way has no deadline yet.
        let wanted = received_at + ttl;
        let deadline = inner
            .deadline_of
            .get(&lease)
            .map_or(wanted, |current| (*current).max(wanted));
        inner.set_deadline(lease, deadline);
        Ok(())
    }

    /// How long the leader will keep `lease` without another keep-alive.
    pub(crate) fn remaining(&self, lease: LeaseId) -> Option<Duration> {
        let inner = self.lock();
        inner.term?;
        let deadline = inner.deadline_of.get(&lease)?;
        Some(deadline.saturating_duration_since(Instant::now()))
    }

    /// Leases whose deadline passed (now marked expiring), and whether a
    /// lock-delay ended and needs a `Tick`.
    pub(crate) fn due(
        &self,
        max_batch: usize,
        next_delay_end_ms: Option<u64>,
        state_cluster_ms: u64,
    ) -> Due {
        let now_ms = self.stamp(state_cluster_ms);
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.term.is_none() {
            return Due::default();
        }
        let mut expire = Vec::new();
        for (deadline, lease) in inner.by_deadline.iter() {
            if *deadline > now || expire.len() >= max_batch {
                break;
            }
            if !inner.expiring.contains(lease) {
                expire.push(*lease);
            }
        }
        for lease in &expire {
            inner.expiring.insert(*lease);
        }
        Due {
            expire,
            tick: next_delay_end_ms.is_some_and(|end| end <= now_ms),
        }
    }

    /// The expiry proposal failed (e.g. leadership lost): the leases are no
    /// longer expiring in this term and will be re-examined.
    pub(crate) fn expiry_failed(&self, leases: &[LeaseId]) {
        let mut inner = self.lock();
        for lease in leases {
            inner.expiring.remove(lease);
        }
    }

    /// The expiry entry was applied: the leases are gone (or were already).
    pub(crate) fn expiry_applied(&self, leases: &[LeaseId]) {
        let mut inner = self.lock();
        for lease in leases {
            inner.forget(*lease);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftlock_core::{Command, Request};

    fn state_with_lease(ttl_ms: u64) -> (State, LeaseId) {
        let mut s = State::new();
        s.apply(
            1,
            &Request::new(
                5_000,
                0,
                Command::GrantLease {
                    ttl_ms,
                    owner: "t".into(),
                    identity: String::new(),
                    quota: Default::default(),
                },
            ),
        );
        (s, 1)
    }

    #[test]
    fn a_new_leader_gives_every_lease_a_full_ttl() {
        let (state, lease) = state_with_lease(10_000);
        let k = Keeper::default();
        let before = Instant::now();
        k.become_leader(3, &state);
        let left = k.remaining(lease).unwrap();
        assert!(left > Duration::from_millis(9_900) - before.elapsed());
    }

    #[test]
    fn an_expiring_lease_is_never_renewed() {
        let (state, lease) = state_with_lease(1_000);
        let k = Keeper::default();
        k.become_leader(3, &state);
        // Pretend the deadline passed.
        {
            let mut inner = k.lock();
            inner.set_deadline(lease, Instant::now() - Duration::from_millis(1));
        }
        let due = k.due(10, None, 0);
        assert_eq!(due.expire, vec![lease]);
        assert_eq!(
            k.renew(3, lease, Duration::from_secs(1), Instant::now(), true),
            Err(NodeError::LeaseExpiring { lease })
        );
        // Not proposed twice.
        assert!(k.due(10, None, 0).expire.is_empty());
        // A failed proposal makes it eligible again.
        k.expiry_failed(&[lease]);
        assert_eq!(k.due(10, None, 0).expire, vec![lease]);
    }

    #[test]
    fn renewal_counts_from_receipt_and_never_shortens() {
        let (state, lease) = state_with_lease(10_000);
        let k = Keeper::default();
        k.become_leader(3, &state);
        let long_ago = Instant::now() - Duration::from_secs(9);
        k.renew(3, lease, Duration::from_secs(10), long_ago, true)
            .unwrap();
        assert!(k.remaining(lease).unwrap() > Duration::from_secs(9));
        assert_eq!(
            k.renew(4, lease, Duration::from_secs(10), Instant::now(), true),
            Err(NodeError::NoLeader)
        );
        assert!(matches!(
            k.renew(3, lease, Duration::from_secs(10), Instant::now(), false),
            Err(NodeError::Lock(_))
        ));
    }

    #[test]
    fn the_cluster_clock_continues_from_the_state_and_never_goes_back() {
        let (state, _) = state_with_lease(10_000);
        let k = Keeper::default();
        assert_eq!(k.stamp(7), 7, "not leader: the state's value");
        k.become_leader(1, &state);
        let a = k.stamp(5_000);
        assert!(a >= 5_000);
        let b = k.stamp(9_000);
        assert!(b >= 9_000, "older entries applied later move it forward");
        let c = k.stamp(0);
        assert!(c >= b);
    }

    #[test]
    fn a_tick_is_due_once_the_clock_passes_a_delay_end() {
        let (state, _) = state_with_lease(10_000);
        let k = Keeper::default();
        k.become_leader(1, &state);
        assert!(!k.due(10, Some(u64::MAX), 5_000).tick);
        assert!(k.due(10, Some(5_000), 5_000).tick);
        k.step_down();
        assert!(!k.due(10, Some(0), 5_000).tick);
    }
}
