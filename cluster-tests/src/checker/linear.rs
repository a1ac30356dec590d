//! Linearizability of lock operations against a mutex with leases, checked
//! with the Wing–Gong–Lowe search (as in Porcupine and Knossos' `wgl`).
//!
//! Names are independent, so each name's operations are checked on their
//! own (P-compositionality). The model of one name:
//! - `holder`: the lease holding it and the token of the hold (0 when the
//!   token is unknown because the grant came from an indeterminate acquire);
//! - `last_token`: the highest token granted on it (a new grant must exceed it);
//! - `dead`: leases known to have ended.
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
use crate::history::{F, History, OpType};

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
    holder: Option<(u64, u64)>,
    last_token: u64,
    dead: Vec<u64>,
    /// The highest lower bound of a lease ended so far: every operation
    /// linearized from here on completed after it.
    floor: u64,
}

impl MState {
    fn is_dead(&self, lease: u64) -> bool {
        self.dead.binary_search(&lease).is_ok()
    }

    fn expire(&self, lease: u64, bounds: &HashMap<u64, u64>) -> MState {
        let mut s = self.clone();
        s.floor = s.floor.max(bounds.get(&lease).copied().unwrap_or(0));
        if let Err(at) = s.dead.binary_search(&lease) {
            s.dead.insert(at, lease);
        }
        if s.holder.is_some_and(|(l, _)| l == lease) {
            s.holder = None;
        }
        s
    }
}

/// Whether `lease` may have ended before `op` took effect.
fn can_expire(op: &LOp, lease: u64, bounds: &HashMap<u64, u64>) -> bool {
    let lb = bounds.get(&lease).copied().unwrap_or(0);
    op.ret_ns.is_none_or(|r| r >= lb)
}

/// Every state the model may be in after `op` (empty: `op` is illegal here).
fn step(s: &MState, op: &LOp, bounds: &HashMap<u64, u64>) -> Vec<MState> {
    if op.ret_ns.is_some_and(|r| r < s.floor) {
        // Completed before a lease this history already ended could end.
        return vec![];
    }
    let l = op.lease;
    let grant = |s: &MState, token: u64| -> Option<MState> {
        if token != 0 && token <= s.last_token {
            return None;
        }
        let mut n = s.clone();
        n.holder = Some((l, token));
        n.last_token = n.last_token.max(token);
        Some(n)
    };
    match op.kind {
        Kind::AcquireOk(t) => {
            if s.is_dead(l) {
                return vec![];
            }
            match s.holder {
                Some((h, t0)) if h == l => {
                    if t0 == t {
                        vec![s.clone()]
                    } else if t0 == 0 {
                        // The indeterminate grant's token shows up now.
                        let mut n = s.clone();
                        n.holder = Some((l, t));
                        n.last_token = n.last_token.max(t);
                        vec![n]
                    } else {
                        vec![]
                    }
                }
                Some((h, _)) => {
                    if can_expire(op, h, bounds) {
                        grant(&s.expire(h, bounds), t).into_iter().collect()
                    } else {
                        vec![]
                    }
                }
                None => grant(s, t).into_iter().collect(),
            }
        }
        Kind::AcquireBusy => match s.holder {
            Some((h, _)) if h != l => vec![s.clone()],
            _ => vec![],
        },
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
            if !s.is_dead(l) {
                match s.holder {
                    None => out.extend(grant(s, 0)),
                    Some((h, _)) if h != l => out.extend(grant(&s.expire(h, bounds), 0)),
                    Some(_) => {}
                }
            }
            out
        }
        Kind::ReleaseOk(t) => match s.holder {
            Some((h, t0)) if h == l && (t0 == t || t0 == 0) && !s.is_dead(l) => {
                let mut n = s.clone();
                n.holder = None;
                vec![n]
            }
            _ => vec![],
        },
        Kind::ReleaseRefused(t) => match s.holder {
            Some((h, t0)) if h == l && t0 == t => {
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
            if let Some((h, t0)) = s.holder
                && h == l
                && (t0 == t || t0 == 0)
            {
                let mut n = s.clone();
                n.holder = None;
                out.push(n);
            }
            out
        }
    }
}

/// Per name, the interval and lease of every acquire that ended in
/// WAIT_TIMEOUT.
type WaitWindows = BTreeMap<String, Vec<(u64, u64, u64)>>;

fn classify(history: &History) -> (BTreeMap<String, Vec<LOp>>, WaitWindows) {
    let bounds = lease_lower_bounds(history);
    let mut by_name: BTreeMap<String, Vec<LOp>> = BTreeMap::new();
    let mut waits: WaitWindows = BTreeMap::new();
    for p in history.pairs() {
        let (Some(name), Some(lease)) = (&p.invoke.name, p.invoke.args.lease_id) else {
            continue;
        };
        let error = p.result().and_then(|r| r.error.clone()).unwrap_or_default();
        let gone = matches!(error.as_str(), "LEASE_NOT_FOUND" | "LEASE_EXPIRING");
        if p.invoke.f == F::Acquire
            && error == "WAIT_TIMEOUT"
            && let Some(c) = p.complete
        {
            waits
                .entry(name.clone())
                .or_default()
                .push((p.invoke.time_ns, c.time_ns, lease));
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
            call_ns: p.invoke.time_ns,
            ret_ns: p.ok_or_fail_time_ns(),
            lease_end_lb: bounds.get(&lease).copied().unwrap_or(0),
            invoke_index: p.invoke.index,
            complete_index: p.complete.map(|c| c.index),
        });
    }
    // A busy answer overlapping a timed-out wait of another lease may have
    // seen that wait's transient hold: it asserts nothing the model knows.
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
            !ws[..upto]
                .iter()
                .any(|&(_, w_end, lease)| w_end > op.call_ns && lease != op.lease)
        });
    }
    (by_name, waits)
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
            holder: None,
            last_token: 0,
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
    let (by_name, waits) = classify(history);
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
                        "{:?} by lease {} [{:.3} s .. {}] (lease may end from {:.3} s)",
                        o.kind,
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
}
