//! Linearizability of lock operations against a lock with modes and
//! leases, checked with the Wing–Gong–Lowe search (as in Porcupine and
//! Knossos' `wgl`).
//!
//! Names are independent, so each name's operations are checked on their
//! own (P-compositionality). The model of one name follows raftlock-core's
//! state machine:
//! - `holders`: lease → (token, mode) of each hold (token 0 when unknown
//!   because the grant came from an indeterminate acquire). A new hold must
//!   fit beside the others: an exclusive one alone; shared ones together
//!   but never beside an exclusive one; at most `permits` semaphore holds,
//!   all with the permits of the holds already there (the first acquirer
//!   fixes them while the lock exists), and never beside a hold of the
//!   readers/writer kind;
//! - `last_token` and its mode: a new grant's token must exceed the last
//!   one, or equal it when both are shared (or both semaphore) holds: one
//!   entry may let in a run of readers or semaphore waiters together;
//! - `dead`: leases known to have ended.
//!
//! A re-acquire by a lease that already holds the name returns the existing
//! hold (same token, same mode). A try-acquire answered LOCK_BUSY asserts
//! that the hold could not be granted: it does not fit beside the holders
//! — or, for a shared request, a writer was queued ahead (raftlock lets no
//! new reader overtake a queued writer). The model has no queue, so a busy
//! answer to a shared request that overlaps in time a waiting exclusive
//! acquire of another lease asserts nothing and is dropped. A semaphore's
//! queue is non-empty only while all permits are taken, so its busy
//! answers need no such allowance. Waiting acquires take effect at one
//! point of their interval; FIFO order among waiters is not checked here.
//!
//! Leases end without an operation in the history (expiry). The model lets
//! lease L end right before an operation X only if X completed after L's
//! lower bound (the latest `send time + ttl` of its acknowledged grant and
//! keep-alives, [`super::lease_lower_bounds`]): the cluster promises never
//! to end a lease earlier, and X's linearization point is before X's
//! completion. Linearization points only move forward, so every operation
//! placed after that expiry must also have completed after the bound: the
//! state keeps the highest such bound (`floor`) and refuses operations that
//! completed before it. This is what makes "the holder paused past its
//! lease and the lock moved on" legal while "two holders at once" is not.
//!
//! A waiting acquire that ended with WAIT_TIMEOUT is special: raftlock
//! answers it only after its CancelWait entry was applied, which removes
//! the waiter or, if the grant won the race, releases the hold it got. So it
//! may have held the lock for a while inside its own interval and certainly
//! holds nothing after it. The model drops such ops and accepts LOCK_BUSY
//! answers to other leases that overlap one in time (a transient holder may
//! explain them); both only make the model more permissive.
//!
//! Indeterminate (info) operations may take effect at any point after their
//! invocation, with no upper bound, or never: their return is at infinity
//! and the model offers both "took effect" and "did not".
//!
//! The search stops after a budget of steps or time with the verdict
//! "unknown" instead of running on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::{CheckResult, Verdict, lease_lower_bounds};
use crate::history::{F, History, HoldMode, OpType};

/// How much search the checker may spend (over all names together).
#[derive(Debug, Clone)]
pub struct Budget {
    pub max_steps: u64,
    pub max_time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_steps: 20_000_000,
            max_time: Duration::from_secs(60),
        }
    }
}

/// A lock operation as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AcquireOk(u64),
    /// A try-acquire refused with LOCK_BUSY.
    AcquireBusy,
    /// Refused because the lease no longer exists (acquire or release).
    LeaseGone,
    AcquireUnknown,
    ReleaseOk(u64),
    /// Refused: the lease does not hold the name with this token.
    ReleaseRefused(u64),
    ReleaseUnknown(u64),
}

#[derive(Debug, Clone)]
struct LOp {
    lease: u64,
    kind: Kind,
    /// The mode an acquire asked for (exclusive for releases).
    mode: HoldMode,
    call_ns: u64,
    /// None: indeterminate, returns at infinity.
    ret_ns: Option<u64>,
    /// Lower bound of the lease's end (ns).
    lease_end_lb: u64,
    invoke_index: u64,
    complete_index: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MState {
    /// (lease, token, mode), sorted by lease.
    holders: Vec<(u64, u64, HoldMode)>,
    last_token: u64,
    /// The mode of the grant that got `last_token`.
    last_mode: Option<HoldMode>,
    dead: Vec<u64>,
    /// The highest lower bound of a lease ended so far: every operation
    /// linearized from here on completed after it.
    floor: u64,
}

impl MState {
    fn is_dead(&self, lease: u64) -> bool {
        self.dead.binary_search(&lease).is_ok()
    }

    fn hold_of(&self, lease: u64) -> Option<(u64, HoldMode)> {
        self.holders
            .iter()
            .find(|h| h.0 == lease)
            .map(|&(_, t, m)| (t, m))
    }

    fn expire(&self, lease: u64, bounds: &HashMap<u64, u64>) -> MState {
        let mut s = self.clone();
        s.floor = s.floor.max(bounds.get(&lease).copied().unwrap_or(0));
        if let Err(at) = s.dead.binary_search(&lease) {
            s.dead.insert(at, lease);
        }
        s.holders.retain(|h| h.0 != lease);
        s
    }

    fn without(&self, lease: u64) -> MState {
        let mut s = self.clone();
        s.holders.retain(|h| h.0 != lease);
        s
    }
}

/// Whether the holders and `mode` are of different lock kinds (a
/// semaphore, or one with other permits, beside a readers/writer lock): the
/// cluster answers KIND_CONFLICT or PERMITS_MISMATCH, never a grant or busy.
fn kind_conflict(holders: &[(u64, u64, HoldMode)], mode: HoldMode) -> bool {
    holders.iter().any(|&(_, _, m)| match (m, mode) {
        (HoldMode::Semaphore { .. }, _) | (_, HoldMode::Semaphore { .. }) => m != mode,
        _ => false,
    })
}

/// Whether a new hold in `mode` fits beside `holders`.
fn fits(holders: &[(u64, u64, HoldMode)], mode: HoldMode) -> bool {
    if kind_conflict(holders, mode) {
        return false;
    }
    match mode {
        HoldMode::Exclusive => holders.is_empty(),
        HoldMode::Shared => holders.iter().all(|h| h.2 == HoldMode::Shared),
        HoldMode::Semaphore { permits } => holders.len() < permits as usize,
    }
}

/// Whether `lease` may have ended before `op` took effect.
fn can_expire(op: &LOp, lease: u64, bounds: &HashMap<u64, u64>) -> bool {
    let lb = bounds.get(&lease).copied().unwrap_or(0);
    op.ret_ns.is_none_or(|r| r >= lb)
}

/// The states in which a new hold for `op` fits: `s` itself if it fits,
/// else `s` after each smallest set of expiries (of leases that may have
/// ended before `op`) that makes room. (Ending a lease only when an
/// operation needs it loses nothing: a later end constrains fewer ops.)
fn make_room(s: &MState, op: &LOp, bounds: &HashMap<u64, u64>) -> Vec<MState> {
    if fits(&s.holders, op.mode) {
        return vec![s.clone()];
    }
    // Holders that must go whatever else happens.
    let must: Vec<u64> = s
        .holders
        .iter()
        .filter(|&&(_, _, m)| match op.mode {
            HoldMode::Exclusive => true,
            HoldMode::Shared => m != HoldMode::Shared,
            HoldMode::Semaphore { .. } => m != op.mode,
        })
        .map(|h| h.0)
        .collect();
    if must.iter().any(|&l| !can_expire(op, l, bounds)) {
        return vec![];
    }
    let mut base = s.clone();
    for &l in &must {
        base = base.expire(l, bounds);
    }
    let HoldMode::Semaphore { permits } = op.mode else {
        return vec![base];
    };
    let excess = (base.holders.len() + 1).saturating_sub(permits as usize);
    if excess == 0 {
        return vec![base];
    }
    let candidates: Vec<u64> = base
        .holders
        .iter()
        .map(|h| h.0)
        .filter(|&l| can_expire(op, l, bounds))
        .collect();
    let mut out = Vec::new();
    let mut chosen = Vec::with_capacity(excess);
    fn choose(
        from: &[u64],
        k: usize,
        chosen: &mut Vec<u64>,
        base: &MState,
        bounds: &HashMap<u64, u64>,
        out: &mut Vec<MState>,
    ) {
        if chosen.len() == k {
            let mut st = base.clone();
            for &l in chosen.iter() {
                st = st.expire(l, bounds);
            }
            out.push(st);
            return;
        }
        for (i, &l) in from.iter().enumerate() {
            chosen.push(l);
            choose(&from[i + 1..], k, chosen, base, bounds, out);
            chosen.pop();
        }
    }
    choose(&candidates, excess, &mut chosen, &base, bounds, &mut out);
    out
}

/// Every state the model may be in after `op` (empty: `op` is illegal here).
fn step(s: &MState, op: &LOp, bounds: &HashMap<u64, u64>) -> Vec<MState> {
    if op.ret_ns.is_some_and(|r| r < s.floor) {
        // Completed before a lease this history already ended could end.
        return vec![];
    }
    let l = op.lease;
    let mode = op.mode;
    let grant = |s: &MState, token: u64| -> Option<MState> {
        if token != 0
            && (token < s.last_token
                || (token == s.last_token && !(mode.is_shared_kind() && s.last_mode == Some(mode))))
        {
            return None;
        }
        let mut n = s.clone();
        let at = n.holders.partition_point(|h| h.0 < l);
        n.holders.insert(at, (l, token, mode));
        if token > n.last_token {
            n.last_token = token;
            n.last_mode = Some(mode);
        }
        Some(n)
    };
    match op.kind {
        Kind::AcquireOk(t) => {
            if s.is_dead(l) {
                return vec![];
            }
            match s.hold_of(l) {
                // A re-acquire returns the existing hold.
                Some((t0, m)) if m == mode && t0 == t => vec![s.clone()],
                Some((0, m)) if m == mode => {
                    // The indeterminate grant's token shows up now (other
                    // readers may have been let in after it, with higher
                    // tokens).
                    let mut n = s.clone();
                    for h in n.holders.iter_mut().filter(|h| h.0 == l) {
                        h.1 = t;
                    }
                    if t > n.last_token {
                        n.last_token = t;
                        n.last_mode = Some(mode);
                    }
                    vec![n]
                }
                Some(_) => vec![],
                None => make_room(s, op, bounds)
                    .iter()
                    .filter_map(|st| grant(st, t))
                    .collect(),
            }
        }
        Kind::AcquireBusy => {
            if s.is_dead(l)
                || s.hold_of(l).is_some()
                || kind_conflict(&s.holders, mode)
                || fits(&s.holders, mode)
            {
                vec![]
            } else {
                vec![s.clone()]
            }
        }
        Kind::LeaseGone => {
            if s.is_dead(l) {
                vec![s.clone()]
            } else if can_expire(op, l, bounds) {
                vec![s.expire(l, bounds)]
            } else {
                vec![]
            }
        }
        Kind::AcquireUnknown => {
            let mut out = vec![s.clone()];
            if !s.is_dead(l) && s.hold_of(l).is_none() {
                out.extend(
                    make_room(s, op, bounds)
                        .iter()
                        .filter_map(|st| grant(st, 0)),
                );
            }
            out
        }
        Kind::ReleaseOk(t) => match s.hold_of(l) {
            Some((t0, _)) if (t0 == t || t0 == 0) && !s.is_dead(l) => vec![s.without(l)],
            _ => vec![],
        },
        Kind::ReleaseRefused(t) => match s.hold_of(l) {
            Some((t0, _)) if t0 == t => {
                if can_expire(op, l, bounds) {
                    vec![s.expire(l, bounds)]
                } else {
                    vec![]
                }
            }
            _ => vec![s.clone()],
        },
        Kind::ReleaseUnknown(t) => {
            let mut out = vec![s.clone()];
            if let Some((t0, _)) = s.hold_of(l)
                && (t0 == t || t0 == 0)
            {
                out.push(s.without(l));
            }
            out
        }
    }
}

/// Per name, the interval, lease and mode of every acquire that ended in
/// WAIT_TIMEOUT (or, for `writers`, of every waiting exclusive acquire).
type WaitWindows = BTreeMap<String, Vec<(u64, u64, u64, HoldMode)>>;

/// The ops of each name, the timed-out waits, and how many busy answers to
/// readers were dropped because a writer may have been queued.
fn classify(history: &History) -> (BTreeMap<String, Vec<LOp>>, WaitWindows, u64) {
    let bounds = lease_lower_bounds(history);
    let mut by_name: BTreeMap<String, Vec<LOp>> = BTreeMap::new();
    let mut waits: WaitWindows = BTreeMap::new();
    // Per name, the interval and lease of every waiting exclusive acquire
    // (end u64::MAX when indeterminate): a writer that may have been queued.
    let mut writers: WaitWindows = BTreeMap::new();
    for p in history.pairs() {
        let (Some(name), Some(lease)) = (&p.invoke.name, p.invoke.args.lease_id) else {
            continue;
        };
        if p.invoke.f == F::Acquire
            && p.invoke.args.wait_ms.unwrap_or(0) > 0
            && p.invoke.args.hold_mode() == HoldMode::Exclusive
        {
            // Out of the queue by its answer, unless the answer is unknown
            // (WAIT_TIMEOUT comes after the wait was cancelled).
            let end = p.complete.map_or(u64::MAX, |c| {
                let timed_out =
                    c.result.as_ref().and_then(|r| r.error.as_deref()) == Some("WAIT_TIMEOUT");
                if c.kind == OpType::Info && !timed_out {
                    u64::MAX
                } else {
                    c.time_ns
                }
            });
            writers.entry(name.clone()).or_default().push((
                p.invoke.time_ns,
                end,
                lease,
                HoldMode::Exclusive,
            ));
        }
        let error = p.result().and_then(|r| r.error.clone()).unwrap_or_default();
        let gone = matches!(error.as_str(), "LEASE_NOT_FOUND" | "LEASE_EXPIRING");
        if p.invoke.f == F::Acquire
            && error == "WAIT_TIMEOUT"
            && let Some(c) = p.complete
        {
            waits.entry(name.clone()).or_default().push((
                p.invoke.time_ns,
                c.time_ns,
                lease,
                p.invoke.args.hold_mode(),
            ));
            continue;
        }
        let kind = match (p.invoke.f, p.outcome()) {
            (F::Acquire, OpType::Ok) => match p.result().and_then(|r| r.token) {
                Some(t) => Kind::AcquireOk(t),
                None => continue,
            },
            (F::Acquire, OpType::Fail) if error == "LOCK_BUSY" => Kind::AcquireBusy,
            (F::Acquire | F::Release, OpType::Fail) if gone => Kind::LeaseGone,
            (F::Acquire, OpType::Info) => Kind::AcquireUnknown,
            (F::Release, kind) => {
                let Some(t) = p.invoke.args.token else {
                    continue;
                };
                match kind {
                    OpType::Ok => Kind::ReleaseOk(t),
                    OpType::Fail if matches!(error.as_str(), "NOT_HOLDER" | "STALE_TOKEN") => {
                        Kind::ReleaseRefused(t)
                    }
                    OpType::Info => Kind::ReleaseUnknown(t),
                    _ => continue,
                }
            }
            // Other definite refusals took no effect and assert nothing
            // the model tracks.
            _ => continue,
        };
        by_name.entry(name.clone()).or_default().push(LOp {
            lease,
            kind,
            mode: if p.invoke.f == F::Acquire {
                p.invoke.args.hold_mode()
            } else {
                HoldMode::Exclusive
            },
            call_ns: p.invoke.time_ns,
            ret_ns: p.ok_or_fail_time_ns(),
            lease_end_lb: bounds.get(&lease).copied().unwrap_or(0),
            invoke_index: p.invoke.index,
            complete_index: p.complete.map(|c| c.index),
        });
    }
    // A busy answer to a reader overlapping a waiting writer of another
    // lease may have seen that writer queued ahead of it.
    let mut readers_behind_writers = 0;
    for (name, ops) in by_name.iter_mut() {
        let Some(ws) = writers.get_mut(name) else {
            continue;
        };
        ws.sort_unstable();
        let before = ops.len();
        ops.retain(|op| {
            if op.kind != Kind::AcquireBusy || op.mode != HoldMode::Shared {
                return true;
            }
            let end = op.ret_ns.unwrap_or(u64::MAX);
            let upto = ws.partition_point(|w| w.0 < end);
            !ws[..upto]
                .iter()
                .any(|&(_, w_end, lease, _)| w_end > op.call_ns && lease != op.lease)
        });
        readers_behind_writers += (before - ops.len()) as u64;
    }
    // A busy answer overlapping a timed-out wait of another lease may have
    // seen that wait's transient hold: it asserts nothing the model knows.
    // Except a reader's busy next to a reader's wait: readers never turn
    // readers away.
    for (name, ops) in by_name.iter_mut() {
        let Some(ws) = waits.get_mut(name) else {
            continue;
        };
        ws.sort_unstable();
        ops.retain(|op| {
            if op.kind != Kind::AcquireBusy {
                return true;
            }
            let end = op.ret_ns.unwrap_or(u64::MAX);
            let upto = ws.partition_point(|w| w.0 < end);
            !ws[..upto].iter().any(|&(_, w_end, lease, mode)| {
                w_end > op.call_ns
                    && lease != op.lease
                    && !(mode == HoldMode::Shared && op.mode == HoldMode::Shared)
            })
        });
    }
    (by_name, waits, readers_behind_writers)
}

enum Outcome {
    Linearizable,
    /// The op that could not be linearized before its return, and the ops
    /// linearized just before it on the deepest path found.
    Illegal {
        blocking: usize,
        before: Vec<usize>,
    },
    OutOfBudget,
}

struct Search<'a> {
    ops: &'a [LOp],
    bounds: HashMap<u64, u64>,
    steps: u64,
    budget_steps: u64,
    deadline: Instant,
}

const NIL: usize = usize::MAX;
/// Memory the search's cache of visited configurations may take.
const MAX_CACHE_BYTES: usize = 1 << 30;
const HEAD: usize = 0;

impl Search<'_> {
    fn run(&mut self) -> Outcome {
        let n = self.ops.len();
        // Events: node 1 + 2i is op i's call, 2 + 2i its return.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
        for (i, op) in self.ops.iter().enumerate() {
            events.push((op.call_ns, false, i));
            events.push((op.ret_ns.unwrap_or(u64::MAX), true, i));
        }
        // Calls before returns at equal times (more concurrency, never a
        // false alarm).
        events.sort_by_key(|&(t, is_ret, i)| (t, is_ret, i));
        let mut next = vec![NIL; 2 * n + 1];
        let mut prev = vec![NIL; 2 * n + 1];
        let mut node_of_call = vec![0; n];
        let mut node_of_ret = vec![0; n];
        let mut is_call = vec![false; 2 * n + 1];
        let mut op_of = vec![0; 2 * n + 1];
        let mut last = HEAD;
        for (k, &(_, is_ret, i)) in events.iter().enumerate() {
            let node = k + 1;
            next[last] = node;
            prev[node] = last;
            last = node;
            is_call[node] = !is_ret;
            op_of[node] = i;
            if is_ret {
                node_of_ret[i] = node;
            } else {
                node_of_call[i] = node;
            }
        }
        let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
            let (p, nx) = (prev[x], next[x]);
            next[p] = nx;
            if nx != NIL {
                prev[nx] = p;
            }
        };
        let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
            let (p, nx) = (prev[x], next[x]);
            next[p] = x;
            if nx != NIL {
                prev[nx] = x;
            }
        };

        let words = n.div_ceil(64).max(1);
        let mut linearized = vec![0u64; words];
        let mut state = MState {
            holders: Vec::new(),
            last_token: 0,
            last_mode: None,
            dead: Vec::new(),
            floor: 0,
        };
        let mut stack: Vec<(usize, MState, usize)> = Vec::new();
        let mut cache: HashSet<(Vec<u64>, MState)> = HashSet::new();
        let mut cursor = next[HEAD];
        let mut start_alt = 0;
        let mut deepest: (usize, usize, Vec<usize>) = (0, 0, Vec::new());
        loop {
            self.steps += 1;
            if self.steps >= self.budget_steps
                || (self.steps.is_multiple_of(4096)
                    && (Instant::now() >= self.deadline
                        || cache.len().saturating_mul(words * 8 + 64) > MAX_CACHE_BYTES))
            {
                return Outcome::OutOfBudget;
            }
            if next[HEAD] == NIL {
                return Outcome::Linearizable;
            }
            let e = cursor;
            if e == NIL {
                // Cannot happen: the last event is always a return.
                return Outcome::OutOfBudget;
            }
            let i = op_of[e];
            if is_call[e] {
                let alts = step(&state, &self.ops[i], &self.bounds);
                let mut advanced = false;
                for (k, ns) in alts.into_iter().enumerate().skip(start_alt) {
                    linearized[i / 64] |= 1 << (i % 64);
                    if cache.insert((linearized.clone(), ns.clone())) {
                        let old = std::mem::replace(&mut state, ns);
                        stack.push((i, old, k + 1));
                        unlink(&mut next, &mut prev, node_of_call[i]);
                        unlink(&mut next, &mut prev, node_of_ret[i]);
                        cursor = next[HEAD];
                        advanced = true;
                        break;
                    }
                    linearized[i / 64] &= !(1 << (i % 64));
                }
                start_alt = 0;
                if !advanced {
                    cursor = next[e];
                }
            } else {
                if stack.len() >= deepest.0 {
                    let before = stack.iter().rev().take(6).map(|f| f.0).collect();
                    deepest = (stack.len(), i, before);
                }
                let Some((j, old, alt)) = stack.pop() else {
                    return Outcome::Illegal {
                        blocking: deepest.1,
                        before: deepest.2,
                    };
                };
                linearized[j / 64] &= !(1 << (j % 64));
                relink(&mut next, &mut prev, node_of_ret[j]);
                relink(&mut next, &mut prev, node_of_call[j]);
                state = old;
                cursor = node_of_call[j];
                start_alt = alt;
            }
        }
    }
}

/// Runs the check within `budget`.
pub fn check(history: &History, budget: &Budget) -> CheckResult {
    let mut result = CheckResult::new("linearizability");
    let (by_name, waits, readers_behind_writers) = classify(history);
    result.count("busy-readers-behind-writers", readers_behind_writers);
    result.count(
        "wait-timeouts",
        waits.values().map(|w| w.len() as u64).sum(),
    );
    let bounds = lease_lower_bounds(history);
    let deadline = Instant::now() + budget.max_time;
    let mut steps = 0;
    let mut unknown = Vec::new();
    for (name, ops) in &by_name {
        result.count("ops", ops.len() as u64);
        result.count(
            "indeterminate-ops",
            ops.iter().filter(|o| o.ret_ns.is_none()).count() as u64,
        );
        let mut search = Search {
            ops,
            bounds: bounds.clone(),
            steps,
            budget_steps: budget.max_steps,
            deadline,
        };
        let outcome = search.run();
        steps = search.steps;
        match outcome {
            Outcome::Linearizable => result.count("names-linearizable", 1),
            Outcome::OutOfBudget => unknown.push(name.clone()),
            Outcome::Illegal { blocking, before } => {
                let describe = |o: &LOp| {
                    format!(
                        "{:?} {:?} by lease {} [{:.3} s .. {}] (lease may end from {:.3} s)",
                        o.kind,
                        o.mode,
                        o.lease,
                        o.call_ns as f64 / 1e9,
                        o.ret_ns
                            .map_or("?".to_string(), |r| format!("{:.3} s", r as f64 / 1e9)),
                        o.lease_end_lb as f64 / 1e9
                    )
                };
                let b = &ops[blocking];
                let mut involved: Vec<u64> = vec![b.invoke_index];
                involved.extend(b.complete_index);
                let mut text = Vec::new();
                for &k in before.iter().rev() {
                    involved.extend(ops[k].complete_index.or(Some(ops[k].invoke_index)));
                    text.push(describe(&ops[k]));
                }
                result.violation(
                    format!(
                        "\"{name}\": no linearization of {} after [{}]",
                        describe(b),
                        text.join(", ")
                    ),
                    involved,
                );
            }
        }
    }
    result.count("search-steps", steps);
    if !unknown.is_empty() {
        result.count("names-unknown", unknown.len() as u64);
        if result.verdict == Verdict::Pass {
            result.verdict = Verdict::Unknown;
        }
        result.note = Some(format!(
            "search budget ({} steps, {:?}) spent before deciding {:?}",
            budget.max_steps, budget.max_time, unknown
        ));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::synth::Builder;
    use crate::history::OpType::*;

    fn run(b: Builder) -> CheckResult {
        check(&b.history(), &Budget::default())
    }

    #[test]
    fn sequential_holds_are_linearizable() {
        let mut b = Builder::default();
        b.grant(0, 0, 1, 100, 10_000);
        b.grant(1, 0, 1, 200, 10_000);
        b.acquire(0, 2, 3, "a", 100, Ok, Some(10), 10_000);
        b.acquire(1, 4, 5, "a", 200, Fail, None, 0);
        b.release(0, 6, 7, "a", 100, 10, Ok);
        b.acquire(1, 8, 9, "a", 200, Ok, Some(12), 10_000);
        b.release(1, 10, 11, "a", 200, 12, Ok);
        // Stale release: refused, fine.
        b.release(0, 12, 13, "a", 100, 10, Fail);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.counts["ops"], 6);
    }

    #[test]
    fn concurrent_acquires_may_linearize_either_way() {
        let mut b = Builder::default();
        b.grant(0, 0, 1, 100, 10_000);
        b.grant(1, 0, 1, 200, 10_000);
        // Overlapping in time: 1's busy answer is legal if 0 went first.
        b.acquire(0, 2, 9, "a", 100, Ok, Some(10), 10_000);
        b.acquire(1, 3, 5, "a", 200, Fail, None, 0);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    }

    #[test]
    fn a_double_grant_is_not_linearizable() {
        let mut b = Builder::default();
        b.grant(0, 0, 1, 100, 10_000);
        b.grant(1, 0, 1, 200, 10_000);
        b.acquire(0, 2, 3, "a", 100, Ok, Some(10), 10_000);
        b.acquire(1, 4, 5, "a", 200, Ok, Some(11), 10_000);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        assert!(!r.violations[0].ops.is_empty());
    }

    #[test]
    fn busy_on_a_free_lock_is_not_linearizable() {
        let mut b = Builder::default();
        b.grant(0, 0, 1, 100, 10_000);
        b.acquire(0, 2, 3, "a", 100, Fail, None, 0);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn an_indeterminate_acquire_may_explain_a_busy_answer() {
        let mut b = Builder::default();
        b.grant(0, 0, 1, 100, 10_000);
        b.grant(1, 0, 1, 200, 10_000);
        b.acquire(0, 2, 3, "a", 100, Info, None, 0);
        b.acquire(1, 4, 5, "a", 200, Fail, None, 0);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    }

    #[test]
    fn a_lock_moves_on_only_after_the_holders_lease_may_have_ended() {
        // Lease 100 (ttl 1 s, granted at 0) holds "a" and never releases.
        let legal = {
            let mut b = Builder::default();
            b.grant(0, 0, 1, 100, 1_000);
            b.grant(1, 0, 1, 200, 10_000);
            b.acquire(0, 2, 3, "a", 100, Ok, Some(10), 1_000);
            b.acquire(1, 1_200, 1_300, "a", 200, Ok, Some(20), 10_000);
            run(b)
        };
        assert_eq!(legal.verdict, Verdict::Pass, "{legal:?}");
        let early = {
            let mut b = Builder::default();
            b.grant(0, 0, 1, 100, 1_000);
            b.grant(1, 0, 1, 200, 10_000);
            b.acquire(0, 2, 3, "a", 100, Ok, Some(10), 1_000);
            b.acquire(1, 500, 600, "a", 200, Ok, Some(20), 10_000);
            run(b)
        };
        assert_eq!(early.verdict, Verdict::Fail, "{early:?}");
    }

    #[test]
    fn an_indeterminate_op_cannot_make_an_early_steal_legal() {
        // Lease 300's acquire may have happened at any time, even after
        // lease 100 could have ended, but lease 200's grant at 600 ms came
        // before that: still two holders at once.
        let mut b = Builder::default();
        b.grant(0, 0, 1, 100, 1_000);
        b.grant(1, 0, 1, 200, 10_000);
        b.acquire(0, 2, 3, "a", 100, Ok, Some(10), 1_000);
        b.acquire(2, 4, 5, "a", 300, Info, None, 0);
        b.acquire(1, 500, 600, "a", 200, Ok, Some(20), 10_000);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn a_timed_out_wait_may_explain_a_busy_answer_but_holds_nothing_after() {
        let wait_timeout = |b: &mut Builder, p: i64, t0: u64, t1: u64, lease: u64| {
            let args = crate::history::Args {
                lease_id: Some(lease),
                wait_ms: Some(500),
                ..Default::default()
            };
            b.op(t0, p, Invoke, F::Acquire, Some("a"), args.clone(), None);
            b.op(
                t1,
                p,
                Info,
                F::Acquire,
                Some("a"),
                args,
                Some(crate::history::OpResult {
                    error: Some("WAIT_TIMEOUT".into()),
                    ..Default::default()
                }),
            );
        };
        let mut b = Builder::default();
        b.grant(0, 0, 1, 100, 10_000);
        b.grant(1, 0, 1, 200, 10_000);
        wait_timeout(&mut b, 0, 2, 500, 100);
        b.acquire(1, 100, 110, "a", 200, Fail, None, 0);
        // After the timeout the lock is free.
        b.acquire(1, 600, 610, "a", 200, Ok, Some(30), 10_000);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.counts["wait-timeouts"], 1);

        // A busy answer outside the wait's interval still needs a holder.
        let mut b = Builder::default();
        b.grant(0, 0, 1, 100, 10_000);
        b.grant(1, 0, 1, 200, 10_000);
        wait_timeout(&mut b, 0, 2, 500, 100);
        b.acquire(1, 600, 610, "a", 200, Fail, None, 0);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn a_readers_timed_out_wait_does_not_explain_a_busy_reader() {
        let build = |wait_mode: HoldMode| {
            let mut b = Builder::default();
            leases(&mut b, 10_000);
            let args = crate::history::Args {
                lease_id: Some(100),
                wait_ms: Some(500),
                ..Default::default()
            }
            .with_mode(wait_mode);
            b.op(2, 0, Invoke, F::Acquire, Some("n"), args.clone(), None);
            b.op(
                600,
                0,
                Info,
                F::Acquire,
                Some("n"),
                args,
                Some(crate::history::OpResult {
                    error: Some("WAIT_TIMEOUT".into()),
                    ..Default::default()
                }),
            );
            busy(&mut b, 1, (10, 11), 200, HoldMode::Shared);
            run(b)
        };
        // A writer's transient hold may have turned the reader away ...
        let r = build(HoldMode::Exclusive);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        // ... a reader's never: the lock was free for readers.
        let r = build(HoldMode::Shared);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn a_grant_with_a_lower_token_than_an_earlier_one_is_not_linearizable() {
        let mut b = Builder::default();
        b.grant(0, 0, 1, 100, 10_000);
        b.acquire(0, 2, 3, "a", 100, Ok, Some(10), 10_000);
        b.release(0, 4, 5, "a", 100, 10, Ok);
        b.acquire(0, 6, 7, "a", 100, Ok, Some(9), 10_000);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn a_spent_budget_gives_unknown_not_a_hang() {
        let mut b = Builder::default();
        b.grant(0, 0, 1, 100, 10_000);
        for i in 0..50u64 {
            let lease = 1_000 + i;
            b.acquire(i as i64 + 1, 2, 3, "a", lease, Info, None, 0);
        }
        // Illegal whatever the indeterminate ops did (lease 200 cannot
        // have ended by 21 ms), but proving it means trying the subsets of
        // 50 indeterminate ops: far beyond the budget.
        b.grant(9, 0, 1, 200, 10_000);
        b.acquire(0, 10, 11, "a", 100, Ok, Some(5), 10_000);
        b.acquire(9, 20, 21, "a", 200, Ok, Some(6), 10_000);
        let r = check(
            &b.history(),
            &Budget {
                max_steps: 100,
                max_time: Duration::from_secs(1),
            },
        );
        assert_eq!(r.verdict, Verdict::Unknown, "{r:?}");
        assert!(r.note.is_some());
    }

    fn holds(
        b: &mut Builder,
        p: i64,
        (t0, t1): (u64, u64),
        lease: u64,
        token: u64,
        mode: HoldMode,
    ) {
        b.acquire_mode(p, t0, t1, "n", lease, Ok, Some(token), 10_000, mode);
    }

    fn busy(b: &mut Builder, p: i64, (t0, t1): (u64, u64), lease: u64, mode: HoldMode) {
        b.acquire_mode(p, t0, t1, "n", lease, Fail, None, 0, mode);
    }

    fn leases(b: &mut Builder, ttl_ms: u64) {
        for (p, lease) in [(0, 100), (1, 200), (2, 300), (3, 400)] {
            b.grant(p, 0, 1, lease, ttl_ms);
        }
    }

    const SEM2: HoldMode = HoldMode::Semaphore { permits: 2 };

    #[test]
    fn readers_hold_together_and_keep_a_writer_out() {
        let mut b = Builder::default();
        leases(&mut b, 10_000);
        holds(&mut b, 0, (2, 3), 100, 10, HoldMode::Shared);
        holds(&mut b, 1, (4, 5), 200, 11, HoldMode::Shared);
        busy(&mut b, 2, (6, 7), 300, HoldMode::Exclusive);
        b.release(0, 8, 9, "n", 100, 10, Ok);
        b.release(1, 10, 11, "n", 200, 11, Ok);
        holds(&mut b, 2, (12, 13), 300, 14, HoldMode::Exclusive);
        busy(&mut b, 3, (14, 15), 400, HoldMode::Shared);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");

        // A writer granted while the readers hold.
        let mut b = Builder::default();
        leases(&mut b, 10_000);
        holds(&mut b, 0, (2, 3), 100, 10, HoldMode::Shared);
        holds(&mut b, 1, (4, 5), 200, 11, HoldMode::Shared);
        holds(&mut b, 2, (6, 7), 300, 12, HoldMode::Exclusive);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");

        // A reader turned away while only readers hold (and no writer waits).
        let mut b = Builder::default();
        leases(&mut b, 10_000);
        holds(&mut b, 0, (2, 3), 100, 10, HoldMode::Shared);
        busy(&mut b, 1, (4, 5), 200, HoldMode::Shared);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn a_reader_may_be_turned_away_while_a_writer_waits() {
        let build = |writer_waits: bool| {
            let mut b = Builder::default();
            leases(&mut b, 10_000);
            holds(&mut b, 0, (2, 3), 100, 10, HoldMode::Shared);
            let args = crate::history::Args {
                lease_id: Some(200),
                wait_ms: Some(if writer_waits { 500 } else { 0 }),
                ..Default::default()
            };
            // Writer 200 asks at 4 ms and is answered at 60 ms, after the
            // reader let go.
            b.op(4, 1, Invoke, F::Acquire, Some("n"), args.clone(), None);
            b.op(
                60,
                1,
                Ok,
                F::Acquire,
                Some("n"),
                args,
                Some(crate::history::OpResult {
                    lease_id: Some(200),
                    token: Some(20),
                    valid_from_ns: Some(60_000_000),
                    valid_until_ns: Some(10_000_000_000),
                    ..Default::default()
                }),
            );
            busy(&mut b, 2, (10, 11), 300, HoldMode::Shared);
            b.release(0, 50, 51, "n", 100, 10, Ok);
            run(b)
        };
        let r = build(true);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.counts["busy-readers-behind-writers"], 1);
        // A try-acquire of the writer cannot have been queued: the busy
        // reader has no explanation.
        let r = build(false);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn a_semaphore_grants_up_to_its_permits() {
        let mut b = Builder::default();
        leases(&mut b, 10_000);
        holds(&mut b, 0, (2, 3), 100, 10, SEM2);
        holds(&mut b, 1, (4, 5), 200, 11, SEM2);
        busy(&mut b, 2, (6, 7), 300, SEM2);
        b.release(0, 8, 9, "n", 100, 10, Ok);
        holds(&mut b, 2, (10, 11), 300, 12, SEM2);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");

        // A third holder of two permits.
        let mut b = Builder::default();
        leases(&mut b, 10_000);
        holds(&mut b, 0, (2, 3), 100, 10, SEM2);
        holds(&mut b, 1, (4, 5), 200, 11, SEM2);
        holds(&mut b, 2, (6, 7), 300, 12, SEM2);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");

        // Busy with a permit free.
        let mut b = Builder::default();
        leases(&mut b, 10_000);
        holds(&mut b, 0, (2, 3), 100, 10, SEM2);
        busy(&mut b, 1, (4, 5), 200, SEM2);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");

        // Other permits while the first acquirer's still hold.
        let mut b = Builder::default();
        leases(&mut b, 10_000);
        holds(&mut b, 0, (2, 3), 100, 10, SEM2);
        holds(
            &mut b,
            1,
            (4, 5),
            200,
            11,
            HoldMode::Semaphore { permits: 3 },
        );
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn a_semaphore_permit_frees_only_once_a_holders_lease_may_have_ended() {
        let build = |third_at: u64| {
            let mut b = Builder::default();
            leases(&mut b, 1_000);
            holds(&mut b, 0, (2, 3), 100, 10, SEM2);
            holds(&mut b, 1, (4, 5), 200, 11, SEM2);
            b.grant(2, 0, 1, 500, 10_000);
            b.acquire_mode(
                2,
                third_at,
                third_at + 50,
                "n",
                500,
                Ok,
                Some(30),
                10_000,
                SEM2,
            );
            run(b)
        };
        let r = build(1_200);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        let r = build(400);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn readers_let_in_by_one_entry_share_its_token_but_a_writer_never_does() {
        let mut b = Builder::default();
        leases(&mut b, 10_000);
        holds(&mut b, 0, (2, 3), 100, 10, HoldMode::Shared);
        holds(&mut b, 1, (2, 4), 200, 10, HoldMode::Shared);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");

        let mut b = Builder::default();
        leases(&mut b, 10_000);
        holds(&mut b, 0, (2, 3), 100, 10, HoldMode::Exclusive);
        b.release(0, 4, 5, "n", 100, 10, Ok);
        holds(&mut b, 1, (6, 7), 200, 10, HoldMode::Shared);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn a_readers_reacquire_returns_its_existing_hold() {
        let build = |token: u64| {
            let mut b = Builder::default();
            leases(&mut b, 10_000);
            holds(&mut b, 0, (2, 3), 100, 10, HoldMode::Shared);
            holds(&mut b, 1, (4, 5), 200, 11, HoldMode::Shared);
            holds(&mut b, 0, (6, 7), 100, token, HoldMode::Shared);
            run(b)
        };
        let r = build(10);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        let r = build(12);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn an_indeterminate_reader_may_explain_a_busy_writer() {
        let build = |reader_outcome: OpType| {
            let mut b = Builder::default();
            leases(&mut b, 10_000);
            b.acquire_mode(0, 2, 3, "n", 100, reader_outcome, None, 0, HoldMode::Shared);
            busy(&mut b, 1, (4, 5), 200, HoldMode::Exclusive);
            run(b)
        };
        let r = build(Info);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        // A reader refused (busy on a free lock: itself illegal) explains
        // nothing; the check must fail.
        let r = build(Fail);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn a_lock_moves_on_after_the_granted_ttl_even_if_more_was_asked() {
        // Lease 100 asked for 10 s; the cluster granted 1 s. It holds "a"
        // and never releases; lease 200 gets it at 1.2 s: legal.
        let mut b = Builder::default();
        b.grant_answered(0, (0, 1), 100, 10_000, 1_000);
        b.grant(1, 0, 1, 200, 10_000);
        b.acquire(0, 2, 3, "a", 100, Ok, Some(10), 1_000);
        b.acquire(1, 1_200, 1_300, "a", 200, Ok, Some(20), 10_000);
        let r = run(b);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    }
}
