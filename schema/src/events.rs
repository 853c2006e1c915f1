//! Analytics events: what SDKs, relays and OFREP endpoints send to `POST /events/v1/bulk`.
//!
//! Wire format version [`EVENTS_SCHEMA_VERSION`] (sent as the `schema_version` field of the
//! batch and the `X-Vexil-Event-Schema` header). A batch is one JSON object, optionally
//! gzip-compressed (`Content-Encoding: gzip`):
//!
//! ```json
//! {
//!   "schema_version": 1,
//!   "sdk": {"name": "vexil-rust", "version": "0.1.0", "instance_id": "8f1c…"},
//!   "events": [
//!     {"kind": "exposure", "time": 1764806400000, "flag_key": "new-checkout",
//!      "flag_version": 7, "environment_version": 42, "variation": 1,
//!      "context_key": "user-17", "context_kind": "user"},
//!     {"kind": "custom", "time": 1764806401000, "event_key": "purchase",
//!      "context_key": "user-17", "context_kind": "user", "value": 39.5},
//!     {"kind": "summary", "start": 1764806400000, "end": 1764806410000,
//!      "environment_version": 42,
//!      "counters": [{"flag_key": "new-checkout", "variation": 1,
//!                    "reason": "FALLTHROUGH", "count": 1200}]}
//!   ]
//! }
//! ```
//!
//! - **exposure**: a context was served a variation of a flag while `in_experiment` was true
//!   (deduplicated by the sender per context × flag × variation).
//! - **custom**: `track(event_key, context)` / `track_value(event_key, context, value)`.
//! - **summary**: evaluation counts per flag × variation × reason over `[start, end)`, with
//!   the environment version the sender held; the batch's `sdk` names the sender.
//!
//! Times are milliseconds since the Unix epoch (UTC). Unknown fields are ignored so that newer
//! senders can add fields; an unknown `kind` fails that one event, not the batch.
//!
//! The receiver validates each event on its own ([`Event::validate`]) and answers a
//! [`BulkResponse`] naming the rejected ones by index; the rest are stored.

use serde::{Deserialize, Serialize};

/// The version of this wire format.
pub const EVENTS_SCHEMA_VERSION: u32 = 1;

/// The HTTP header that carries [`EVENTS_SCHEMA_VERSION`].
pub const EVENTS_SCHEMA_HEADER: &str = "x-vexil-event-schema";

/// Longest flag key, event key or context kind accepted in an event, in bytes.
pub const MAX_EVENT_KEY_LEN: usize = 256;

/// Most events in one batch.
pub const MAX_EVENTS_PER_BATCH: usize = 10_000;

/// Most counters in one summary event.
pub const MAX_SUMMARY_COUNTERS: usize = 10_000;

/// How far in the future an event time may lie (clock skew allowance), in milliseconds.
pub const MAX_FUTURE_SKEW_MS: u64 = 24 * 60 * 60 * 1000;

/// How far in the past an event time may lie, in milliseconds (events older than this are
/// rejected: they could not land in any live experiment iteration's aggregates honestly).
pub const MAX_EVENT_AGE_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// One upload to `/events/v1/bulk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// [`EVENTS_SCHEMA_VERSION`] of the sender.
    pub schema_version: u32,
    /// Who sent the batch (absent when a relay forwards events of several SDKs, in which case
    /// summaries carry their own `sdk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk: Option<SdkInfo>,
    /// The events. Elements are decoded one by one (see [`RawEvent`]) so that one malformed
    /// event does not fail the batch.
    pub events: Vec<RawEvent>,
}

/// An event as received: decoded lazily with [`RawEvent::decode`] so that a malformed element
/// is reported by index instead of failing the whole batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawEvent(pub serde_json::Value);

impl RawEvent {
    /// Decodes the event.
    pub fn decode(&self) -> Result<Event, EventError> {
        Event::deserialize(&self.0).map_err(|e| EventError::Malformed(e.to_string()))
    }
}

impl From<&Event> for RawEvent {
    fn from(event: &Event) -> Self {
        // Serialising these plain structs to a Value cannot fail (no maps with non-string
        // keys, no custom serialisers); fall back to null rather than panic.
        RawEvent(serde_json::to_value(event).unwrap_or(serde_json::Value::Null))
    }
}

/// The sender of a batch or summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SdkInfo {
    /// SDK name, e.g. `vexil-rust`, `vexil-python`, `ofrep`.
    pub name: String,
    /// SDK version.
    pub version: String,
    /// Identifies one SDK instance (one process's client) for its lifetime.
    pub instance_id: String,
}

/// One analytics event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A context was assigned a variation of an experiment flag.
    Exposure(Exposure),
    /// An application event (`track`).
    Custom(CustomEvent),
    /// Evaluation counts over an interval.
    Summary(Summary),
}

/// `{"kind": "exposure", …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    /// When the evaluation happened (ms since the epoch).
    pub time: u64,
    /// The flag evaluated.
    pub flag_key: String,
    /// The flag's version at evaluation.
    pub flag_version: u64,
    /// The environment version the sender held.
    pub environment_version: u64,
    /// Index of the variation served.
    pub variation: u32,
    /// The context's targeting key (the experiment unit).
    pub context_key: String,
    /// The context's kind (`user` when the context has none).
    #[serde(default = "default_kind")]
    pub context_kind: String,
}

/// `{"kind": "custom", …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomEvent {
    /// When it happened (ms since the epoch).
    pub time: u64,
    /// The application's event name, e.g. `purchase`.
    pub event_key: String,
    /// The context's targeting key.
    pub context_key: String,
    /// The context's kind (`user` when the context has none).
    #[serde(default = "default_kind")]
    pub context_kind: String,
    /// A numeric value (`track_value`), e.g. revenue or latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// `{"kind": "summary", …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Start of the interval (ms since the epoch, inclusive).
    pub start: u64,
    /// End of the interval (ms since the epoch, exclusive).
    pub end: u64,
    /// The environment version the sender held at `end`.
    pub environment_version: u64,
    /// The sender, when the batch's `sdk` does not say (relays forwarding several SDKs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk: Option<SdkInfo>,
    /// Counts per flag × variation × reason.
    pub counters: Vec<SummaryCounter>,
}

/// One counter of a [`Summary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryCounter {
    /// The flag evaluated.
    pub flag_key: String,
    /// The variation served; absent when the caller's default was served (an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variation: Option<u32>,
    /// The OpenFeature-style reason kind: `OFF`, `TARGET_MATCH`, `RULE_MATCH`,
    /// `PREREQUISITE_FAILED`, `FALLTHROUGH`, `ERROR`.
    pub reason: String,
    /// Evaluations in the interval.
    pub count: u64,
}

fn default_kind() -> String {
    "user".to_owned()
}

/// Why one event was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// Not a valid event object (unknown kind, missing or mistyped field).
    #[error("malformed event: {0}")]
    Malformed(String),
    /// A string field is empty or longer than allowed.
    #[error("{field} must be 1 to {max} bytes")]
    Length {
        /// The field.
        field: &'static str,
        /// Its maximum length.
        max: usize,
    },
    /// A numeric value is NaN or infinite.
    #[error("value must be a finite number")]
    NotFinite,
    /// The event time is too far in the past or the future.
    #[error("time {time} is outside the accepted window")]
    Time {
        /// The event's time.
        time: u64,
    },
    /// A summary's interval ends before it starts, or has too many counters.
    #[error("summary: {0}")]
    Summary(&'static str),
}

impl Event {
    /// Checks the event against the limits, given the receiver's clock (`now_ms`, ms since
    /// the epoch). Pure: the caller supplies the time.
    pub fn validate(&self, now_ms: u64) -> Result<(), EventError> {
        let time_ok = |t: u64| {
            t <= now_ms.saturating_add(MAX_FUTURE_SKEW_MS)
                && t >= now_ms.saturating_sub(MAX_EVENT_AGE_MS)
        };
        let check_time = |t: u64| {
            if time_ok(t) {
                Ok(())
            } else {
                Err(EventError::Time { time: t })
            }
        };
        match self {
            Event::Exposure(e) => {
                check_time(e.time)?;
                check_len("flag_key", &e.flag_key, MAX_EVENT_KEY_LEN)?;
                check_len(
                    "context_key",
                    &e.context_key,
                    crate::limits::MAX_CONTEXT_KEY_LEN,
                )?;
                check_len("context_kind", &e.context_kind, MAX_EVENT_KEY_LEN)
            }
            Event::Custom(e) => {
                check_time(e.time)?;
                check_len("event_key", &e.event_key, MAX_EVENT_KEY_LEN)?;
                check_len(
                    "context_key",
                    &e.context_key,
                    crate::limits::MAX_CONTEXT_KEY_LEN,
                )?;
                check_len("context_kind", &e.context_kind, MAX_EVENT_KEY_LEN)?;
                match e.value {
                    Some(v) if !v.is_finite() => Err(EventError::NotFinite),
                    _ => Ok(()),
                }
            }
            Event::Summary(s) => {
                check_time(s.end)?;
                if s.end < s.start {
                    return Err(EventError::Summary("end is before start"));
                }
                if s.counters.len() > MAX_SUMMARY_COUNTERS {
                    return Err(EventError::Summary("too many counters"));
                }
                for c in &s.counters {
                    check_len("counters.flag_key", &c.flag_key, MAX_EVENT_KEY_LEN)?;
                    check_len("counters.reason", &c.reason, MAX_EVENT_KEY_LEN)?;
                }
                Ok(())
            }
        }
    }
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), EventError> {
    if value.is_empty() || value.len() > max {
        Err(EventError::Length { field, max })
    } else {
        Ok(())
    }
}

/// The answer to `POST /events/v1/bulk`: `200` once the accepted events are committed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BulkResponse {
    /// Events stored.
    pub accepted: u64,
    /// Events rejected, by index in the batch, with the reason.
    #[serde(default)]
    pub rejected: Vec<RejectedEvent>,
}

/// One rejected event of a [`BulkResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedEvent {
    /// Index in the batch's `events`.
    pub index: usize,
    /// Why, in words.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_764_806_400_000;

    #[test]
    fn documented_example_decodes_and_validates() {
        let batch: EventBatch = serde_json::from_value(json!({
            "schema_version": 1,
            "sdk": {"name": "vexil-rust", "version": "0.1.0", "instance_id": "i-1"},
            "events": [
                {"kind": "exposure", "time": NOW, "flag_key": "new-checkout",
                 "flag_version": 7, "environment_version": 42, "variation": 1,
                 "context_key": "user-17", "context_kind": "user"},
                {"kind": "custom", "time": NOW, "event_key": "purchase",
                 "context_key": "user-17", "value": 39.5},
                {"kind": "summary", "start": NOW - 10_000, "end": NOW,
                 "environment_version": 42,
                 "counters": [{"flag_key": "new-checkout", "variation": 1,
                               "reason": "FALLTHROUGH", "count": 1200}]},
                {"kind": "teleport", "time": NOW}
            ]
        }))
        .unwrap();
        let decoded: Vec<_> = batch.events.iter().map(RawEvent::decode).collect();
        assert!(
            decoded[..3]
                .iter()
                .all(|e| e.as_ref().unwrap().validate(NOW).is_ok())
        );
        match &decoded[1] {
            Ok(Event::Custom(c)) => assert_eq!(c.context_kind, "user"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(decoded[3], Err(EventError::Malformed(_))));
    }

    #[test]
    fn validation_rejects_bad_fields() {
        let custom = |key: &str, time: u64, value: Option<f64>| {
            Event::Custom(CustomEvent {
                time,
                event_key: key.into(),
                context_key: "u".into(),
                context_kind: "user".into(),
                value,
            })
        };
        assert!(custom("", NOW, None).validate(NOW).is_err());
        assert!(custom(&"k".repeat(257), NOW, None).validate(NOW).is_err());
        assert_eq!(
            custom("k", NOW, Some(f64::NAN)).validate(NOW),
            Err(EventError::NotFinite)
        );
        assert!(
            custom("k", NOW + MAX_FUTURE_SKEW_MS + 1, None)
                .validate(NOW)
                .is_err()
        );
        assert!(
            custom("k", NOW - MAX_EVENT_AGE_MS - 1, None)
                .validate(NOW)
                .is_err()
        );
        assert!(custom("k", NOW, Some(1.5)).validate(NOW).is_ok());
    }

    #[test]
    fn round_trips_through_raw() {
        let e = Event::Exposure(Exposure {
            time: NOW,
            flag_key: "f".into(),
            flag_version: 1,
            environment_version: 2,
            variation: 0,
            context_key: "u".into(),
            context_kind: "user".into(),
        });
        assert_eq!(RawEvent::from(&e).decode().unwrap(), e);
    }
}
