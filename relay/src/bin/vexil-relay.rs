//! `vexil-relay`: parse the configuration, set up logging, bind, serve until SIGTERM/ctrl-c
//! (then drain subscriber streams over `VEXIL_DRAIN_WINDOW` and exit).

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;
use vexil_relay::{RelayConfig, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = RelayConfig::parse();
    telemetry::init(config.log_format)
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot set up logging")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    vexil_relay::run(listener, config, shutdown_signal())
        .await
        .context("cannot start the relay")?;
    Ok(())
}

/// Completes on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
