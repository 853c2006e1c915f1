//! The few control-plane API calls the scenarios make (RFC 9457 problems are shown as they
//! come back).

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// An admin client for one control plane.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`) authenticating with an admin token.
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            client,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `body` as JSON to `path`; the answer's JSON (`null` when empty), or the
    /// problem as an error.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.send_with(method, path, body, &[]).await
    }

    /// [`Api::send`] with extra request headers.
    pub(crate) async fn send_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .client
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = res.status();
        let text = res
            .text()
            .await
            .with_context(|| format!("{method} {url}: reading the body"))?;
        if !status.is_success() {
            bail!("{method} {path}: HTTP {status}: {text}");
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: not JSON: {text}"))
    }

    /// Creates a project.
    pub async fn create_project(&self, key: &str) -> anyhow::Result<()> {
        self.send(
            reqwest::Method::POST,
            "/api/v1/projects",
            Some(json!({"key": key, "name": key})),
        )
        .await
        .map(drop)
    }

    /// Creates an environment in `project`.
    pub async fn create_environment(&self, project: &str, key: &str) -> anyhow::Result<()> {
        let path = format!("/api/v1/projects/{project}/environments");
        self.send(
            reqwest::Method::POST,
            &path,
            Some(json!({"key": key, "name": key})),
        )
        .await
        .map(drop)
    }

    /// Creates a boolean flag.
    pub async fn create_bool_flag(&self, project: &str, key: &str) -> anyhow::Result<()> {
        let path = format!("/api/v1/projects/{project}/flags");
        let body = json!({"key": key, "name": key, "kind": "boolean",
                          "variations": [{"value": true}, {"value": false}]});
        self.send(reqwest::Method::POST, &path, Some(body))
            .await
            .map(drop)
    }

    /// Replaces a flag's configuration; returns the environment version after the change.
    pub async fn put_config(
        &self,
        project: &str,
        flag: &str,
        env: &str,
        config: Value,
    ) -> anyhow::Result<u64> {
        let path = format!("/api/v1/projects/{project}/flags/{flag}/environments/{env}");
        let view = self.send(reqwest::Method::PUT, &path, Some(config)).await?;
        environment_version(&view)
    }

    /// Switches a flag on or off; returns the environment version after the change.
    pub async fn set_on(
        &self,
        project: &str,
        flag: &str,
        env: &str,
        on: bool,
    ) -> anyhow::Result<u64> {
        let path = format!("/api/v1/projects/{project}/flags/{flag}/environments/{env}");
        let view = self
            .send(reqwest::Method::PATCH, &path, Some(json!({"on": on})))
            .await?;
        environment_version(&view)
    }

    /// Creates an SDK key for an environment; returns its secret.
    pub async fn create_sdk_key(
        &self,
        project: &str,
        env: &str,
        name: &str,
    ) -> anyhow::Result<String> {
        let path = format!("/api/v1/projects/{project}/environments/{env}/sdk-keys");
        let created = self
            .send(reqwest::Method::POST, &path, Some(json!({"name": name})))
            .await?;
        secret(&created)
    }

    /// Creates a client-side key (`vxc_`) for an environment; returns its secret.
    pub async fn create_client_key(
        &self,
        project: &str,
        env: &str,
        name: &str,
    ) -> anyhow::Result<String> {
        let path = format!("/api/v1/projects/{project}/environments/{env}/client-keys");
        let created = self
            .send(reqwest::Method::POST, &path, Some(json!({"name": name})))
            .await?;
        secret(&created)
    }

    /// Marks a boolean flag made by [`Api::create_bool_flag`] client-side.
    pub async fn make_bool_flag_client_side(&self, project: &str, key: &str) -> anyhow::Result<()> {
        let path = format!("/api/v1/projects/{project}/flags/{key}");
        let body = json!({"key": key, "name": key, "kind": "boolean", "client_side": true,
                          "variations": [{"value": true}, {"value": false}]});
        self.send(reqwest::Method::PUT, &path, Some(body))
            .await
            .map(drop)
    }

    /// Creates a relay key scoped to one environment; returns its secret.
    pub async fn create_relay_key(
        &self,
        project: &str,
        env: &str,
        name: &str,
    ) -> anyhow::Result<String> {
        let body =
            json!({"name": name, "environments": [{"project": project, "environment": env}]});
        let created = self
            .send(reqwest::Method::POST, "/api/v1/relay-keys", Some(body))
            .await?;
        secret(&created)
    }

    /// The environment's current data version.
    pub async fn environment_version(&self, project: &str, env: &str) -> anyhow::Result<u64> {
        let path = format!("/api/v1/projects/{project}/environments/{env}/snapshot");
        let snapshot = self.send(reqwest::Method::GET, &path, None).await?;
        snapshot
            .get("version")
            .and_then(Value::as_u64)
            .context("snapshot without a version")
    }
}

fn environment_version(view: &Value) -> anyhow::Result<u64> {
    view.get("environment_version")
        .and_then(Value::as_u64)
        .with_context(|| format!("no environment_version in {view}"))
}

fn secret(created: &Value) -> anyhow::Result<String> {
    created
        .get("secret")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("no secret in {created}"))
}
