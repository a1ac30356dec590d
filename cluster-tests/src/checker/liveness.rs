//! Liveness: after the final heal (the last nemesis event), every client
//! gets a definite answer (ok or fail) to an operation it invoked after the
//! heal, within a bound. Clients keep working for at least that bound after
//! the heal, so a client without such an answer is stuck.

use std::collections::BTreeMap;

use super::{CheckResult, Verdict};
use crate::history::{F, History, NEMESIS, OpType};

/// Runs the check with `bound_ns`.
pub fn check(history: &History, bound_ns: u64) -> CheckResult {
    let mut result = CheckResult::new("liveness");
    let heal_ns = history
        .ops
        .iter()
        .filter(|o| o.process == NEMESIS)
        .map(|o| o.time_ns)
        .max()
        .unwrap_or(0);
    let end_ns = history.end_ns();
    // Client → the first definite answer after the heal (completion time).
    let mut first: BTreeMap<i64, Option<(u64, u64)>> = BTreeMap::new();
    for p in history.pairs() {
        if p.invoke.process < 0 || p.invoke.f == F::FinalRead || p.invoke.f == F::Nemesis {
            continue;
        }
        let slot = first.entry(p.invoke.process).or_insert(None);
        if p.invoke.time_ns < heal_ns || slot.is_some() {
            continue;
        }
        if let Some(c) = p.complete
            && matches!(c.kind, OpType::Ok | OpType::Fail)
        {
            *slot = Some((c.time_ns, c.index));
        }
    }
    result.count("clients", first.len() as u64);
    result.count("heal-at-ms", heal_ns / 1_000_000);
    let deadline = heal_ns.saturating_add(bound_ns);
    let mut worst = 0;
    let mut undecided = Vec::new();
    for (process, answer) in &first {
        match answer {
            Some((t, index)) => {
                let after = t.saturating_sub(heal_ns);
                worst = worst.max(after);
                if *t > deadline {
                    result.violation(
                        format!(
                            "client {process}: first answer {:.3} s after the final heal (bound {:.3} s)",
                            after as f64 / 1e9,
                            bound_ns as f64 / 1e9
                        ),
                        vec![*index],
                    );
                }
            }
            None if end_ns >= deadline => result.violation(
                format!(
                    "client {process}: no answer in the {:.3} s after the final heal",
                    bound_ns as f64 / 1e9
                ),
                vec![],
            ),
            None => undecided.push(*process),
        }
    }
    result.count("slowest-recovery-ms", worst / 1_000_000);
    if !undecided.is_empty() && result.verdict == Verdict::Pass {
        result.verdict = Verdict::Unknown;
        result.note = Some(format!(
            "the history ends before the bound for clients {undecided:?}"
        ));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::synth::Builder;
    use crate::history::{Args, OpType::*};

    fn nemesis(b: &mut Builder, t0: u64, t1: u64) {
        let args = Args {
            fault: Some("partition".into()),
            ..Args::default()
        };
        b.op(t0, NEMESIS, Invoke, F::Nemesis, None, args.clone(), None);
        b.op(t1, NEMESIS, Info, F::Nemesis, None, args, None);
    }

    #[test]
    fn clients_answered_soon_after_the_heal_pass() {
        let mut b = Builder::default();
        nemesis(&mut b, 0, 1_000);
        b.acquire(0, 500, 3_000, "a", 1, Info, None, 0);
        b.acquire(0, 3_000, 3_100, "a", 1, Ok, Some(5), 9_000);
        b.acquire(1, 1_500, 1_600, "a", 2, Fail, None, 0);
        b.grant(1, 20_000, 20_001, 9, 1_000);
        let r = check(&b.history(), 5_000_000_000);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.counts["slowest-recovery-ms"], 2_100);
    }

    #[test]
    fn a_client_stuck_after_the_heal_fails() {
        let mut b = Builder::default();
        nemesis(&mut b, 0, 1_000);
        b.acquire(0, 1_500, 1_600, "a", 1, Ok, Some(5), 9_000);
        // Client 1 only times out until the end, 20 s later.
        b.acquire(1, 1_500, 10_000, "a", 2, Info, None, 0);
        b.acquire(1, 10_000, 20_000, "a", 2, Info, None, 0);
        let r = check(&b.history(), 5_000_000_000);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    }

    #[test]
    fn a_history_ending_early_is_unknown() {
        let mut b = Builder::default();
        nemesis(&mut b, 0, 1_000);
        b.acquire(1, 1_500, 2_000, "a", 2, Info, None, 0);
        let r = check(&b.history(), 5_000_000_000);
        assert_eq!(r.verdict, Verdict::Unknown, "{r:?}");
    }
}
