//! Prometheus-friendly metrics, recorded through the `metrics` facade.
//!
//! Every series carries an `environment` label (`project/environment`). Handles are registered
//! once per environment when the hub first sees it, so the hot path is one atomic add: install
//! the metrics recorder before creating the [`crate::Hub`].

use std::sync::OnceLock;
use std::time::Duration;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::{Counter, Gauge, Label, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sha2::{Digest, Sha256};
use vexil_schema::stream::EnvironmentId;

/// The process-wide Prometheus recorder, installed on first call (needs a tokio runtime:
/// it spawns the task that drains histogram buckets). `None` if another recorder was
/// installed first. Call it before creating a [`crate::Hub`], whose per-environment handles
/// are registered with the recorder present at that time.
pub fn install_prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match with_buckets(PrometheusBuilder::new()).install_recorder() {
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

/// Bucket bounds (seconds) of the latency histograms: HTTP requests and database queries,
/// from a cached OFREP answer (well under a millisecond) to a slow bulk write.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Histograms rendered as Prometheus histograms (buckets that aggregate across instances)
/// rather than the exporter's default summaries.
const BUCKETED: [&str; 4] = [
    HTTP_DURATION,
    DB_QUERY_DURATION,
    DB_ACQUIRE_DURATION,
    DELIVERY_SECONDS,
];

fn with_buckets(mut builder: PrometheusBuilder) -> PrometheusBuilder {
    for name in BUCKETED {
        builder = match builder.set_buckets_for_metric(Matcher::Full(name.into()), &LATENCY_BUCKETS)
        {
            Ok(b) => b,
            // Only an empty bucket list is refused, and the list is a constant.
            Err(e) => unreachable!("latency buckets refused: {e}"),
        };
    }
    builder
}

/// `GET /metrics`: the recorder's metrics in the Prometheus text format, open to anyone.
pub fn prometheus_router(handle: PrometheusHandle) -> Router {
    prometheus_router_with(handle, MetricsOptions::default())
}

/// How `/metrics` is served.
#[derive(Clone, Default)]
pub struct MetricsOptions {
    /// When set, a scrape must send `Authorization: Bearer <token>` (else `401`).
    pub token: Option<String>,
    /// Called before each render, to sample gauges that are read rather than recorded
    /// (database pool use).
    pub refresh: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for MetricsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("refresh", &self.refresh.is_some())
            .finish()
    }
}

/// `GET /metrics` with `options`: the recorder's metrics, then the evaluation counts
/// ([`crate::evaluations::EvaluationCounts::global`]).
pub fn prometheus_router_with(handle: PrometheusHandle, options: MetricsOptions) -> Router {
    // Compared as digests: the time taken says nothing about how much of the token matched.
    let expected = options
        .token
        .as_deref()
        .map(|t| Sha256::digest(format!("Bearer {t}").as_bytes()));
    let refresh = options.refresh;
    Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let handle = handle.clone();
            let refresh = refresh.clone();
            async move {
                if let Some(expected) = expected {
                    let sent = headers
                        .get(AUTHORIZATION)
                        .map(|v| Sha256::digest(v.as_bytes()));
                    if sent != Some(expected) {
                        return (
                            StatusCode::UNAUTHORIZED,
                            [(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
                        )
                            .into_response();
                    }
                }
                if let Some(refresh) = &refresh {
                    refresh();
                }
                let mut text = handle.render();
                crate::evaluations::EvaluationCounts::global().render(&mut text);
                (
                    [(
                        CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4"),
                    )],
                    text,
                )
                    .into_response()
            }
        }),
    )
}

/// Serves `router` (the `/metrics` route) on a listener of its own until `shutdown`
/// completes, so metrics need not share the public port (`VEXIL_METRICS_LISTEN`).
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Counter: HTTP requests answered, labelled `method`, `route` (the route template, e.g.
/// `/ofrep/v1/evaluate/flags/{key}`; `unmatched` for paths no route serves) and `status`.
pub const HTTP_REQUESTS: &str = "vexil_http_requests_total";
/// Histogram: seconds from a request's arrival to its response head (for streams: until the
/// stream starts), with the labels of [`HTTP_REQUESTS`].
pub const HTTP_DURATION: &str = "vexil_http_request_duration_seconds";
/// Histogram (server): seconds one database statement took, labelled `backend` and
/// `operation` (`execute`, `fetch`, `commit`).
pub const DB_QUERY_DURATION: &str = "vexil_db_query_duration_seconds";
/// Histogram (server): seconds spent waiting for a pooled database connection.
pub const DB_ACQUIRE_DURATION: &str = "vexil_db_acquire_duration_seconds";

/// Middleware recording [`HTTP_REQUESTS`] and [`HTTP_DURATION`]. Add it with
/// `Router::layer` after the routes, so that the request carries its [`MatchedPath`].
pub async fn track_http(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = match req.extensions().get::<MatchedPath>() {
        Some(p) => p.as_str().to_owned(),
        None => "unmatched".to_owned(),
    };
    let method = method_label(req.method());
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    let labels = [
        Label::new("method", method),
        Label::new("route", route),
        Label::new("status", status),
    ];
    histogram!(HTTP_DURATION, labels.iter()).record(started.elapsed().as_secs_f64());
    counter!(HTTP_REQUESTS, labels.iter()).increment(1);
    res
}

/// The method as a label; anything unusual is `other` (a client picks the method).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
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
/// Histogram, by `environment`: seconds from publishing a change to handing its frame to an
/// SDK stream's connection (the fleet view's per-change curves come from the same
/// measurements).
pub const DELIVERY_SECONDS: &str = "vexil_fanout_delivery_seconds";
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
