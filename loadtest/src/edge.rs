//! Unleash Edge as a peer to load beside the relay (`vexil-loadtest ofrep --targets
//! relay,edge`): the `unleash-edge` binary, built outside the repository
//! (`cargo install --locked unleash-edge --root <cache>`; see `docs/benchmarks.md`), run in
//! offline mode from a bootstrap file holding the load test's flags, on a loopback port.
//!
//! Translation (as in `loadtest/peers`, for the one shape the load test creates): a Vexil
//! boolean flag that is on, with one rule `email ends_with "@example.com"` serving `true` and
//! a fallthrough serving `false`, is an enabled Unleash toggle with one `flexibleRollout`
//! strategy at 100 % constrained by `email STR_ENDS_WITH @example.com`: enabled exactly when
//! the rule matches. A context is `userId` = the targeting key and the other attributes as
//! `properties`.
//!
//! Endpoints compared: Edge's evaluated frontend API, `POST /api/frontend` (every enabled
//! toggle for the context) against Vexil's OFREP bulk evaluation, and
//! `POST /api/frontend/features/{name}` against OFREP single-flag evaluation. Both answer for
//! the same contexts; [`crate::scenario::ofrep`] checks that they agree before loading them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::system::{Managed, free_port, log_tail, random_hex, spawn_logged, wait_ready};

/// How to run Unleash Edge.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EdgeOptions {
    /// The `unleash-edge` binary (needed for `--targets edge`).
    #[arg(long, env = "VEXIL_LOADTEST_EDGE_BIN")]
    pub edge_bin: Option<PathBuf>,
    /// Edge's HTTP worker threads (default: the machine's cores, as the relay's runtime).
    #[arg(long)]
    pub edge_workers: Option<usize>,
}

/// A running Unleash Edge in offline mode.
#[derive(Debug)]
pub struct Edge {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The frontend token it accepts (`Authorization` header).
    pub token: String,
    process: Managed,
}

impl Edge {
    /// Writes the bootstrap file for `flags` into `dir` and starts Edge on a free loopback
    /// port; waits until it answers its health check.
    pub async fn start(
        options: &EdgeOptions,
        dir: &Path,
        flags: &[String],
    ) -> anyhow::Result<Self> {
        let bin = options.edge_bin.as_deref().context(
            "--targets edge needs --edge-bin (or VEXIL_LOADTEST_EDGE_BIN): see docs/benchmarks.md",
        )?;
        anyhow::ensure!(bin.is_file(), "{} does not exist", bin.display());
        let bootstrap = dir.join("edge-bootstrap.json");
        std::fs::write(
            &bootstrap,
            serde_json::to_vec_pretty(&bootstrap_features(flags))?,
        )
        .with_context(|| format!("cannot write {}", bootstrap.display()))?;
        // A frontend token for every project of the environment the bootstrap stands for.
        let token = format!("*:production.{}", random_hex(16));
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let workers = options
            .edge_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        let log = dir.join("edge.log");
        let child = spawn_logged(
            Command::new(bin)
                .args(["--port", &port.to_string(), "--interface", "127.0.0.1"])
                .args(["--workers", &workers.to_string()])
                .arg("offline")
                .arg("--bootstrap-file")
                .arg(&bootstrap)
                .args(["--frontend-tokens", &token])
                // Edge 19 refuses offline mode without a client token, even if unused.
                .args([
                    "--client-tokens",
                    &format!("*:production.{}", random_hex(16)),
                ])
                .env("RUST_LOG", "warn"),
            &log,
        )?;
        let process = Managed { child, log };
        wait_ready(
            &format!("http://{addr}"),
            "/internal-backstage/health",
            Duration::from_secs(30),
            Some(&process),
        )
        .await
        .context("Unleash Edge did not start")?;
        Ok(Self {
            addr,
            token,
            process,
        })
    }

    /// Edge's process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The last lines of Edge's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.process.log)
    }

    /// Stops Edge.
    pub async fn stop(mut self) {
        let _ = self.process.child.kill().await;
    }
}

/// The bootstrap file (Unleash's client features format, version 2) for the load test's
/// flags, all on; see the module documentation.
pub fn bootstrap_features(flags: &[String]) -> Value {
    let features: Vec<Value> = flags
        .iter()
        .map(|key| {
            json!({
                "name": key,
                "type": "release",
                "enabled": true,
                "project": "default",
                "stale": false,
                "impressionData": false,
                "strategies": [{
                    "name": "flexibleRollout",
                    "parameters": {"rollout": "100", "stickiness": "default", "groupId": key},
                    "constraints": [{
                        "contextName": "email",
                        "operator": "STR_ENDS_WITH",
                        "values": ["@example.com"],
                        "inverted": false,
                        "caseInsensitive": false,
                    }],
                }],
                "variants": [],
            })
        })
        .collect();
    json!({"version": 2, "features": features})
}

/// A load-test context (OFREP's shape: `targetingKey` and attributes) as an Unleash context.
pub fn unleash_context(ofrep_context: &Value) -> Value {
    let mut properties = serde_json::Map::new();
    let mut user_id = Value::Null;
    if let Some(fields) = ofrep_context.as_object() {
        for (name, value) in fields {
            match name.as_str() {
                "targetingKey" => user_id = value.clone(),
                _ => {
                    let text = match value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    properties.insert(name.clone(), Value::String(text));
                }
            }
        }
    }
    json!({"userId": user_id, "properties": properties})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_constrained_toggles() {
        let doc = bootstrap_features(&["flag-000".into(), "flag-001".into()]);
        assert_eq!(doc["version"], 2);
        let f = &doc["features"][1];
        assert_eq!(f["name"], "flag-001");
        assert_eq!(f["enabled"], true);
        let s = &f["strategies"][0];
        assert_eq!(s["parameters"]["rollout"], "100");
        assert_eq!(s["constraints"][0]["operator"], "STR_ENDS_WITH");
        assert_eq!(s["constraints"][0]["values"][0], "@example.com");
    }

    #[test]
    fn contexts_carry_the_key_and_string_properties() {
        let c = unleash_context(&json!({"targetingKey": "u1", "email": "a@example.com", "n": 3}));
        assert_eq!(
            c,
            json!({"userId": "u1", "properties": {"email": "a@example.com", "n": "3"}})
        );
    }
}
