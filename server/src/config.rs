//! Server configuration: command-line flags, each also read from a `VEXIL_*` variable.

use std::net::SocketAddr;

use std::time::Duration;

use clap::Parser;
use vexil_fanout::DistributionArgs;
use vexil_fanout::config::parse_without_env;

use crate::feed::FeedConfig;

pub use vexil_fanout::telemetry::{LogFormat, redact_url};

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
    /// if missing, WAL mode). May carry a password: it is never printed (`--help` hides the
    /// variable's value; logs show the URL with the password as `***`).
    #[arg(
        long,
        env = "VEXIL_DATABASE_URL",
        default_value = "vexil.db",
        hide_env_values = true
    )]
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

    /// Largest accepted request body, in bytes (a 100,000-key segment is about 4 MB, a
    /// segment with two lists of 1,000,000 keys about 40 MB; edits of keys need far less).
    #[arg(long, env = "VEXIL_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
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

    /// HTTPS: `VEXIL_TLS_CERT` and `VEXIL_TLS_KEY` (PEM files, reloaded on SIGHUP and on
    /// change). With TLS on, the console's session cookie is `Secure`.
    #[command(flatten)]
    pub tls: vexil_fanout::tls::TlsArgs,

    /// Milliseconds over which open SDK and relay streams are closed on shutdown.
    #[arg(long, env = "VEXIL_DRAIN_MS", default_value_t = 5_000)]
    pub drain_ms: u64,

    /// Serve Prometheus metrics at `/metrics` (no authentication: keep the port private or
    /// turn this off).
    #[arg(long, env = "VEXIL_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics: bool,

    /// Serve `/metrics` on this address instead of the public listener, so it need not be
    /// reachable from outside (e.g. `127.0.0.1:9090` or a private interface).
    #[arg(long, env = "VEXIL_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// A scrape of `/metrics` must send `Authorization: Bearer <token>`.
    #[arg(long, env = "VEXIL_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Failed API authentications allowed per client address within
    /// `--auth-failure-window-secs` before further attempts get `429` (0: no throttling).
    /// Only failures count: any amount of correctly authenticated traffic is never throttled.
    #[arg(long, env = "VEXIL_AUTH_FAILURE_LIMIT", default_value_t = 30)]
    pub auth_failure_limit: u32,

    /// Length in seconds of the window in which failed authentications are counted.
    #[arg(long, env = "VEXIL_AUTH_FAILURE_WINDOW_SECS", default_value_t = 60)]
    pub auth_failure_window_secs: u64,

    /// Take the client address for authentication throttling from the last
    /// `X-Forwarded-For` entry (the one the nearest proxy added). Turn on only behind a proxy
    /// that sets it; otherwise clients could pick their own address.
    #[arg(long, env = "VEXIL_TRUST_FORWARDED_FOR", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_forwarded_for: bool,

    /// Milliseconds a verified API token (or a refused one) is remembered without asking the
    /// database again. A token revoked on another server stops working within this time (at
    /// once on the server that revoked it).
    #[arg(long, env = "VEXIL_TOKEN_CACHE_MS", default_value_t = 5_000)]
    pub token_cache_ms: u64,

    /// Milliseconds between database health probes (they drive `/readyz` and fail writes fast
    /// while the database is down).
    #[arg(long, env = "VEXIL_DATABASE_PROBE_MS", default_value_t = 1_000)]
    pub database_probe_ms: u64,

    /// Largest event batch accepted on `/events/v1/bulk`, in bytes, both as sent and
    /// decompressed.
    #[arg(long, env = "VEXIL_EVENTS_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub events_max_body_bytes: usize,

    /// Event batches per second allowed per SDK key (burst: one second's worth;
    /// 0: unlimited).
    #[arg(long, env = "VEXIL_EVENTS_RATE_LIMIT", default_value_t = 1_000)]
    pub events_rate_limit: u32,

    /// Days raw events are kept (PostgreSQL drops whole day partitions; 0: forever).
    #[arg(long, env = "VEXIL_EVENTS_RETENTION_DAYS", default_value_t = 30)]
    pub events_retention_days: u32,

    /// Exposures of OFREP evaluations remembered for deduplication (per context × flag ×
    /// variation); also the queue of exposures waiting to be stored.
    #[arg(long, env = "VEXIL_EVENTS_EXPOSURE_CACHE", default_value_t = 100_000)]
    pub events_exposure_cache: usize,

    // --- progressive delivery ---
    /// Milliseconds between rounds of the scheduler and of the webhook sender (each also
    /// runs at start).
    #[arg(long, env = "VEXIL_DELIVERY_POLL_MS", default_value_t = 1_000)]
    pub delivery_poll_ms: u64,

    /// Seconds a scheduled change may be overdue (e.g. every server was down at its time)
    /// and still run; older ones fail with the reason `overdue`.
    #[arg(long, env = "VEXIL_SCHEDULE_GRACE_SECS", default_value_t = 3_600)]
    pub schedule_grace_secs: u64,

    /// Milliseconds a webhook receiver has to answer one delivery.
    #[arg(long, env = "VEXIL_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,

    /// Hours a failing webhook delivery is retried (with exponential backoff) before it
    /// fails for good and its subscription is disabled.
    #[arg(long, env = "VEXIL_WEBHOOK_RETRY_HOURS", default_value_t = 24)]
    pub webhook_retry_hours: u64,

    /// Seconds between two checks of a running release plan's guardrails: a breach is
    /// rolled back within one interval.
    #[arg(long, env = "VEXIL_GUARDRAIL_CHECK_SECS", default_value_t = 60)]
    pub guardrail_check_secs: u64,

    /// Base URL of the Prometheus that PromQL guardrails query (e.g.
    /// `http://prometheus:9090`); without it they read as errors and never roll back.
    #[arg(long, env = "VEXIL_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    // --- end progressive delivery ---

    // --- admin console (issue 14) ---
    /// Hours a console session lasts after sign-in (the browser must sign in again after).
    #[arg(long, env = "VEXIL_CONSOLE_SESSION_HOURS", default_value_t = 12)]
    pub console_session_hours: u64,

    /// Mark the console's session cookie `Secure` on every response. Turn on when the server
    /// is reached over HTTPS through a TLS-terminating proxy that does not send
    /// `X-Forwarded-Proto` (with `VEXIL_TRUST_FORWARDED_FOR`, `X-Forwarded-Proto: https`
    /// already does it).
    #[arg(long, env = "VEXIL_CONSOLE_SECURE_COOKIE", default_value_t = false, action = clap::ArgAction::Set)]
    pub console_secure_cookie: bool,
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

    /// The database URL as it may be shown in logs and on the console (see [`redact_url`]).
    pub fn database_url_redacted(&self) -> String {
        redact_url(&self.database_url)
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
