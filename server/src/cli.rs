//! The `vexil-server` command: parse the configuration, set up logging, bind, serve until
//! SIGTERM/ctrl-c. The binary is one call to [`main`], so the end-to-end tests can build the
//! same program as a binary of their own and run it as a child process.

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;

use crate::{Config, Server, telemetry};

/// Runs the control plane as configured by the command line and `VEXIL_*` variables, until
/// SIGTERM or ctrl-c. Prints where to reach it (and a generated admin token, once) on stdout.
pub async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let traces = telemetry::init_with_traces(config.log_format)
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot set up logging and traces")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    // Never the password: logs and consoles are read by more people than the database.
    let database = config.database_url_redacted();
    let server = Server::build(config).await.context("cannot start")?;
    tracing::info!(%addr, %database, "vexil control plane listening");
    // The console banner is the command's output, not a log line: operators read it once.
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
    let served = server.serve(listener, shutdown_signal()).await;
    telemetry::shutdown(traces).await;
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on ctrl-c or SIGTERM (the relay binary's signal handling, shared).
async fn shutdown_signal() {
    vexil_fanout::signal::shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
}
