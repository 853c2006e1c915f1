//! Logging setup for the relay binary: `tracing` with an env filter (`RUST_LOG`, default
//! `info`), text or JSON lines on stdout (see [`vexil_fanout::telemetry`], shared with the
//! control plane).

use crate::config::LogFormat;

/// Installs the global subscriber. Returns an error if one is already installed.
pub fn init(format: LogFormat) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    vexil_fanout::telemetry::init(format, "info,hyper=warn,reqwest=warn")
}
