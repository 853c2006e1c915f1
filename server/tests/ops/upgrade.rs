//! Upgrades: a database migrated to the previous release's schema, with rows written as that
//! release wrote them (plain SQL, not the current store), then the current server starts on
//! it; and what a previous server does beside the current one during a rolling upgrade.
//!
//! The previous release is pinned ([`PREVIOUS_SCHEMA`]) rather than "all migrations but the
//! newest": migrations added after it never change what this setup writes, so the test keeps
//! checking the real upgrade path however many migrations the next release brings.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, SqliteConnection};
use tokio::net::TcpListener;
use vexil_server::Config;
use vexil_server::auth::hash_secret;
use vexil_testkit::sse::SseReader;
use vexil_testkit::{Backend, TestDatabase};

use crate::expect;

/// The schema of the last release (migrations up to and including 0012).
const PREVIOUS_SCHEMA: i64 = 12;

const OLD_TOKEN: &str = "vxa_0123456789abcdef0123456789abcdef0123456789abcdef";
const OLD_SDK_KEY: &str = "vxs_00112233445566778899aabbccddeeff00112233445566";
/// The flag's salt as the previous release stored it: bucketing must not move.
const SALT: &str = "f-salt-2026";
const WAIT: Duration = Duration::from_secs(20);

/// A connection as a previous server had one: plain SQL on either engine.
enum Old {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

impl Old {
    async fn connect(db: &TestDatabase) -> Old {
        match db.backend {
            Backend::Postgres => Old::Pg(PgConnection::connect(&db.url).await.unwrap()),
            Backend::Sqlite => {
                let opts = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&db.url)
                    .create_if_missing(true);
                Old::Sqlite(SqliteConnection::connect_with(&opts).await.unwrap())
            }
        }
    }

    /// Applies the migrations up to the previous release's schema, no further.
    async fn migrate_to_previous(&mut self) {
        match self {
            Old::Pg(c) => sqlx::migrate!("../schema/migrations/postgres")
                .run_to(PREVIOUS_SCHEMA, c)
                .await
                .unwrap(),
            Old::Sqlite(c) => sqlx::migrate!("../schema/migrations/sqlite")
                .run_to(PREVIOUS_SCHEMA, c)
                .await
                .unwrap(),
        }
    }

    /// Runs a script after filling in the engine's spelling of the time, booleans and
    /// digests (`{now}`, `{false}`, `{token}`, `{sdk}`).
    async fn script(&mut self, template: &str) {
        let (now, fals, token, sdk) = match self {
            Old::Pg(_) => (
                "now()".to_owned(),
                "FALSE",
                format!("'\\x{}'::bytea", hex(OLD_TOKEN)),
                format!("'\\x{}'::bytea", hex(OLD_SDK_KEY)),
            ),
            Old::Sqlite(_) => (
                "'2026-01-01T00:00:00.000000Z'".to_owned(),
                "0",
                format!("X'{}'", hex(OLD_TOKEN)),
                format!("X'{}'", hex(OLD_SDK_KEY)),
            ),
        };
        let sql = template
            .replace("{now}", &now)
            .replace("{false}", fals)
            .replace("{token}", &token)
            .replace("{sdk}", &sdk);
        match self {
            Old::Pg(c) => {
                sqlx::raw_sql(AssertSqlSafe(sql)).execute(c).await.unwrap();
            }
            Old::Sqlite(c) => {
                sqlx::raw_sql(AssertSqlSafe(sql)).execute(c).await.unwrap();
            }
        }
    }

    /// The live API tokens a previous server's lookup finds for `secret`.
    async fn tokens_found(&mut self, secret: &str) -> i64 {
        let sql = "SELECT COUNT(*) FROM api_tokens WHERE secret_hash = $1 AND revoked_at IS NULL";
        match self {
            Old::Pg(c) => sqlx::query_scalar(sql)
                .bind(hash_secret(secret))
                .fetch_one(c)
                .await
                .unwrap(),
            Old::Sqlite(c) => sqlx::query_scalar(sql)
                .bind(hash_secret(secret))
                .fetch_one(c)
                .await
                .unwrap(),
        }
    }

    /// What a previous server loads for an environment's snapshot: every flag's definition
    /// and configuration, as JSON text, keyed by flag.
    async fn old_snapshot(&mut self) -> Vec<(String, Value, Value)> {
        let sql = "SELECT f.key, CAST(f.definition AS TEXT), CAST(c.config AS TEXT)
                     FROM flags f JOIN flag_configs c ON c.flag_id = f.id
                     JOIN environments e ON e.id = c.environment_id
                    WHERE e.key = 'prod' ORDER BY f.key";
        let rows: Vec<(String, String, String)> = match self {
            Old::Pg(c) => sqlx::query_as(sql).fetch_all(c).await.unwrap(),
            Old::Sqlite(c) => sqlx::query_as(sql).fetch_all(c).await.unwrap(),
        };
        rows.into_iter()
            .map(|(k, d, c)| {
                (
                    k,
                    serde_json::from_str(&d).unwrap(),
                    serde_json::from_str(&c).unwrap(),
                )
            })
            .collect()
    }
}

fn hex(secret: &str) -> String {
    hash_secret(secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const DEFINITION: &str = r#"{"key":"f","name":"F","kind":"boolean","variations":[{"value":true},{"value":false}],"temporary":false}"#;
const CONFIG_V1: &str = r#"{"on":false,"off_variation":1,"fallthrough":{"variation":1},"salt":"f-salt-2026","version":1}"#;
const CONFIG_V2: &str = r#"{"on":true,"off_variation":1,"fallthrough":{"rollout":{"variations":[{"variation":0,"weight":30000},{"variation":1,"weight":70000}]}},"salt":"f-salt-2026","version":2}"#;
const FLAG_V1: &str = r#"{"key":"f","kind":"boolean","variations":[{"value":true},{"value":false}],"on":false,"off_variation":1,"fallthrough":{"variation":1},"salt":"f-salt-2026","version":1}"#;
const FLAG_V2: &str = r#"{"key":"f","kind":"boolean","variations":[{"value":true},{"value":false}],"on":true,"off_variation":1,"fallthrough":{"rollout":{"variations":[{"variation":0,"weight":30000},{"variation":1,"weight":70000}]}},"salt":"f-salt-2026","version":2}"#;

/// The rows the previous release wrote for: an admin token, a project with a `prod`
/// environment, a flag created (version 1) then rolled out to 30 % (version 2), the history
/// and change log of both, their audit entries, and an SDK key for `prod`.
const PREVIOUS_RELEASE_DATA: &str = r#"
INSERT INTO api_tokens (name, role, secret_hash, hint, created_by, created_at)
     VALUES ('old-admin', 'admin', {token}, 'vxa_…', 'old-server', {now});
INSERT INTO projects (key, name, description, created_at, updated_at)
     VALUES ('shop', 'Shop', '', {now}, {now});
INSERT INTO environments (project_id, key, name, description, version, created_at, updated_at)
     SELECT id, 'prod', 'Prod', '', 2, {now}, {now} FROM projects WHERE key = 'shop';
INSERT INTO flags (project_id, key, name, definition, archived, version, created_at, updated_at)
     SELECT id, 'f', 'F', '__DEFINITION__', {false}, 1, {now}, {now} FROM projects WHERE key = 'shop';
INSERT INTO flag_configs (flag_id, environment_id, config, version, updated_at)
     SELECT f.id, e.id, '__CONFIG_V2__', 2, {now} FROM flags f, environments e
      WHERE f.key = 'f' AND e.key = 'prod';
INSERT INTO flag_config_versions (flag_id, environment_id, version, config, environment_version, actor, action, created_at)
     SELECT f.id, e.id, 1, '__CONFIG_V1__', 1, 'old-admin', 'flag.create', {now} FROM flags f, environments e
      WHERE f.key = 'f' AND e.key = 'prod';
INSERT INTO flag_config_versions (flag_id, environment_id, version, config, environment_version, actor, action, created_at)
     SELECT f.id, e.id, 2, '__CONFIG_V2__', 2, 'old-admin', 'flag.config.update', {now} FROM flags f, environments e
      WHERE f.key = 'f' AND e.key = 'prod';
INSERT INTO change_log (environment_id, version, op, entity, key, payload, created_at)
     SELECT id, 1, 'put', 'flag', 'f', '__FLAG_V1__', {now} FROM environments WHERE key = 'prod';
INSERT INTO change_log (environment_id, version, op, entity, key, payload, created_at)
     SELECT id, 2, 'put', 'flag', 'f', '__FLAG_V2__', {now} FROM environments WHERE key = 'prod';
INSERT INTO audit_log (occurred_at, actor, action, resource, project_key, resource_key)
     VALUES ({now}, 'old-admin', 'project.create', 'project', 'shop', 'shop');
INSERT INTO audit_log (occurred_at, actor, action, resource, project_key, environment_key, resource_key)
     VALUES ({now}, 'old-admin', 'flag.config.update', 'flag', 'shop', 'prod', 'f');
INSERT INTO access_keys (kind, name, secret_hash, hint, created_by, created_at)
     VALUES ('sdk', 'shop-prod', {sdk}, 'vxs_…', 'old-admin', {now});
INSERT INTO access_key_environments (key_id, environment_id)
     SELECT k.id, e.id FROM access_keys k, environments e WHERE k.name = 'shop-prod' AND e.key = 'prod';
"#;

/// A previous server switching the flag off (configuration version 3, environment version
/// one past the current): the same statements its store ran, in one transaction; the change log row has no
/// `traceparent`, which that release wrote only with tracing on.
const PREVIOUS_RELEASE_SWITCH_OFF: &str = r#"
BEGIN;
UPDATE flag_configs SET config = '__CONFIG_V3__', version = 3, updated_at = {now}
 WHERE flag_id = (SELECT id FROM flags WHERE key = 'f')
   AND environment_id = (SELECT id FROM environments WHERE key = 'prod');
UPDATE environments SET version = version + 1 WHERE key = 'prod';
INSERT INTO flag_config_versions (flag_id, environment_id, version, config, environment_version, actor, action, created_at)
     SELECT f.id, e.id, 3, '__CONFIG_V3__', e.version, 'old-admin', 'flag.config.update', {now}
       FROM flags f, environments e WHERE f.key = 'f' AND e.key = 'prod';
INSERT INTO change_log (environment_id, version, op, entity, key, payload, created_at)
     SELECT id, version, 'put', 'flag', 'f', '__FLAG_V3__', {now} FROM environments WHERE key = 'prod';
COMMIT;
"#;

fn off(doc: &str, version: u32) -> String {
    let mut v: Value = serde_json::from_str(doc).unwrap();
    v["on"] = json!(false);
    v["version"] = json!(version);
    v.to_string()
}

fn fill(template: &str) -> String {
    template
        .replace("__DEFINITION__", DEFINITION)
        .replace("__CONFIG_V1__", CONFIG_V1)
        .replace("__CONFIG_V2__", CONFIG_V2)
        .replace("__CONFIG_V3__", &off(CONFIG_V2, 3))
        .replace("__FLAG_V1__", FLAG_V1)
        .replace("__FLAG_V2__", FLAG_V2)
        .replace("__FLAG_V3__", &off(FLAG_V2, 3))
}

/// What the 30 % rollout serves `key` with the stored salt (the bucketing the previous
/// release used, computed by the shared engine's hash).
fn expected(key: &str) -> bool {
    vexil_eval::bucket(SALT, key) < 30_000
}

async fn next_event(reader: &mut SseReader) -> vexil_testkit::sse::Event {
    tokio::time::timeout(WAIT, reader.next_event())
        .await
        .expect("an event arrives in time")
        .expect("the stream stays open")
}

async fn upgrade(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let mut old = Old::connect(&db).await;
    old.migrate_to_previous().await;
    old.script(&fill(PREVIOUS_RELEASE_DATA)).await;
    assert_eq!(old.tokens_found(OLD_TOKEN).await, 1);

    // The current server starts on it: migrates, keeps the data and the old token.
    let mut config = Config::with_database(db.url.clone());
    config.drain_ms = 100;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    // Built (migrated, loaded) before serving: the bound listener queues the first requests.
    let built = vexil_server::Server::build(config)
        .await
        .expect("the upgraded server starts");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(built.serve(listener, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let url = |p: &str| format!("http://{addr}{p}");
    expect(client.get(url("/readyz")).send().await.unwrap(), 200).await;
    let me = expect(
        client
            .get(url("/api/v1/me"))
            .bearer_auth(OLD_TOKEN)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(me["name"], "old-admin");

    // The data as the previous release wrote it, read through the current API.
    let flag = expect(
        client
            .get(url("/api/v1/projects/shop/flags/f"))
            .bearer_auth(OLD_TOKEN)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(flag["definition"]["name"], "F", "{flag}");
    let prod = &flag["environments"]["prod"];
    assert_eq!(prod["on"], true, "{flag}");
    assert_eq!(prod["salt"], SALT);
    assert_eq!(prod["version"], 2);
    assert_eq!(
        prod["fallthrough"]["rollout"]["variations"][0]["weight"],
        30_000
    );
    let history = expect(
        client
            .get(url(
                "/api/v1/projects/shop/flags/f/environments/prod/versions",
            ))
            .bearer_auth(OLD_TOKEN)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert!(history.to_string().contains("flag.create"), "{history}");

    // Evaluations bucket exactly as before the upgrade (same salt, same hash).
    let (mut yes, mut no) = (0, 0);
    for i in 0..60 {
        let key = format!("user-{i}");
        let eval = expect(client.post(url("/api/v1/evaluate")).bearer_auth(OLD_TOKEN)
            .json(&json!({"project": "shop", "environment": "prod", "flag": "f", "context": {"key": key}}))
            .send().await.unwrap(), 200).await;
        assert_eq!(eval["reason"]["kind"], "FALLTHROUGH", "{eval}");
        assert_eq!(eval["value"], expected(&key), "{key}: {eval}");
        if expected(&key) { yes += 1 } else { no += 1 }
    }
    assert!(
        yes > 0 && no > 0,
        "the rollout splits the sample: {yes}/{no}"
    );

    // The SDK key the previous release created streams the environment at its version.
    let res = client
        .get(url("/sdk/v1/stream"))
        .header("authorization", OLD_SDK_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut sse = SseReader::new(res);
    let put = next_event(&mut sse).await;
    assert_eq!(put.event, "put");
    assert_eq!(put.version(), Some(2));
    let data = put.json();
    assert_eq!(data["flags"][0]["key"], "f");
    assert_eq!(data["flags"][0]["salt"], SALT);
    assert_eq!(data["flags"][0]["on"], true);

    // Side by side. A previous server still finds unscoped tokens, inserts its own, and
    // reads what the current server writes in the tables it knows.
    old.script(
        "INSERT INTO api_tokens (name, role, secret_hash, hint, created_by, created_at)
         VALUES ('made-by-old', 'admin', {sdk}, 'vxa_…', 'old-server', {now})",
    )
    .await;
    assert_eq!(old.tokens_found(OLD_SDK_KEY).await, 1);
    expect(
        client
            .post(url("/api/v1/projects/shop/flags"))
            .bearer_auth(OLD_TOKEN)
            .json(&json!({"key": "g", "name": "G", "kind": "string",
            "variations": [{"value": "a"}, {"value": "b"}]}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let seen = old.old_snapshot().await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].0, "g");
    assert_eq!(seen[1].1["kind"], "string");
    assert!(seen[1].2["off_variation"].is_u64(), "{:?}", seen[1].2);
    let g = next_event(&mut sse).await;
    assert_eq!(g.event, "patch");
    assert_eq!(g.version(), Some(3));

    // A scoped token is in a digest domain the previous server never looks in: it refuses it
    // rather than granting its role everywhere.
    let scoped = expect(client.post(url("/api/v1/tokens")).bearer_auth(OLD_TOKEN)
        .json(&json!({"name": "scoped", "role": "editor", "scopes": [{"project": "shop", "role": "viewer"}]}))
        .send().await.unwrap(), 201).await;
    let scoped = scoped["secret"].as_str().unwrap().to_owned();
    expect(
        client
            .get(url("/api/v1/projects/shop/flags/f"))
            .bearer_auth(&scoped)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(old.tokens_found(&scoped).await, 0);

    // PostgreSQL only (SQLite has one server process): a change a previous server commits
    // reaches the current server's SDK streams through the change log and NOTIFY.
    if backend == Backend::Postgres {
        old.script(&fill(PREVIOUS_RELEASE_SWITCH_OFF)).await;
        let patch = next_event(&mut sse).await;
        assert_eq!(patch.event, "patch", "{patch:?}");
        assert_eq!(patch.version(), Some(4));
        let data = patch.json();
        assert_eq!(data["flag"]["key"], "f");
        assert_eq!(data["flag"]["on"], false);
        let eval = expect(client.post(url("/api/v1/evaluate")).bearer_auth(OLD_TOKEN)
            .json(&json!({"project": "shop", "environment": "prod", "flag": "f", "context": {"key": "user-1"}}))
            .send().await.unwrap(), 200).await;
        assert_eq!(eval["reason"]["kind"], "OFF", "{eval}");
    }

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_the_previous_schema_postgres() {
    upgrade(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_the_previous_schema_sqlite() {
    upgrade(Backend::Sqlite).await;
}
