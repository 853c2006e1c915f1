//! Real `vexil-server` processes on one PostgreSQL database, an edge relay (in process) in
//! front of any of them, an SSE reader, and the few API calls the tests share.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vexil_relay::{Relay, RelayConfig};
use vexil_testkit::sse::SseReader;
use vexil_testkit::{Backend, TestDatabase};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Log lines kept per server process, shown when a test fails.
const LOG_LINES: usize = 200;

/// A `vexil-server` child process, killed on drop.
pub struct ServerProcess {
    /// `http://127.0.0.1:port`.
    pub base_url: String,
    /// Killed when dropped (`kill_on_drop`).
    _child: Child,
    logs: Arc<Mutex<VecDeque<String>>>,
}

impl ServerProcess {
    /// Starts the built binary on `database_url` with `admin_token` as bootstrap token and
    /// waits until it says where it listens (it binds `127.0.0.1:0`).
    pub async fn start(database_url: &str, admin_token: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vexil-e2e-server"))
            .env("VEXIL_LISTEN", "127.0.0.1:0")
            .env("VEXIL_DATABASE_URL", database_url)
            .env("VEXIL_BOOTSTRAP_TOKEN", admin_token)
            .env("VEXIL_DATABASE_MAX_CONNECTIONS", "8")
            .env("RUST_LOG", "info,sqlx=warn,tower_http=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the server binary starts");
        let logs = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = oneshot::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        tokio::spawn(collect(stdout, Arc::clone(&logs), Some(tx)));
        tokio::spawn(collect(stderr, Arc::clone(&logs), None));
        let base_url = match tokio::time::timeout(WAIT, rx).await {
            Ok(Ok(url)) => url,
            _ => panic!(
                "the server process did not say where it listens; its output:\n{}",
                dump(&logs)
            ),
        };
        Self {
            base_url,
            _child: child,
            logs,
        }
    }

    /// The last lines the process wrote.
    pub fn logs(&self) -> String {
        dump(&self.logs)
    }
}

fn dump(logs: &Mutex<VecDeque<String>>) -> String {
    let logs = logs.lock().unwrap_or_else(|p| p.into_inner());
    logs.iter().cloned().collect::<Vec<_>>().join("\n")
}

/// Reads a child's output line by line (so that its pipe never fills), keeping the last
/// lines and reporting the URL of the "listening on http://…" line.
async fn collect(
    out: impl AsyncRead + Unpin,
    logs: Arc<Mutex<VecDeque<String>>>,
    mut listening: Option<oneshot::Sender<String>>,
) {
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(rest) = line.split("listening on http://").nth(1)
            && let Some(tx) = listening.take()
        {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            let _ = tx.send(format!("http://{addr}"));
        }
        let mut logs = logs.lock().unwrap_or_else(|p| p.into_inner());
        if logs.len() == LOG_LINES {
            logs.pop_front();
        }
        logs.push_back(line);
    }
}

/// Server processes on one PostgreSQL database, with project `p`, environment `prod` and
/// the given boolean flags, created through the first server.
pub struct Cluster {
    pub servers: Vec<ServerProcess>,
    pub admin_token: String,
    pub client: reqwest::Client,
    /// The database the servers use.
    pub database_url: String,
    /// The fresh test database, dropped with the cluster (`None` on a database the test
    /// made itself).
    _database: Option<TestDatabase>,
}

impl Cluster {
    /// Starts `n` servers on a fresh database (one after the other: the first bootstraps the
    /// admin token) and creates `p/prod` with `flags`.
    pub async fn start(n: usize, flags: &[&str]) -> Self {
        let database = TestDatabase::create(Backend::Postgres).await;
        let url = database.url.clone();
        Self::start_at(url, Some(database), n, flags).await
    }

    /// Like [`Cluster::start`], on the database at `database_url`.
    pub async fn start_at(
        database_url: String,
        database: Option<TestDatabase>,
        n: usize,
        flags: &[&str],
    ) -> Self {
        let admin_token = format!("vxa_{}", uuid::Uuid::new_v4().simple());
        let mut servers = Vec::with_capacity(n);
        for _ in 0..n {
            servers.push(ServerProcess::start(&database_url, &admin_token).await);
        }
        let cluster = Self {
            servers,
            admin_token,
            client: reqwest::Client::builder()
                .timeout(WAIT)
                .build()
                .expect("HTTP client"),
            database_url,
            _database: database,
        };
        cluster
            .expect(
                0,
                "POST",
                "/api/v1/projects",
                Some(json!({"key": "p", "name": "p"})),
                201,
            )
            .await;
        cluster
            .expect(
                0,
                "POST",
                "/api/v1/projects/p/environments",
                Some(json!({"key": "prod", "name": "prod"})),
                201,
            )
            .await;
        for flag in flags {
            cluster
                .expect(
                    0,
                    "POST",
                    "/api/v1/projects/p/flags",
                    Some(bool_flag(flag)),
                    201,
                )
                .await;
        }
        cluster
    }

    /// `method path` on server `i` as admin, with an optional JSON body and `If-Match`.
    pub fn request(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
        if_match: Option<u64>,
    ) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.servers[i].base_url))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        if let Some(v) = if_match {
            req = req.header("if-match", format!("\"{v}\""));
        }
        req
    }

    /// Sends a request to server `i`; returns the status and the JSON body (`null` if empty).
    pub async fn send(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
        if_match: Option<u64>,
    ) -> (u16, Value) {
        let res = self
            .request(i, method, path, body, if_match)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} on server {i}: {e}"));
        let status = res.status().as_u16();
        let text = res.text().await.expect("response body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    /// Like [`Cluster::send`], asserting the status.
    pub async fn expect(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let (got, body) = self.send(i, method, path, body, None).await;
        assert_eq!(got, status, "{method} {path} on server {i}: {body}");
        body
    }

    /// Creates an SDK key for `p/prod` (through server `i`); returns its id and secret.
    pub async fn sdk_key(&self, i: usize) -> (i64, String) {
        let body = self
            .expect(
                i,
                "POST",
                "/api/v1/projects/p/environments/prod/sdk-keys",
                Some(json!({"name": format!("sdk-{}", uuid::Uuid::new_v4().simple())})),
                201,
            )
            .await;
        (
            body["id"].as_i64().expect("key id"),
            body["secret"].as_str().expect("key secret").to_owned(),
        )
    }

    /// Creates a relay key for `p/prod`; returns its secret.
    pub async fn relay_key(&self) -> String {
        let body = self
            .expect(
                0,
                "POST",
                "/api/v1/relay-keys",
                Some(json!({
                    "name": format!("relay-{}", uuid::Uuid::new_v4().simple()),
                    "environments": [{"project": "p", "environment": "prod"}]
                })),
                201,
            )
            .await;
        body["secret"].as_str().expect("key secret").to_owned()
    }

    /// The current version of `p/prod` in the database.
    pub async fn environment_version(&self) -> u64 {
        let env = self
            .expect(0, "GET", "/api/v1/projects/p/environments/prod", None, 200)
            .await;
        env["version"].as_u64().expect("environment version")
    }

    /// The sum of `vexil_feed_rebuilds_total` on server `i`'s `/metrics`; panics if the series
    /// is missing (so that a renamed metric cannot make an assertion on it vacuous).
    pub async fn rebuilds(&self, i: usize) -> u64 {
        let res = self
            .client
            .get(format!("{}/metrics", self.servers[i].base_url))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(res.status(), 200, "GET /metrics on server {i}");
        let text = res.text().await.expect("metrics body");
        let values: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with("vexil_feed_rebuilds_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .collect();
        assert!(
            !values.is_empty(),
            "server {i} exposes vexil_feed_rebuilds_total"
        );
        values.iter().sum()
    }
}

/// A boolean flag definition.
pub fn bool_flag(key: &str) -> Value {
    json!({"key": key, "name": key, "kind": "boolean",
           "variations": [{"value": true}, {"value": false}]})
}

/// The path of flag `flag`'s configuration in `p/prod`.
pub fn config_path(flag: &str) -> String {
    format!("/api/v1/projects/p/flags/{flag}/environments/prod")
}

/// An edge relay running in this process against one server, on `127.0.0.1:0`.
pub struct EdgeRelay {
    pub base_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl EdgeRelay {
    /// Starts a relay against `upstream` with `relay_key` and waits until it is ready (holds
    /// the full state of its environments).
    pub async fn start(upstream: &str, relay_key: &str) -> Self {
        let mut config = RelayConfig::new(upstream, relay_key);
        config.metrics = false;
        config.upstream_backoff_initial = Duration::from_millis(50);
        config.upstream_backoff_max = Duration::from_millis(500);
        config.drain_window = Duration::from_millis(100);
        let relay = Relay::new(config).expect("the relay starts");
        let state = relay.state().clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(relay.serve(listener, async {
            let _ = stopped.await;
        }));
        tokio::time::timeout(WAIT, state.wait_ready())
            .await
            .expect("the relay is ready in time");
        Self {
            base_url: format!("http://{addr}"),
            stop: Some(stop),
            task: Some(task),
        }
    }
}

impl Drop for EdgeRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub use vexil_testkit::sse::Event;

/// An SSE client over a real HTTP response (the bytes read by [`SseReader`]).
pub struct Sse {
    reader: SseReader,
}

impl Sse {
    /// Opens `GET {base}/sdk/v1/stream` with `key`, retrying for at most [`WAIT`] while the
    /// key or its environment is still propagating: a server that does not serve an
    /// environment created a moment ago through another server answers 503 (`Retry-After`),
    /// and a relay knows only the key hashes its upstream has sent it so far (401 until then).
    pub async fn open(base: &str, key: &str) -> Sse {
        let client = reqwest::Client::new();
        let res = tokio::time::timeout(WAIT, async {
            loop {
                let res = client
                    .get(format!("{base}/sdk/v1/stream"))
                    .header("authorization", key)
                    .send()
                    .await
                    .expect("stream request");
                if res.status() != 503 && res.status() != 401 {
                    return res;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the stream opens in time");
        assert_eq!(res.status(), 200, "stream status at {base}");
        Sse {
            reader: SseReader::new(res),
        }
    }

    /// The next event (comments skipped), `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Event> {
        tokio::time::timeout(WAIT, self.reader.next_event())
            .await
            .expect("an event arrives in time")
    }

    /// Reads events until one carries version `version` or later; returns them all.
    pub async fn until(&mut self, version: u64) -> Vec<Event> {
        let mut seen = Vec::new();
        loop {
            let ev = self
                .next()
                .await
                .unwrap_or_else(|| panic!("the stream ended before version {version}: {seen:?}"));
            let done = ev.version().is_some_and(|v| v >= version);
            seen.push(ev);
            if done {
                return seen;
            }
        }
    }

    /// Whether the server ends the stream within `limit` (events before the end skipped).
    pub async fn ends_within(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            while self.reader.next_event().await.is_some() {}
        })
        .await
        .is_ok()
    }
}
