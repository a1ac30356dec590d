//! Checkers: each reads a [`History`] and gives a verdict, counts, and the
//! violations with the indexes of the ops involved.
//!
//! - [`exclusion`]: no two holds of one name whose client-computed validity
//!   windows overlap, unless their modes allow it (readers; up to `permits`
//!   semaphore holders).
//! - [`fencing`]: tokens grow in grant order per name and, for new grants,
//!   across names; the fenced register lost no update.
//! - [`linear`]: lock operations are linearizable against a lock with
//!   modes (exclusive, shared, semaphore) and leases (WGL search with a budget; "unknown" rather than a hang).
//! - [`liveness`]: after the final heal every client completes an operation
//!   within a bound.
//! - [`logs`]: not on the history but on the nodes' logs after the run: one
//!   log id means one entry on every node.

pub mod exclusion;
pub mod fencing;
pub mod linear;
pub mod liveness;
pub mod logs;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::history::{F, History, OpType, Pair};

/// A checker's conclusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// The checker could not decide (search budget spent, not enough data).
    Unknown,
}

/// One broken promise and the ops that show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub message: String,
    /// Indexes into the history.
    pub ops: Vec<u64>,
}

/// What a checker found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub checker: String,
    pub verdict: Verdict,
    pub counts: BTreeMap<String, u64>,
    pub violations: Vec<Violation>,
    /// Why the verdict is unknown, or other remarks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Violations reported in full; the count covers all of them.
pub const MAX_VIOLATIONS: usize = 50;

impl CheckResult {
    pub fn new(checker: &str) -> Self {
        CheckResult {
            checker: checker.to_string(),
            verdict: Verdict::Pass,
            counts: BTreeMap::new(),
            violations: Vec::new(),
            note: None,
        }
    }

    pub fn count(&mut self, key: &str, n: u64) {
        *self.counts.entry(key.to_string()).or_insert(0) += n;
    }

    /// Records a violation (the first [`MAX_VIOLATIONS`] in full) and makes
    /// the verdict Fail.
    pub fn violation(&mut self, message: String, ops: Vec<u64>) {
        self.verdict = Verdict::Fail;
        self.count("violations", 1);
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(Violation { message, ops });
        }
    }
}

/// Lease bounds from a history: for each lease, the earliest time the
/// cluster may end it without breaking "leases never end early": the latest
/// end of validity over its acknowledged grant and keep-alives. (The
/// cluster counts a lease's deadline from its receipt of the request, which
/// is after the client sent it.)
///
/// One validity ends at `send time + granted ttl`, the granted ttl being
/// the smaller of the ttl asked for and the ttl the cluster answered (it may
/// clamp it); where the client recorded a shorter `valid_until_ns` (it
/// subtracted a margin for clock-rate drift) that counts instead: the
/// promise assumes the margin covers the drift.
pub fn lease_lower_bounds(history: &History) -> HashMap<u64, u64> {
    let mut ttl_of: HashMap<u64, u64> = HashMap::new();
    let mut bound: HashMap<u64, u64> = HashMap::new();
    let pairs = history.pairs();
    let validity = |p: &Pair<'_>, requested_ms: Option<u64>| -> Option<u64> {
        let answered_ms = p.result().and_then(|r| r.ttl_ms);
        let granted_ms = match (requested_ms, answered_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let by_ttl = granted_ms.map(|ms| {
            p.invoke
                .time_ns
                .saturating_add(ms.saturating_mul(1_000_000))
        });
        let recorded = p.result().and_then(|r| r.valid_until_ns);
        match (by_ttl, recorded) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    };
    for p in &pairs {
        if p.invoke.f == F::Grant
            && p.outcome() == OpType::Ok
            && let Some(lease) = p.result().and_then(|r| r.lease_id)
        {
            if let Some(ttl) = p.invoke.args.ttl_ms {
                ttl_of.insert(lease, ttl);
            }
            if let Some(b) = validity(p, p.invoke.args.ttl_ms) {
                let e = bound.entry(lease).or_insert(0);
                *e = (*e).max(b);
            }
        }
    }
    for p in &pairs {
        if p.invoke.f == F::KeepAlive
            && p.outcome() == OpType::Ok
            && let Some(lease) = p.invoke.args.lease_id
            && let Some(b) = validity(p, ttl_of.get(&lease).copied())
        {
            let e = bound.entry(lease).or_insert(0);
            *e = (*e).max(b);
        }
    }
    bound
}

/// Pairs of one function, in invocation order.
pub fn pairs_of<'a>(pairs: &[Pair<'a>], f: F) -> Vec<Pair<'a>> {
    pairs.iter().filter(|p| p.invoke.f == f).copied().collect()
}

/// Runs every checker with its default budget.
pub fn check_all(history: &History, options: &CheckOptions) -> Vec<CheckResult> {
    let timed = |f: &dyn Fn() -> CheckResult| {
        let start = std::time::Instant::now();
        let mut r = f();
        r.count("elapsed-ms", start.elapsed().as_millis() as u64);
        r
    };
    vec![
        timed(&|| exclusion::check(history)),
        timed(&|| fencing::check_tokens(history)),
        timed(&|| fencing::check_tokens_global(history)),
        timed(&|| fencing::check_register(history)),
        timed(&|| linear::check(history, &options.linear)),
        timed(&|| liveness::check(history, options.liveness_bound_ns)),
    ]
}

/// Knobs of [`check_all`].
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub linear: linear::Budget,
    /// How soon after the final heal every client must complete an op.
    pub liveness_bound_ns: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            linear: linear::Budget::default(),
            liveness_bound_ns: 15_000_000_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::synth::Builder;
    use super::*;
    use crate::history::{Args, OpResult};

    #[test]
    fn lease_bounds_count_the_granted_ttl_not_the_requested_one() {
        let mut b = Builder::default();
        // Asked for 10 s, the cluster clamped it to 2 s.
        b.grant_answered(0, (100, 110), 7, 10_000, 2_000);
        let bounds = lease_lower_bounds(&b.history());
        assert_eq!(bounds[&7], 2_100 * 1_000_000);
    }

    #[test]
    fn lease_bounds_take_the_clients_shorter_validity_and_keep_alives() {
        let mut b = Builder::default();
        // A client counting 5 % less for clock-rate drift.
        let args = Args {
            ttl_ms: Some(2_000),
            ..Args::default()
        };
        b.op(0, 0, OpType::Invoke, F::Grant, None, args.clone(), None);
        b.op(
            5,
            0,
            OpType::Ok,
            F::Grant,
            None,
            args,
            Some(OpResult {
                lease_id: Some(7),
                ttl_ms: Some(2_000),
                valid_until_ns: Some(1_900_000_000),
                ..OpResult::default()
            }),
        );
        let so_far = History { ops: b.ops.clone() };
        assert_eq!(lease_lower_bounds(&so_far)[&7], 1_900_000_000);
        // A keep-alive answered with a clamped ttl.
        let ka = Args {
            lease_id: Some(7),
            ..Args::default()
        };
        b.op(
            1_000,
            0,
            OpType::Invoke,
            F::KeepAlive,
            None,
            ka.clone(),
            None,
        );
        b.op(
            1_010,
            0,
            OpType::Ok,
            F::KeepAlive,
            None,
            ka,
            Some(OpResult {
                lease_id: Some(7),
                ttl_ms: Some(1_000),
                ..OpResult::default()
            }),
        );
        assert_eq!(lease_lower_bounds(&b.history())[&7], 2_000_000_000);
    }
}

/// Builds synthetic histories for the checkers' tests.
#[cfg(test)]
pub mod synth {
    use crate::history::{Args, F, History, HoldMode, Op, OpResult, OpType};

    /// Appends ops with explicit times (ms), in the order given.
    #[derive(Default)]
    pub struct Builder {
        pub ops: Vec<Op>,
    }

    impl Builder {
        #[allow(clippy::too_many_arguments)]
        pub fn op(
            &mut self,
            t_ms: u64,
            process: i64,
            kind: OpType,
            f: F,
            name: Option<&str>,
            args: Args,
            result: Option<OpResult>,
        ) -> u64 {
            let index = self.ops.len() as u64;
            self.ops.push(Op {
                index,
                time_ns: t_ms * 1_000_000,
                process,
                node: Some(1),
                kind,
                f,
                name: name.map(str::to_string),
                args,
                result,
            });
            index
        }

        /// A lease grant invoked at `t0` and acknowledged at `t1`.
        pub fn grant(&mut self, p: i64, t0: u64, t1: u64, lease: u64, ttl_ms: u64) {
            self.grant_answered(p, (t0, t1), lease, ttl_ms, ttl_ms);
        }

        /// A lease grant asking for `requested_ms` that the cluster
        /// answered with `answered_ms`, as the workload records it.
        pub fn grant_answered(
            &mut self,
            p: i64,
            (t0, t1): (u64, u64),
            lease: u64,
            requested_ms: u64,
            answered_ms: u64,
        ) {
            let args = Args {
                ttl_ms: Some(requested_ms),
                ..Args::default()
            };
            self.op(t0, p, OpType::Invoke, F::Grant, None, args.clone(), None);
            self.op(
                t1,
                p,
                OpType::Ok,
                F::Grant,
                None,
                args,
                Some(OpResult {
                    lease_id: Some(lease),
                    ttl_ms: Some(answered_ms),
                    valid_until_ns: Some((t0 + requested_ms.min(answered_ms)) * 1_000_000),
                    ..OpResult::default()
                }),
            );
        }

        /// An exclusive try-acquire invoked at t0 completed at t1 with
        /// `kind`; `until` is the client's validity end (ms) for ok.
        #[allow(clippy::too_many_arguments)]
        pub fn acquire(
            &mut self,
            p: i64,
            t0: u64,
            t1: u64,
            name: &str,
            lease: u64,
            kind: OpType,
            token: Option<u64>,
            until_ms: u64,
        ) -> u64 {
            self.acquire_mode(
                p,
                t0,
                t1,
                name,
                lease,
                kind,
                token,
                until_ms,
                HoldMode::Exclusive,
            )
        }

        /// [`Builder::acquire`] in `mode`.
        #[allow(clippy::too_many_arguments)]
        pub fn acquire_mode(
            &mut self,
            p: i64,
            t0: u64,
            t1: u64,
            name: &str,
            lease: u64,
            kind: OpType,
            token: Option<u64>,
            until_ms: u64,
            mode: HoldMode,
        ) -> u64 {
            let args = Args {
                lease_id: Some(lease),
                wait_ms: Some(0),
                ..Args::default()
            }
            .with_mode(mode);
            self.op(
                t0,
                p,
                OpType::Invoke,
                F::Acquire,
                Some(name),
                args.clone(),
                None,
            );
            let result = match kind {
                OpType::Ok => OpResult {
                    lease_id: Some(lease),
                    token,
                    valid_from_ns: Some(t1 * 1_000_000),
                    valid_until_ns: Some(until_ms * 1_000_000),
                    ..OpResult::default()
                },
                OpType::Fail => OpResult {
                    error: Some("LOCK_BUSY".into()),
                    ..OpResult::default()
                },
                _ => OpResult {
                    error: Some("timeout".into()),
                    ..OpResult::default()
                },
            };
            self.op(t1, p, kind, F::Acquire, Some(name), args, Some(result))
        }

        #[allow(clippy::too_many_arguments)]
        pub fn release(
            &mut self,
            p: i64,
            t0: u64,
            t1: u64,
            name: &str,
            lease: u64,
            token: u64,
            kind: OpType,
        ) -> u64 {
            let args = Args {
                lease_id: Some(lease),
                token: Some(token),
                ..Args::default()
            };
            self.op(
                t0,
                p,
                OpType::Invoke,
                F::Release,
                Some(name),
                args.clone(),
                None,
            );
            let error = (kind == OpType::Fail).then(|| "NOT_HOLDER".to_string());
            self.op(
                t1,
                p,
                kind,
                F::Release,
                Some(name),
                args,
                Some(OpResult {
                    error,
                    ..OpResult::default()
                }),
            )
        }

        pub fn history(mut self) -> History {
            // Histories are in time order; stable so equal times keep the
            // order written.
            self.ops.sort_by_key(|o| o.time_ns);
            for (i, op) in self.ops.iter_mut().enumerate() {
                op.index = i as u64;
            }
            History { ops: self.ops }
        }
    }
}
