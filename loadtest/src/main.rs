//! `vexil-loadtest`: parse the command line, run one scenario (or be a subscriber worker),
//! exit non-zero if the run was invalid. Goals that are not met do not fail the run: they are
//! figures to report.

use clap::Parser;
use tracing_subscriber::EnvFilter;
use vexil_loadtest::cli::{Cli, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await? {
        Some(report) if !report.passed => {
            anyhow::bail!("the run is invalid: {}", report.failures.join("; "))
        }
        _ => Ok(()),
    }
}
