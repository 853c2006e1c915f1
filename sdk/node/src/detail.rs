//! Results shaped as JavaScript objects: evaluation details (camelCase, with `null` for a
//! missing variation), reasons, status, flag changes and the outcome of waiting for
//! initialisation.

use napi_derive::napi;
use serde_json::Value;
use vexil_sdk::{DataOrigin, EvaluationDetail, FlagChange, InitError, Reason, Status};

/// Why a flag has its value: `kind` is `OFF`, `TARGET_MATCH`, `RULE_MATCH`, `FALLTHROUGH`,
/// `PREREQUISITE_FAILED` or `ERROR`; the other fields are set for the kinds they belong to.
#[napi(object)]
#[derive(Debug, Clone, PartialEq)]
pub struct ReasonJs {
    /// The kind of reason.
    pub kind: String,
    /// `RULE_MATCH`: the zero-based index of the rule.
    pub rule_index: Option<u32>,
    /// `RULE_MATCH`: the rule's id.
    pub rule_id: Option<String>,
    /// `PREREQUISITE_FAILED`: the first prerequisite that failed.
    pub prerequisite_key: Option<String>,
    /// `ERROR`: `FLAG_NOT_FOUND`, `MALFORMED`, `WRONG_TYPE` or `CLIENT_NOT_READY`.
    pub error_kind: Option<String>,
}

impl From<&Reason> for ReasonJs {
    fn from(reason: &Reason) -> Self {
        // The wire form is the one spelling of every kind and error kind.
        let wire = serde_json::to_value(reason).unwrap_or(Value::Null);
        let text = |field: &str| wire.get(field).and_then(Value::as_str).map(str::to_owned);
        Self {
            kind: text("kind").unwrap_or_else(|| "ERROR".to_owned()),
            rule_index: wire
                .get("rule_index")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok()),
            rule_id: text("rule_id"),
            prerequisite_key: text("prerequisite_key"),
            error_kind: text("error_kind"),
        }
    }
}

macro_rules! detail {
    ($name:ident, $t:ty, $doc:literal) => {
        #[doc = $doc]
        #[napi(object, use_nullable = true)]
        #[derive(Debug, Clone)]
        pub struct $name {
            /// The value served, or the caller's default when `reason.kind` is `ERROR`.
            pub value: $t,
            /// The index of the variation served; `null` when the default was used.
            pub variation: Option<u32>,
            /// The name of the variation served, if it has one.
            pub variation_name: Option<String>,
            /// Why.
            pub reason: ReasonJs,
            /// The OpenFeature reason (`STATIC`, `DEFAULT`, `TARGETING_MATCH`, `SPLIT`,
            /// `DISABLED`, `ERROR`), through the schema's single mapping.
            pub openfeature_reason: String,
            /// The OpenFeature error code when `reason.kind` is `ERROR`.
            pub error_code: Option<String>,
            /// Whether the value came from an experiment (and counts as an exposure).
            pub in_experiment: bool,
            /// Whether the value came from a weighted rollout.
            pub split: bool,
        }

        impl From<EvaluationDetail<$t>> for $name {
            fn from(d: EvaluationDetail<$t>) -> Self {
                Self {
                    openfeature_reason: d.openfeature_reason().to_owned(),
                    error_code: d.error_kind().map(|k| k.openfeature_code().to_owned()),
                    variation: d.variation.and_then(|i| u32::try_from(i).ok()),
                    variation_name: d.variation_name,
                    reason: ReasonJs::from(&d.reason),
                    in_experiment: d.in_experiment,
                    split: d.split,
                    value: d.value,
                }
            }
        }
    };
}

detail!(BoolDetail, bool, "A boolean flag's detail.");
detail!(StringDetail, String, "A string flag's detail.");
detail!(NumberDetail, f64, "A number flag's detail.");
detail!(
    JsonDetail,
    Value,
    "Any flag's detail; `value` is `null` on error (the wrapper puts the caller's default there)."
);

/// The client's status.
#[napi(object, use_nullable = true)]
#[derive(Debug, Clone)]
pub struct StatusJs {
    /// `initializing`, `ready`, `stale`, `offline` or `failed`.
    pub state: String,
    /// The environment version served, if any.
    pub version: Option<f64>,
    /// Where the flags served come from: `upstream`, `last_known_good`, `file`,
    /// `test_data` or `custom`.
    pub origin: Option<String>,
    /// The latest data source problem, cleared once ready again.
    pub last_error: Option<String>,
    /// When `state` last changed, in milliseconds since the Unix epoch.
    pub since: f64,
    /// Event counters.
    pub events: EventStatsJs,
}

/// The event pipeline's counters.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct EventStatsJs {
    /// Exposures and custom events recorded since start.
    pub recorded: f64,
    /// Events waiting in the queue now.
    pub queued: f64,
    /// Events dropped because the queue was full (the oldest go first).
    pub dropped: f64,
    /// Events the server accepted.
    pub sent: f64,
    /// Events given up on (refused, or still failing after every attempt).
    pub failed: f64,
    /// Custom events refused at `track` (empty or over-long key, non-finite value).
    pub invalid: f64,
}

impl From<Status> for StatusJs {
    fn from(s: Status) -> Self {
        let since = s
            .since
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        Self {
            state: s.state.as_str().to_owned(),
            version: s.version.map(|v| v as f64),
            origin: s.origin.map(origin_name),
            last_error: s.last_error.map(|e| e.to_string()),
            since,
            events: EventStatsJs {
                recorded: s.events.recorded as f64,
                queued: s.events.queued as f64,
                sent: s.events.sent as f64,
                dropped: s.events.dropped as f64,
                failed: s.events.failed as f64,
                invalid: s.events.invalid as f64,
            },
        }
    }
}

fn origin_name(origin: DataOrigin) -> String {
    match origin {
        DataOrigin::Upstream => "upstream",
        DataOrigin::LastKnownGood => "last_known_good",
        DataOrigin::File => "file",
        DataOrigin::TestData => "test_data",
        _ => "custom",
    }
    .to_owned()
}

/// Flags whose result may have changed.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct FlagChangeJs {
    /// The environment version after the update.
    pub version: f64,
    /// The keys of the flags whose result may differ for some context, sorted.
    pub keys: Vec<String>,
    /// Where the new data came from.
    pub origin: String,
}

impl From<&FlagChange> for FlagChangeJs {
    fn from(c: &FlagChange) -> Self {
        Self {
            version: c.version as f64,
            keys: c.keys.to_vec(),
            origin: origin_name(c.origin),
        }
    }
}

/// How waiting for initialisation ended.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct InitOutcome {
    /// Whether the client is ready.
    pub ok: bool,
    /// `TIMED_OUT`, `FAILED` or `CLOSED` when not.
    pub error: Option<String>,
    /// The SDK's explanation when not ready.
    pub message: Option<String>,
}

impl InitOutcome {
    /// Ready.
    pub(crate) fn ready() -> Self {
        Self {
            ok: true,
            error: None,
            message: None,
        }
    }

    /// Not ready, and why.
    pub(crate) fn from_error(e: &InitError) -> Self {
        let kind = match e {
            InitError::TimedOut { .. } => "TIMED_OUT",
            InitError::Closed => "CLOSED",
            _ => "FAILED",
        };
        Self {
            ok: false,
            error: Some(kind.to_owned()),
            message: Some(e.to_string()),
        }
    }
}
