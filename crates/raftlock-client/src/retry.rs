//! How calls are retried.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// How a call is retried after a retryable failure, as the API's error
/// contract advises (`raftlock_proto::errors`, `Retry`): NOT_LEADER (at
/// once, to the leader it names), NO_LEADER, a connection that could not be
/// opened (at once to the next node, pausing after a whole round), and the
/// failures whose outcome is unknown (a node's write TIMEOUT,
/// OUTCOME_UNKNOWN, SHUTTING_DOWN, a connection broken or reset mid-call,
/// CANCELLED) for the calls that may be repeated: a force-release by name,
/// a revoke and a release by token stop there instead. Other errors (busy,
/// not holder, invalid input, INTERNAL…) are returned at once. A call also
/// stops retrying when its deadline passes.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, including the first (at least 1). An answer that
    /// names the leader is not counted: the call goes there at once (only
    /// if that attempt had itself gone to a named leader does it count, so
    /// nodes that name each other cannot bounce a call for ever).
    pub max_attempts: u32,
    /// Pause before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Longest pause between two attempts.
    pub max_backoff: Duration,
    /// Fraction (0.0–1.0) of each pause that is randomized away, so clients
    /// that failed together do not retry together.
    pub jitter: f64,
    /// Give up after this many rounds over every endpoint in which no
    /// connection could even be opened (nothing listens there: a cluster
    /// that is not running, a mistyped endpoint), instead of retrying
    /// until `max_attempts` or the deadline. `None` (every preset): retry
    /// as usual, riding out a whole cluster's restart. A command-line tool
    /// wants `Some(2)`: an answer in moments rather than after its timeout.
    pub unreachable_rounds: Option<u32>,
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            jitter: 0.0,
            unreachable_rounds: None,
        }
    }

    /// Enough to ride out one leader election: 7 pauses of 50 ms doubling
    /// to 400 ms, 1.95 s of them in all (at least 1.56 s with the jitter),
    /// against a failover of about a second at the default Raft timing
    /// (docs/performance.md, Failover). The pause is capped at 400 ms so a
    /// call waits at most that long once the new leader serves.
    pub fn standard() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
            jitter: 0.2,
            unreachable_rounds: None,
        }
    }

    /// For batch jobs that would rather wait than fail: about 30 s of retries.
    pub fn patient() -> Self {
        RetryPolicy {
            max_attempts: 30,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            jitter: 0.3,
            unreachable_rounds: None,
        }
    }

    /// The pause after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 || base.is_zero() {
            return base;
        }
        // A random fraction in [0, 1) without a rand dependency.
        let r = (RandomState::new().hash_one(attempt) >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(1.0 - jitter * r)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::standard()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_max_and_jitter_only_shortens() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::standard()
        };
        assert_eq!(p.backoff(1), Duration::from_millis(50));
        assert_eq!(p.backoff(2), Duration::from_millis(100));
        assert_eq!(p.backoff(10), Duration::from_millis(400));
        let p = RetryPolicy::standard();
        for a in 1..10 {
            let b = p.backoff(a);
            assert!(b <= Duration::from_millis(400));
            assert!(b >= Duration::from_millis(50).mul_f64(0.8) || a > 1);
        }
        assert_eq!(RetryPolicy::none().backoff(1), Duration::ZERO);
    }
}
