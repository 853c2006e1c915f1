//! `vexil-server`: parse the configuration, set up logging, bind, serve until SIGTERM/ctrl-c.

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;
use vexil_server::{Config, Server, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.log_format)
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot set up logging")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    let database = config.database_url.clone();
    let server = Server::build(config).await.context("cannot start")?;
    tracing::info!(%addr, %database, "vexil control plane listening");
    println!("Vexil control plane listening on http://{addr}");
    println!(
        "  API:      http://{addr}/api/v1   (OpenAPI: /api/v1/openapi.json, docs: /api/v1/docs)"
    );
    println!("  database: {database}");
    if let Some(token) = server.generated_admin_token() {
        println!();
        println!("  Admin API token (shown once, store it now):");
        println!("    {token}");
        println!();
    }
    server.serve(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on ctrl-c or SIGTERM (the relay binary's signal handling, shared).
async fn shutdown_signal() {
    vexil_fanout::signal::shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
}
