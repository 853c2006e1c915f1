//! `propagation --delta`: the change written is a one-key edit of a large segment (one key
//! added, one removed, `POST …/segments/{key}/keys`) instead of a flag flip, so subscribers
//! receive `delta` events; and the relay's resident memory is read before and after the
//! segment arrives, for its memory per key.
//!
//! Kept apart from the flag-flip path: the scenario calls [`SegmentEdits::create`] once
//! before subscribers connect and [`SegmentEdits::write`] for each change.

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::api::Api;
use crate::procstat;

/// The segment's key.
const SEGMENT: &str = "lt-list";

/// A large segment in the test environment, edited one key at a time.
#[derive(Debug)]
pub struct SegmentEdits {
    api: Api,
    path: String,
    /// Keys the segment was created with.
    pub keys: u32,
    /// Bytes of those keys (all the same length).
    pub key_bytes: u64,
    /// The relay's resident set before the segment was created, KiB.
    pub relay_rss_before_kib: Option<u64>,
}

/// The `i`-th key of the segment as created (`lt-0000007`: 10 bytes, like a short account id).
fn key(i: u32) -> String {
    format!("lt-{i:07}")
}

impl SegmentEdits {
    /// Creates a segment of `keys` keys in `environment` (the relay's resident set is read
    /// just before). The segment is distributed like any other: every SDK stream carries it.
    pub async fn create(
        api: &Api,
        project: &str,
        environment: &str,
        keys: u32,
        relay_pid: Option<u32>,
    ) -> anyhow::Result<Self> {
        let relay_rss_before_kib = relay_pid.and_then(procstat::sample).map(|s| s.rss_kib);
        let included: Vec<String> = (0..keys).map(key).collect();
        let key_bytes = included.iter().map(|k| k.len() as u64).sum();
        let segments = format!("/api/v1/projects/{project}/environments/{environment}/segments");
        api.send(
            reqwest::Method::POST,
            &segments,
            Some(json!({"key": SEGMENT, "name": SEGMENT, "included": included})),
        )
        .await
        .context("creating the segment")?;
        Ok(Self {
            api: api.clone(),
            path: format!("{segments}/{SEGMENT}/keys"),
            keys,
            key_bytes,
            relay_rss_before_kib,
        })
    }

    /// Change number `i`: adds one new key and removes one of the original ones. Returns the
    /// environment version after it.
    pub async fn write(&self, i: u32) -> anyhow::Result<u64> {
        let edit = json!({"included": {
            "add": [format!("lt-new-{i}")],
            "remove": [key(i % self.keys.max(1))],
        }});
        // As a list sync would: the answer carries the counts, not the 100,000 keys.
        let view = self
            .api
            .send_with(
                reqwest::Method::POST,
                &self.path,
                Some(edit),
                &[("prefer", "return=minimal")],
            )
            .await?;
        view.get("environment_version")
            .and_then(Value::as_u64)
            .context("no environment_version in the edit's answer")
    }

    /// The relay's resident memory per key of the segment, beyond the key's bytes, from its
    /// resident set now (after the segment arrived) and before.
    pub fn relay_bytes_per_key(&self, relay_pid: Option<u32>) -> Option<(u64, f64)> {
        let before = self.relay_rss_before_kib?;
        let after = procstat::sample(relay_pid?)?.rss_kib;
        let grown = after.saturating_sub(before) * 1024;
        let per_key = (grown as f64 - self.key_bytes as f64) / f64::from(self.keys.max(1));
        Some((grown, per_key))
    }
}
