//! A server on a manual clock, a webhook receiver, an SSE reader and setup helpers.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use reqwest::Response;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use vexil_server::delivery::{Clock, ManualClock};
use vexil_server::{Config, Server, StartError};
use vexil_testkit::sse::SseReader;
use vexil_testkit::{Backend, ServerTask, TestDatabase};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A control plane whose scheduler and webhook sender run by a manual clock.
pub struct App {
    pub base_url: String,
    pub client: reqwest::Client,
    pub admin_token: String,
    pub clock: Arc<ManualClock>,
    /// Before `database`: fields drop in order, so the server stops before its database goes.
    server: Option<ServerTask<StartError>>,
    pub database: TestDatabase,
}

/// A fresh database of `backend` and a server on it, its clock at the real current time.
pub async fn spawn(backend: Backend) -> App {
    vexil_testkit::init_tracing();
    let database = TestDatabase::create(backend).await;
    let clock = ManualClock::new(OffsetDateTime::now_utc());
    start(
        database,
        clock,
        format!("vxa_{}", uuid::Uuid::new_v4().simple()),
    )
    .await
}

/// [`spawn`] with `tweak` applied to the server's configuration.
pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> App {
    vexil_testkit::init_tracing();
    let database = TestDatabase::create(backend).await;
    let clock = ManualClock::new(OffsetDateTime::now_utc());
    let token = format!("vxa_{}", uuid::Uuid::new_v4().simple());
    start_with(database, clock, token, tweak).await
}

/// Starts a server on `database` (which may hold data from an earlier server).
pub async fn start(database: TestDatabase, clock: Arc<ManualClock>, admin_token: String) -> App {
    start_with(database, clock, admin_token, |_| {}).await
}

/// [`start`] with `tweak` applied to the server's configuration.
pub async fn start_with(
    database: TestDatabase,
    clock: Arc<ManualClock>,
    admin_token: String,
    tweak: impl FnOnce(&mut Config),
) -> App {
    let mut config = Config::with_database(database.url.clone());
    config.bootstrap_token = Some(admin_token.clone());
    config.database_max_connections = 8;
    config.drain_ms = 200;
    config.metrics = false;
    config.delivery_poll_ms = 50;
    config.webhook_timeout_ms = 5_000;
    tweak(&mut config);
    let server = Server::build(config)
        .await
        .expect("the server starts")
        .with_clock(Clock::manual(clock.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener.local_addr().expect("local address");
    let task = ServerTask::spawn("the test server", move |stop| {
        server.serve(listener, async {
            let _ = stop.await;
        })
    });
    App {
        base_url: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .timeout(WAIT)
            .build()
            .expect("HTTP client"),
        admin_token,
        clock,
        database,
        server: Some(task),
    }
}

impl App {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(self.url(path))
            .bearer_auth(&self.admin_token)
    }

    pub fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .bearer_auth(&self.admin_token)
            .json(body)
    }

    pub fn patch(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .patch(self.url(path))
            .bearer_auth(&self.admin_token)
            .json(body)
    }

    /// Stops the server, handing back its database, clock and admin token for a restart.
    pub async fn stop(self) -> (TestDatabase, Arc<ManualClock>, String) {
        let App {
            database,
            clock,
            admin_token,
            server,
            ..
        } = self;
        if let Some(task) = server {
            task.stop(WAIT).await;
        }
        (database, clock, admin_token)
    }

    /// A project with environment `prod` and boolean flag `flag` (off), as admin.
    pub async fn setup(&self, project: &str, flags: &[&str]) {
        expect(
            self.post(
                "/api/v1/projects",
                &json!({"key": project, "name": project}),
            )
            .send()
            .await
            .unwrap(),
            201,
        )
        .await;
        expect(
            self.post(
                &format!("/api/v1/projects/{project}/environments"),
                &json!({"key": "prod", "name": "prod"}),
            )
            .send()
            .await
            .unwrap(),
            201,
        )
        .await;
        for flag in flags {
            expect(
                self.post(
                    &format!("/api/v1/projects/{project}/flags"),
                    &json!({"key": flag, "name": flag, "kind": "boolean",
                            "variations": [{"value": true}, {"value": false}]}),
                )
                .send()
                .await
                .unwrap(),
                201,
            )
            .await;
        }
    }

    /// The flag's configuration in `prod`.
    pub async fn config(&self, project: &str, flag: &str) -> Value {
        expect(
            self.get(&config_path(project, flag)).send().await.unwrap(),
            200,
        )
        .await
    }

    /// Schedules `body` on the flag in `prod`; returns the created change.
    pub async fn schedule(&self, project: &str, flag: &str, body: Value) -> Value {
        expect(
            self.post(&schedules_path(project, flag), &body)
                .send()
                .await
                .unwrap(),
            201,
        )
        .await
    }

    /// One scheduled change.
    pub async fn scheduled(&self, project: &str, flag: &str, id: i64) -> Value {
        expect(
            self.get(&format!("{}/{id}", schedules_path(project, flag)))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await
    }

    /// Subscribes `url` to `events` of the project; returns the created subscription.
    pub async fn subscribe(
        &self,
        project: &str,
        url: &str,
        events: &[&str],
        format: &str,
    ) -> Value {
        expect(
            self.post(
                &format!("/api/v1/projects/{project}/webhooks"),
                &json!({"url": url, "events": events, "format": format,
                        "secret": "a-very-secret-signing-key"}),
            )
            .send()
            .await
            .unwrap(),
            201,
        )
        .await
    }

    /// Opens the SDK stream of `prod` with a new SDK key, past its initial `put`.
    pub async fn sdk_stream(&self, project: &str) -> Sse {
        let key = expect(
            self.post(
                &format!("/api/v1/projects/{project}/environments/prod/sdk-keys"),
                &json!({"name": "sdk"}),
            )
            .send()
            .await
            .unwrap(),
            201,
        )
        .await;
        let res = self
            .client
            .get(self.url("/sdk/v1/stream"))
            .header("authorization", key["secret"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let mut sse = Sse(SseReader::new(res));
        assert_eq!(sse.next().await.event, "put");
        sse
    }
}

/// An SDK stream.
pub struct Sse(SseReader);

impl Sse {
    pub async fn next(&mut self) -> vexil_testkit::sse::Event {
        tokio::time::timeout(WAIT, self.0.next_event())
            .await
            .expect("an event arrives in time")
            .expect("the stream stays open")
    }

    /// The next `patch` of `flag`, as the flag document.
    pub async fn next_patch(&mut self, flag: &str) -> Value {
        loop {
            let e = self.next().await;
            if e.event == "patch" && e.json()["flag"]["key"] == flag {
                return e.json()["flag"].clone();
            }
        }
    }
}

pub fn config_path(project: &str, flag: &str) -> String {
    format!("/api/v1/projects/{project}/flags/{flag}/environments/prod")
}

pub fn schedules_path(project: &str, flag: &str) -> String {
    format!("{}/scheduled-changes", config_path(project, flag))
}

/// Asserts the status, returning the JSON body (or `null` for an empty one).
pub async fn expect(res: Response, status: u16) -> Value {
    let got = res.status();
    let text = res.text().await.expect("response body");
    assert_eq!(got.as_u16(), status, "body: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

/// An RFC 3339 time.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// One request a [`Receiver`] got.
#[derive(Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status it answered.
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

#[derive(Clone)]
struct ReceiverState {
    /// Statuses to answer, in order; 200 once empty.
    script: Arc<Mutex<VecDeque<u16>>>,
    tx: mpsc::UnboundedSender<Received>,
}

/// A real HTTP server receiving webhooks: answers the scripted statuses, then 200.
pub struct Receiver {
    pub url: String,
    rx: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(script: &[u16]) -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = ReceiverState {
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            tx,
        };
        async fn hook(
            State(s): State<ReceiverState>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let status = s.script.lock().unwrap().pop_front().unwrap_or(200);
            let _ = s.tx.send(Received {
                headers,
                body,
                status,
            });
            StatusCode::from_u16(status).unwrap()
        }
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            rx,
            task,
        }
    }

    /// The next request received.
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("a webhook arrives in time")
            .expect("the receiver runs")
    }

    /// The next request for `event`, skipping others.
    pub async fn next_event(&mut self, event: &str) -> Received {
        loop {
            let r = self.next().await;
            if r.header("vexil-event") == event {
                return r;
            }
        }
    }

    /// Whether nothing arrives within `within`.
    pub async fn quiet(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, self.rx.recv()).await.is_err()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks a delivery's signature as a receiver would: HMAC-SHA256 of `timestamp.body`.
pub fn signature_ok(r: &Received, secret: &str) -> bool {
    use hmac::{Hmac, KeyInit, Mac};
    let ts = r.header("vexil-timestamp");
    let Some(hex) = r.header("vexil-signature").strip_prefix("v1=") else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    want == hex
}

/// Starts a server process of the real binary on `database_url`; returns it and its URL.
pub async fn spawn_process(
    database_url: &str,
    admin_token: &str,
) -> (tokio::process::Child, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vexil-server"))
        .env("VEXIL_DATABASE_URL", database_url)
        .env("VEXIL_LISTEN", "127.0.0.1:0")
        .env("VEXIL_DATABASE_MAX_CONNECTIONS", "4")
        .env("VEXIL_BOOTSTRAP_TOKEN", admin_token)
        .env("VEXIL_DELIVERY_POLL_MS", "20")
        .env("VEXIL_METRICS", "false")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("server binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("Vexil control plane listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!("the server process exited before listening");
    })
    .await
    .expect("the server process says where it listens");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, base)
}

/// Defines each test once and runs it against both engines: `mod $name { postgres, sqlite }`,
/// each with a fresh database and server ([`spawn`]) passed as `$app`.
macro_rules! both {
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn run($app: App) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    run(spawn(Backend::Postgres).await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    run(spawn(Backend::Sqlite).await).await;
                }
            }
        )*
    };
}
pub(crate) use both;
