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
    vexil_relay::run(listener, config, vexil_relay::signal::shutdown_signal())
        .await
        .context("cannot start the relay")?;
    Ok(())
}
