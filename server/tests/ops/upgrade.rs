//! Upgrades: a database migrated to the previous schema (migrations up to 0007) with data in
//! it, then the current server starts on it; and what an older server does beside it.

use std::net::SocketAddr;

use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::net::TcpListener;
use vexil_schema::FlagDefinition;
use vexil_server::auth::{Actor, hash_secret};
use vexil_server::db::{Db, DbOptions};
use vexil_server::store::{CreateEnvironment, WriteContext};
use vexil_server::{Config, Store};
use vexil_testkit::{Backend, TestDatabase};

use crate::expect;

/// The last schema version before this release's migrations.
const PREVIOUS_SCHEMA: i64 = 7;

const OLD_TOKEN: &str = "vxa_0123456789abcdef0123456789abcdef0123456789abcdef";

async fn migrate_to_previous(db: &TestDatabase) {
    match db.backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::migrate!("../schema/migrations/postgres")
                .run_to(PREVIOUS_SCHEMA, &mut c)
                .await
                .unwrap();
        }
        Backend::Sqlite => {
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&db.url)
                .create_if_missing(true);
            let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
            sqlx::migrate!("../schema/migrations/sqlite")
                .run_to(PREVIOUS_SCHEMA, &mut c)
                .await
                .unwrap();
        }
    }
}

/// Inserts an API token the way a server of the previous release did (no `scopes`
/// column), and counts the live tokens a previous server's lookup finds for `secret`.
async fn old_server_sql(db: &TestDatabase, insert: Option<(&str, &str)>, lookup: &str) -> i64 {
    let digest = hash_secret(lookup);
    match db.backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            if let Some((name, secret)) = insert {
                sqlx::query(
                    "INSERT INTO api_tokens (name, role, secret_hash, hint, created_by, created_at)
                             VALUES ($1, 'admin', $2, 'vxa_…', 'old-server', now())",
                )
                .bind(name)
                .bind(hash_secret(secret))
                .execute(&mut c)
                .await
                .unwrap();
            }
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM api_tokens WHERE secret_hash = $1 AND revoked_at IS NULL",
            )
            .bind(digest)
            .fetch_one(&mut c)
            .await
            .unwrap()
        }
        Backend::Sqlite => {
            let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&db.url);
            let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
            if let Some((name, secret)) = insert {
                sqlx::query("INSERT INTO api_tokens (name, role, secret_hash, hint, created_by, created_at)
                             VALUES ($1, 'admin', $2, 'vxa_…', 'old-server', '2026-01-01T00:00:00.000000Z')")
                    .bind(name).bind(hash_secret(secret)).execute(&mut c).await.unwrap();
            }
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM api_tokens WHERE secret_hash = $1 AND revoked_at IS NULL",
            )
            .bind(digest)
            .fetch_one(&mut c)
            .await
            .unwrap()
        }
    }
}

async fn upgrade(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    migrate_to_previous(&db).await;
    // Data written on the previous schema: a token as the previous server stored it, and a
    // project with a flag rolled out to a percentage (through the store, whose flag tables
    // this release does not change).
    assert_eq!(
        old_server_sql(&db, Some(("old-admin", OLD_TOKEN)), OLD_TOKEN).await,
        1
    );
    let store = Store::new(
        Db::connect(&DbOptions {
            url: db.url.clone(),
            max_connections: 2,
        })
        .await
        .unwrap(),
    );
    assert!(
        !store.db().ready().await.unwrap(),
        "the schema is the previous one"
    );
    let ctx = WriteContext {
        actor: Actor::system(),
        request_id: None,
    };
    store
        .create_project(
            &ctx,
            serde_json::from_value(json!({"key": "shop", "name": "Shop"})).unwrap(),
        )
        .await
        .unwrap();
    let env: CreateEnvironment =
        serde_json::from_value(json!({"key": "prod", "name": "Prod"})).unwrap();
    store.create_environment(&ctx, "shop", env).await.unwrap();
    let def: FlagDefinition =
        serde_json::from_value(json!({"key": "f", "name": "F", "kind": "boolean",
        "variations": [{"value": true}, {"value": false}]}))
        .unwrap();
    store.create_flag(&ctx, "shop", def).await.unwrap();
    let cfg = serde_json::from_value(json!({"on": true, "off_variation": 1,
        "fallthrough": {"rollout": {"variations": [{"variation": 0, "weight": 30000}, {"variation": 1, "weight": 70000}]}}})).unwrap();
    store
        .put_config(&ctx, "shop", "f", "prod", cfg, None)
        .await
        .unwrap();
    let before = store.export_project("shop").await.unwrap();
    store.db().close().await;

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
    let after: Value = expect(
        client
            .get(url("/api/v1/projects/shop/export"))
            .bearer_auth(OLD_TOKEN)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        after,
        serde_json::to_value(&before).unwrap(),
        "the data survived the upgrade"
    );
    let eval = expect(client.post(url("/api/v1/evaluate")).bearer_auth(OLD_TOKEN)
        .json(&json!({"project": "shop", "environment": "prod", "flag": "f", "context": {"key": "u1"}})).send().await.unwrap(), 200).await;
    assert_eq!(eval["reason"]["kind"], "FALLTHROUGH");

    // Side by side: what a previous server does on the migrated database still works
    // (inserting a token without `scopes`, finding unscoped tokens), and it cannot find a
    // scoped token, so it refuses it rather than granting its role everywhere.
    let legacy = "vxa_fedcba9876543210fedcba9876543210fedcba9876543210";
    assert_eq!(
        old_server_sql(&db, Some(("made-by-old", legacy)), legacy).await,
        1
    );
    expect(
        client
            .get(url("/api/v1/me"))
            .bearer_auth(legacy)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
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
    assert_eq!(old_server_sql(&db, None, &scoped).await, 0);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the old release's data with the current store, which now also writes change_log.traceparent (0010) and webhook outbox rows (0008): rewrite the setup as the previous release's SQL"]
async fn upgrade_from_the_previous_schema_postgres() {
    upgrade(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the old release's data with the current store, which now also writes change_log.traceparent (0010) and webhook outbox rows (0008): rewrite the setup as the previous release's SQL"]
async fn upgrade_from_the_previous_schema_sqlite() {
    upgrade(Backend::Sqlite).await;
}
