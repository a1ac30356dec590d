//! A latency histogram with fixed buckets, recorded with relaxed atomics
//! (no lock on the paths it times). The store times its log flushes with
//! it; the node reuses it for writes, Raft RPCs, gRPC calls and lock waits,
//! and hands [`Histogram::snapshot`] to its metrics encoder.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds (then +Inf): from a fast
/// fsync (50 µs) to a stalled disk or network (2.5 s).
pub const BUCKET_BOUNDS_US: [u64; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// Counts of observed durations per bucket, their sum and their number.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in microseconds, ascending.
    bounds_us: &'static [u64],
    /// Per bucket (not cumulative); one more than `bounds_us`: +Inf.
    buckets: Box<[AtomicU64]>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::with_bounds_us(&BUCKET_BOUNDS_US)
    }
}

/// What a histogram held at one moment, in seconds (what Prometheus
/// expects).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Sum of the observed durations.
    pub sum_seconds: f64,
    /// Observations, as the +Inf bucket saw them (so they agree with the
    /// buckets even while another thread observes).
    pub count: u64,
    /// (upper bound in seconds, observations in this bucket alone), the
    /// last bound +Inf.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// A histogram with these upper bounds (microseconds, ascending).
    pub fn with_bounds_us(bounds_us: &'static [u64]) -> Self {
        debug_assert!(bounds_us.windows(2).all(|w| w[0] < w[1]));
        Histogram {
            bounds_us,
            buckets: (0..=bounds_us.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = self
            .bounds_us
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(self.bounds_us.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Mean of the observed durations (zero before the first).
    pub fn mean(&self) -> Duration {
        match self.count() {
            0 => Duration::ZERO,
            n => Duration::from_micros(self.sum_us.load(Relaxed) / n),
        }
    }

    /// The buckets, sum and count now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(self.buckets.len());
        let mut count = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            let n = n.load(Relaxed);
            count += n;
            let bound = match self.bounds_us.get(i) {
                Some(us) => *us as f64 / 1e6,
                None => f64::INFINITY,
            };
            buckets.push((bound, n));
        }
        HistogramSnapshot {
            sum_seconds: self.sum_us.load(Relaxed) as f64 / 1e6,
            count,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let snap = h.snapshot();
        assert_eq!(snap.buckets.len(), BUCKET_BOUNDS_US.len() + 1);
        let at = |bound: f64| {
            snap.buckets
                .iter()
                .find(|(b, _)| (*b - bound).abs() < 1e-12)
                .map(|(_, n)| *n)
                .expect("a bucket with that bound")
        };
        assert_eq!(at(0.00005), 1);
        assert_eq!(at(0.0001), 1);
        assert_eq!(at(0.0025), 0);
        assert_eq!(at(0.005), 1);
        assert_eq!(snap.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(snap.count, 4);
        assert!((snap.sum_seconds - 10.00314).abs() < 1e-9, "{snap:?}");
        assert_eq!(h.count(), 4);
        assert_eq!(h.mean(), Duration::from_micros(10_003_140 / 4));
    }

    #[test]
    fn other_bounds_are_kept() {
        static BOUNDS: [u64; 2] = [1_000, 1_000_000];
        let h = Histogram::with_bounds_us(&BOUNDS);
        h.observe(Duration::from_millis(5));
        let snap = h.snapshot();
        assert_eq!(snap.buckets, vec![(0.001, 0), (1.0, 1), (f64::INFINITY, 0)]);
    }
}
