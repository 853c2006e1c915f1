//! SSE client, second server processes and small setup helpers.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vexil_server::{Config, Server, StartError};
use vexil_testkit::sse::SseReader;
use vexil_testkit::{ServerTask, TestApp};

/// How long any single wait in these tests may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub use vexil_testkit::sse::Event;

/// An SSE client over a real HTTP response (the bytes read by [`SseReader`]).
pub struct Sse {
    reader: SseReader,
}

impl Sse {
    /// Opens `GET {base}/sdk/v1/stream` with `key`, optionally resuming.
    pub async fn open(base: &str, key: &str, last_event_id: Option<&str>) -> Sse {
        Self::open_path(base, "/sdk/v1/stream", key, last_event_id).await
    }

    pub async fn open_path(base: &str, path: &str, key: &str, last_event_id: Option<&str>) -> Sse {
        let client = reqwest::Client::new();
        let mut req = client
            .get(format!("{base}{path}"))
            .header("authorization", key);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = tokio::time::timeout(WAIT, req.send())
            .await
            .expect("stream opens in time")
            .expect("stream request");
        assert_eq!(res.status(), 200, "stream status");
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Sse {
            reader: SseReader::new(res),
        }
    }

    /// The next event (keep-alive comments skipped); the stream must stay open.
    pub async fn next(&mut self) -> Event {
        tokio::time::timeout(WAIT, self.reader.next_event())
            .await
            .expect("an event arrives in time")
            .expect("the stream stays open")
    }

    /// Whether the server ends the stream within [`WAIT`] (anything sent before is skipped).
    pub async fn ends(&mut self) -> bool {
        tokio::time::timeout(WAIT, async {
            while self.reader.next_block().await.is_some() {}
        })
        .await
        .is_ok()
    }

    /// Reads events until one with version `id` (an SDK stream `id`), returning all read.
    pub async fn until_id(&mut self, id: u64) -> Vec<Event> {
        let mut seen = Vec::new();
        loop {
            let ev = self.next().await;
            let done = ev.id.as_deref().and_then(|s| s.parse::<u64>().ok()) >= Some(id);
            seen.push(ev);
            if done {
                return seen;
            }
        }
    }
}

/// A second server process (same binary code, own port, own hub and listener) on the same
/// database as `app`. A failure in its background task fails the test (see [`ServerTask`]).
pub struct Peer {
    pub base_url: String,
    pub feed: vexil_server::feed::Feed,
    task: ServerTask<StartError>,
}

impl Peer {
    pub async fn start(database_url: &str) -> Peer {
        Self::start_with(database_url, |_| {}).await
    }

    pub async fn start_with(database_url: &str, adjust: impl FnOnce(&mut Config)) -> Peer {
        let mut config = Config::with_database(database_url);
        config.database_max_connections = 5;
        adjust(&mut config);
        let server = Server::build(config).await.expect("peer starts");
        let feed = server.feed().clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = ServerTask::spawn("the peer server", move |stop| {
            server.serve(listener, async {
                let _ = stop.await;
            })
        });
        Peer {
            base_url: format!("http://{addr}"),
            feed,
            task,
        }
    }

    /// Stops the peer gracefully; panics if it failed in the background or does not stop.
    pub async fn stop(self) {
        self.task.stop(WAIT).await;
    }
}

/// A TCP gate between a server process and PostgreSQL: it forwards every connection until it
/// is closed, when it cuts the connections it carries and refuses new ones (accepting and
/// dropping them at once) until it opens again: the network between them down for a while.
pub struct DbGate {
    /// The database URL, connecting through the gate.
    pub url: String,
    open: watch::Sender<bool>,
    refused: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl DbGate {
    /// A gate, open, in front of the server `database_url` points at.
    pub async fn start(database_url: &str) -> DbGate {
        let (prefix, rest) = database_url.split_once("://").expect("a URL");
        let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(host_end);
        let (user, host) = match authority.rsplit_once('@') {
            Some((user, host)) => (format!("{user}@"), host),
            None => (String::new(), authority),
        };
        let upstream = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:5432")
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (open, open_rx) = watch::channel(true);
        let refused = watch::Sender::new(0u64);
        let counter = refused.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*open_rx.borrow() {
                    drop(client);
                    counter.send_modify(|n| *n += 1);
                    continue;
                }
                let upstream = upstream.clone();
                let mut open = open_rx.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = open.wait_for(|open| !*open) => {}
                        }
                    }
                });
            }
        });
        DbGate {
            url: format!("{prefix}://{user}{addr}{path}"),
            open,
            refused,
            task,
        }
    }

    /// Opens the gate, or closes it, cutting every connection through it.
    pub fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }

    /// Waits until the gate has refused `n` connections in all.
    pub async fn wait_refused(&self, n: u64) {
        let mut rx = self.refused.subscribe();
        let waited = tokio::time::timeout(WAIT, rx.wait_for(|r| *r >= n)).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "no connection attempt was refused"
        );
    }
}

impl Drop for DbGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Asserts the status, returning the JSON body (or `null` for an empty one).
pub async fn expect(res: reqwest::Response, status: u16) -> Value {
    let got = res.status().as_u16();
    let text = res.text().await.expect("response body");
    assert_eq!(got, status, "body: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

/// A boolean flag definition.
pub fn bool_flag(key: &str) -> Value {
    json!({"key": key, "name": key, "kind": "boolean", "variations": [{"value": true}, {"value": false}]})
}

/// The path of a flag's configuration in an environment.
pub fn config_path(project: &str, flag: &str, env: &str) -> String {
    format!("/api/v1/projects/{project}/flags/{flag}/environments/{env}")
}

/// Creates project `p` with `envs`, and returns an SDK key for each environment.
pub async fn setup(app: &TestApp, envs: &[&str]) -> Vec<String> {
    app.project("p", envs).await;
    let mut keys = Vec::new();
    for env in envs {
        keys.push(sdk_key(app, "p", env).await);
    }
    keys
}

/// Creates an SDK key for `project/env` and returns its secret.
pub async fn sdk_key(app: &TestApp, project: &str, env: &str) -> String {
    let body = expect(
        app.post(
            &format!("/api/v1/projects/{project}/environments/{env}/sdk-keys"),
            &json!({"name": format!("key-{env}-{}", uuid::Uuid::new_v4().simple())}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    body["secret"].as_str().expect("secret").to_owned()
}

/// Creates a boolean flag in project `p`.
pub async fn create_flag(app: &TestApp, key: &str) {
    expect(
        app.post("/api/v1/projects/p/flags", &bool_flag(key))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
}

/// Turns a flag on or off in `env`; returns the environment version the change produced.
pub async fn set_on(app: &TestApp, flag: &str, env: &str, on: bool) -> u64 {
    let body = expect(
        app.patch(&config_path("p", flag, env), &json!({"on": on}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    body["environment_version"]
        .as_u64()
        .unwrap_or_else(|| panic!("environment_version in {body}"))
}
