//! Prometheus-friendly metrics, recorded through the `metrics` facade.
//!
//! Every series carries an `environment` label (`project/environment`). Handles are registered
//! once per environment when the hub first sees it, so the hot path is one atomic add: install
//! the metrics recorder before creating the [`crate::Hub`].

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use metrics::{Counter, Gauge, counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use vexil_schema::stream::EnvironmentId;

/// The process-wide Prometheus recorder, installed on first call (needs a tokio runtime:
/// it spawns the task that drains histogram buckets). `None` if another recorder was
/// installed first. Call it before creating a [`crate::Hub`], whose per-environment handles
/// are registered with the recorder present at that time.
pub fn install_prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => {
                let upkeep = handle.clone();
                // Drains histogram buckets now and then so they do not grow without bound.
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        tick.tick().await;
                        upkeep.run_upkeep();
                    }
                });
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot install the Prometheus recorder; /metrics is off");
                None
            }
        })
        .clone()
}

/// `GET /metrics`: the recorder's metrics in the Prometheus text format.
pub fn prometheus_router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4"),
                    )],
                    handle.render(),
                )
            }
        }),
    )
}

/// Gauge: subscribers currently connected to an environment's SDK stream.
pub const SUBSCRIBERS: &str = "vexil_fanout_subscribers";
/// Counter: `put`/`patch`/`delete` frames handed to subscriber connections (keep-alives
/// excluded).
pub const EVENTS_SENT: &str = "vexil_fanout_events_sent_total";
/// Counter: subscribers that fell behind and were sent a fresh `put`.
pub const LAG_RESYNCS: &str = "vexil_fanout_lagged_resyncs_total";
/// Counter: subscribers disconnected for falling behind repeatedly.
pub const LAG_DISCONNECTS: &str = "vexil_fanout_lagged_disconnects_total";
/// Counter: SDK streams ended because their key no longer reads the environment (revoked,
/// or a rotated secret past its grace period).
pub const KEY_DISCONNECTS: &str = "vexil_fanout_key_revoked_disconnects_total";
/// Gauge: an environment's current version.
pub const VERSION: &str = "vexil_fanout_environment_version";
/// Counter: stream connections by how they started (`outcome` = `put`, `replay`, `current`).
pub const CONNECTS: &str = "vexil_fanout_connects_total";
/// Counter: published changes refused (`reason` = `duplicate`, `stale`, `gap`,
/// `no_snapshot`, `encode`).
pub const REJECTED_CHANGES: &str = "vexil_fanout_rejected_changes_total";

/// Gauge: relay streams (`GET /relay/v1/stream`) currently connected.
pub const RELAY_STREAMS: &str = "vexil_relay_stream_connections";
/// Counter: versioned events (`env-put`, `env-patch`, `env-delete`, `env-remove`) and
/// `keys` events sent on relay streams.
pub const RELAY_STREAM_EVENTS_SENT: &str = "vexil_relay_stream_events_sent_total";

/// Counter: failed `accept` calls on the listener (`kind` = `emfile`: the process is out of
/// file descriptors; `enfile`: the system is; `nomem`; `other`). While it rises, new
/// connections wait in the kernel's backlog: raise `RLIMIT_NOFILE` or add relay processes
/// (`VEXIL_REUSE_PORT`).
pub const ACCEPT_ERRORS: &str = "vexil_accept_errors_total";

/// Metric handles of one environment.
#[derive(Debug, Clone)]
pub(crate) struct EnvMetrics {
    label: String,
    pub(crate) subscribers: Gauge,
    pub(crate) events_sent: Counter,
    pub(crate) lag_resyncs: Counter,
    pub(crate) lag_disconnects: Counter,
    pub(crate) key_disconnects: Counter,
    pub(crate) version: Gauge,
    pub(crate) connect_put: Counter,
    pub(crate) connect_replay: Counter,
    pub(crate) connect_current: Counter,
}

impl EnvMetrics {
    pub(crate) fn new(env: &EnvironmentId) -> Self {
        let label = env.to_string();
        let env = label.clone();
        Self {
            subscribers: gauge!(SUBSCRIBERS, "environment" => env.clone()),
            events_sent: counter!(EVENTS_SENT, "environment" => env.clone()),
            lag_resyncs: counter!(LAG_RESYNCS, "environment" => env.clone()),
            lag_disconnects: counter!(LAG_DISCONNECTS, "environment" => env.clone()),
            key_disconnects: counter!(KEY_DISCONNECTS, "environment" => env.clone()),
            version: gauge!(VERSION, "environment" => env.clone()),
            connect_put: counter!(CONNECTS, "environment" => env.clone(), "outcome" => "put"),
            connect_replay: counter!(CONNECTS, "environment" => env.clone(), "outcome" => "replay"),
            connect_current: counter!(CONNECTS, "environment" => env, "outcome" => "current"),
            label,
        }
    }

    /// Counts a refused change (rare: looked up by name each time).
    pub(crate) fn rejected(&self, reason: &'static str) {
        counter!(REJECTED_CHANGES, "environment" => self.label.clone(), "reason" => reason)
            .increment(1);
    }
}

/// Decrements the subscriber gauge when a subscriber stream is dropped, however it ends.
#[derive(Debug)]
pub(crate) struct SubscriberGauge(Gauge);

impl SubscriberGauge {
    /// Increments `gauge` until the returned guard is dropped.
    pub(crate) fn enter(gauge: &Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge.clone())
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
