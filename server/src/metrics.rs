//! The control plane's own metrics, beside the fan-out's (`vexil_fanout::metrics`) and the
//! feed's (`crate::feed::metrics`): database statement latency and connection-pool use, and
//! the `/metrics` route with its options (bearer token, separate listener).
//!
//! Names follow Prometheus conventions; the full list with their meaning is in
//! `docs/observability.md`.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tracing::Instrument;
use vexil_fanout::metrics::{
    DB_ACQUIRE_DURATION, DB_QUERY_DURATION, MetricsOptions, prometheus_router_with,
};

use crate::db::{Backend, Db};

/// Gauge: pooled database connections by `state` (`idle`, `in_use`), sampled at scrape.
pub const DB_POOL_CONNECTIONS: &str = "vexil_db_pool_connections";
/// Gauge: the most connections the pool may open.
pub const DB_POOL_MAX: &str = "vexil_db_pool_max_connections";
/// Counter: database statements that failed, labelled `backend` and `operation`.
pub const DB_QUERY_ERRORS: &str = "vexil_db_query_errors_total";

/// The `backend` label of `b`.
pub(crate) fn backend_label(b: Backend) -> &'static str {
    match b {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    }
}

/// Runs one database statement (`operation`: `execute`, `fetch`, `commit`) inside a `db`
/// span, recording its latency in [`DB_QUERY_DURATION`] and a failure in
/// [`DB_QUERY_ERRORS`]. `statement` is the SQL text (placeholders only, never values).
pub(crate) async fn time_query<T, E>(
    backend: &'static str,
    operation: &'static str,
    statement: &'static str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = tracing::info_span!(
        "db",
        otel.kind = "client",
        db.system = backend,
        db.operation = operation,
        db.statement = statement,
    );
    let started = Instant::now();
    let out = fut.instrument(span).await;
    metrics::histogram!(DB_QUERY_DURATION, "backend" => backend, "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    if out.is_err() {
        metrics::counter!(DB_QUERY_ERRORS, "backend" => backend, "operation" => operation)
            .increment(1);
    }
    out
}

/// Waits for a pooled connection, recording the wait in [`DB_ACQUIRE_DURATION`].
pub(crate) async fn time_acquire<T>(backend: &'static str, fut: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = fut.await;
    metrics::histogram!(DB_ACQUIRE_DURATION, "backend" => backend)
        .record(started.elapsed().as_secs_f64());
    out
}

/// Registers the error counters of `db`'s engine at zero, so that rates and alerts have a
/// series before the first failure. Call after installing the recorder.
pub fn register(db: &Db) {
    let backend = backend_label(db.backend());
    for operation in ["execute", "fetch", "commit"] {
        metrics::counter!(DB_QUERY_ERRORS, "backend" => backend, "operation" => operation)
            .increment(0);
    }
}

/// Samples the pool gauges of `db`.
pub fn sample_pool(db: &Db) {
    let stats = db.pool_stats();
    let backend = backend_label(db.backend());
    metrics::gauge!(DB_POOL_CONNECTIONS, "backend" => backend, "state" => "idle")
        .set(stats.idle as f64);
    metrics::gauge!(DB_POOL_CONNECTIONS, "backend" => backend, "state" => "in_use")
        .set(stats.size.saturating_sub(stats.idle) as f64);
    metrics::gauge!(DB_POOL_MAX, "backend" => backend).set(stats.max as f64);
}

/// The `/metrics` route of the control plane: the recorder's metrics, the evaluation
/// counts and the pool gauges sampled at each scrape; behind `token` when one is set.
pub fn router(handle: PrometheusHandle, db: Db, token: Option<String>) -> Router {
    prometheus_router_with(
        handle,
        MetricsOptions {
            token,
            refresh: Some(Arc::new(move || sample_pool(&db))),
        },
    )
}
