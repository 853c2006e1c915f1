//! Logging setup: `tracing` with an env filter (`RUST_LOG`, default `info`), text or JSON
//! (see [`vexil_fanout::telemetry`], shared with the relay).

use crate::config::LogFormat;

/// Installs the global subscriber. Returns an error if one is already installed.
pub fn init(format: LogFormat) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    vexil_fanout::telemetry::init(format, "info,sqlx=warn,tower_http=info")
}
