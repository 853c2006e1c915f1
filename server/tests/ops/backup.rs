//! Backup and restore, as docs/runbooks/backup-restore.md describes them: PostgreSQL with
//! `pg_dump` and `pg_restore`, SQLite with `VACUUM INTO` on the live database, then
//! `vexil-server admin restored`. After a restore the data versions go back; relays and SDKs
//! (the real Rust client) that saw the later versions, connected or offline, must converge on
//! the restored state with no step taken on them, even when the restored installation has
//! since written as many changes as were lost (a resume from the lost timeline naming a
//! version that now means other data).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vexil_relay::{Relay, RelayConfig};
use vexil_sdk::{Client, Context, Reason, StreamingConfig};
use vexil_server::{Config, StartError};
use vexil_testkit::sse::{Event, SseReader};
use vexil_testkit::{Backend, TestDatabase};

use crate::expect;

const ADMIN: &str = "vxa_cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";
const WAIT: Duration = Duration::from_secs(20);

/// A control plane serving in this process until stopped.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), StartError>>,
}

async fn start(url: &str, listener: TcpListener) -> Running {
    let mut config = Config::with_database(url);
    config.bootstrap_token = Some(ADMIN.to_owned());
    config.drain_ms = 50;
    let built = vexil_server::Server::build(config).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(built.serve(listener, async {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the server stops in time")
            .unwrap()
            .unwrap();
    }
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Value, status: u16) -> Value {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN);
        if !body.is_null() {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        expect(res, status).await
    }
}

async fn next_event(sse: &mut SseReader) -> Event {
    tokio::time::timeout(WAIT, sse.next_event())
        .await
        .expect("an event arrives in time")
        .expect("the stream stays open")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The restore runbook's last step, with the real binary: `vexil-server admin restored`.
fn fence(database_url: &str) -> String {
    let said = run(Command::new(env!("CARGO_BIN_EXE_vexil-server"))
        .args(["admin", "restored"])
        .env("VEXIL_DATABASE_URL", database_url)
        .env_remove("VEXIL_BOOTSTRAP_TOKEN"));
    assert!(said.contains("Restore fenced: "), "{said}");
    said
}

/// A real SDK client streaming from `base`, reconnecting quickly.
async fn sdk_client(base: &str, key: &str) -> Client {
    let client = Client::builder(key)
        .base_url(base)
        .streaming(
            StreamingConfig::default()
                .reconnect_delay(Duration::from_millis(50), Duration::from_millis(200)),
        )
        .build()
        .expect("the SDK client builds");
    client.wait_for_initialization(WAIT).await.unwrap();
    client
}

/// Waits until `client` holds `version`, with f switched on or off and g present or not
/// (read from the evaluation reasons: `Off`, `Fallthrough`, or flag-not-found).
async fn until_holds(client: &Client, version: u64, f_on: bool, g_exists: bool) {
    let ctx = Context::new("someone");
    let want = (Some(version), f_on, g_exists);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = (
            client.version(),
            client.bool_variation_detail("f", &ctx, false).reason == Reason::Fallthrough,
            !matches!(
                client.bool_variation_detail("g", &ctx, false).reason,
                Reason::Error { .. }
            ),
        );
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SDK client holds (version, f on, g exists) = {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The flags of a `put` event, as key → `on`.
fn flags_on(put: &Value) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = put["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["key"].as_str().unwrap().to_owned(),
                f["on"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restore_from_pg_dump_converges_relay_and_sdk() {
    let db = TestDatabase::create(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server = start(&db.url, listener).await;
    let api = Api {
        client: reqwest::Client::new(),
        base: format!("http://{addr}"),
    };
    use reqwest::Method;
    api.send(
        Method::POST,
        "/api/v1/projects",
        json!({"key": "p", "name": "P"}),
        201,
    )
    .await;
    api.send(
        Method::POST,
        "/api/v1/projects/p/environments",
        json!({"key": "prod", "name": "Prod"}),
        201,
    )
    .await;
    let bool_flag = |key: &str| {
        json!({"key": key, "name": key, "kind": "boolean",
        "variations": [{"value": true}, {"value": false}]})
    };
    api.send(
        Method::POST,
        "/api/v1/projects/p/flags",
        bool_flag("f"),
        201,
    )
    .await;
    let sdk = api
        .send(
            Method::POST,
            "/api/v1/projects/p/environments/prod/sdk-keys",
            json!({"name": "sdk"}),
            201,
        )
        .await;
    let sdk = sdk["secret"].as_str().unwrap().to_owned();
    let relay_key = api
        .send(
            Method::POST,
            "/api/v1/relay-keys",
            json!({"name": "edge",
        "environments": [{"project": "p", "environment": "prod"}]}),
            201,
        )
        .await;
    let relay_key = relay_key["secret"].as_str().unwrap().to_owned();

    // A relay with quick reconnects, and an SDK stream through it.
    let mut rc = RelayConfig::new(api.base.clone(), relay_key);
    rc.metrics = false;
    rc.drain_window = Duration::from_millis(50);
    rc.upstream_backoff_initial = Duration::from_millis(50);
    rc.upstream_backoff_max = Duration::from_millis(200);
    let relay_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_base = format!("http://{}", relay_listener.local_addr().unwrap());
    let relay = Relay::new(rc).unwrap();
    let (relay_stop, relay_stopped) = oneshot::channel::<()>();
    let relay_task = tokio::spawn(relay.serve(relay_listener, async {
        let _ = relay_stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !reqwest::get(format!("{relay_base}/readyz"))
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = reqwest::Client::new()
        .get(format!("{relay_base}/sdk/v1/stream"))
        .header("authorization", &sdk)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut sse = SseReader::new(res);
    let put = next_event(&mut sse).await;
    assert_eq!(put.event, "put");
    let backed_up = put.version().unwrap();
    assert_eq!(flags_on(&put.json()), vec![("f".to_owned(), false)]);
    // Real SDK clients: one through the relay, one straight on the control plane (offline
    // while it is down for the restore).
    let via_relay = sdk_client(&relay_base, &sdk).await;
    let direct = sdk_client(&api.base, &sdk).await;
    for c in [&via_relay, &direct] {
        until_holds(c, backed_up, false, false).await;
    }

    // The backup, taken while the server runs.
    let dump = dir.path().join("vexil.dump");
    run(Command::new("pg_dump")
        .args(["--format=custom", "--no-owner", "--file"])
        .arg(&dump)
        .arg(format!("--dbname={}", db.url)));

    // Changes after the backup reach the SDK: f switched on, g created.
    api.send(
        Method::PATCH,
        "/api/v1/projects/p/flags/f/environments/prod",
        json!({"on": true}),
        200,
    )
    .await;
    api.send(
        Method::POST,
        "/api/v1/projects/p/flags",
        bool_flag("g"),
        201,
    )
    .await;
    let mut latest = backed_up;
    while latest < backed_up + 2 {
        let ev = next_event(&mut sse).await;
        assert_eq!(ev.event, "patch", "{ev:?}");
        latest = ev.version().unwrap();
    }
    for c in [&via_relay, &direct] {
        until_holds(c, latest, true, true).await;
    }

    // Restore: stop the server, restore the dump over the database, fence its versions,
    // start the server again on the same address. Nothing is done to the relay or the SDKs.
    server.stop().await;
    run(Command::new("pg_restore")
        .args([
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",
        ])
        .arg(format!("--dbname={}", db.url))
        .arg(&dump));
    fence(&db.url);
    let fenced = backed_up + (1 << 32);
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = start(&db.url, listener).await;

    // The SDK stream, still connected to the relay, is sent the restored state: a `put` at
    // the fenced version, above any it saw, with f off and no g.
    let put = loop {
        let ev = next_event(&mut sse).await;
        if ev.event == "put" {
            break ev;
        }
    };
    assert_eq!(put.version(), Some(fenced));
    assert_eq!(flags_on(&put.json()), vec![("f".to_owned(), false)]);
    // The SDK clients converge on it: the one through the relay, and the one that was
    // offline and resumes from the lost timeline.
    for c in [&via_relay, &direct] {
        until_holds(c, fenced, false, false).await;
    }
    // An SDK that held the later version and reconnects gets the restored state too.
    let res = reqwest::Client::new()
        .get(format!("{relay_base}/sdk/v1/stream"))
        .header("authorization", &sdk)
        .header("last-event-id", latest.to_string())
        .send()
        .await
        .unwrap();
    let mut again = SseReader::new(res);
    let put = next_event(&mut again).await;
    assert_eq!(put.event, "put");
    assert_eq!(put.version(), Some(fenced));
    assert_eq!(flags_on(&put.json()), vec![("f".to_owned(), false)]);
    // And the restored server keeps serving writes from there, as patches.
    api.send(
        Method::PATCH,
        "/api/v1/projects/p/flags/f/environments/prod",
        json!({"on": true}),
        200,
    )
    .await;
    let patch = next_event(&mut sse).await;
    assert_eq!(patch.event, "patch");
    assert_eq!(patch.version(), Some(fenced + 1));
    for c in [&via_relay, &direct] {
        until_holds(c, fenced + 1, true, false).await;
    }

    // A second write: the restored installation has now made as many changes since the
    // backup as were lost. A client offline since before the restore resumes with the lost
    // timeline's last id; without the fence that id would name the current version (other
    // data) and it would be sent nothing. It is sent the whole current state.
    api.send(
        Method::PATCH,
        "/api/v1/projects/p/flags/f/environments/prod",
        json!({"on": false}),
        200,
    )
    .await;
    assert_eq!(next_event(&mut sse).await.version(), Some(fenced + 2));
    for base in [&api.base, &relay_base] {
        let res = reqwest::Client::new()
            .get(format!("{base}/sdk/v1/stream"))
            .header("authorization", &sdk)
            .header("last-event-id", latest.to_string())
            .send()
            .await
            .unwrap();
        let mut offline = SseReader::new(res);
        let put = next_event(&mut offline).await;
        assert_eq!(put.event, "put", "{base}");
        assert_eq!(put.version(), Some(fenced + 2), "{base}");
        assert_eq!(flags_on(&put.json()), vec![("f".to_owned(), false)]);
    }
    for c in [&via_relay, &direct] {
        until_holds(c, fenced + 2, false, false).await;
        c.close();
    }

    let _ = relay_stop.send(());
    relay_task.await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_online_backup_with_vacuum_into_restores() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server = start(&db.url, listener).await;
    let api = Api {
        client: reqwest::Client::new(),
        base: format!("http://{addr}"),
    };
    use reqwest::Method;
    api.send(
        Method::POST,
        "/api/v1/projects",
        json!({"key": "p", "name": "P"}),
        201,
    )
    .await;
    api.send(
        Method::POST,
        "/api/v1/projects/p/environments",
        json!({"key": "prod", "name": "Prod"}),
        201,
    )
    .await;
    api.send(
        Method::POST,
        "/api/v1/projects/p/flags",
        json!({"key": "f", "name": "f", "kind": "boolean",
        "variations": [{"value": true}, {"value": false}]}),
        201,
    )
    .await;

    // The online backup: a consistent copy taken through a second connection while the
    // server keeps its own open.
    let backup = dir.path().join("backup.db");
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&db.url);
    let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    sqlx::query("VACUUM INTO ?")
        .bind(backup.to_string_lossy().into_owned())
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();

    api.send(
        Method::PATCH,
        "/api/v1/projects/p/flags/f/environments/prod",
        json!({"on": true}),
        200,
    )
    .await;
    server.stop().await;
    // Restore: the backup replaces the database file (and its write-ahead log goes).
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.url));
    }
    std::fs::copy(&backup, &db.url).unwrap();
    fence(&db.url);
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = start(&db.url, listener).await;
    let flag = api
        .send(Method::GET, "/api/v1/projects/p/flags/f", Value::Null, 200)
        .await;
    assert_eq!(flag["environments"]["prod"]["on"], false, "{flag}");
    server.stop().await;
}
