//! The `vexil-relay` command: parse the configuration, set up logging, bind, serve until
//! SIGTERM/ctrl-c (then drain subscriber streams over `VEXIL_DRAIN_WINDOW` and exit).
//!
//! It lives in the library so that every binary that is the relay (`src/bin/vexil-relay.rs`,
//! and the end-to-end tests' copy in `relay/e2e`) is one line. It returns `anyhow` errors
//! because its only callers are binaries' `main` functions.

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;

use crate::{RelayConfig, telemetry};

/// Runs the relay with the configuration from the command line and `VEXIL_*` variables.
pub async fn main() -> anyhow::Result<()> {
    let config = RelayConfig::parse();
    let traces = telemetry::init_with_traces(config.log_format)
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot set up logging and traces")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let ran = crate::run(listener, config, vexil_fanout::signal::shutdown_signal()).await;
    if let Some(p) = traces {
        // Blocking: the exporter's thread sends the last batch.
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || p.shutdown()).await {
            tracing::warn!(error = %e, "traces not flushed at exit");
        }
    }
    ran.context("cannot start the relay")?;
    Ok(())
}
