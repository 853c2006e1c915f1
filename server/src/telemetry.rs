//! Logging and traces: `tracing` with an env filter (`RUST_LOG`, default `info`), text or
//! JSON, and OpenTelemetry traces over OTLP when the standard `OTEL_*` variables ask for them
//! (see [`vexil_fanout::telemetry`] and [`vexil_fanout::trace`], shared with the relay).

use crate::config::LogFormat;

pub use opentelemetry_sdk::trace::SdkTracerProvider;

/// Installs the global subscriber. Returns an error if one is already installed.
pub fn init(format: LogFormat) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    vexil_fanout::telemetry::init(format, "info,sqlx=warn,tower_http=info")
}

/// Installs the global subscriber with OpenTelemetry traces when `OTEL_*` asks for them
/// (service name `vexil-server` unless `OTEL_SERVICE_NAME` says otherwise). Keep the returned
/// provider and shut it down at exit so the last spans are sent.
pub fn init_with_traces(
    format: LogFormat,
) -> Result<Option<SdkTracerProvider>, Box<dyn std::error::Error + Send + Sync>> {
    vexil_fanout::telemetry::init_with_traces(
        format,
        "info,sqlx=warn,tower_http=info",
        "vexil-server",
    )
}

/// The W3C `traceparent` of the current span, stored with each change a write makes so that
/// the change's distribution continues the write's trace (`None` with tracing off).
pub fn current_traceparent() -> Option<String> {
    vexil_fanout::trace::current_traceparent()
}

/// Flushes and stops `provider` (blocking: the exporter's thread sends the last batch).
pub async fn shutdown(provider: Option<SdkTracerProvider>) {
    if let Some(p) = provider {
        let done = tokio::task::spawn_blocking(move || p.shutdown()).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "traces not flushed at exit");
        }
    }
}
