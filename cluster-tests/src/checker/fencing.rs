//! Fencing.
//!
//! [`check_tokens`]: on each name, a grant acknowledged before another
//! acquire was invoked carries a strictly smaller token than the later
//! grant (tokens strictly increase in grant order), and two different
//! holds never share a token — except shared or semaphore holds, which a
//! single entry may grant together (a run of readers or of semaphore
//! waiters let in at once share that entry's stamp).
//!
//! A token is the stamp of the granting entry, `token_epoch << 48 | index`
//! (docs/safety.md): stamps order as (epoch, index) do and the epoch never
//! goes down, so below "index" reads "stamp" wherever it is a token.
//!
//! [`check_tokens_global`]: the same order across names. DESIGN promises
//! that a grant's token is strictly greater than every token granted by an
//! earlier log entry, on any name. What a history can show of it: take two
//! ok acquires A and B, on any names, where A's acknowledgement came before
//! B's invocation, and B is a new grant (not an idempotent re-acquire).
//! - A's answer was sent after the entry that answered A was applied, so
//!   that entry (stamp `e_A`) was committed before B was invoked; A's token
//!   is at most `e_A` (its own grant's stamp, or an older hold's if A was a
//!   re-acquire).
//! - B's request reached the cluster after B's invocation; the entry that
//!   took it in (a try-acquire's grant, or a waiting acquire's queue entry,
//!   whose grant comes at that entry or a later one) was proposed after
//!   `e_A` was committed. Every leader that can still commit anything has
//!   `e_A` in its log (leader completeness), so that entry's stamp, and
//!   B's grant's stamp, exceed `e_A`.
//! - B's token is its grant's stamp: `token_B > e_A >= token_A`.
//!
//! So B's token must exceed every token acknowledged before B's
//! invocation. Pairs that overlap in time are not covered (either entry may
//! come first), nor is a re-acquire B: it returns the hold the lease
//! already had, granted by an entry that may precede A's. A re-acquire is
//! known by an earlier ok acquire of the same lease and name with the same
//! token (a new grant's token is a new entry's stamp, so it cannot repeat
//! one the lease was given before); that earlier acquire was checked when
//! it came. The answer's own `retry` flag is not trusted: a cluster that
//! handed out a stale token and called it a retry would otherwise never be
//! checked (a retry answered without such an earlier acquire is checked as
//! a new grant and counted).
//!
//! [`check_register`]: the fenced-register workload. A harness-owned
//! resource checks every read and write against the highest token it has
//! seen and rejects lower ones; a client holding a lock exclusively reads
//! the register, pauses, and writes the value plus one (a shared reader
//! only reads). If the lock service's tokens are sound, no update is lost:
//! the register's final value equals the number of read-modify-writes
//! whose read and write were both accepted.

use std::collections::{BTreeMap, BTreeSet};

use super::{CheckResult, Verdict, pairs_of};
use crate::history::{F, History, HoldMode, OpType};

struct Grant {
    name: String,
    lease: u64,
    token: u64,
    mode: HoldMode,
    /// An idempotent re-acquire returning the lease's existing hold (an
    /// earlier ok acquire of this lease and name got the same token).
    reacquire: bool,
    /// Answered `retry` without an earlier ok acquire to return: checked
    /// as a new grant.
    unexplained_retry: bool,
    invoke_ns: u64,
    ok_ns: u64,
    op: u64,
}

/// Every ok acquire, in invocation order.
fn grants(history: &History) -> Vec<Grant> {
    let pairs = history.pairs();
    let mut out = Vec::new();
    let mut seen: BTreeSet<(String, u64, u64)> = BTreeSet::new();
    for p in pairs_of(&pairs, F::Acquire) {
        let (Some(name), Some(c)) = (&p.invoke.name, p.complete) else {
            continue;
        };
        if c.kind != OpType::Ok {
            continue;
        }
        let (Some(lease), Some(token)) = (p.invoke.args.lease_id, p.result().and_then(|r| r.token))
        else {
            continue;
        };
        let key = (name.clone(), lease, token);
        let reacquire = seen.contains(&key);
        let unexplained_retry = !reacquire && p.result().and_then(|r| r.retry) == Some(true);
        seen.insert(key);
        out.push(Grant {
            name: name.clone(),
            lease,
            token,
            mode: p.invoke.args.hold_mode(),
            reacquire,
            unexplained_retry,
            invoke_ns: p.invoke.time_ns,
            ok_ns: c.time_ns,
            op: c.index,
        });
    }
    out
}

/// Flags every new grant among `grants` whose token is not above every
/// token acknowledged before it was invoked; `what` names the scope.
fn check_real_time_order(result: &mut CheckResult, grants: &[&Grant], what: &str) -> u64 {
    let mut by_ok: Vec<&Grant> = grants.to_vec();
    by_ok.sort_by_key(|g| g.ok_ns);
    let mut by_invoke: Vec<&Grant> = grants.to_vec();
    by_invoke.sort_by_key(|g| g.invoke_ns);
    let mut next = 0;
    let mut max: Option<&Grant> = None;
    let mut checked = 0;
    for b in by_invoke {
        while next < by_ok.len() && by_ok[next].ok_ns < b.invoke_ns {
            if max.is_none_or(|m| by_ok[next].token > m.token) {
                max = Some(by_ok[next]);
            }
            next += 1;
        }
        if b.reacquire {
            continue;
        }
        if let Some(m) = max {
            checked += 1;
            if b.token <= m.token {
                result.violation(
                    format!(
                        "{what}: token {} (\"{}\", lease {}) was acknowledged before an acquire \
                         that then got the lower or equal token {} (\"{}\", lease {}) as a new grant",
                        m.token, m.name, m.lease, b.token, b.name, b.lease
                    ),
                    vec![m.op, b.op],
                );
            }
        }
    }
    checked
}

/// Tokens grow in grant order per name; one token per hold, except holds
/// granted together in a shared or semaphore mode.
pub fn check_tokens(history: &History) -> CheckResult {
    let mut result = CheckResult::new("fencing-tokens");
    let all = grants(history);
    let mut by_name: BTreeMap<&str, Vec<&Grant>> = BTreeMap::new();
    for g in &all {
        by_name.entry(g.name.as_str()).or_default().push(g);
    }
    for (name, grants) in &by_name {
        result.count("grants", grants.len() as u64);
        result.count(
            "re-acquires",
            grants.iter().filter(|g| g.reacquire).count() as u64,
        );
        // Two different holds with one token: only readers or semaphore
        // holders let in by one entry.
        let mut by_token: BTreeMap<u64, Vec<&Grant>> = BTreeMap::new();
        for g in grants {
            let same = by_token.entry(g.token).or_default();
            if let Some(other) = same
                .iter()
                .find(|o| o.lease != g.lease && !(o.mode.is_shared_kind() && o.mode == g.mode))
            {
                result.violation(
                    format!(
                        "\"{name}\": token {} granted to lease {} and to lease {} ({:?} and {:?})",
                        g.token, other.lease, g.lease, other.mode, g.mode
                    ),
                    vec![other.op, g.op],
                );
            }
            if !same.iter().any(|o| o.lease == g.lease) {
                same.push(g);
            }
        }
        check_real_time_order(&mut result, grants, &format!("\"{name}\""));
    }
    result.count("names", by_name.len() as u64);
    result
}

/// Tokens grow in real-time order across all names (see the module doc
/// for which pairs the promise covers).
pub fn check_tokens_global(history: &History) -> CheckResult {
    let mut result = CheckResult::new("fencing-tokens-global");
    let all = grants(history);
    let refs: Vec<&Grant> = all.iter().collect();
    result.count("grants", refs.len() as u64);
    result.count(
        "re-acquires",
        refs.iter().filter(|g| g.reacquire).count() as u64,
    );
    result.count(
        "unexplained-retries",
        refs.iter().filter(|g| g.unexplained_retry).count() as u64,
    );
    let checked = check_real_time_order(&mut result, &refs, "across names");
    result.count("new-grants-checked", checked);
    result
}

/// No lost update on the fenced register.
pub fn check_register(history: &History) -> CheckResult {
    let mut result = CheckResult::new("fenced-register");
    let pairs = history.pairs();
    // (process, name) → the last read accepted with its token, if the
    // process's previous access to that name was that read.
    let mut pending_read: BTreeMap<(i64, String), (u64, u64)> = BTreeMap::new();
    let mut both_accepted: BTreeMap<String, u64> = BTreeMap::new();
    let mut final_value: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for p in &pairs {
        let Some(name) = p.invoke.name.clone() else {
            continue;
        };
        let key = (p.invoke.process, name.clone());
        match p.invoke.f {
            F::Read => {
                result.count("reads", 1);
                match (p.outcome(), p.invoke.args.token) {
                    (OpType::Ok, Some(token)) => {
                        result.count("reads-accepted", 1);
                        let value = p.result().and_then(|r| r.value).unwrap_or(0);
                        pending_read.insert(key, (token, value));
                    }
                    _ => {
                        result.count("reads-rejected", 1);
                        pending_read.remove(&key);
                    }
                }
            }
            F::Write => {
                result.count("writes", 1);
                let read = pending_read.remove(&key);
                if p.outcome() != OpType::Ok {
                    result.count("writes-rejected", 1);
                    continue;
                }
                result.count("writes-accepted", 1);
                match read {
                    Some((token, value)) if Some(token) == p.invoke.args.token => {
                        if p.invoke.args.value != Some(value + 1) {
                            result.violation(
                                format!(
                                    "\"{name}\": a write of {:?} followed a read of {value}; the workload writes read + 1",
                                    p.invoke.args.value
                                ),
                                vec![p.invoke.index],
                            );
                        }
                        *both_accepted.entry(name).or_insert(0) += 1;
                    }
                    _ => result.violation(
                        format!("\"{name}\": a write accepted without an accepted read before it"),
                        vec![p.invoke.index],
                    ),
                }
            }
            F::FinalRead if p.outcome() == OpType::Ok => {
                if let (Some(v), Some(c)) = (p.result().and_then(|r| r.value), p.complete) {
                    final_value.insert(name, (v, c.index));
                }
            }
            _ => {}
        }
    }
    for (name, count) in &both_accepted {
        result.count("read-modify-writes", *count);
        match final_value.get(name) {
            Some((v, op)) if v != count => result.violation(
                format!(
                    "\"{name}\": the register ends at {v} but {count} read-modify-writes had both \
                     their read and write accepted: {} update(s) lost",
                    count.saturating_sub(*v)
                ),
                vec![*op],
            ),
            Some(_) => {}
            None => {
                if result.verdict == Verdict::Pass {
                    result.verdict = Verdict::Unknown;
                }
                result.note = Some(format!("no final read of \"{name}\""));
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::synth::Builder;
    use crate::history::OpType::*;
    use crate::history::{Args, OpResult};

    #[test]
    fn tokens_growing_in_grant_order_pass() {
        let mut b = Builder::default();
        b.acquire(0, 0, 10, "a", 1, Ok, Some(5), 1_000);
        b.acquire(1, 20, 30, "a", 2, Ok, Some(9), 1_000);
        // Concurrent with the first: any order is fine.
        b.acquire(2, 5, 40, "a", 3, Ok, Some(7), 1_000);
        // A re-acquire by the same lease returns the same hold.
        b.acquire(1, 50, 60, "a", 2, Ok, Some(9), 1_000);
        let r = check_tokens(&b.history());
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.counts["grants"], 4);
    }

    #[test]
    fn a_later_grant_with_a_lower_token_fails() {
        let mut b = Builder::default();
        b.acquire(0, 0, 10, "a", 1, Ok, Some(9), 1_000);
        b.acquire(1, 20, 30, "a", 2, Ok, Some(5), 1_000);
        let r = check_tokens(&b.history());
        assert_eq!(r.verdict, Verdict::Fail);
    }

    #[test]
    fn one_token_for_two_leases_fails() {
        let mut b = Builder::default();
        b.acquire(0, 0, 10, "a", 1, Ok, Some(9), 1_000);
        b.acquire(1, 5, 8, "a", 2, Ok, Some(9), 1_000);
        let r = check_tokens(&b.history());
        assert_eq!(r.verdict, Verdict::Fail);
    }

    fn acquire_with_retry(
        b: &mut Builder,
        p: i64,
        (t0, t1): (u64, u64),
        name: &str,
        lease: u64,
        token: u64,
        retry: Option<bool>,
    ) {
        let args = Args {
            lease_id: Some(lease),
            wait_ms: Some(0),
            ..Args::default()
        };
        b.op(t0, p, Invoke, F::Acquire, Some(name), args.clone(), None);
        b.op(
            t1,
            p,
            Ok,
            F::Acquire,
            Some(name),
            args,
            Some(OpResult {
                lease_id: Some(lease),
                token: Some(token),
                retry,
                ..OpResult::default()
            }),
        );
    }

    #[test]
    fn readers_granted_by_one_entry_may_share_its_token() {
        let mut b = Builder::default();
        b.acquire_mode(0, 0, 10, "rw", 1, Ok, Some(9), 1_000, HoldMode::Shared);
        b.acquire_mode(1, 5, 12, "rw", 2, Ok, Some(9), 1_000, HoldMode::Shared);
        let sem = HoldMode::Semaphore { permits: 2 };
        b.acquire_mode(2, 0, 10, "s", 3, Ok, Some(9), 1_000, sem);
        b.acquire_mode(3, 5, 12, "s", 4, Ok, Some(9), 1_000, sem);
        let r = check_tokens(&b.history());
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        // A writer never shares a token with a reader.
        let mut b = Builder::default();
        b.acquire_mode(0, 0, 10, "rw", 1, Ok, Some(9), 1_000, HoldMode::Shared);
        b.acquire_mode(1, 5, 12, "rw", 2, Ok, Some(9), 1_000, HoldMode::Exclusive);
        let r = check_tokens(&b.history());
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn a_reader_reacquiring_its_hold_may_get_an_older_token_than_another_readers() {
        // Lease 1 reads with 5; lease 2 joins with 8; lease 1 asks again
        // (its release was lost, say) and gets its hold back: token 5.
        let mut b = Builder::default();
        b.acquire_mode(0, 0, 10, "rw", 1, Ok, Some(5), 1_000, HoldMode::Shared);
        b.acquire_mode(1, 20, 30, "rw", 2, Ok, Some(8), 1_000, HoldMode::Shared);
        b.acquire_mode(0, 40, 50, "rw", 1, Ok, Some(5), 1_000, HoldMode::Shared);
        let h = b.history();
        assert_eq!(check_tokens(&h).verdict, Verdict::Pass);
        assert_eq!(check_tokens_global(&h).verdict, Verdict::Pass);
        assert_eq!(check_tokens(&h).counts["re-acquires"], 1);
    }

    #[test]
    fn a_later_new_grant_on_another_name_with_a_lower_token_fails() {
        let mut b = Builder::default();
        b.acquire(0, 0, 10, "a", 1, Ok, Some(9), 1_000);
        b.acquire(1, 20, 30, "b", 2, Ok, Some(5), 1_000);
        let h = b.history();
        // Per name nothing is wrong; across names it is.
        assert_eq!(check_tokens(&h).verdict, Verdict::Pass);
        let r = check_tokens_global(&h);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        assert_eq!(r.violations[0].ops.len(), 2);
        // Overlapping in time: either entry may have come first.
        let mut b = Builder::default();
        b.acquire(0, 0, 25, "a", 1, Ok, Some(9), 1_000);
        b.acquire(1, 20, 30, "b", 2, Ok, Some(5), 1_000);
        let r = check_tokens_global(&b.history());
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    }

    #[test]
    fn a_reacquire_returning_an_older_hold_passes_the_global_order() {
        // Lease 1 holds "a" with 5; lease 2 gets "b" with 9; lease 1
        // re-acquires "a" and the cluster says so (retry): token 5 again.
        let mut b = Builder::default();
        acquire_with_retry(&mut b, 0, (0, 10), "a", 1, 5, Some(false));
        acquire_with_retry(&mut b, 1, (20, 30), "b", 2, 9, Some(false));
        acquire_with_retry(&mut b, 0, (40, 50), "a", 1, 5, Some(true));
        let r = check_tokens_global(&b.history());
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.counts["re-acquires"], 1);
        // A "retry" with no earlier hold to return is checked as a new
        // grant: an older token on another name breaks the promise.
        let mut b = Builder::default();
        acquire_with_retry(&mut b, 0, (2, 10), "a", 1, 50, Some(false));
        acquire_with_retry(&mut b, 1, (20, 30), "b", 2, 40, Some(true));
        let r = check_tokens_global(&b.history());
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        assert_eq!(r.counts["unexplained-retries"], 1, "{r:?}");
        // The same answer marked as a new grant breaks the promise.
        let mut b = Builder::default();
        acquire_with_retry(&mut b, 0, (0, 10), "a", 1, 5, Some(false));
        acquire_with_retry(&mut b, 1, (20, 30), "b", 2, 9, Some(false));
        acquire_with_retry(&mut b, 0, (40, 50), "a", 1, 4, Some(false));
        let r = check_tokens_global(&b.history());
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    fn access(b: &mut Builder, p: i64, t: u64, f: F, token: u64, value: u64, accepted: bool) {
        let args = Args {
            token: Some(token),
            value: (f == F::Write).then_some(value),
            ..Args::default()
        };
        b.op(t, p, Invoke, f, Some("r"), args.clone(), None);
        b.op(
            t + 1,
            p,
            if accepted { Ok } else { Fail },
            f,
            Some("r"),
            args,
            Some(OpResult {
                value: (f == F::Read && accepted).then_some(value),
                error: (!accepted).then(|| {
                    raftlock_proto::errors::ErrorReason::StaleToken
                        .name()
                        .into()
                }),
                ..OpResult::default()
            }),
        );
    }

    fn final_read(b: &mut Builder, t: u64, value: u64) {
        b.op(t, 0, Invoke, F::FinalRead, Some("r"), Args::default(), None);
        b.op(
            t + 1,
            0,
            Ok,
            F::FinalRead,
            Some("r"),
            Args::default(),
            Some(OpResult {
                value: Some(value),
                ..OpResult::default()
            }),
        );
    }

    #[test]
    fn a_register_with_no_lost_update_passes() {
        let mut b = Builder::default();
        access(&mut b, 0, 0, F::Read, 5, 0, true);
        access(&mut b, 1, 10, F::Read, 7, 0, true);
        // Process 0 paused past its lease: its write with 5 is rejected.
        access(&mut b, 0, 20, F::Write, 5, 1, false);
        access(&mut b, 1, 30, F::Write, 7, 1, true);
        final_read(&mut b, 40, 1);
        let r = check_register(&b.history());
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.counts["read-modify-writes"], 1);
    }

    #[test]
    fn a_lost_update_fails() {
        // Two holders with the same token (a broken lock service): both
        // read 0 and write 1; two accepted read-modify-writes, value 1.
        let mut b = Builder::default();
        access(&mut b, 0, 0, F::Read, 5, 0, true);
        access(&mut b, 1, 10, F::Read, 5, 0, true);
        access(&mut b, 0, 20, F::Write, 5, 1, true);
        access(&mut b, 1, 30, F::Write, 5, 1, true);
        final_read(&mut b, 40, 1);
        let r = check_register(&b.history());
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(
            r.violations[0].message.contains("1 update(s) lost"),
            "{r:?}"
        );
    }

    #[test]
    fn a_missing_final_read_is_unknown() {
        let mut b = Builder::default();
        access(&mut b, 0, 0, F::Read, 5, 0, true);
        access(&mut b, 0, 20, F::Write, 5, 1, true);
        let r = check_register(&b.history());
        assert_eq!(r.verdict, Verdict::Unknown);
    }
}
