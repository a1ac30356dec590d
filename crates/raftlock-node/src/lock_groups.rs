//! Per lock-group metrics: how long requests wait and holds last, grants,
//! contention, wait timeouts and expirations, by group of lock names.
//!
//! A name's group is the longest configured prefix it starts with
//! (`--metrics-lock-group`), else its first path segment (`jobs` for
//! `jobs/nightly/42`), else `_root` (a name with no `/`). Lock names are
//! chosen by clients, so the number of groups is capped
//! (`--metrics-max-lock-groups`): once that many exist, names of new
//! groups count under `_other`. Configured prefixes always have their group.
//!
//! Timing is this node's: a waiter's clock starts when this node applies
//! its `Queued` event, a hold's when it applies its `Acquired` event, and
//! both stop when it applies the event that ends them. The events are the
//! same on every node, so every node reports about the same numbers. What
//! started before this node (re)started, or while its apply feed lagged,
//! has no known start and is not timed. The entries in flight are bounded
//! ([`MAX_TRACKED`]); beyond that, new ones are not timed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use raftlock_core::{Applied, EventKind, LeaseEnd, LeaseId, LockError, Response, WaiterId};
use raftlock_store::metrics::{Histogram, HistogramSnapshot};

/// The group of names beyond the cap.
pub(crate) const OTHER_GROUP: &str = "_other";
/// The group of names without a `/` (and no configured prefix).
pub(crate) const ROOT_GROUP: &str = "_root";
/// A first segment longer than this is cut (at a character boundary), so
/// one label value stays small.
pub(crate) const MAX_SEGMENT_BYTES: usize = 64;
/// Waiters, and holds, timed at once; more are not timed (memory stays
/// bounded whatever the cluster's limits allow).
pub(crate) const MAX_TRACKED: usize = 1 << 18;

/// Bucket bounds of the wait and hold histograms, in microseconds: locks
/// are held from milliseconds to hours.
static LOCK_BOUNDS_US: [u64; 14] = [
    1_000,
    5_000,
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    900_000_000,
    3_600_000_000,
];

#[derive(Debug)]
struct Group {
    label: String,
    wait: Histogram,
    hold: Histogram,
    grants: u64,
    contended: u64,
    wait_timeouts: u64,
    expirations: u64,
}

impl Group {
    fn new(label: String) -> Self {
        Group {
            label,
            wait: Histogram::with_bounds_us(&LOCK_BOUNDS_US),
            hold: Histogram::with_bounds_us(&LOCK_BOUNDS_US),
            grants: 0,
            contended: 0,
            wait_timeouts: 0,
            expirations: 0,
        }
    }
}

/// One group's numbers at a scrape.
#[derive(Debug, Clone)]
pub(crate) struct GroupSnapshot {
    pub(crate) label: String,
    pub(crate) wait: HistogramSnapshot,
    pub(crate) hold: HistogramSnapshot,
    pub(crate) grants: u64,
    pub(crate) contended: u64,
    pub(crate) wait_timeouts: u64,
    pub(crate) expirations: u64,
}

#[derive(Debug, Default)]
struct Tracker {
    groups: Vec<Group>,
    by_label: HashMap<String, usize>,
    /// Queued requests: when this node applied their `Queued`, and group.
    waiting: HashMap<WaiterId, (Instant, usize)>,
    /// Holds by (name, lease): when this node applied their grant, and group.
    holding: HashMap<(String, LeaseId), (Instant, usize)>,
}

/// The lock-group metrics of one node.
#[derive(Debug)]
pub(crate) struct LockGroups {
    /// Configured prefixes, longest first (the longest match wins).
    prefixes: Vec<String>,
    /// Most groups besides `_other`.
    max_groups: usize,
    inner: Mutex<Tracker>,
}

impl LockGroups {
    /// `prefixes`: the configured groups; `max_groups`: at least as many
    /// (NodeConfig::validate checks).
    pub(crate) fn new(prefixes: &[String], max_groups: usize) -> Self {
        let mut sorted: Vec<String> = prefixes
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        sorted.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let mut tracker = Tracker::default();
        // Configured groups exist from the start, so their series are
        // there before the first lock of the group.
        for p in &sorted {
            tracker.by_label.insert(p.clone(), tracker.groups.len());
            tracker.groups.push(Group::new(p.clone()));
        }
        LockGroups {
            prefixes: sorted,
            max_groups: max_groups.max(1),
            inner: Mutex::new(tracker),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tracker> {
        // Nothing panics while holding it; the numbers stay usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The group label of `name`, before the cap.
    fn label_of<'a>(&'a self, name: &'a str) -> &'a str {
        if let Some(p) = self.prefixes.iter().find(|p| name.starts_with(p.as_str())) {
            return p;
        }
        match name.split_once('/') {
            Some((segment, _)) if !segment.is_empty() => {
                let mut end = segment.len().min(MAX_SEGMENT_BYTES);
                while !segment.is_char_boundary(end) {
                    end -= 1;
                }
                &segment[..end]
            }
            _ => ROOT_GROUP,
        }
    }

    /// The index of `name`'s group, created if the cap allows, else `_other`.
    fn group(&self, t: &mut Tracker, name: &str) -> usize {
        let label = self.label_of(name);
        if let Some(i) = t.by_label.get(label) {
            return *i;
        }
        let label = if t.groups.len() - usize::from(t.by_label.contains_key(OTHER_GROUP))
            < self.max_groups
        {
            label
        } else {
            OTHER_GROUP
        };
        if let Some(i) = t.by_label.get(label) {
            return *i;
        }
        let i = t.groups.len();
        t.by_label.insert(label.to_string(), i);
        t.groups.push(Group::new(label.to_string()));
        i
    }

    /// The events (and a `Busy` refusal) of one applied entry, applied by
    /// this node at `now`.
    pub(crate) fn on_applied(&self, applied: &Applied, now: Instant) {
        let mut guard = self.lock();
        let t = &mut *guard;
        // A batch entry carries the answers of several commands.
        let results: &[Result<Response, LockError>] = match &applied.result {
            Ok(Response::Batch { results }) => results,
            one => std::slice::from_ref(one),
        };
        for result in results {
            if let Err(LockError::Busy { name, .. }) = result {
                let g = self.group(t, name);
                t.groups[g].contended += 1;
            }
        }
        for event in &applied.events {
            match &event.kind {
                EventKind::Queued { name, waiter, .. } => {
                    let g = self.group(t, name);
                    t.groups[g].contended += 1;
                    if t.waiting.len() < MAX_TRACKED {
                        t.waiting.insert(*waiter, (now, g));
                    }
                }
                EventKind::Acquired {
                    name,
                    lease,
                    waiter,
                    ..
                } => {
                    let g = self.group(t, name);
                    let waited = match waiter {
                        // Granted at once: it waited for nothing.
                        None => Some(Duration::ZERO),
                        Some(w) => t.waiting.remove(w).map(|(at, _)| now - at),
                    };
                    let group = &mut t.groups[g];
                    group.grants += 1;
                    if let Some(waited) = waited {
                        group.wait.observe(waited);
                    }
                    if t.holding.len() < MAX_TRACKED {
                        t.holding.insert((name.clone(), *lease), (now, g));
                    }
                }
                EventKind::WaitDropped { waiter, .. } => {
                    t.waiting.remove(waiter);
                }
                EventKind::Released { name, lease, .. }
                | EventKind::ForceReleased { name, lease, .. } => {
                    Self::end_hold(t, name, *lease, now);
                }
                EventKind::Expired {
                    name, lease, how, ..
                } => {
                    if *how == LeaseEnd::Expired {
                        let g = self.group(t, name);
                        t.groups[g].expirations += 1;
                    }
                    Self::end_hold(t, name, *lease, now);
                }
                EventKind::LeaseGranted { .. }
                | EventKind::LeaseEnded { .. }
                | EventKind::Delayed { .. } => {}
            }
        }
    }

    fn end_hold(t: &mut Tracker, name: &str, lease: LeaseId, now: Instant) {
        if let Some((at, g)) = t.holding.remove(&(name.to_string(), lease)) {
            t.groups[g].hold.observe(now - at);
        }
    }

    /// An acquire on `names` gave up waiting (this node served it): one
    /// timeout for each group among the names.
    pub(crate) fn wait_timed_out<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut guard = self.lock();
        let t = &mut *guard;
        let groups: BTreeSet<usize> = names.into_iter().map(|n| self.group(t, n)).collect();
        for g in groups {
            t.groups[g].wait_timeouts += 1;
        }
    }

    /// Events were missed (the apply feed lagged): the starts in flight
    /// can no longer be matched with their ends.
    pub(crate) fn forget_in_flight(&self) {
        let mut t = self.lock();
        t.waiting.clear();
        t.holding.clear();
    }

    /// Every group's numbers, by label.
    pub(crate) fn snapshot(&self) -> Vec<GroupSnapshot> {
        let t = self.lock();
        let mut groups: Vec<GroupSnapshot> = t
            .groups
            .iter()
            .map(|g| GroupSnapshot {
                label: g.label.clone(),
                wait: g.wait.snapshot(),
                hold: g.hold.snapshot(),
                grants: g.grants,
                contended: g.contended,
                wait_timeouts: g.wait_timeouts,
                expirations: g.expirations,
            })
            .collect();
        groups.sort_by(|a, b| a.label.cmp(&b.label));
        groups
    }

    /// Waiters and holds being timed now.
    #[cfg(test)]
    fn in_flight(&self) -> (usize, usize) {
        let t = self.lock();
        (t.waiting.len(), t.holding.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftlock_core::{Event, Mode};

    fn applied(
        result: Result<raftlock_core::Response, LockError>,
        kinds: Vec<EventKind>,
    ) -> Applied {
        Applied {
            index: 1,
            result,
            events: kinds
                .into_iter()
                .map(|kind| Event { revision: 1, kind })
                .collect(),
            revision: 1,
        }
    }

    fn ok(kinds: Vec<EventKind>) -> Applied {
        applied(Ok(raftlock_core::Response::Ticked), kinds)
    }

    fn acquired(name: &str, lease: LeaseId, waiter: Option<WaiterId>) -> EventKind {
        EventKind::Acquired {
            name: name.into(),
            lease,
            owner: "o".into(),
            mode: Mode::Exclusive,
            token: 7,
            waiter,
        }
    }

    fn group<'a>(s: &'a [GroupSnapshot], label: &str) -> &'a GroupSnapshot {
        s.iter()
            .find(|g| g.label == label)
            .unwrap_or_else(|| panic!("no group {label} in {s:?}"))
    }

    #[test]
    fn the_longest_configured_prefix_wins_then_the_first_segment_then_root() {
        let g = LockGroups::new(&["jobs/".into(), "jobs/nightly/".into()], 8);
        assert_eq!(g.label_of("jobs/nightly/42"), "jobs/nightly/");
        assert_eq!(g.label_of("jobs/hourly/1"), "jobs/");
        assert_eq!(g.label_of("db/primary"), "db");
        assert_eq!(g.label_of("single"), ROOT_GROUP);
        assert_eq!(g.label_of("/lead"), ROOT_GROUP);
        let long = format!("{}/x", "é".repeat(100));
        let label = g.label_of(&long);
        assert!(label.len() <= MAX_SEGMENT_BYTES && label.starts_with('é'));
    }

    #[test]
    fn groups_beyond_the_cap_count_as_other() {
        let g = LockGroups::new(&["cfg/".into()], 4);
        for i in 0..100 {
            g.on_applied(
                &ok(vec![acquired(&format!("p{i}/x"), i, None)]),
                Instant::now(),
            );
        }
        let snap = g.snapshot();
        assert_eq!(snap.len(), 5, "4 groups and _other: {snap:?}");
        assert_eq!(
            group(&snap, "cfg/").grants,
            0,
            "configured: there from the start"
        );
        assert_eq!(group(&snap, OTHER_GROUP).grants, 100 - 3);
        // A configured prefix keeps its group whatever came first.
        g.on_applied(&ok(vec![acquired("cfg/a", 500, None)]), Instant::now());
        assert_eq!(group(&g.snapshot(), "cfg/").grants, 1);

        // A cap of exactly the configured prefixes: no other label appears.
        let only = LockGroups::new(&["cfg/".into()], 1);
        for name in ["db/x", "single", "cfg/y"] {
            only.on_applied(&ok(vec![acquired(name, 1, None)]), Instant::now());
        }
        let labels: Vec<String> = only.snapshot().into_iter().map(|g| g.label).collect();
        assert_eq!(labels, ["_other", "cfg/"]);
    }

    #[test]
    fn waits_holds_contention_and_expirations_are_counted_in_their_group() {
        let g = LockGroups::new(&[], 8);
        let t0 = Instant::now();
        g.on_applied(&ok(vec![acquired("jobs/a", 1, None)]), t0);
        // Refused Busy, inside a batch of client commands.
        g.on_applied(
            &applied(
                Ok(raftlock_core::Response::Batch {
                    results: vec![Err(LockError::Busy {
                        name: "jobs/a".into(),
                        holders: 1,
                        waiters: 0,
                        delayed_until_ms: None,
                    })],
                }),
                vec![],
            ),
            t0,
        );
        g.on_applied(
            &ok(vec![EventKind::Queued {
                name: "jobs/a".into(),
                lease: 2,
                waiter: 9,
                position: 1,
            }]),
            t0,
        );
        let t1 = t0 + Duration::from_millis(300);
        g.on_applied(
            &ok(vec![
                EventKind::Released {
                    name: "jobs/a".into(),
                    lease: 1,
                    token: 7,
                },
                acquired("jobs/a", 2, Some(9)),
            ]),
            t1,
        );
        let t2 = t1 + Duration::from_secs(2);
        g.on_applied(
            &ok(vec![EventKind::Expired {
                name: "jobs/a".into(),
                lease: 2,
                token: 8,
                how: LeaseEnd::Expired,
            }]),
            t2,
        );
        g.wait_timed_out(["jobs/b", "jobs/c", "other/x"]);
        let snap = g.snapshot();
        let jobs = group(&snap, "jobs");
        assert_eq!(jobs.grants, 2);
        assert_eq!(jobs.contended, 2, "one Busy, one queued");
        assert_eq!(jobs.expirations, 1);
        assert_eq!(jobs.wait_timeouts, 1, "one per group per request");
        assert_eq!(group(&snap, "other").wait_timeouts, 1);
        assert_eq!(jobs.wait.count, 2, "the immediate grant waited 0");
        assert!(
            (jobs.wait.sum_seconds - 0.3).abs() < 1e-6,
            "{:?}",
            jobs.wait
        );
        assert_eq!(jobs.hold.count, 2);
        assert!(
            (jobs.hold.sum_seconds - 2.3).abs() < 1e-6,
            "{:?}",
            jobs.hold
        );
        assert_eq!(g.in_flight(), (0, 0), "nothing left in flight");
    }

    #[test]
    fn an_end_whose_start_was_not_seen_is_not_timed() {
        let g = LockGroups::new(&[], 8);
        // As after a restart: the grant of a waiter queued before it.
        g.on_applied(&ok(vec![acquired("a/x", 1, Some(3))]), Instant::now());
        g.forget_in_flight();
        g.on_applied(
            &ok(vec![EventKind::Released {
                name: "a/x".into(),
                lease: 1,
                token: 7,
            }]),
            Instant::now(),
        );
        let snap = g.snapshot();
        let a = group(&snap, "a");
        assert_eq!((a.grants, a.wait.count, a.hold.count), (1, 0, 0));
        // A revoked lease's holds end, but that is no expiration.
        g.on_applied(
            &ok(vec![EventKind::Expired {
                name: "a/y".into(),
                lease: 4,
                token: 9,
                how: LeaseEnd::Revoked,
            }]),
            Instant::now(),
        );
        assert_eq!(group(&g.snapshot(), "a").expirations, 0);
    }
}
