//! Logging and traces for the relay binary: `tracing` with an env filter (`RUST_LOG`, default
//! `info`), text or JSON lines on stdout, and OpenTelemetry traces over OTLP when the standard
//! `OTEL_*` variables ask for them (see [`vexil_fanout::telemetry`] and
//! [`vexil_fanout::trace`], shared with the control plane).

use crate::config::LogFormat;

/// Installs the global subscriber. Returns an error if one is already installed.
pub fn init(format: LogFormat) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    vexil_fanout::telemetry::init(format, "info,hyper=warn,reqwest=warn")
}

/// Installs the global subscriber with OpenTelemetry traces when `OTEL_*` asks for them
/// (service name `vexil-relay` unless `OTEL_SERVICE_NAME` says otherwise). Keep the returned
/// provider and shut it down at exit so the last spans are sent.
pub fn init_with_traces(
    format: LogFormat,
) -> Result<
    Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    vexil_fanout::telemetry::init_with_traces(format, "info,hyper=warn,reqwest=warn", "vexil-relay")
}
