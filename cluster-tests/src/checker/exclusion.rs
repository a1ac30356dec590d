//! Mutual exclusion as the clients saw it, by the mode of each hold:
//! - an exclusive window overlaps no other window of its name;
//! - a shared window overlaps no exclusive one (readers together are fine);
//! - at most `permits` semaphore windows of a name overlap at any moment,
//!   all with the same permits (the first acquirer fixes them), and never
//!   a window of another mode (a name is a semaphore or a readers/writer
//!   lock while it exists).
//!
//! A client believes it holds a lock from the acknowledgement of its
//! acquire until the first of:
//! - it invokes the release (it stops using the lock before asking to
//!   release it: ending the window at the release's acknowledgement would
//!   flag a correct cluster that granted the lock to the next waiter before
//!   that acknowledgement arrived);
//! - its lease's validity ends as the client computes it: the send time of
//!   the last acknowledged grant or keep-alive plus the ttl (recorded in
//!   each op's `valid_until_ns`). A keep-alive acknowledged after the
//!   validity already ended does not revive earlier holds;
//! - the history ends.
//!
//! Indeterminate ops are treated conservatively: an acquire whose outcome
//! is unknown gives the client no belief (a client cannot use a lock it
//! does not know it holds), so it makes no window.

use std::collections::{BTreeMap, HashMap};

use super::CheckResult;
use crate::history::{F, History, HoldMode, OpType};

/// One hold as its client believed in it.
#[derive(Debug, Clone)]
pub struct Window {
    pub name: String,
    pub process: i64,
    pub lease: u64,
    pub token: u64,
    pub mode: HoldMode,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The acquire's completion.
    pub acquired_op: u64,
}

struct Open {
    lease: u64,
    token: u64,
    mode: HoldMode,
    start_ns: u64,
    acquired_op: u64,
}

/// The windows of every hold in the history.
pub fn windows(history: &History) -> Vec<Window> {
    let end_of_history = history.end_ns();
    let mut by_process: BTreeMap<i64, Vec<_>> = BTreeMap::new();
    for p in history.pairs() {
        by_process.entry(p.invoke.process).or_default().push(p);
    }
    let mut out = Vec::new();
    for (process, pairs) in by_process {
        let mut until: HashMap<u64, u64> = HashMap::new();
        let mut open: BTreeMap<String, Open> = BTreeMap::new();
        let close = |out: &mut Vec<Window>, name: String, o: Open, at: u64, until: u64| {
            let end_ns = at.min(until);
            if end_ns > o.start_ns {
                out.push(Window {
                    name,
                    process,
                    lease: o.lease,
                    token: o.token,
                    mode: o.mode,
                    start_ns: o.start_ns,
                    end_ns,
                    acquired_op: o.acquired_op,
                });
            }
        };
        for p in pairs {
            let ok = p.outcome() == OpType::Ok;
            let result = p.result();
            match p.invoke.f {
                F::Grant if ok => {
                    if let Some((lease, u)) =
                        result.and_then(|r| Some((r.lease_id?, r.valid_until_ns?)))
                    {
                        until.insert(lease, u);
                    }
                }
                F::KeepAlive if ok => {
                    let (Some(lease), Some(new_until), Some(c)) = (
                        p.invoke.args.lease_id,
                        result.and_then(|r| r.valid_until_ns),
                        p.complete,
                    ) else {
                        continue;
                    };
                    let old = until.get(&lease).copied().unwrap_or(0);
                    if c.time_ns > old {
                        // The belief lapsed before this renewal arrived:
                        // holds of the lease ended at the old bound.
                        let names: Vec<String> = open
                            .iter()
                            .filter(|(_, o)| o.lease == lease)
                            .map(|(n, _)| n.clone())
                            .collect();
                        for n in names {
                            if let Some(o) = open.remove(&n) {
                                close(&mut out, n, o, old, old);
                            }
                        }
                    }
                    until.insert(lease, old.max(new_until));
                }
                F::Acquire if ok => {
                    let (Some(name), Some(c)) = (p.invoke.name.clone(), p.complete) else {
                        continue;
                    };
                    let (Some(lease), Some(token)) =
                        (p.invoke.args.lease_id, result.and_then(|r| r.token))
                    else {
                        continue;
                    };
                    if let Some(u) = result.and_then(|r| r.valid_until_ns) {
                        let e = until.entry(lease).or_insert(0);
                        *e = (*e).max(u);
                    }
                    if let Some(prev) = open.get(&name)
                        && prev.lease == lease
                        && prev.token == token
                    {
                        // An idempotent re-acquire of the same hold.
                        continue;
                    }
                    if let Some(prev) = open.remove(&name) {
                        let u = until.get(&prev.lease).copied().unwrap_or(0);
                        close(&mut out, name.clone(), prev, c.time_ns, u);
                    }
                    open.insert(
                        name,
                        Open {
                            lease,
                            token,
                            mode: p.invoke.args.hold_mode(),
                            start_ns: c.time_ns,
                            acquired_op: c.index,
                        },
                    );
                }
                F::Release => {
                    if let Some(name) = &p.invoke.name
                        && let Some(o) = open.remove(name)
                    {
                        let u = until.get(&o.lease).copied().unwrap_or(0);
                        close(&mut out, name.clone(), o, p.invoke.time_ns, u);
                    }
                }
                _ => {}
            }
        }
        for (name, o) in open {
            let u = until.get(&o.lease).copied().unwrap_or(0);
            close(&mut out, name, o, end_of_history, u);
        }
    }
    out
}

/// Runs the check.
pub fn check(history: &History) -> CheckResult {
    let mut result = CheckResult::new("mutual-exclusion");
    let all = windows(history);
    result.count("holds", all.len() as u64);
    let mut by_name: BTreeMap<&str, Vec<&Window>> = BTreeMap::new();
    for w in &all {
        by_name.entry(w.name.as_str()).or_default().push(w);
    }
    result.count("names", by_name.len() as u64);
    for (name, mut ws) in by_name {
        ws.sort_by_key(|w| (w.start_ns, w.end_ns));
        // Every pair of overlapping windows is seen at the later one's
        // start, where the earlier one is still active; so is the largest
        // number of semaphore windows together.
        let mut active: Vec<&Window> = Vec::new();
        for w in ws {
            active.retain(|a| a.end_ns > w.start_ns);
            active.retain(|a| (a.lease, a.token) != (w.lease, w.token));
            let conflicts: Vec<&Window> = match w.mode {
                HoldMode::Exclusive => active.clone(),
                HoldMode::Shared => active
                    .iter()
                    .filter(|a| a.mode != HoldMode::Shared)
                    .copied()
                    .collect(),
                HoldMode::Semaphore { permits } => {
                    let others: Vec<&Window> = active
                        .iter()
                        .filter(|a| a.mode != w.mode)
                        .copied()
                        .collect();
                    if !others.is_empty() {
                        others
                    } else if active.len() + 1 > permits as usize {
                        active.clone()
                    } else {
                        Vec::new()
                    }
                }
            };
            if let Some(r) = conflicts.first() {
                let mut ops: Vec<u64> = conflicts.iter().map(|c| c.acquired_op).collect();
                ops.push(w.acquired_op);
                result.violation(
                    format!(
                        "\"{name}\": process {} (lease {}, token {}, {:?}) believed it held the \
                         lock until {:.3} s, process {} (lease {}, token {}, {:?}) from {:.3} s \
                         ({} conflicting hold(s) at once)",
                        r.process,
                        r.lease,
                        r.token,
                        r.mode,
                        r.end_ns as f64 / 1e9,
                        w.process,
                        w.lease,
                        w.token,
                        w.mode,
                        w.start_ns as f64 / 1e9,
                        conflicts.len()
                    ),
                    ops,
                );
            }
            active.push(w);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Verdict;
    use crate::checker::synth::Builder;
    use crate::history::OpType::*;

    #[test]
    fn holds_one_after_another_pass() {
        let mut b = Builder::default();
        b.grant(0, 0, 1, 100, 1_000);
        b.grant(1, 0, 1, 200, 1_000);
        b.acquire(0, 2, 3, "a", 100, Ok, Some(10), 1_000);
        b.acquire(1, 4, 60, "a", 200, Ok, Some(11), 1_000);
        // Process 0 asks to release at 50, the grant to 1 is acked at 60.
        b.release(0, 50, 70, "a", 100, 10, Ok);
        b.release(1, 80, 90, "a", 200, 11, Ok);
        let r = check(&b.history());
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.counts["holds"], 2);
    }

    #[test]
    fn two_holders_at_once_fail() {
        let mut b = Builder::default();
        b.grant(0, 0, 1, 100, 1_000);
        b.grant(1, 0, 1, 200, 1_000);
        b.acquire(0, 2, 3, "a", 100, Ok, Some(10), 1_000);
        b.acquire(1, 4, 5, "a", 200, Ok, Some(11), 1_000);
        b.release(0, 50, 70, "a", 100, 10, Ok);
        let r = check(&b.history());
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.counts["violations"], 1);
        assert_eq!(r.violations[0].ops.len(), 2);
    }

    #[test]
    fn a_hold_past_its_lease_validity_does_not_count() {
        // Process 0 pauses holding "a" with validity until 1000 ms; process
        // 1 gets the lock at 1500: no overlap as the clients saw it.
        let mut b = Builder::default();
        b.grant(0, 0, 1, 100, 1_000);
        b.grant(1, 0, 1, 200, 5_000);
        b.acquire(0, 2, 3, "a", 100, Ok, Some(10), 1_000);
        b.acquire(1, 4, 1_500, "a", 200, Ok, Some(11), 5_000);
        b.release(0, 2_000, 2_010, "a", 100, 10, Fail);
        b.release(1, 2_100, 2_110, "a", 200, 11, Ok);
        let r = check(&b.history());
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    }

    #[test]
    fn indeterminate_acquires_make_no_window() {
        let mut b = Builder::default();
        b.grant(0, 0, 1, 100, 1_000);
        b.grant(1, 0, 1, 200, 1_000);
        b.acquire(0, 2, 300, "a", 100, Info, None, 0);
        b.acquire(1, 4, 5, "a", 200, Ok, Some(11), 1_000);
        b.release(1, 50, 70, "a", 200, 11, Ok);
        let r = check(&b.history());
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    }

    #[test]
    fn different_names_never_conflict() {
        let mut b = Builder::default();
        b.grant(0, 0, 1, 100, 1_000);
        b.grant(1, 0, 1, 200, 1_000);
        b.acquire(0, 2, 3, "a", 100, Ok, Some(10), 1_000);
        b.acquire(1, 2, 3, "b", 200, Ok, Some(11), 1_000);
        let r = check(&b.history());
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    }

    fn acquire_in(
        b: &mut Builder,
        p: i64,
        (t0, t1): (u64, u64),
        name: &str,
        lease: u64,
        token: u64,
        mode: HoldMode,
    ) {
        b.acquire_mode(p, t0, t1, name, lease, Ok, Some(token), 10_000, mode);
    }

    #[test]
    fn readers_together_pass_but_a_writer_beside_a_reader_fails() {
        let mut b = Builder::default();
        for (p, lease) in [(0, 100), (1, 200), (2, 300)] {
            b.grant(p, 0, 1, lease, 10_000);
        }
        // Two readers share one grant entry's token and hold together.
        acquire_in(&mut b, 0, (2, 3), "rw", 100, 10, HoldMode::Shared);
        acquire_in(&mut b, 1, (2, 4), "rw", 200, 10, HoldMode::Shared);
        b.release(0, 50, 51, "rw", 100, 10, Ok);
        b.release(1, 52, 53, "rw", 200, 10, Ok);
        // The writer after both.
        acquire_in(&mut b, 2, (60, 61), "rw", 300, 12, HoldMode::Exclusive);
        let good = b.history();
        let r = check(&good);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");

        let mut b = Builder::default();
        for (p, lease) in [(0, 100), (1, 200), (2, 300)] {
            b.grant(p, 0, 1, lease, 10_000);
        }
        acquire_in(&mut b, 0, (2, 3), "rw", 100, 10, HoldMode::Shared);
        acquire_in(&mut b, 1, (2, 4), "rw", 200, 10, HoldMode::Shared);
        b.release(0, 50, 51, "rw", 100, 10, Ok);
        // The writer while reader 200 still believes it holds.
        acquire_in(&mut b, 2, (40, 41), "rw", 300, 12, HoldMode::Exclusive);
        b.release(1, 52, 53, "rw", 200, 10, Ok);
        let r = check(&b.history());
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        assert_eq!(r.counts["violations"], 1, "{r:?}");
        assert_eq!(r.violations[0].ops.len(), 3, "{r:?}");
    }

    #[test]
    fn a_semaphore_holds_up_to_its_permits_and_no_more() {
        let sem = HoldMode::Semaphore { permits: 2 };
        let build = |third_at: u64| {
            let mut b = Builder::default();
            for (p, lease) in [(0, 100), (1, 200), (2, 300)] {
                b.grant(p, 0, 1, lease, 10_000);
            }
            acquire_in(&mut b, 0, (2, 3), "s", 100, 10, sem);
            acquire_in(&mut b, 1, (4, 5), "s", 200, 11, sem);
            b.release(0, 50, 51, "s", 100, 10, Ok);
            acquire_in(&mut b, 2, (third_at, third_at + 1), "s", 300, 12, sem);
            b.history()
        };
        let r = check(&build(60));
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        // A third holder while two believe they hold.
        let r = check(&build(20));
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        assert_eq!(r.violations[0].ops.len(), 3, "{r:?}");
    }

    #[test]
    fn semaphore_holders_with_different_permits_conflict() {
        let mut b = Builder::default();
        b.grant(0, 0, 1, 100, 10_000);
        b.grant(1, 0, 1, 200, 10_000);
        acquire_in(
            &mut b,
            0,
            (2, 3),
            "s",
            100,
            10,
            HoldMode::Semaphore { permits: 1 },
        );
        acquire_in(
            &mut b,
            1,
            (4, 5),
            "s",
            200,
            11,
            HoldMode::Semaphore { permits: 3 },
        );
        b.release(0, 50, 51, "s", 100, 10, Ok);
        b.release(1, 52, 53, "s", 200, 11, Ok);
        let r = check(&b.history());
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }
}
