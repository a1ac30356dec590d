//! A latency histogram with fixed buckets, recorded with relaxed atomics
//! (no lock on the paths it times) and rendered in the Prometheus text
//! format. The store times its log flushes with it; the node reuses it for
//! writes and Raft RPCs.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds (then +Inf): from a fast
/// fsync (50 µs) to a stalled disk or network (2.5 s).
pub const BUCKET_BOUNDS_US: [u64; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// Counts of observed durations per bucket, their sum and their number.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; BUCKET_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKET_BOUNDS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(BUCKET_BOUNDS_US.len());
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

    /// Appends the `_bucket`, `_sum` and `_count` series of `name` (in
    /// seconds, as Prometheus expects) with `labels` (`key="value",...` or
    /// empty). The caller writes `# HELP` / `# TYPE` once per name.
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in BUCKET_BOUNDS_US.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BUCKET_BOUNDS_US.len()].load(Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum_s = self.sum_us.load(Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum_s}");
        // The count as the +Inf bucket saw it, so the series agree even
        // while another thread observes.
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_buckets_and_render_cumulatively() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let mut out = String::new();
        h.render("x_seconds", "peer=\"2\"", &mut out);
        assert!(
            out.contains("x_seconds_bucket{peer=\"2\",le=\"0.00005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{peer=\"2\",le=\"0.0001\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{peer=\"2\",le=\"0.0025\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{peer=\"2\",le=\"0.005\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{peer=\"2\",le=\"2.5\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{peer=\"2\",le=\"+Inf\"} 4\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_sum{peer=\"2\"} 10.00314\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{peer=\"2\"} 4\n"), "{out}");
        assert_eq!(h.count(), 4);
        assert_eq!(h.mean(), Duration::from_micros(10_003_140 / 4));

        let mut bare = String::new();
        Histogram::default().render("y_seconds", "", &mut bare);
        assert!(bare.contains("y_seconds_bucket{le=\"+Inf\"} 0\n"), "{bare}");
        assert!(bare.contains("y_seconds_count 0\n"), "{bare}");
    }
}
