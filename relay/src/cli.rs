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
    telemetry::init(config.log_format)
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot set up logging")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    crate::run(listener, config, vexil_fanout::signal::shutdown_signal())
        .await
        .context("cannot start the relay")?;
    Ok(())
}
