//! Event ingestion (`POST /events/v1/bulk`) on the real server, on both engines: partial
//! rejection, gzip, limits, acknowledgement only after commit, retention, OFREP exposures.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sqlx::Connection;
use vexil_server::db::{Db, DbOptions};
use vexil_server::events::EventStore;
use vexil_testkit::{Backend, TestApp, TestDatabase, spawn_app, spawn_app_with};

use crate::helpers::*;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn custom(key: &str, user: &str) -> Value {
    json!({"kind": "custom", "time": now_ms(), "event_key": key, "context_key": user, "value": 1.5})
}

fn batch(events: Vec<Value>) -> Value {
    json!({"schema_version": 1,
           "sdk": {"name": "test", "version": "0", "instance_id": "i-1"},
           "events": events})
}

/// `POST {base}{path}` with `key` and a body (gzip-compressed when `gz`).
async fn post_events(
    base: &str,
    path: &str,
    key: &str,
    body: &Value,
    gz: bool,
) -> reqwest::Response {
    let bytes = serde_json::to_vec(body).unwrap();
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("x-vexil-event-schema", "1");
    req = if gz {
        req.header("content-encoding", "gzip").body(gzip(&bytes))
    } else {
        req.body(bytes)
    };
    req.send().await.unwrap()
}

/// Rows in `events` (of `kind`, if given).
async fn count(db: &TestDatabase, kind: Option<&str>) -> i64 {
    let sql = "SELECT COUNT(*) FROM events WHERE $1 IS NULL OR kind = $1";
    match db.backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM events WHERE $1::text IS NULL OR kind = $1",
            )
            .bind(kind)
            .fetch_one(&mut c)
            .await
            .unwrap()
        }
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.url))
                .await
                .unwrap();
            sqlx::query_scalar::<_, i64>(sql)
                .bind(kind)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    }
}

async fn ingests_and_reports_rejections(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = setup(&app, &["prod"]).await;
    let now = now_ms();
    let body = batch(vec![
        json!({"kind": "exposure", "time": now, "flag_key": "checkout", "flag_version": 3,
               "environment_version": 7, "variation": 1, "context_key": "u1"}),
        custom("purchase", "u1"),
        json!({"kind": "summary", "start": now - 10_000, "end": now, "environment_version": 7,
               "counters": [{"flag_key": "checkout", "variation": 1, "reason": "FALLTHROUGH", "count": 12}]}),
        json!({"kind": "teleport", "time": now}),
        json!({"kind": "custom", "time": now, "event_key": "", "context_key": "u1"}),
        json!({"kind": "custom", "time": now - 30 * 24 * 3600 * 1000, "event_key": "old", "context_key": "u1"}),
    ]);
    for gz in [false, true] {
        let res = post_events(&app.base_url, "/events/v1/bulk", &keys[0], &body, gz).await;
        let answer = expect(res, 200).await;
        assert_eq!(answer["accepted"], 3, "{answer}");
        let rejected: Vec<u64> = answer["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["index"].as_u64().unwrap())
            .collect();
        assert_eq!(rejected, vec![3, 4, 5], "{answer}");
        assert!(
            answer["rejected"][1]["reason"]
                .as_str()
                .unwrap()
                .contains("event_key")
        );
    }
    // Acknowledged means stored: both batches' accepted events are there.
    assert_eq!(count(&app.database, None).await, 6);
    assert_eq!(count(&app.database, Some("exposure")).await, 2);
    assert_eq!(count(&app.database, Some("summary")).await, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_stored_and_rejections_reported_on_postgres() {
    ingests_and_reports_rejections(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_stored_and_rejections_reported_on_sqlite() {
    ingests_and_reports_rejections(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_and_keys_are_refused_as_a_whole() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.events_max_body_bytes = 64 * 1024;
    })
    .await;
    let keys = setup(&app, &["prod"]).await;
    let base = app.base_url.as_str();
    let client = reqwest::Client::new();
    let url = format!("{base}/events/v1/bulk");

    // No key, unknown key: 401.
    let res = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = post_events(base, "/events/v1/bulk", "vxs_nope", &batch(vec![]), false).await;
    assert_eq!(res.status(), 401);

    // Not JSON: 400 problem.
    let res = client
        .post(&url)
        .bearer_auth(&keys[0])
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let p = expect(res, 400).await;
    assert_eq!(p["type"], "urn:vexil:problem:bad-request");

    // Another schema version: 400.
    let res = post_events(
        base,
        "/events/v1/bulk",
        &keys[0],
        &json!({"schema_version": 2, "events": []}),
        false,
    )
    .await;
    let p = expect(res, 400).await;
    assert_eq!(p["type"], "urn:vexil:problem:unsupported-event-schema");

    // Too many events: 413 (small events, under the byte limit once compressed).
    let many: Vec<Value> = (0..10_001).map(|_| json!({})).collect();
    let res = post_events(base, "/events/v1/bulk", &keys[0], &batch(many), true).await;
    let p = expect(res, 413).await;
    assert_eq!(p["type"], "urn:vexil:problem:too-many-events");

    // Too large, as sent and as decompressed.
    let big: Vec<Value> = (0..2_000)
        .map(|i| custom("purchase", &format!("user-{i}")))
        .collect();
    let res = post_events(
        base,
        "/events/v1/bulk",
        &keys[0],
        &batch(big.clone()),
        false,
    )
    .await;
    assert_eq!(res.status(), 413);
    let res = post_events(base, "/events/v1/bulk", &keys[0], &batch(big), true).await;
    assert_eq!(res.status(), 413);

    // Nothing of it was stored.
    assert_eq!(count(&app.database, None).await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_rate_limited_per_key() {
    let app = spawn_app_with(Backend::Sqlite, |c| c.events_rate_limit = 1).await;
    let keys = setup(&app, &["prod", "dev"]).await;
    let one = batch(vec![custom("click", "u")]);
    let res = post_events(&app.base_url, "/events/v1/bulk", &keys[0], &one, false).await;
    expect(res, 200).await;
    let res = post_events(&app.base_url, "/events/v1/bulk", &keys[0], &one, false).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    // Another key has its own budget.
    let res = post_events(&app.base_url, "/events/v1/bulk", &keys[1], &one, false).await;
    expect(res, 200).await;
    assert_eq!(count(&app.database, None).await, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_while_the_database_is_unreachable() {
    let app = spawn_app(Backend::Postgres).await;
    let keys = setup(&app, &["prod"]).await;
    let gate = DbGate::start(&app.database.url).await;
    let peer = Peer::start_with(&gate.url, |c| c.database_probe_ms = 50).await;
    let one = |i: usize| batch(vec![custom("click", &format!("u{i}"))]);

    let res = post_events(&peer.base_url, "/events/v1/bulk", &keys[0], &one(0), true).await;
    expect(res, 200).await;

    gate.set_open(false);
    for i in 1..=3 {
        let res = post_events(&peer.base_url, "/events/v1/bulk", &keys[0], &one(i), true).await;
        assert_eq!(res.status(), 503, "no acknowledgement without a commit");
        assert!(res.headers().contains_key("retry-after"));
    }
    gate.set_open(true);
    // The sender retries until acknowledged.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let res = post_events(&peer.base_url, "/events/v1/bulk", &keys[0], &one(99), true).await;
        if res.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Exactly the acknowledged events are stored; the refused ones are not.
    assert_eq!(count(&app.database, None).await, 2);
    peer.stop().await;
    app.stop().await;
}

async fn event_store(db: &TestDatabase, retention_days: u32) -> EventStore {
    let db = Db::connect(&DbOptions {
        url: db.url.clone(),
        max_connections: 2,
    })
    .await
    .unwrap();
    EventStore::new(db, retention_days)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_partitions_on_postgres() {
    let app = spawn_app(Backend::Postgres).await;
    let store = event_store(&app.database, 30).await;
    let now = now_ms();
    let today = (now / 86_400_000) as i64;
    // A partition 40 days old with a row in it, one 10 days old.
    assert!(store.create_partition(today - 40).await.unwrap());
    assert!(store.create_partition(today - 10).await.unwrap());
    assert!(
        !store.create_partition(today - 10).await.unwrap(),
        "exists already"
    );
    let old = (today - 40) * 86_400_000 + 1;
    let mut c = sqlx::PgConnection::connect(&app.database.url)
        .await
        .unwrap();
    sqlx::query("INSERT INTO events (environment_id, received_at_ms, kind, time_ms, key) VALUES (1, $1, 'custom', $1, 'k')")
        .bind(old)
        .execute(&mut c)
        .await
        .unwrap();
    let m = store.maintain(now).await.unwrap();
    assert_eq!(m.dropped.len(), 1, "{m:?}");
    let partitions: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'events' ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    // The 10-day-old one, today and the days ahead remain.
    assert_eq!(partitions.len(), 4, "{partitions:?}");
    assert_eq!(count(&app.database, None).await, 0);
    // Idempotent, and safe to run from two servers at once.
    let other = event_store(&app.database, 30).await;
    let (a, b) = tokio::join!(store.maintain(now), other.maintain(now));
    assert!(a.unwrap().dropped.is_empty() && b.unwrap().dropped.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_rows_on_sqlite() {
    let app = spawn_app(Backend::Sqlite).await;
    let keys = setup(&app, &["prod"]).await;
    let res = post_events(
        &app.base_url,
        "/events/v1/bulk",
        &keys[0],
        &batch(vec![custom("a", "u")]),
        false,
    )
    .await;
    expect(res, 200).await;
    let store = event_store(&app.database, 1).await;
    // Two days later, the row is past a one-day retention.
    let m = store.maintain(now_ms() + 2 * 86_400_000).await.unwrap();
    assert_eq!(m.deleted_rows, 1);
    assert_eq!(count(&app.database, None).await, 0);
    app.stop().await;
}

/// An experiment flag: a 50/50 rollout marked `experiment`, in prod.
async fn experiment_flag(app: &TestApp, key: &str) {
    create_flag(app, key).await;
    expect(
        app.put(
            &config_path("p", key, "prod"),
            &json!({"on": true, "off_variation": 1,
                    "fallthrough": {"rollout": {"experiment": true, "variations": [
                        {"variation": 0, "weight": 50000}, {"variation": 1, "weight": 50000}]}}}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
}

/// Waits until `events` holds `n` rows of `kind`.
pub async fn wait_count(db: &TestDatabase, kind: &str, n: i64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = count(db, Some(kind)).await;
        if got == n {
            return;
        }
        assert!(got < n, "{got} {kind} rows, expected {n}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "{got} {kind} rows, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofrep_records_one_exposure_per_context_flag_and_variation() {
    let app = spawn_app(Backend::Postgres).await;
    let keys = setup(&app, &["prod"]).await;
    experiment_flag(&app, "checkout").await;
    create_flag(&app, "plain").await;
    let ofrep = |path: &'static str, user: &'static str| {
        let key = keys[0].clone();
        let base = app.base_url.clone();
        async move {
            let res = reqwest::Client::new()
                .post(format!("{base}{path}"))
                .bearer_auth(key)
                .json(&json!({"context": {"targetingKey": user}}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
    };
    // u1 twice on the flag and once in bulk: one exposure; u2 once; a flag outside any
    // experiment: none.
    ofrep("/ofrep/v1/evaluate/flags/checkout", "u1").await;
    ofrep("/ofrep/v1/evaluate/flags/checkout", "u1").await;
    ofrep("/ofrep/v1/evaluate/flags", "u1").await;
    ofrep("/ofrep/v1/evaluate/flags/checkout", "u2").await;
    ofrep("/ofrep/v1/evaluate/flags/plain", "u3").await;
    wait_count(&app.database, "exposure", 2).await;
    let mut c = sqlx::PgConnection::connect(&app.database.url)
        .await
        .unwrap();
    let rows: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT key, context_key, variation FROM events WHERE kind = 'exposure' ORDER BY context_key",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("checkout", "u1"));
    assert_eq!(rows[1].1, "u2");
    app.stop().await;
}
