//! The relay's configuration: command-line flags, each also read from a `VEXIL_*` variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use vexil_fanout::config::{DistributionArgs, parse_duration, parse_without_env};

pub use vexil_fanout::telemetry::LogFormat;

/// The edge relay's configuration.
#[derive(Clone, Parser)]
#[command(
    name = "vexil-relay",
    version,
    about = "Vexil edge relay: serves SDKs and relays of one cluster from an upstream server or relay"
)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Base URL of the upstream: the control plane or another relay
    /// (e.g. `https://flags.example.com`). The relay reads `<url>/relay/v1/stream`.
    #[arg(long, env = "VEXIL_UPSTREAM_URL")]
    pub upstream_url: String,

    /// The relay key (`vxr_…`) that scopes which environments this relay serves.
    #[arg(long, env = "VEXIL_RELAY_KEY", hide_env_values = true)]
    pub relay_key: String,

    /// Address to listen on for SDKs, relays chained below this one, health and metrics.
    #[arg(long, env = "VEXIL_LISTEN", default_value = "0.0.0.0:8070")]
    pub listen: SocketAddr,

    /// Bind the listening port with `SO_REUSEPORT`, so that several relay processes on one
    /// host share it and the kernel spreads new connections over them (each process holds
    /// its own file descriptors and cores). Every process sharing the port must set it.
    #[arg(long, env = "VEXIL_REUSE_PORT", default_value_t = false, action = clap::ArgAction::Set)]
    pub reuse_port: bool,

    /// Hub and OFREP options, the same as the control plane's.
    #[command(flatten)]
    pub distribution: DistributionArgs,

    /// On SIGTERM, subscriber streams are closed spread over this window so that SDKs do not
    /// all reconnect at once.
    #[arg(long, env = "VEXIL_DRAIN_WINDOW", default_value = "10s", value_parser = parse_duration)]
    pub drain_window: Duration,

    /// With no byte (event or keep-alive) from upstream for this long, the connection is
    /// considered dead and re-established. Upstreams send a keep-alive every 15 s.
    #[arg(long, env = "VEXIL_UPSTREAM_READ_TIMEOUT", default_value = "45s", value_parser = parse_duration)]
    pub upstream_read_timeout: Duration,

    /// Upper bound of the first reconnection delay (doubling per failure, full jitter).
    #[arg(long, env = "VEXIL_UPSTREAM_BACKOFF_INITIAL", default_value = "1s", value_parser = parse_duration)]
    pub upstream_backoff_initial: Duration,

    /// Cap of the reconnection delay.
    #[arg(long, env = "VEXIL_UPSTREAM_BACKOFF_MAX", default_value = "30s", value_parser = parse_duration)]
    pub upstream_backoff_max: Duration,

    /// Delay before retrying after upstream refused the relay key (401/403) or the URL
    /// (404): long, because retrying sooner cannot help until an operator acts.
    #[arg(long, env = "VEXIL_UPSTREAM_AUTH_BACKOFF", default_value = "5m", value_parser = parse_duration)]
    pub upstream_auth_backoff: Duration,

    /// A connection that stayed up this long resets the backoff.
    #[arg(long, env = "VEXIL_UPSTREAM_HEALTHY_AFTER", default_value = "60s", value_parser = parse_duration)]
    pub upstream_healthy_after: Duration,

    /// Relay keys accepted from relays chained below this one, comma-separated, besides this
    /// relay's own key. Every accepted key streams everything this relay serves.
    #[arg(
        long,
        env = "VEXIL_DOWNSTREAM_RELAY_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub downstream_relay_keys: Vec<String>,

    /// Serve Prometheus metrics at `/metrics`.
    #[arg(long, env = "VEXIL_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics: bool,

    /// Serve `/metrics` on this address instead of the main listener, so it need not be
    /// reachable by SDKs.
    #[arg(long, env = "VEXIL_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// A scrape of `/metrics` must send `Authorization: Bearer <token>`.
    #[arg(long, env = "VEXIL_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// HTTPS for SDKs and chained relays: `VEXIL_TLS_CERT` and `VEXIL_TLS_KEY` (PEM files,
    /// reloaded on SIGHUP and on change). With TLS on, SDK streams are served by hyper rather
    /// than the lean plain-TCP path.
    #[command(flatten)]
    pub tls: vexil_fanout::tls::TlsArgs,

    /// PEM file of certificate authorities trusted for the upstream's certificate, besides
    /// the public roots (a private CA or a self-signed control plane).
    #[arg(long, env = "VEXIL_UPSTREAM_CA")]
    pub upstream_ca: Option<std::path::PathBuf>,

    /// Log format.
    #[arg(long, env = "VEXIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Most analytics events held at once (waiting for or in flight to upstream); past it,
    /// `/events/v1/bulk` answers `503` with `Retry-After`.
    #[arg(long, env = "VEXIL_EVENTS_BUFFER", default_value_t = 200_000)]
    pub events_buffer: usize,

    /// Concurrent upstream event requests per environment.
    #[arg(long, env = "VEXIL_EVENTS_UPSTREAM_CONCURRENCY", default_value_t = 4)]
    pub events_upstream_concurrency: usize,

    /// Attempts to deliver one upstream event request before the SDKs waiting for it get
    /// `503` (and retry themselves).
    #[arg(long, env = "VEXIL_EVENTS_UPSTREAM_ATTEMPTS", default_value_t = 4)]
    pub events_upstream_attempts: u32,

    /// Timeout of one upstream event request.
    #[arg(long, env = "VEXIL_EVENTS_UPSTREAM_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub events_upstream_timeout: Duration,

    /// Largest event batch accepted, in bytes, both as sent and decompressed.
    #[arg(long, env = "VEXIL_EVENTS_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub events_max_body_bytes: usize,

    /// Exposures of OFREP evaluations remembered for deduplication.
    #[arg(long, env = "VEXIL_EVENTS_EXPOSURE_CACHE", default_value_t = 100_000)]
    pub events_exposure_cache: usize,

    /// This relay's name in the fleet view (`GET …/fleet`); by default the host name.
    #[arg(long, env = "VEXIL_RELAY_ID")]
    pub relay_id: Option<String>,

    /// How often the relay reports its SDK streams upstream for the fleet view (also after
    /// every change, at most every `VEXIL_FLEET_REPORT_MIN_GAP`); `0s` turns reports off.
    #[arg(long, env = "VEXIL_FLEET_REPORT_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub fleet_report_interval: Duration,

    /// Shortest gap between two fleet reports sent because something changed.
    #[arg(long, env = "VEXIL_FLEET_REPORT_MIN_GAP", default_value = "1s", value_parser = parse_duration)]
    pub fleet_report_min_gap: Duration,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("upstream_url", &self.upstream_url)
            .field("relay_key", &"<redacted>")
            .field("listen", &self.listen)
            .field("reuse_port", &self.reuse_port)
            .field("distribution", &self.distribution)
            .field("drain_window", &self.drain_window)
            .field("upstream_read_timeout", &self.upstream_read_timeout)
            .field("upstream_backoff_initial", &self.upstream_backoff_initial)
            .field("upstream_backoff_max", &self.upstream_backoff_max)
            .field("upstream_auth_backoff", &self.upstream_auth_backoff)
            .field("upstream_healthy_after", &self.upstream_healthy_after)
            .field("downstream_relay_keys", &self.downstream_relay_keys.len())
            .field("metrics", &self.metrics)
            .field("metrics_listen", &self.metrics_listen)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<redacted>"),
            )
            .field("tls", &self.tls)
            .field("upstream_ca", &self.upstream_ca)
            .field("log_format", &self.log_format)
            .field("events_buffer", &self.events_buffer)
            .field(
                "events_upstream_concurrency",
                &self.events_upstream_concurrency,
            )
            .field("events_upstream_attempts", &self.events_upstream_attempts)
            .field("events_upstream_timeout", &self.events_upstream_timeout)
            .field("events_max_body_bytes", &self.events_max_body_bytes)
            .field("events_exposure_cache", &self.events_exposure_cache)
            .field("relay_id", &self.relay_id)
            .field("fleet_report_interval", &self.fleet_report_interval)
            .field("fleet_report_min_gap", &self.fleet_report_min_gap)
            .finish()
    }
}

impl RelayConfig {
    /// The defaults for everything but the upstream and the key (for tests and tools);
    /// listens on `127.0.0.1:0`. The defaults are the command line's, read from its
    /// declarations (no variable is read).
    pub fn new(upstream_url: impl Into<String>, relay_key: impl Into<String>) -> Self {
        let upstream_url = upstream_url.into();
        let relay_key = relay_key.into();
        let args = [
            "vexil-relay",
            "--upstream-url",
            &upstream_url,
            "--relay-key",
            &relay_key,
        ];
        let mut config: Self = match parse_without_env(&args) {
            Ok(c) => c,
            // Both required options are given and every default parses (unit-tested).
            Err(e) => unreachable!("the relay's defaults do not parse: {e}"),
        };
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }

    /// The URL of the upstream's fleet report endpoint.
    pub fn fleet_url(&self) -> String {
        format!(
            "{}{}",
            self.upstream_url.trim_end_matches('/'),
            vexil_schema::fleet::FLEET_REPORT_PATH
        )
    }

    /// This relay's name in the fleet view: `VEXIL_RELAY_ID`, else the host name, else
    /// `relay`.
    pub fn relay_name(&self) -> String {
        self.relay_id
            .clone()
            .filter(|s| !s.trim().is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "relay".to_owned())
    }

    /// The URL of the upstream's relay stream.
    pub fn stream_url(&self) -> String {
        format!(
            "{}{}",
            self.upstream_url.trim_end_matches('/'),
            vexil_fanout::relay_stream::RELAY_STREAM_PATH
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_new() {
        let parsed = RelayConfig::try_parse_from([
            "vexil-relay",
            "--upstream-url",
            "http://up:8080/",
            "--relay-key",
            "vxr_x",
        ])
        .unwrap();
        let built = RelayConfig::new("http://up:8080/", "vxr_x");
        assert_eq!(parsed.listen.to_string(), "0.0.0.0:8070");
        assert_eq!(parsed.distribution, built.distribution);
        assert_eq!(parsed.distribution, DistributionArgs::default());
        assert_eq!(parsed.drain_window, built.drain_window);
        assert_eq!(parsed.upstream_read_timeout, built.upstream_read_timeout);
        assert_eq!(
            parsed.upstream_backoff_initial,
            built.upstream_backoff_initial
        );
        assert_eq!(parsed.upstream_backoff_max, built.upstream_backoff_max);
        assert_eq!(parsed.upstream_auth_backoff, built.upstream_auth_backoff);
        assert_eq!(parsed.upstream_healthy_after, built.upstream_healthy_after);
        assert!(parsed.metrics);
        assert!(!parsed.reuse_port && !built.reuse_port);
        assert!(parsed.downstream_relay_keys.is_empty());
        assert_eq!(parsed.stream_url(), "http://up:8080/relay/v1/stream");
        assert!(
            !format!("{parsed:?}").contains("vxr_x"),
            "the key is never logged"
        );
    }

    #[test]
    fn flags_override_defaults() {
        let c = RelayConfig::try_parse_from([
            "vexil-relay",
            "--upstream-url",
            "http://up",
            "--relay-key",
            "k",
            "--drain-window",
            "2s",
            "--downstream-relay-keys",
            "a,b",
            "--metrics",
            "false",
            "--log-format",
            "json",
            "--reuse-port",
            "true",
        ])
        .unwrap();
        assert!(c.reuse_port);
        assert_eq!(c.drain_window, Duration::from_secs(2));
        assert_eq!(c.downstream_relay_keys, vec!["a", "b"]);
        assert!(!c.metrics);
        assert_eq!(c.log_format, LogFormat::Json);
    }
}
