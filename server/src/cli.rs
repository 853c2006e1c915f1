//! The `vexil-server` command: parse the configuration, set up logging, bind, serve until
//! SIGTERM/ctrl-c. The binary is one call to [`main`], so the end-to-end tests can build the
//! same program as a binary of their own and run it as a child process.
//!
//! With the `admin` subcommand it runs one administrative command against the database
//! instead (see [`crate::admin`]); without one it serves, exactly as before subcommands.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::admin::AdminArgs;
use crate::{Config, Server, telemetry};

/// The command line: the server's configuration, and optionally a subcommand.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vexil-server",
    version,
    about = "Vexil control plane: flags, segments, keys and audit over HTTP"
)]
pub struct Cli {
    /// The server's configuration (also what `admin` commands connect with).
    #[command(flatten)]
    pub config: Config,

    /// What to run instead of the server.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Administration through the database: tokens and keys, migrations, configuration
    /// checks, project export and import.
    Admin(AdminArgs),
}

/// Runs the control plane as configured by the command line and `VEXIL_*` variables, until
/// SIGTERM or ctrl-c. Prints where to reach it (and a generated admin token, once) on stdout.
/// With `admin …`, runs that command instead and exits.
pub async fn main() -> anyhow::Result<()> {
    let Cli { config, command } = Cli::parse();
    if let Some(Command::Admin(args)) = command {
        // A command's result goes to standard output (an export may be piped into a file):
        // its logs go to standard error, warnings only unless `RUST_LOG` says otherwise.
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init()
            .map_err(|e| anyhow::anyhow!(e))
            .context("cannot set up logging")?;
        return crate::admin::run(config, args).await;
    }
    telemetry::init(config.log_format)
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot set up logging")?;
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
    server.serve(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on ctrl-c or SIGTERM (the relay binary's signal handling, shared).
async fn shutdown_signal() {
    vexil_fanout::signal::shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
}
