//! The `vexil-relay` command: parse the configuration, set up logging, raise the
//! file-descriptor limit, bind (optionally sharing the port), serve until
//! SIGTERM/ctrl-c (then drain subscriber streams over `VEXIL_DRAIN_WINDOW` and exit).
//!
//! It lives in the library so that every binary that is the relay (`src/bin/vexil-relay.rs`,
//! and the end-to-end tests' copy in `relay/e2e`) is one line. It returns `anyhow` errors
//! because its only callers are binaries' `main` functions.

use anyhow::Context as _;
use clap::Parser;

use crate::{RelayConfig, listener, telemetry};

/// Runs the relay with the configuration from the command line and `VEXIL_*` variables.
pub async fn main() -> anyhow::Result<()> {
    let config = RelayConfig::parse();
    let traces = telemetry::init_with_traces(config.log_format)
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot set up logging and traces")?;
    // One descriptor per SDK stream: use every one the hard limit allows.
    match listener::raise_nofile_limit() {
        Ok(l) => tracing::info!(
            before = l.before,
            soft = l.after,
            hard = l.hard,
            "file-descriptor limit (RLIMIT_NOFILE): each SDK stream holds one"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file-descriptor limit"),
    }
    let listener = listener::bind(config.listen, config.reuse_port).with_context(|| {
        format!(
            "cannot listen on {}{}",
            config.listen,
            if config.reuse_port {
                " (with SO_REUSEPORT)"
            } else {
                ""
            }
        )
    })?;
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
