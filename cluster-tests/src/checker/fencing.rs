//! Fencing.
//!
//! [`check_tokens`]: on each name, a grant acknowledged before another
//! acquire was invoked carries a strictly smaller token than the later
//! grant (tokens strictly increase in grant order), and two different
//! holds never share a token.
//!
//! [`check_register`]: the fenced-register workload. A harness-owned
//! resource checks every read and write against the highest token it has
//! seen and rejects lower ones; a client holding a lock reads the
//! register, pauses, and writes the value plus one. If the lock service's
//! tokens are sound, no update is lost: the register's final value equals
//! the number of read-modify-writes whose read and write were both
//! accepted.

use std::collections::BTreeMap;

use super::{CheckResult, Verdict, pairs_of};
use crate::history::{F, History, OpType};

struct Grant {
    lease: u64,
    token: u64,
    invoke_ns: u64,
    ok_ns: u64,
    op: u64,
}

/// Tokens grow in grant order per name.
pub fn check_tokens(history: &History) -> CheckResult {
    let mut result = CheckResult::new("fencing-tokens");
    let pairs = history.pairs();
    let mut by_name: BTreeMap<String, Vec<Grant>> = BTreeMap::new();
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
        by_name.entry(name.clone()).or_default().push(Grant {
            lease,
            token,
            invoke_ns: p.invoke.time_ns,
            ok_ns: c.time_ns,
            op: c.index,
        });
    }
    for (name, grants) in &by_name {
        result.count("grants", grants.len() as u64);
        // Two different holds with one token.
        let mut by_token: BTreeMap<u64, &Grant> = BTreeMap::new();
        for g in grants {
            match by_token.get(&g.token) {
                Some(other) if other.lease != g.lease => result.violation(
                    format!(
                        "\"{name}\": token {} granted to lease {} and to lease {}",
                        g.token, other.lease, g.lease
                    ),
                    vec![other.op, g.op],
                ),
                Some(_) => {}
                None => {
                    by_token.insert(g.token, g);
                }
            }
        }
        // Real-time order: sweep the acquires by invocation, folding in
        // every grant acknowledged before it.
        let mut by_ok: Vec<&Grant> = grants.iter().collect();
        by_ok.sort_by_key(|g| g.ok_ns);
        let mut by_invoke: Vec<&Grant> = grants.iter().collect();
        by_invoke.sort_by_key(|g| g.invoke_ns);
        let mut next = 0;
        let mut max: Option<&Grant> = None;
        for b in by_invoke {
            while next < by_ok.len() && by_ok[next].ok_ns < b.invoke_ns {
                if max.is_none_or(|m| by_ok[next].token > m.token) {
                    max = Some(by_ok[next]);
                }
                next += 1;
            }
            if let Some(m) = max
                && (m.lease, m.token) != (b.lease, b.token)
                && b.token <= m.token
            {
                result.violation(
                    format!(
                        "\"{name}\": token {} (lease {}) was acknowledged before an acquire \
                             that then got the lower or equal token {} (lease {})",
                        m.token, m.lease, b.token, b.lease
                    ),
                    vec![m.op, b.op],
                );
            }
        }
    }
    result.count("names", by_name.len() as u64);
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
                error: (!accepted).then(|| "STALE_TOKEN".into()),
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
