//! Test harness for the edge relay: a killable origin (the library's real relay stream
//! endpoint over a hub, on a real socket, with a "database" model of flags), relays in
//! process or as child processes of the built binary, and SDK subscribers that reconnect
//! with `Last-Event-ID` and check every event they apply.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use vexil_fanout::{AuthError, Hub, HubConfig, hash_sdk_key};
use vexil_relay::{Relay, RelayConfig, RelayState};
use vexil_schema::stream::{
    Change, Delete, DeltaItem, EnvironmentId, ItemRef, Patch, PatchItem, SdkEvent,
};
use vexil_schema::{EnvironmentSnapshot, Flag, FlagConfig, FlagKey, FlagKind, Variation};
use vexil_testkit::ServerTask;
use vexil_testkit::sse::{Block, SseReader};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub const RELAY_KEY: &str = "vxr_test-relay-key";

pub fn env(s: &str) -> EnvironmentId {
    EnvironmentId::parse(s).unwrap()
}

/// The SDK key of `env` in these tests.
pub fn sdk_key(env: &str) -> String {
    format!("vxs_{}", env.replace('/', "_"))
}

/// A flag whose value is `value` (one variation, on, served to everyone).
pub fn flag(key: &str, value: Value) -> Flag {
    Flag {
        key: FlagKey::parse(key).unwrap(),
        kind: FlagKind::Json,
        variations: vec![Variation::new(value)],
        client_side: false,
        config: FlagConfig::serving(0),
    }
}

/// The source of truth behind the origin: what a database would hold.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub envs: BTreeMap<EnvironmentId, (u64, BTreeMap<String, Flag>)>,
}

impl Model {
    pub fn snapshot(&self, e: &EnvironmentId) -> EnvironmentSnapshot {
        let (version, flags) = &self.envs[e];
        EnvironmentSnapshot {
            version: *version,
            flags: flags.values().cloned().collect(),
            segments: vec![],
        }
    }

    /// Sets `key` to `value` in `e`: the next version.
    pub fn set(&mut self, e: &EnvironmentId, key: &str, value: Value) -> Change {
        let (version, flags) = self.envs.entry(e.clone()).or_default();
        *version += 1;
        let f = flag(key, value);
        flags.insert(key.to_owned(), f.clone());
        Change::Patch(Patch {
            version: *version,
            item: PatchItem::Flag(f),
        })
    }

    /// Deletes `key` from `e`: the next version.
    pub fn delete(&mut self, e: &EnvironmentId, key: &str) -> Change {
        let (version, flags) = self.envs.get_mut(e).unwrap();
        *version += 1;
        flags.remove(key);
        Change::Delete(Delete {
            version: *version,
            item: ItemRef::Flag(FlagKey::parse(key).unwrap()),
        })
    }

    /// Flag values of `e` as a subscriber should end up holding them.
    pub fn values(&self, e: &EnvironmentId) -> BTreeMap<String, Value> {
        self.envs[e]
            .1
            .iter()
            .map(|(k, f)| (k.clone(), f.variations[0].value.clone()))
            .collect()
    }

    pub fn version(&self, e: &EnvironmentId) -> u64 {
        self.envs[e].0
    }
}

/// A stand-in for the control plane's distribution side: a hub fed from a [`Model`], behind
/// the library's `relay_router` and `sdk_router`, on a socket that can be killed abruptly
/// (every connection dropped at once, as when a process dies) and restarted on the same
/// port with a fresh hub rebuilt from the model, as a restarted server would.
pub struct Origin {
    pub addr: SocketAddr,
    pub model: Model,
    pub hub: Option<Hub>,
    /// What [`RELAY_KEY`] may stream; changeable while up (see [`Origin::widen_scope`]).
    scope: Arc<Mutex<BTreeSet<EnvironmentId>>>,
    server: Option<JoinHandle<()>>,
    keep_alive: Duration,
    /// Requests to the relay stream so far.
    stream_requests: watch::Sender<u64>,
}

impl Origin {
    /// An origin serving `envs` (each with an initial flag at version 1) to [`RELAY_KEY`].
    pub async fn start(envs: &[&str]) -> Self {
        Self::start_with(envs, Duration::from_secs(15)).await
    }

    pub async fn start_with(envs: &[&str], keep_alive: Duration) -> Self {
        let mut model = Model::default();
        for e in envs {
            model.set(&env(e), "initial", json!("v1"));
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut origin = Self {
            addr,
            model,
            hub: None,
            scope: Arc::new(Mutex::new(envs.iter().map(|e| env(e)).collect())),
            server: None,
            keep_alive,
            stream_requests: watch::Sender::new(0),
        };
        origin.serve(listener);
        origin
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&mut self, listener: TcpListener) {
        let hub = Hub::new(HubConfig::default().keep_alive(self.keep_alive));
        for e in self.model.envs.keys() {
            hub.set_environment_keys(e, &[hash_sdk_key(&sdk_key(e.as_str()))]);
            hub.publish_snapshot(e, &self.model.snapshot(e)).unwrap();
        }
        self.serve_hub(listener, hub);
    }

    fn serve_hub(&mut self, listener: TcpListener, hub: Hub) {
        let scope = Arc::clone(&self.scope);
        let auth = move |key: &str| -> Result<BTreeSet<EnvironmentId>, AuthError> {
            if key == RELAY_KEY {
                Ok(scope.lock().unwrap().clone())
            } else {
                Err(AuthError::Unauthorized)
            }
        };
        let counter = self.stream_requests.clone();
        let app = vexil_fanout::relay_router(hub.clone(), auth)
            .merge(vexil_fanout::sdk_router(hub.clone(), hub.keys().clone()))
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    if req.uri().path() == "/relay/v1/stream" {
                        counter.send_modify(|n| *n += 1);
                    }
                    next.run(req)
                },
            ));
        self.server = Some(tokio::spawn(serve_killable(listener, app)));
        self.hub = Some(hub);
    }

    /// Applies `change` (from the model) to the running hub, if up.
    pub fn publish(&self, e: &EnvironmentId, change: &Change) {
        if let Some(hub) = &self.hub {
            hub.publish_change(e, change).unwrap();
        }
    }

    /// Sets a flag in the model and publishes it.
    pub fn set(&mut self, e: &str, key: &str, value: Value) {
        let e = env(e);
        let change = self.model.set(&e, key, value);
        self.publish(&e, &change);
    }

    /// Deletes a flag in the model and publishes it.
    pub fn delete(&mut self, e: &str, key: &str) {
        let e = env(e);
        let change = self.model.delete(&e, key);
        self.publish(&e, &change);
    }

    /// Adds `e` to the relay key's scope with an SDK key but no state yet (as a server that
    /// has not loaded it).
    pub fn widen_scope(&self, e: &str) {
        let e = env(e);
        self.scope.lock().unwrap().insert(e.clone());
        if let Some(hub) = &self.hub {
            hub.set_environment_keys(&e, &[hash_sdk_key(&sdk_key(e.as_str()))]);
            hub.notify_relay_scopes_changed();
        }
    }

    /// Replaces the SDK keys of `e` (sent to relays as a `keys` event), as a server does when
    /// a key is created, rotated or revoked.
    pub fn set_keys(&self, e: &str, keys: &[&str]) {
        if let Some(hub) = &self.hub {
            let hashes: Vec<_> = keys.iter().map(|k| hash_sdk_key(k)).collect();
            hub.set_environment_keys(&env(e), &hashes);
        }
    }

    /// Drops every connection at once and stops listening.
    pub async fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
        self.hub = None;
    }

    /// Drops every connection at once and stops listening, keeping the hub (and its ring
    /// of recent changes): a network cut rather than a crash.
    pub async fn drop_connections(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    /// Listens again on the same port with the hub kept by [`Origin::drop_connections`].
    pub async fn serve_again(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        let hub = self.hub.clone().expect("hub kept");
        self.serve_hub(listener, hub);
    }

    /// Requests to the relay stream so far.
    pub fn stream_requests(&self) -> u64 {
        *self.stream_requests.borrow()
    }

    /// Waits until the relay stream has been requested `n` times.
    pub async fn wait_stream_requests(&self, n: u64) {
        let mut rx = self.stream_requests.subscribe();
        let waited =
            tokio::time::timeout(WAIT, async { rx.wait_for(|c| *c >= n).await.is_ok() }).await;
        assert_eq!(waited, Ok(true), "fewer than {n} relay stream requests");
    }

    /// Listens again on the same port with a fresh hub loaded from the model.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

/// Serves `app` over HTTP/1.1; aborting the returned task drops every connection.
async fn serve_killable(listener: TcpListener, app: Router) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let service = TowerToHyperService::new(app.clone());
                conns.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Relay settings for tests: quick reconnection.
pub fn relay_config(upstream: &str) -> RelayConfig {
    let mut c = RelayConfig::new(upstream, RELAY_KEY);
    c.upstream_backoff_initial = Duration::from_millis(50);
    c.upstream_backoff_max = Duration::from_millis(500);
    c.drain_window = Duration::from_millis(200);
    c
}

/// A relay running in this process on `127.0.0.1:0`. A panic in its serving task fails the
/// test when it is stopped or dropped (see [`ServerTask`]).
pub struct InProcessRelay {
    pub addr: SocketAddr,
    /// Where `/metrics` is served when `VEXIL_METRICS_LISTEN` is set (read by the end-to-end
    /// tests that share this harness, not by the relay's own).
    #[allow(dead_code)]
    pub metrics_addr: Option<SocketAddr>,
    pub state: RelayState,
    pub hub: Hub,
    task: Option<ServerTask<Infallible>>,
}

impl InProcessRelay {
    pub async fn start(config: RelayConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let relay = Relay::new(config).unwrap();
        let metrics_addr = relay.metrics_addr();
        let state = relay.state().clone();
        let hub = relay.hub().clone();
        let task = ServerTask::spawn("the in-process relay", move |stop| async move {
            relay
                .serve(listener, async {
                    let _ = stop.await;
                })
                .await;
            Ok(())
        });
        Self {
            addr,
            metrics_addr,
            state,
            hub,
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn wait_ready(&self) {
        tokio::time::timeout(WAIT, self.state.wait_ready())
            .await
            .expect("relay never became ready");
    }

    /// Waits until `condition` holds, checked after each upstream event the relay applies.
    pub async fn wait_until(&self, what: &str, condition: impl Fn(&Self) -> bool) {
        let mut applied = self.state.applied_events();
        let waited = tokio::time::timeout(WAIT, async {
            while !condition(self) {
                applied.changed().await.unwrap();
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out waiting until {what}");
    }

    /// Graceful shutdown (drain), waiting for it to finish.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.stop(WAIT).await;
        }
    }
}

/// The built `vexil-relay` binary running as a child process, its JSON logs parsed.
pub struct RelayProcess {
    pub addr: SocketAddr,
    child: Child,
    logs: mpsc::UnboundedReceiver<Value>,
}

impl RelayProcess {
    /// Starts the binary on `listen` (port 0 for any) against `upstream` and waits until it
    /// listens.
    pub async fn start(upstream: &str, listen: SocketAddr, extra: &[&str]) -> Self {
        Self::start_wrapped(&[], upstream, listen, extra).await
    }

    /// [`RelayProcess::start`] under a wrapper command (e.g. `prlimit --nofile=…`).
    pub async fn start_wrapped(
        wrapper: &[&str],
        upstream: &str,
        listen: SocketAddr,
        extra: &[&str],
    ) -> Self {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(crate::RELAY_BIN);
                c
            }
            None => Command::new(crate::RELAY_BIN),
        };
        let mut child = command
            .args([
                "--upstream-url",
                upstream,
                "--listen",
                &listen.to_string(),
                "--log-format",
                "json",
                "--upstream-backoff-initial",
                "50ms",
                "--upstream-backoff-max",
                "500ms",
            ])
            .args(extra)
            .env("VEXIL_RELAY_KEY", RELAY_KEY)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start the relay binary");
        let stdout = child.stdout.take().unwrap();
        let (tx, mut logs) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let line = wait_log(&mut logs, "vexil relay listening").await;
        let addr = line["addr"].as_str().unwrap().parse().unwrap();
        Self { addr, child, logs }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The soft and hard `RLIMIT_NOFILE` of the running process (`/proc/<pid>/limits`).
    pub fn nofile_limits(&self) -> (u64, u64) {
        let pid = self.child.id().expect("running");
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let mut n = line
            .split_whitespace()
            .filter_map(|w| w.parse::<u64>().ok());
        (n.next().unwrap(), n.next().unwrap())
    }

    pub async fn wait_ready(&mut self) {
        wait_log(&mut self.logs, "relay ready").await;
    }

    /// Waits for a log line whose message starts with `prefix`.
    pub async fn wait_log(&mut self, prefix: &str) -> Value {
        wait_log(&mut self.logs, prefix).await
    }

    /// SIGKILL: every connection drops at once.
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// Sends the process a signal (`TERM`, `HUP`, ...) with `kill`.
    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// SIGHUP: what the systemd unit's `ExecReload` sends.
    pub fn hangup(&self) {
        self.signal("HUP");
    }

    /// Whether the process is still running (has not exited, by any signal or on its own).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("process status").is_none()
    }

    /// SIGTERM, then waits for the process to exit on its own.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("relay did not exit after SIGTERM")
            .unwrap()
    }
}

async fn wait_log(logs: &mut mpsc::UnboundedReceiver<Value>, prefix: &str) -> Value {
    let mut skipped = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let Some(line) = logs.recv().await else {
                return None; // the process exited
            };
            if line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(prefix))
            {
                return Some(line);
            }
            skipped.push(line);
        }
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        _ => panic!("no log line {prefix:?}; saw {skipped:#?}"),
    }
}

/// A free port on 127.0.0.1 (bound and released).
pub async fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

/// What a [`Subscriber`] holds and what it saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub version: Option<u64>,
    pub values: BTreeMap<String, Value>,
    /// Every flag held, whole, as JSON.
    pub flags: BTreeMap<String, Value>,
    /// Every change version applied, in order (puts excluded).
    pub changes: Vec<u64>,
    /// Protocol violations: a change that does not follow the version held, etc.
    pub violations: Vec<String>,
    /// Successful stream connections.
    pub connections: u32,
    /// Connections that ended (server closed or failed).
    pub disconnects: u32,
    /// Connection attempts refused (a status other than 200) or failed.
    pub refused: u32,
}

/// An SDK stream subscriber that reconnects with `Last-Event-ID` (every 50 ms while the
/// relay is unreachable) and checks that each change follows the version it holds.
pub struct Subscriber {
    seen: watch::Receiver<Seen>,
    task: JoinHandle<()>,
}

impl Subscriber {
    pub fn start(base_url: &str, key: &str) -> Self {
        let (tx, seen) = watch::channel(Seen::default());
        let task = tokio::spawn(subscribe(
            format!("{base_url}/sdk/v1/stream"),
            key.to_owned(),
            tx,
        ));
        Self { seen, task }
    }

    pub fn seen(&self) -> Seen {
        self.seen.borrow().clone()
    }

    /// Waits until what the subscriber saw satisfies `condition`.
    pub async fn wait(&mut self, what: &str, condition: impl Fn(&Seen) -> bool) {
        let waited = tokio::time::timeout(WAIT, async {
            self.seen.wait_for(|s| condition(s)).await.is_ok()
        })
        .await;
        assert!(
            waited == Ok(true),
            "timed out waiting until {what}; subscriber saw {:?}",
            *self.seen.borrow()
        );
    }

    /// Waits until the subscriber holds `version` (or later).
    pub async fn wait_version(&mut self, version: u64) {
        self.wait(&format!("version {version}"), |s| {
            s.version.is_some_and(|v| v >= version)
        })
        .await;
    }

    /// Waits until the subscriber's stream has ended `n` times.
    pub async fn wait_disconnects(&mut self, n: u32) {
        self.wait(&format!("{n} disconnects"), |s| s.disconnects >= n)
            .await;
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn subscribe(url: String, key: String, seen: watch::Sender<Seen>) {
    let client = reqwest::Client::new();
    loop {
        let held = seen.borrow().version;
        let mut req = client.get(&url).header("authorization", &key);
        if let Some(v) = held {
            req = req.header("last-event-id", v.to_string());
        }
        let resp = match req.send().await {
            Ok(r) if r.status() == 200 => r,
            _ => {
                seen.send_modify(|s| s.refused += 1);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        seen.send_modify(|s| s.connections += 1);
        let mut reader = SseReader::new(resp);
        while let Some(block) = reader.next_block().await {
            seen.send_if_modified(|s| apply_block(&block, s));
        }
        seen.send_modify(|s| s.disconnects += 1);
    }
}

/// Applies one SSE block; returns whether anything changed.
fn apply_block(block: &Block, s: &mut Seen) -> bool {
    let Block::Event(ev) = block else {
        // Keep-alive comments change nothing.
        return false;
    };
    let (event, data) = (ev.event.as_str(), ev.data.as_str());
    if event == "message" || data.is_empty() {
        s.violations.push(format!("not an event: {ev:?}"));
        return true;
    }
    let decoded = match SdkEvent::decode(event, data) {
        Ok(e) => e,
        Err(e) => {
            s.violations.push(format!("undecodable {event}: {e}"));
            return true;
        }
    };
    match decoded {
        SdkEvent::Put(snap) => {
            s.values = snap
                .flags
                .iter()
                .map(|f| (f.key.to_string(), f.variations[0].value.clone()))
                .collect();
            s.flags = snap
                .flags
                .iter()
                .map(|f| (f.key.to_string(), serde_json::to_value(f).unwrap()))
                .collect();
            s.version = Some(snap.version);
        }
        change => {
            let v = change.version();
            if s.version.and_then(|h| h.checked_add(1)) != Some(v) {
                let held = s.version;
                s.violations
                    .push(format!("change {v} does not follow held version {held:?}"));
            }
            match change {
                SdkEvent::Patch(p) => {
                    if let PatchItem::Flag(f) = p.item {
                        s.values
                            .insert(f.key.to_string(), f.variations[0].value.clone());
                        s.flags
                            .insert(f.key.to_string(), serde_json::to_value(&f).unwrap());
                    }
                }
                SdkEvent::Delete(d) => {
                    if let ItemRef::Flag(k) = d.item {
                        s.values.remove(k.as_str());
                        s.flags.remove(k.as_str());
                    }
                }
                SdkEvent::Delta(d) => {
                    // Segments are not tracked here; a flag's targets edit is applied to the
                    // flag held, by the canonical rules.
                    if let DeltaItem::FlagTargets(t) = d.item
                        && let Some(json) = s.flags.get(t.key.as_str())
                    {
                        let mut f: vexil_schema::Flag =
                            serde_json::from_value(json.clone()).unwrap();
                        t.apply(&mut f);
                        s.flags
                            .insert(f.key.to_string(), serde_json::to_value(&f).unwrap());
                    }
                }
                SdkEvent::Put(_) => unreachable!(),
            }
            s.changes.push(v);
            s.version = Some(v);
        }
    }
    true
}

/// GET `url` with an SDK key; the status, `Retry-After` presence and body.
pub async fn get(url: &str, key: Option<&str>) -> (u16, bool, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(k) = key {
        req = req.header("authorization", k);
    }
    let resp = tokio::time::timeout(WAIT, req.send())
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().contains_key("retry-after");
    (status, retry, resp.text().await.unwrap_or_default())
}

/// POST an OFREP evaluation of user `u1` to `url` with an SDK key in `X-API-Key`; the status,
/// `Retry-After` presence and body.
pub async fn post_ofrep(url: &str, key: &str) -> (u16, bool, String) {
    let req = reqwest::Client::new()
        .post(url)
        .header("x-api-key", key)
        .json(&json!({"context": {"targetingKey": "u1"}}));
    let resp = tokio::time::timeout(WAIT, req.send())
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().contains_key("retry-after");
    (status, retry, resp.text().await.unwrap_or_default())
}
