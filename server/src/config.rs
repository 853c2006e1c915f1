//! Server configuration: command-line flags, each also read from a `VEXIL_*` variable.

use std::net::SocketAddr;

use std::time::Duration;

use clap::{Parser, ValueEnum};
use vexil_fanout::DistributionArgs;
use vexil_fanout::config::parse_without_env;

use crate::feed::FeedConfig;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The control plane's configuration.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vexil-server",
    version,
    about = "Vexil control plane: flags, segments, keys and audit over HTTP"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "VEXIL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Database: `postgres://…` for PostgreSQL, or a SQLite file path / `sqlite://` URL (created
    /// if missing, WAL mode).
    #[arg(long, env = "VEXIL_DATABASE_URL", default_value = "vexil.db")]
    pub database_url: String,

    /// Maximum pooled database connections.
    #[arg(long, env = "VEXIL_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Log format.
    #[arg(long, env = "VEXIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The admin API token to create on first start (`vxa_` and at least 32 more characters).
    /// Without it, one is generated and printed once. Ignored once an admin token exists.
    #[arg(long, env = "VEXIL_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,

    /// Largest accepted request body, in bytes (a 100,000-key segment is about 4 MB).
    #[arg(long, env = "VEXIL_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Seconds between full resynchronisations of every environment from the change log (a
    /// safety net behind notifications).
    #[arg(long, env = "VEXIL_RESYNC_SECS", default_value_t = 30)]
    pub resync_secs: u64,

    /// Milliseconds between heartbeats of the PostgreSQL change listener.
    #[arg(long, env = "VEXIL_LISTENER_HEARTBEAT_MS", default_value_t = 10_000)]
    pub listener_heartbeat_ms: u64,

    /// Milliseconds a listener heartbeat may take before the connection is presumed dead.
    #[arg(
        long,
        env = "VEXIL_LISTENER_HEARTBEAT_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub listener_heartbeat_timeout_ms: u64,

    /// Change-log versions kept per environment (older rows are deleted).
    #[arg(
        long,
        env = "VEXIL_CHANGE_LOG_RETAIN_VERSIONS",
        default_value_t = 10_000
    )]
    pub change_log_retain_versions: u64,

    /// Hours change-log rows are kept at most.
    #[arg(long, env = "VEXIL_CHANGE_LOG_RETAIN_HOURS", default_value_t = 168)]
    pub change_log_retain_hours: u64,

    /// Hub and OFREP options, the same as the edge relay's.
    #[command(flatten)]
    pub distribution: DistributionArgs,

    /// Milliseconds over which open SDK and relay streams are closed on shutdown.
    #[arg(long, env = "VEXIL_DRAIN_MS", default_value_t = 5_000)]
    pub drain_ms: u64,

    /// Serve Prometheus metrics at `/metrics` (no authentication: keep the port private or
    /// turn this off).
    #[arg(long, env = "VEXIL_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics: bool,
}

impl Config {
    /// A configuration with defaults for everything but the database (for tests and tools);
    /// listens on `127.0.0.1:0`. The defaults are the command line's, read from its
    /// declarations (no variable is read), so the two cannot drift apart.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        let mut config: Self = match parse_without_env(&["vexil-server"]) {
            Ok(c) => c,
            // No option is required and every default parses (unit-tested).
            Err(e) => unreachable!("the server's defaults do not parse: {e}"),
        };
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.database_url = database_url.into();
        config
    }

    /// The change feed's settings.
    pub fn feed_config(&self) -> FeedConfig {
        FeedConfig {
            resync_interval: Duration::from_secs(self.resync_secs.max(1)),
            heartbeat_interval: Duration::from_millis(self.listener_heartbeat_ms.max(10)),
            heartbeat_timeout: Duration::from_millis(self.listener_heartbeat_timeout_ms.max(10)),
            retain_versions: self.change_log_retain_versions,
            retain_age: Duration::from_secs(self.change_log_retain_hours.saturating_mul(3600)),
            ..FeedConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_start_on_sqlite_locally() {
        let c = Config::try_parse_from(["vexil-server"]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "vexil.db");
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn with_database_takes_the_command_line_defaults() {
        let parsed = Config::try_parse_from(["vexil-server"]).unwrap();
        let built = Config::with_database("postgres://x/y");
        assert_eq!(built.database_url, "postgres://x/y");
        assert_eq!(built.listen.to_string(), "127.0.0.1:0");
        assert_eq!(built.drain_ms, parsed.drain_ms);
        assert_eq!(built.drain_ms, 5_000);
        assert_eq!(built.distribution, parsed.distribution);
        assert_eq!(built.distribution, DistributionArgs::default());
        assert_eq!(built.resync_secs, parsed.resync_secs);
        assert_eq!(built.max_body_bytes, parsed.max_body_bytes);
    }

    #[test]
    fn flags_override_defaults() {
        let c = Config::try_parse_from([
            "vexil-server",
            "--listen",
            "0.0.0.0:9000",
            "--database-url",
            "postgres://x/y",
            "--log-format",
            "json",
            "--max-body-bytes",
            "1024",
        ])
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.max_body_bytes, 1024);
    }
}
