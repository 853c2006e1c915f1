//! The command line: one subcommand per scenario, plus the hidden `worker`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::report::Report;
use crate::scenario::capacity::CapacityArgs;
use crate::scenario::events::EventsArgs;
use crate::scenario::ofrep::OfrepArgs;
use crate::scenario::propagation::PropagationArgs;
use crate::scenario::reconnect_storm::ReconnectStormArgs;
use crate::scenario::{capacity, events, ofrep, propagation, reconnect_storm};

/// Command-line interface.
#[derive(Debug, Parser)]
#[command(
    name = "vexil-loadtest",
    version,
    about = "Measures Vexil end to end: propagation, relay capacity, OFREP throughput, reconnect storms"
)]
pub struct Cli {
    /// Write the results as JSON here.
    #[arg(long, global = true)]
    pub out: Option<PathBuf>,
    /// Hard limit on the whole run: past it the scenario is abandoned and its processes
    /// stopped.
    #[arg(long, global = true, default_value_t = 1800)]
    pub max_duration_s: u64,
    /// The scenario.
    #[command(subcommand)]
    pub command: Command,
}

/// Scenarios.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// N SSE subscribers on a relay; K changes written through the API; per subscriber the
    /// delay from the write to receipt, and versions missed.
    Propagation(PropagationArgs),
    /// Idle subscribers one relay process holds, and its resident memory per subscriber.
    Capacity(CapacityArgs),
    /// OFREP requests per second and latency against the relay and the server.
    Ofrep(OfrepArgs),
    /// N subscribers, the relay killed and restarted: time until all are back and current,
    /// the relay's peak CPU and memory.
    ReconnectStorm(ReconnectStormArgs),
    /// N senders posting gzip event batches through one relay into the server on
    /// PostgreSQL: acknowledged events per second, and none of them lost.
    Events(EventsArgs),
    /// Internal: a subscriber worker process (plan on stdin, observations on stdout).
    #[command(hide = true)]
    Worker,
}

/// Runs the parsed command. Returns the report (none for `worker`).
pub async fn run(cli: Cli) -> anyhow::Result<Option<Report>> {
    let limit = Duration::from_secs(cli.max_duration_s);
    let scenario = async {
        match &cli.command {
            Command::Propagation(a) => propagation::run(a).await.map(Some),
            Command::Capacity(a) => capacity::run(a).await.map(Some),
            Command::Ofrep(a) => ofrep::run(a).await.map(Some),
            Command::ReconnectStorm(a) => reconnect_storm::run(a).await.map(Some),
            Command::Events(a) => events::run(a).await.map(Some),
            Command::Worker => crate::worker::run_worker().await.map(|()| None),
        }
    };
    let report = tokio::time::timeout(limit, scenario)
        .await
        .with_context(|| format!("the run exceeded --max-duration-s {}", cli.max_duration_s))??;
    if let Some(report) = &report {
        report.print();
        if let Some(path) = &cli.out {
            report.write(path)?;
            println!("  results written to {}", path.display());
        }
    }
    Ok(report)
}
