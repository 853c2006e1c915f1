//! The `vexil-server` command: parse the configuration, set up logging, bind, serve until
//! SIGTERM/ctrl-c. The binary is one call to [`main`], so the end-to-end tests can build the
//! same program as a binary of their own and run it as a child process.
//!
//! With the `admin` subcommand it runs one administrative command against the database
//! instead (see [`crate::admin`]); without one it serves, exactly as before subcommands.

use std::ffi::OsString;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
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
    let matches = Cli::command().get_matches();
    let Cli {
        mut config,
        command,
    } = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    read_secret_files(&matches, &mut config, |name| std::env::var_os(name))?;
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
    let traces = telemetry::init_with_traces(config.log_format)
        .map_err(|e| anyhow::anyhow!(e))
        .context("cannot set up logging and traces")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    // Never the password: logs and consoles are read by more people than the database.
    let database = config.database_url_redacted();
    let scheme = if config.tls.files().is_some() {
        "https"
    } else {
        "http"
    };
    if scheme == "http" {
        vexil_fanout::signal::hangup_reloads_nothing();
    }
    let server = Server::build(config).await.context("cannot start")?;
    tracing::info!(%addr, %database, scheme, "vexil control plane listening");
    // The console banner is the command's output, not a log line: operators read it once.
    println!("Vexil control plane listening on {scheme}://{addr}");
    println!(
        "  API:      {scheme}://{addr}/api/v1   (OpenAPI: /api/v1/openapi.json, docs: /api/v1/docs)"
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

/// The secrets that may be given in files: the argument's id and its variable. For each,
/// `<VARIABLE>_FILE` names a file holding the value (Docker and Kubernetes secrets, systemd
/// credentials), so the value never sits in the environment or on a command line.
pub const SECRET_FILES: &[(&str, &str)] = &[
    ("database_url", "VEXIL_DATABASE_URL"),
    ("bootstrap_token", "VEXIL_BOOTSTRAP_TOKEN"),
];

/// Fills each secret of [`SECRET_FILES`] from the file its `<VARIABLE>_FILE` names (one
/// trailing newline removed), reading variables through `var`. Giving a secret both as a file
/// and directly (flag or variable) is an error rather than a silent choice.
pub fn read_secret_files(
    matches: &ArgMatches,
    config: &mut Config,
    var: impl Fn(&str) -> Option<OsString>,
) -> anyhow::Result<()> {
    for (id, variable) in SECRET_FILES {
        let file_var = format!("{variable}_FILE");
        let Some(path) = var(&file_var).filter(|p| !p.is_empty()) else {
            continue;
        };
        if matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            anyhow::bail!("{file_var} is set, and so is {variable} or its flag: give one of them");
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {file_var} ({})", path.to_string_lossy()))?;
        let value = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text)
            .to_owned();
        if value.is_empty() {
            anyhow::bail!("{file_var} ({}) is empty", path.to_string_lossy());
        }
        match *id {
            "database_url" => config.database_url = value,
            "bootstrap_token" => config.bootstrap_token = Some(value),
            other => anyhow::bail!("no secret argument '{other}'"),
        }
    }
    Ok(())
}

/// Completes on ctrl-c or SIGTERM (the relay binary's signal handling, shared).
async fn shutdown_signal() {
    vexil_fanout::signal::shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> (ArgMatches, Config) {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        (matches, cli.config)
    }

    #[test]
    fn secrets_are_read_from_files() {
        let dir = std::env::temp_dir().join(format!("vexil-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = dir.join("url");
        std::fs::write(&url, "postgres://u:p@db/vexil\n").unwrap();
        let token = dir.join("token");
        std::fs::write(&token, format!("vxa_{}", "ab".repeat(16))).unwrap();
        let vars = |name: &str| match name {
            "VEXIL_DATABASE_URL_FILE" => Some(url.clone().into_os_string()),
            "VEXIL_BOOTSTRAP_TOKEN_FILE" => Some(token.clone().into_os_string()),
            _ => None,
        };
        let (m, mut config) = parse(&["vexil-server"]);
        read_secret_files(&m, &mut config, vars).unwrap();
        assert_eq!(config.database_url, "postgres://u:p@db/vexil");
        assert_eq!(
            config.bootstrap_token,
            Some(format!("vxa_{}", "ab".repeat(16)))
        );
        // Both a file and a flag: refused, not guessed.
        let (m, mut config) = parse(&["vexil-server", "--database-url", "x.db"]);
        assert!(read_secret_files(&m, &mut config, vars).is_err());
        // A missing file is an error naming the variable.
        let (m, mut config) = parse(&["vexil-server"]);
        let err = read_secret_files(&m, &mut config, |n: &str| {
            (n == "VEXIL_DATABASE_URL_FILE").then(|| dir.join("missing").into_os_string())
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("VEXIL_DATABASE_URL_FILE"),
            "{err:#}"
        );
        // No files: nothing changes.
        let (m, mut config) = parse(&["vexil-server"]);
        read_secret_files(&m, &mut config, |_: &str| None).unwrap();
        assert_eq!(config.database_url, "vexil.db");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_subcommand_serves_and_admin_parses() {
        let cli = Cli::try_parse_from(["vexil-server", "--listen", "0.0.0.0:9000"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.config.listen.port(), 9000);
        let cli = Cli::try_parse_from([
            "vexil-server",
            "admin",
            "create-token",
            "--name",
            "n",
            "--scope",
            "web/staging=editor",
            "--database-url",
            "x.db",
        ])
        .unwrap();
        let Some(Command::Admin(args)) = cli.command else {
            panic!("admin expected")
        };
        assert_eq!(args.database.as_deref(), Some("x.db"));
    }
}
