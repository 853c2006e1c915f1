//! The system under test: the real `vexil-server` and `vexil-relay` binaries as child
//! processes on loopback ports, an environment populated through the API, SDK keys and a
//! relay key. Or an already running server (and relay) given by URL.
//!
//! Binaries are found, in order: the path given (`--server-bin`, `--relay-bin`); beside this
//! executable (`target/<profile>/`, also from `target/<profile>/deps/` for test binaries);
//! otherwise they are built with `cargo build -p vexil-server -p vexil-relay` (same profile)
//! from the workspace this crate belongs to, into `target/loadtest-binaries/` (a directory of
//! its own, so a `cargo test` holding the main target directory's lock cannot block it).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;
use tokio::process::{Child, Command};

use crate::api::Api;
use crate::otlp::OtlpSink;
use crate::report::Row;

/// How to get a running system.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StackOptions {
    /// Use this running control plane instead of starting one (needs `--admin-token`).
    #[arg(long, env = "VEXIL_LOADTEST_SERVER_URL")]
    pub server_url: Option<String>,
    /// Admin API token of `--server-url`.
    #[arg(long, env = "VEXIL_LOADTEST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Database of the started control plane (a `postgres://` URL to an empty database);
    /// default: a SQLite file in a temporary directory.
    #[arg(long, env = "VEXIL_LOADTEST_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The `vexil-server` binary to start.
    #[arg(long, env = "VEXIL_LOADTEST_SERVER_BIN")]
    pub server_bin: Option<PathBuf>,
    /// The `vexil-relay` binary to start.
    #[arg(long, env = "VEXIL_LOADTEST_RELAY_BIN")]
    pub relay_bin: Option<PathBuf>,
    /// Flags in the test environment (boolean, one targeting rule each).
    #[arg(long, default_value_t = 50)]
    pub flags: usize,
    /// OFREP requests per second per SDK key that the started server and relays allow
    /// (`VEXIL_OFREP_RATE_LIMIT`; 0: unlimited). Set explicitly, never inherited: a load test
    /// measures evaluations, and counts any 429 as a failure of the run.
    #[arg(long, default_value_t = 0)]
    pub ofrep_rate_limit: u32,
    /// Turn traces on in the started server and relays (OTLP over HTTP to a receiver the load
    /// test runs, which counts and discards them); without it they run with
    /// `OTEL_SDK_DISABLED=true`, whatever the environment says. Compare a run with and
    /// without to see what tracing costs.
    #[arg(long)]
    pub otlp_sink: bool,
}

/// A child process with its log file.
#[derive(Debug)]
pub(crate) struct Managed {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Managed {
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// A running server and relay with a populated environment.
#[derive(Debug)]
pub struct Stack {
    /// Admin API client.
    pub api: Api,
    /// Project key.
    pub project: String,
    /// Environment key.
    pub environment: String,
    /// Flag keys in the environment.
    pub flags: Vec<String>,
    /// SDK key secrets for the environment.
    pub sdk_keys: Vec<String>,
    /// The control plane's address.
    pub server_addr: SocketAddr,
    /// The relay's address, once started.
    pub relay_addr: Option<SocketAddr>,
    relay_key: Option<String>,
    relay_bin: Option<PathBuf>,
    ofrep_rate_limit: u32,
    otlp: Option<OtlpSink>,
    server: Option<Managed>,
    /// The relay processes (several share one port with `SO_REUSEPORT`).
    relays: Vec<Managed>,
    /// Times relays were started (names their log files, so restarts keep earlier logs).
    relay_starts: u32,
    /// Logs and the SQLite database live here.
    dir: tempfile::TempDir,
}

/// An unused loopback port (bound and released; the child binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}

impl Stack {
    /// Starts (or connects to) the control plane and populates a fresh environment with
    /// `options.flags` flags and `sdk_keys` SDK keys. Start the relay with
    /// [`Stack::start_relay`].
    pub async fn start(options: &StackOptions, sdk_keys: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("vexil-loadtest-")
            .tempdir()
            .context("no temporary directory")?;
        let otlp = match (options.otlp_sink, &options.server_url) {
            (false, _) => None,
            (true, None) => Some(OtlpSink::start().await?),
            (true, Some(_)) => {
                bail!("--otlp-sink configures the processes the load test starts, not --server-url")
            }
        };
        let (api, server, server_addr) = match &options.server_url {
            Some(url) => {
                let token = options
                    .admin_token
                    .as_deref()
                    .context("--server-url needs --admin-token")?;
                let addr = url
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .parse::<SocketAddr>()
                    .with_context(|| {
                        format!("--server-url must be http://<ip>:<port> on loopback, not {url}")
                    })?;
                if !addr.ip().is_loopback() {
                    bail!("the load test only sends traffic to loopback addresses, not {addr}");
                }
                (Api::new(url, token)?, None, addr)
            }
            None => {
                let bin = find_binary("vexil-server", options.server_bin.as_deref()).await?;
                let token = format!("vxa_{}", random_hex(16));
                let port = free_port()?;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let database = match &options.database_url {
                    Some(url) => url.clone(),
                    None => dir.path().join("vexil.db").display().to_string(),
                };
                let log = dir.path().join("server.log");
                let child = spawn_logged(
                    Command::new(&bin)
                        .env("VEXIL_LISTEN", addr.to_string())
                        .env("VEXIL_DATABASE_URL", &database)
                        .env("VEXIL_BOOTSTRAP_TOKEN", &token)
                        .env("VEXIL_LOG_FORMAT", "text")
                        .env(
                            "VEXIL_OFREP_RATE_LIMIT",
                            options.ofrep_rate_limit.to_string(),
                        )
                        .env("RUST_LOG", "warn")
                        .tracing(otlp.as_ref(), "vexil-server"),
                    &log,
                )?;
                let managed = Managed { child, log };
                let url = format!("http://{addr}");
                wait_ready(&url, "/readyz", Duration::from_secs(60), Some(&managed)).await?;
                (Api::new(&url, &token)?, Some(managed), addr)
            }
        };

        let suffix = random_hex(3);
        let project = format!("lt-{suffix}");
        let environment = "production".to_owned();
        api.create_project(&project).await?;
        api.create_environment(&project, &environment).await?;
        let mut flags = Vec::with_capacity(options.flags);
        for i in 0..options.flags {
            let key = format!("flag-{i:03}");
            api.create_bool_flag(&project, &key).await?;
            api.put_config(&project, &key, &environment, flag_config(&key, true))
                .await?;
            flags.push(key);
        }
        let mut keys = Vec::with_capacity(sdk_keys);
        for i in 0..sdk_keys.max(1) {
            keys.push(
                api.create_sdk_key(&project, &environment, &format!("loadtest-{i}"))
                    .await?,
            );
        }
        Ok(Self {
            api,
            project,
            environment,
            flags,
            sdk_keys: keys,
            server_addr,
            relay_addr: None,
            relay_key: None,
            relay_bin: None,
            ofrep_rate_limit: options.ofrep_rate_limit,
            otlp,
            server,
            relays: Vec::new(),
            relay_starts: 0,
            dir,
        })
    }

    /// Starts `vexil-relay` against the control plane (once: later calls restart it on the
    /// same port) and waits until it is ready.
    pub async fn start_relay(&mut self, relay_bin: Option<&Path>) -> anyhow::Result<SocketAddr> {
        self.start_relays(relay_bin, 1).await
    }

    /// Starts `n` relay processes sharing one port (`VEXIL_REUSE_PORT`; the kernel spreads
    /// connections over them), or restarts them on the same port (killing any still
    /// running), and waits until each is
    /// ready (its own log says so: the shared port cannot tell them apart).
    pub async fn start_relays(
        &mut self,
        relay_bin: Option<&Path>,
        n: usize,
    ) -> anyhow::Result<SocketAddr> {
        if self.relay_bin.is_none() {
            self.relay_bin = Some(find_binary("vexil-relay", relay_bin).await?);
        }
        let key = match &self.relay_key {
            Some(k) => k.clone(),
            None => {
                let k = self
                    .api
                    .create_relay_key(&self.project, &self.environment, "loadtest")
                    .await?;
                self.relay_key = Some(k.clone());
                k
            }
        };
        let addr = match self.relay_addr {
            Some(a) => a,
            None => SocketAddr::from(([127, 0, 0, 1], free_port()?)),
        };
        let bin = self.relay_bin.clone().context("relay binary")?;
        self.relay_addr = Some(addr);
        // A restart replaces whatever relays still run on the port.
        self.kill_relay().await?;
        self.relay_starts += 1;
        for i in 0..n.max(1) {
            let log = self
                .dir
                .path()
                .join(format!("relay-{}-{i}.log", self.relay_starts));
            let child = spawn_logged(
                Command::new(&bin)
                    .env("VEXIL_UPSTREAM_URL", format!("http://{}", self.server_addr))
                    .env("VEXIL_RELAY_KEY", &key)
                    .env("VEXIL_LISTEN", addr.to_string())
                    .env("VEXIL_REUSE_PORT", (n > 1).to_string())
                    .env("VEXIL_DRAIN_WINDOW", "1s")
                    .env("VEXIL_UPSTREAM_BACKOFF_INITIAL", "100ms")
                    .env("VEXIL_OFREP_RATE_LIMIT", self.ofrep_rate_limit.to_string())
                    .env("VEXIL_LOG_FORMAT", "text")
                    // Warnings (accept errors among them), and the two lines waited for.
                    .env(
                        "RUST_LOG",
                        "warn,vexil_relay::cli=info,vexil_relay::upstream::apply=info",
                    )
                    .tracing(self.otlp.as_ref(), "vexil-relay"),
                &log,
            )?;
            self.relays.push(Managed { child, log });
        }
        for relay in &self.relays {
            wait_log_line(relay, "relay ready", Duration::from_secs(60))
                .await
                .context(
                    "the relay did not become ready: it needs the control plane's relay stream \
                     (GET /relay/v1/stream) and the environment's SDK keys",
                )?;
        }
        wait_ready(
            &format!("http://{addr}"),
            "/readyz",
            Duration::from_secs(60),
            self.relays.last(),
        )
        .await?;
        Ok(addr)
    }

    /// Kills every relay at once (SIGKILL: no drain, as in a crash) and waits for them to
    /// exit.
    pub async fn kill_relay(&mut self) -> anyhow::Result<()> {
        for mut relay in self.relays.drain(..) {
            relay.child.kill().await.context("cannot kill the relay")?;
        }
        Ok(())
    }

    /// The first relay's process id.
    pub fn relay_pid(&self) -> Option<u32> {
        self.relays.first().and_then(Managed::pid)
    }

    /// Every relay's process id.
    pub fn relay_pids(&self) -> Vec<u32> {
        self.relays.iter().filter_map(Managed::pid).collect()
    }

    /// Failed accepts the relays logged (`accept failed`, e.g. out of file descriptors), by
    /// kind.
    pub fn relay_accept_errors(&self) -> std::collections::BTreeMap<String, u64> {
        let mut kinds = std::collections::BTreeMap::new();
        for relay in &self.relays {
            let text = std::fs::read_to_string(&relay.log).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("accept failed")) {
                let kind = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("kind="))
                    .unwrap_or("other")
                    .trim_matches('"')
                    .to_owned();
                *kinds.entry(kind).or_insert(0) += 1;
            }
        }
        kinds
    }

    /// What the started processes exported (`--otlp-sink`): rows for the report, none
    /// when traces were off.
    pub fn trace_rows(&self) -> Vec<Row> {
        match &self.otlp {
            None => vec![Row::info("traces", "off (OTEL_SDK_DISABLED=true)")],
            Some(sink) => {
                let (requests, bytes) = sink.totals();
                vec![Row::info(
                    "traces (OTLP/HTTP to the load test's receiver)",
                    format!("on: {requests} export requests, {bytes} bytes"),
                )]
            }
        }
    }

    /// The control plane's process id, when this stack started it.
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(Managed::pid)
    }

    /// A temporary directory that lives as long as the stack.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes one change: flips flag `flag`'s `on`; returns the environment version after it.
    pub async fn toggle(&self, flag: usize, on: bool) -> anyhow::Result<u64> {
        let key = &self.flags[flag % self.flags.len()];
        self.api
            .set_on(&self.project, key, &self.environment, on)
            .await
    }

    /// The last lines of every relay's log, for error reports.
    pub fn relay_log_tail(&self) -> String {
        self.relays
            .iter()
            .map(|m| log_tail(&m.log))
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Stops the child processes (SIGKILL; the temporary directory goes with the stack).
    pub async fn shutdown(mut self) {
        for mut r in self.relays.drain(..) {
            let _ = r.child.kill().await;
        }
        if let Some(mut s) = self.server.take() {
            let _ = s.child.kill().await;
        }
    }
}

/// A boolean flag with one targeting rule (the shape `relay/benches/fanout_load.rs` uses).
fn flag_config(key: &str, on: bool) -> serde_json::Value {
    json!({
        "on": on,
        "off_variation": 1,
        "targets": [],
        "rules": [{"id": format!("{key}-staff"), "clauses": [
            {"attribute": "email", "op": "ends_with", "values": ["@example.com"]}
        ], "serve": {"variation": 0}}],
        "fallthrough": {"variation": 1},
        "prerequisites": [],
        "salt": "",
    })
}

pub(crate) fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// `RUST_LOG` of a started process with traces on: request and change spans (`info`) pass.
const TRACED_FILTER: &str = "info,tower_http=warn,sqlx=warn";

/// Tracing settings of a started process: on with [`OtlpSink`], explicitly off without.
trait TracingEnv {
    fn tracing(&mut self, otlp: Option<&OtlpSink>, service: &str) -> &mut Self;
}

impl TracingEnv for Command {
    fn tracing(&mut self, otlp: Option<&OtlpSink>, service: &str) -> &mut Self {
        match otlp {
            Some(sink) => self
                .env_remove("OTEL_SDK_DISABLED")
                .env("OTEL_TRACES_EXPORTER", "otlp")
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint())
                .env("OTEL_SERVICE_NAME", service)
                // One filter decides both logs and spans (`vexil_fanout::telemetry`): at
                // `warn` no request span would be exported. `info` as an operator runs it, with
                // the per-request `tower_http` log lines (which would measure logging) off.
                .env("RUST_LOG", TRACED_FILTER),
            None => self.env("OTEL_SDK_DISABLED", "true"),
        }
    }
}

pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let out =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.as_std().get_program()))
}

pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Waits for `GET url+path` to answer 200. A process that has just been started can only be
/// asked; this retries every 50 ms until `limit`, and fails early if the process exits.
pub(crate) async fn wait_ready(
    url: &str,
    path: &str,
    limit: Duration,
    process: Option<&Managed>,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + limit;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        match client.get(format!("{url}{path}")).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        if let Some(p) = process
            && p.child.id().is_none()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tail = process.map(|p| log_tail(&p.log)).unwrap_or_default();
    bail!("{url}{path} not ready after {limit:?} (last: {last}); log tail:\n{tail}")
}

/// Waits until `process`'s log has a line containing `needle` (the log is a file its
/// output goes to: read again every 50 ms); fails early if the process exits.
async fn wait_log_line(process: &Managed, needle: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(&process.log).unwrap_or_default();
        if text.contains(needle) {
            return Ok(());
        }
        if process.child.id().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "no {needle:?} in {} after {limit:?}; log tail:\n{}",
        process.log.display(),
        log_tail(&process.log)
    )
}

/// Finds (or builds) a workspace binary; see the module documentation.
pub async fn find_binary(name: &str, explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        anyhow::ensure!(p.is_file(), "{} does not exist", p.display());
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().context("cannot locate this executable")?;
    let mut dir = exe
        .parent()
        .context("executable without a directory")?
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let candidate = dir.join(name);
    if candidate.is_file() {
        return Ok(candidate);
    }
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_owned();
    // A target directory of its own: the one this executable lives in may be locked by the
    // cargo command running it (`cargo test`), which would then wait forever.
    let target_dir = dir
        .parent()
        .context("no target directory")?
        .join("loadtest-binaries");
    // Built every time this path is taken: cargo makes it a no-op when nothing changed, and
    // a binary left there from older sources is never used.
    let candidate = target_dir.join(&profile).join(name);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    tracing::info!(%name, %profile, "binary not found beside the load test: building it");
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    cmd.args(["-p", "vexil-server", "-p", "vexil-relay"]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().await.context("cannot run cargo build")?;
    anyhow::ensure!(status.success(), "cargo build of {name} failed");
    anyhow::ensure!(
        candidate.is_file(),
        "{} still missing after building",
        candidate.display()
    );
    Ok(candidate)
}
