//! Latency distributions: an HDR histogram in microseconds, summarised as percentiles.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency recorded exactly (one hour); longer ones are clamped to it.
const MAX_MICROS: u64 = 3_600_000_000;

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

/// Collects latencies (microsecond resolution, three significant digits).
#[derive(Debug, Clone)]
pub struct Recorder {
    hist: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        // Bounds are constants that hdrhistogram accepts (low ≥ 1, high ≥ 2 × low, 3 digits).
        let hist = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .unwrap_or_else(|e| unreachable!("constant histogram bounds rejected: {e}"));
        Self { hist }
    }

    /// Records one latency (clamped to 1 µs … 1 h).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS);
        self.hist.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so adding cannot fail.
        if let Err(e) = self.hist.add(&other.hist) {
            unreachable!("histograms with equal bounds failed to merge: {e}");
        }
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The percentiles (all zero when empty).
    pub fn percentiles(&self) -> Percentiles {
        if self.hist.is_empty() {
            return Percentiles {
                count: 0,
                p50_ms: 0.0,
                p95_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
            };
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            count: self.hist.len(),
            p50_ms: ms(self.hist.value_at_quantile(0.50)),
            p95_ms: ms(self.hist.value_at_quantile(0.95)),
            p99_ms: ms(self.hist.value_at_quantile(0.99)),
            max_ms: ms(self.hist.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut r = Recorder::new();
        for ms in 1..=1000u64 {
            r.record(Duration::from_millis(ms));
        }
        let p = r.percentiles();
        assert_eq!(p.count, 1000);
        // Three significant digits: within 0.1 % of the exact order statistic.
        assert!((p.p50_ms - 500.0).abs() <= 0.5, "{p:?}");
        assert!((p.p95_ms - 950.0).abs() <= 1.0, "{p:?}");
        assert!((p.p99_ms - 990.0).abs() <= 1.0, "{p:?}");
        assert!((p.max_ms - 1000.0).abs() <= 1.0, "{p:?}");
    }

    #[test]
    fn merging_adds_samples_and_empty_is_zero() {
        let mut a = Recorder::new();
        assert_eq!(a.percentiles().count, 0);
        assert!(a.is_empty());
        a.record(Duration::from_micros(10));
        let mut b = Recorder::new();
        b.record(Duration::from_secs(2));
        b.record(Duration::ZERO); // clamped to 1 µs
        a.merge(&b);
        assert_eq!(a.len(), 3);
        assert!((a.percentiles().max_ms - 2000.0).abs() < 2.0);
    }
}
