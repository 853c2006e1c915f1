//! The fleet view's wire types: what relays (and server instances) report about the SDK
//! streams they serve, per environment, and the delivery-latency histogram that lets reports
//! from many processes be merged into one convergence curve.
//!
//! A relay posts a [`FleetReport`] to its upstream's `POST /relay/v1/fleet` every few
//! seconds and whenever its streams' state changes. Each [`EnvironmentReport`] says how many
//! SDK streams hold each environment version and, for the last few changes, how long each
//! stream took to receive the change ([`ChangeDelivery`]): a [`LatencyHistogram`] of
//! delivery latencies measured from the moment the reporting process published the change,
//! with that moment as a wall-clock time so the server can shift every report onto the
//! change's earliest publication before merging.
//!
//! A relay chained below another relay posts to its parent relay, which forwards the report
//! to its own upstream with its own relay key, naming itself as the report's
//! [`FleetReport::parent`]; a chain of relays forwards hop by hop, so the control plane sees
//! every relay of the chain under its own id.

use serde::{Deserialize, Serialize};

/// Path of the relay endpoint receiving fleet reports.
pub const FLEET_REPORT_PATH: &str = "/relay/v1/fleet";

/// Number of histogram buckets: bucket `i` holds latencies up to [`bucket_upper_micros`]`(i)`,
/// the last one everything above.
pub const BUCKETS: usize = 72;

/// Lower bound of the histogram (the first bucket holds latencies up to this many µs).
const FIRST_MICROS: f64 = 100.0;
/// Growth factor between consecutive bucket bounds: a quantile read from the histogram is at
/// most 25 % above the true value.
const GROWTH: f64 = 1.25;

/// Upper bound, in microseconds, of bucket `i` (`u64::MAX` for the last bucket). Bucket 0
/// holds 0–100 µs; bounds grow by 25 % per bucket up to about ten minutes.
pub fn bucket_upper_micros(i: usize) -> u64 {
    if i + 1 >= BUCKETS {
        return u64::MAX;
    }
    let exp = i32::try_from(i).unwrap_or(i32::MAX);
    (FIRST_MICROS * GROWTH.powi(exp)).ceil() as u64
}

/// The bucket of a latency of `micros`.
pub fn bucket_of(micros: u64) -> usize {
    if micros <= FIRST_MICROS as u64 {
        return 0;
    }
    // The closed form can be off by one from the rounded bounds: settle against them.
    let guess = ((micros as f64 / FIRST_MICROS).ln() / GROWTH.ln()).ceil() as usize;
    let mut i = guess.min(BUCKETS - 1);
    while i > 0 && micros <= bucket_upper_micros(i - 1) {
        i -= 1;
    }
    while i + 1 < BUCKETS && micros > bucket_upper_micros(i) {
        i += 1;
    }
    i
}

/// Delivery latencies in log-spaced buckets (see [`bucket_upper_micros`]). Mergeable by
/// adding counts; quantiles are read as the upper bound of the bucket they fall in.
/// Serialised as the counts from bucket 0, trailing empty buckets left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LatencyHistogram(pub Vec<u64>);

impl LatencyHistogram {
    /// Counts one latency of `micros`.
    pub fn record(&mut self, micros: u64) {
        self.add(bucket_of(micros), 1);
    }

    fn add(&mut self, bucket: usize, count: u64) {
        let bucket = bucket.min(BUCKETS - 1);
        if self.0.len() <= bucket {
            self.0.resize(bucket + 1, 0);
        }
        self.0[bucket] = self.0[bucket].saturating_add(count);
    }

    /// Number of latencies counted.
    pub fn count(&self) -> u64 {
        self.0.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }

    /// Adds every count of `other`, each shifted by `offset_micros` (a later start: the
    /// reporting process published the change that long after the earliest one). A bucket
    /// moves as its upper bound does.
    pub fn merge_shifted(&mut self, other: &LatencyHistogram, offset_micros: u64) {
        for (i, c) in other.0.iter().enumerate() {
            if *c == 0 {
                continue;
            }
            let target = if offset_micros == 0 {
                i
            } else {
                bucket_of(bucket_upper_micros(i).saturating_add(offset_micros))
            };
            self.add(target, *c);
        }
    }

    /// The time, in microseconds, by which `fraction` (0–1) of `population` had been counted:
    /// the upper bound of the bucket where the running count reaches it; `None` while fewer
    /// than that many are counted (or `population` is 0).
    pub fn time_to_reach(&self, fraction: f64, population: u64) -> Option<u64> {
        if population == 0 {
            return None;
        }
        let needed = ((population as f64) * fraction.clamp(0.0, 1.0))
            .ceil()
            .max(1.0) as u64;
        let mut seen = 0u64;
        for (i, c) in self.0.iter().enumerate() {
            seen = seen.saturating_add(*c);
            if seen >= needed {
                return Some(bucket_upper_micros(i));
            }
        }
        None
    }
}

/// What one relay reports about itself and every environment it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetReport {
    /// The relay's identity (`VEXIL_RELAY_ID`, by default its host name).
    pub relay_id: String,
    /// The relay's software version.
    pub version: String,
    /// Whether its upstream stream is connected.
    pub upstream_connected: bool,
    /// The relay this one is chained below, which forwarded the report to the control plane
    /// (set by that relay; absent when the relay reports to the control plane directly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// One entry per environment it serves.
    pub environments: Vec<EnvironmentReport>,
}

/// The SDK streams of one environment in one process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentReport {
    /// `project/environment`.
    pub environment: String,
    /// The environment version the process holds.
    pub version: u64,
    /// SDK streams connected.
    pub streams: u64,
    /// How many streams hold each version (ascending versions).
    pub on_version: Vec<VersionCount>,
    /// The most recent changes the process published, oldest first.
    pub changes: Vec<ChangeDelivery>,
}

/// Streams holding one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionCount {
    /// The environment version.
    pub version: u64,
    /// Streams holding it.
    pub streams: u64,
}

/// How one change reached the streams of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeDelivery {
    /// The environment version the change produced.
    pub version: u64,
    /// When the process published it (ms since the Unix epoch, its wall clock).
    pub published_at_ms: u64,
    /// Streams that were to receive it: those connected below this version when it was
    /// published, less those that closed before receiving it.
    pub streams: u64,
    /// Streams that received it.
    pub delivered: u64,
    /// Their delivery latencies, from publication to the frame's hand-off to the connection.
    pub latency: LatencyHistogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_latencies_land_within_their_bounds() {
        for i in 1..BUCKETS {
            assert!(bucket_upper_micros(i) > bucket_upper_micros(i - 1));
        }
        for micros in [
            0,
            1,
            100,
            101,
            125,
            126,
            999,
            12_345,
            1_000_000,
            599_000_000,
        ] {
            let b = bucket_of(micros);
            assert!(micros <= bucket_upper_micros(b), "{micros} in {b}");
            if b > 0 {
                assert!(micros > bucket_upper_micros(b - 1), "{micros} in {b}");
            }
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_wait_for_the_population_and_read_bucket_bounds() {
        let mut h = LatencyHistogram::default();
        for ms in 1..=10u64 {
            h.record(ms * 1000);
        }
        assert_eq!(h.count(), 10);
        // Half of 10 reached by the fifth (5 ms): its bucket's bound, within 25 %.
        let p50 = h.time_to_reach(0.5, 10).unwrap();
        assert!((5000..=6250).contains(&p50), "{p50}");
        let all = h.time_to_reach(1.0, 10).unwrap();
        assert!((10_000..=12_500).contains(&all), "{all}");
        // 10 of 20 delivered: 50 % is reached, 90 % is not.
        assert!(h.time_to_reach(0.5, 20).is_some());
        assert_eq!(h.time_to_reach(0.9, 20), None);
        assert_eq!(h.time_to_reach(0.5, 0), None);
    }

    #[test]
    fn merging_shifts_a_later_publisher_and_adds_counts() {
        let mut a = LatencyHistogram::default();
        a.record(1000);
        let mut b = LatencyHistogram::default();
        b.record(1000);
        let mut merged = LatencyHistogram::default();
        merged.merge_shifted(&a, 0);
        merged.merge_shifted(&b, 50_000);
        assert_eq!(merged.count(), 2);
        let last = merged.time_to_reach(1.0, 2).unwrap();
        assert!((51_000..=64_000).contains(&last), "{last}");
        let json = serde_json::to_string(&merged).unwrap();
        assert_eq!(
            serde_json::from_str::<LatencyHistogram>(&json).unwrap(),
            merged
        );
    }

    #[test]
    fn a_report_without_a_parent_reads_and_writes_as_before() {
        let old =
            r#"{"relay_id":"edge","version":"1","upstream_connected":true,"environments":[]}"#;
        let r: FleetReport = serde_json::from_str(old).unwrap();
        assert_eq!(r.parent, None);
        assert_eq!(serde_json::to_string(&r).unwrap(), old);
        let chained = FleetReport {
            parent: Some("edge-a".into()),
            ..r
        };
        let json = serde_json::to_value(&chained).unwrap();
        assert_eq!(json["parent"], "edge-a");
    }
}
