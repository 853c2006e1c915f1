//! Test harness: the real fan-out hub and SDK endpoints of `vexil-relay`, served by axum on
//! a real socket, behind a TCP proxy that can cut or stall connections, with a middleware
//! recording every request the SDK makes.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use vexil_fanout::{AuthError, Hub, HubConfig, SdkAuth, SdkKeyTable, hash_sdk_key, sdk_router};
use vexil_schema::stream::{Change, Delete, EnvironmentId, ItemRef, Patch, PatchItem};
use vexil_schema::{EnvironmentSnapshot, Flag, FlagKey};
use vexil_sdk::{Client, ClientBuilder, FlagChange, State as SdkState, Status};

/// The SDK key the test environment accepts.
pub const SDK_KEY: &str = "sdk-test-key-0123456789";

/// Waits of this long mean something is broken, not slow.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub fn env() -> EnvironmentId {
    EnvironmentId::parse("shop/production").unwrap()
}

/// One request the SDK made, as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub status: u16,
    pub last_event_id: Option<String>,
    pub if_none_match: Option<String>,
}

/// Every request received, in order, with a way to wait for more.
#[derive(Debug, Clone, Default)]
pub struct Requests {
    seen: Arc<Mutex<Vec<Seen>>>,
    notify: Arc<Notify>,
}

impl Requests {
    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn to(&self, path: &str) -> Vec<Seen> {
        self.all().into_iter().filter(|s| s.path == path).collect()
    }

    /// Waits until `pred` holds for the requests seen (at most [`PATIENCE`]).
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let seen = self.all();
            if pred(&seen) {
                return seen;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for {what}; requests so far: {seen:#?}");
            }
        }
    }

    fn push(&self, s: Seen) {
        self.seen.lock().unwrap().push(s);
        self.notify.notify_waiters();
    }
}

async fn record(State(requests): State<Requests>, req: Request, next: Next) -> Response {
    let (path, last_event_id, if_none_match) = describe(&req);
    let response = next.run(req).await;
    requests.push(Seen {
        path,
        status: response.status().as_u16(),
        last_event_id,
        if_none_match,
    });
    response
}

fn describe(req: &Request) -> (String, Option<String>, Option<String>) {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    (
        req.uri().path().to_owned(),
        header("last-event-id"),
        header("if-none-match"),
    )
}

/// How the proxy treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Close every connection, existing and new (upstream is down).
    Cut,
    /// Keep connections open but forward nothing (a half-open connection).
    Stall,
}

/// A TCP proxy in front of the server.
pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, rx) = watch::channel(Mode::Pass);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(proxy_connection(socket, upstream, rx.clone()));
            }
        });
        Self { addr, mode, task }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Mode::Cut);
        self.task.abort();
    }
}

async fn proxy_connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
) {
    let current = *mode.borrow_and_update();
    match current {
        Mode::Cut => return,
        Mode::Stall => return hold(client, mode).await,
        Mode::Pass => {}
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let stall = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        changed = mode.wait_for(|m| *m != Mode::Pass) => changed.is_ok_and(|m| *m == Mode::Stall),
    };
    if stall {
        drop(server);
        hold(client, mode).await;
    }
}

/// Keeps a connection open, forwarding nothing, until the proxy cuts or the client leaves.
async fn hold(mut client: TcpStream, mut mode: watch::Receiver<Mode>) {
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            _ = mode.wait_for(|m| *m == Mode::Cut) => return,
            n = client.read(&mut buf) => if !matches!(n, Ok(n) if n > 0) { return },
        }
    }
}

/// The hub and its SDK endpoints on a real socket, behind a [`Proxy`].
pub struct TestServer {
    pub hub: Hub,
    pub env: EnvironmentId,
    pub requests: Requests,
    pub proxy: Proxy,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// A server that knows [`SDK_KEY`], holding `snapshot` (if any).
    pub async fn start(config: HubConfig, snapshot: Option<EnvironmentSnapshot>) -> Self {
        let keys = SdkKeyTable::new();
        keys.set_environment_keys(&env(), &[hash_sdk_key(SDK_KEY)]);
        Self::start_with_auth(config, snapshot, keys).await
    }

    pub async fn start_with_auth(
        config: HubConfig,
        snapshot: Option<EnvironmentSnapshot>,
        auth: impl SdkAuth,
    ) -> Self {
        let hub = Hub::new(config);
        if let Some(s) = &snapshot {
            hub.publish_snapshot(&env(), s).unwrap();
        }
        let requests = Requests::default();
        let app = sdk_router(hub.clone(), auth)
            .layer(middleware::from_fn_with_state(requests.clone(), record));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).into_future().await;
        });
        let proxy = Proxy::start(addr).await;
        Self {
            hub,
            env: env(),
            requests,
            proxy,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.proxy.addr)
    }

    pub fn patch(&self, version: u64, flag: Flag) {
        self.hub
            .publish_change(
                &self.env,
                &Change::Patch(Patch {
                    version,
                    item: PatchItem::Flag(flag),
                }),
            )
            .unwrap();
    }

    pub fn delete(&self, version: u64, key: &str) {
        self.hub
            .publish_change(
                &self.env,
                &Change::Delete(Delete {
                    version,
                    item: ItemRef::Flag(FlagKey::parse(key).unwrap()),
                }),
            )
            .unwrap();
    }
}

/// An [`SdkAuth`] refusing every key as forbidden, with a reason.
pub fn forbidding(detail: &'static str) -> impl SdkAuth {
    move |_: &str| -> Result<EnvironmentId, AuthError> { Err(AuthError::Forbidden(detail.into())) }
}

/// A string flag serving `value` to everyone.
pub fn string_flag(key: &str, value: &str) -> Flag {
    serde_json::from_value(json!({
        "key": key, "kind": "string",
        "variations": [{"value": value}, {"value": "off"}],
        "on": true, "off_variation": 1, "fallthrough": {"variation": 0}
    }))
    .unwrap()
}

/// A boolean flag, on or off, targeting `vip` with `true`.
pub fn bool_flag(key: &str, on: bool) -> Flag {
    serde_json::from_value(json!({
        "key": key, "kind": "boolean",
        "variations": [{"value": true, "name": "enabled"}, {"value": false, "name": "disabled"}],
        "on": on, "off_variation": 1, "fallthrough": {"variation": 0},
        "targets": [{"variation": 0, "values": ["vip"]}]
    }))
    .unwrap()
}

pub fn snapshot(version: u64, flags: Vec<Flag>) -> EnvironmentSnapshot {
    EnvironmentSnapshot {
        version,
        flags,
        segments: vec![],
    }
}

/// Waits (at most [`PATIENCE`]) until the client's status satisfies `pred`.
pub async fn wait_status(client: &Client, what: &str, pred: impl Fn(&Status) -> bool) -> Status {
    let mut rx = client.status_receiver();
    match tokio::time::timeout(PATIENCE, rx.wait_for(|s| pred(s))).await {
        Ok(Ok(s)) => s.clone(),
        _ => panic!(
            "timed out waiting for {what}; status: {:?}",
            client.status()
        ),
    }
}

pub async fn wait_state(client: &Client, state: SdkState) -> Status {
    wait_status(client, &format!("state {state}"), |s| s.state == state).await
}

/// Waits (at most `within`) for a flag change naming `key`.
pub async fn wait_change(
    rx: &mut tokio::sync::broadcast::Receiver<FlagChange>,
    key: &str,
    within: Duration,
) -> FlagChange {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(change)) if change.contains(key) => return change,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("change channel: {e}"),
            Err(_) => panic!("no change of {key:?} within {within:?}"),
        }
    }
}

pub fn json_of(client: &Client, key: &str) -> Value {
    client.json_variation(key, &vexil_sdk::Context::new("anyone"), Value::Null)
}

/// Waits as long as a client takes to make `n` attempts against a server that fails every
/// request (it closes each connection at once), the client being built by `configure` from
/// a builder pointed at that server.
///
/// A test checking that something does *not* happen (a refused client must not retry, a
/// closed one must not receive) waits this long: as long as the retries it rules out would
/// take, however busy the machine, where a fixed sleep is either too short on a loaded CI
/// host or needlessly long everywhere else.
pub async fn while_a_client_retries(
    n: usize,
    configure: impl FnOnce(ClientBuilder) -> ClientBuilder,
) {
    yardstick(n, false, configure).await;
}

/// Like [`while_a_client_retries`] against a server that accepts connections and never
/// answers: each attempt after the first lasts the client's read timeout.
pub async fn while_a_client_times_out(
    n: usize,
    configure: impl FnOnce(ClientBuilder) -> ClientBuilder,
) {
    yardstick(n, true, configure).await;
}

async fn yardstick(n: usize, silent: bool, configure: impl FnOnce(ClientBuilder) -> ClientBuilder) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, mut attempts) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            if silent {
                held.push(socket);
            }
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    let client = configure(Client::builder(SDK_KEY).base_url(&url))
        .build()
        .unwrap();
    for made in 0..n {
        let attempt = tokio::time::timeout(PATIENCE, attempts.recv()).await;
        assert!(
            matches!(attempt, Ok(Some(()))),
            "the yardstick client made {made} attempts, not {n}"
        );
    }
    client.close();
    task.abort();
}
