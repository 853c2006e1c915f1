//! The SDK against the real control plane (`vexil-server` via `vexil-testkit`), on both
//! storage backends: flags created and changed through the REST API reach the SDK over the
//! server's own `/sdk/v1/stream` and `/sdk/v1/snapshot`.

use std::time::Duration;

use serde_json::json;
use vexil_sdk::{Client, Context, DataSourceError, ErrorKind, InitError, PollingConfig, State};
use vexil_testkit::{Backend, TestApp, spawn_app};

use crate::harness::{PATIENCE, wait_change};

/// A project `shop` with environment `production`, a boolean flag `checkout` (on, serving
/// `true`) and an SDK key; returns the key's secret.
async fn setup(app: &TestApp) -> String {
    app.project("shop", &["production"]).await;
    let res = app
        .post(
            "/api/v1/projects/shop/flags",
            &json!({"key": "checkout", "name": "Checkout", "kind": "boolean",
                    "variations": [{"value": true}, {"value": false}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    set_on(app, "checkout", true).await;
    let res = app
        .post(
            "/api/v1/projects/shop/environments/production/sdk-keys",
            &json!({"name": "sdk-tests"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: serde_json::Value = res.json().await.unwrap();
    body["secret"].as_str().unwrap().to_owned()
}

async fn set_on(app: &TestApp, flag: &str, on: bool) {
    let res = app
        .patch(
            &format!("/api/v1/projects/shop/flags/{flag}/environments/production"),
            &json!({"on": on, "fallthrough": {"variation": 0}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

async fn streaming_against(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = setup(&app).await;
    let client = Client::builder(&key)
        .base_url(&app.base_url)
        .build()
        .unwrap();
    client.wait_for_initialization(PATIENCE).await.unwrap();
    let user = Context::new("u1");
    assert!(client.bool_variation("checkout", &user, false));

    // A change through the API reaches the SDK.
    let mut changes = client.flag_changes();
    set_on(&app, "checkout", false).await;
    wait_change(&mut changes, "checkout", PATIENCE).await;
    assert!(!client.bool_variation("checkout", &user, true));

    // A deleted flag: the caller's default, FLAG_NOT_FOUND.
    let res = app
        .delete("/api/v1/projects/shop/flags/checkout")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    wait_change(&mut changes, "checkout", PATIENCE).await;
    let d = client.bool_variation_detail("checkout", &user, true);
    assert!(d.value);
    assert_eq!(d.error_kind(), Some(ErrorKind::FlagNotFound));
    assert_eq!(client.status().state, State::Ready);
    client.close();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_from_the_server_on_postgres() {
    streaming_against(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_from_the_server_on_sqlite() {
    streaming_against(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_the_server() {
    let app = spawn_app(Backend::Postgres).await;
    let key = setup(&app).await;
    let client = Client::builder(&key)
        .base_url(&app.base_url)
        .polling(PollingConfig::default().interval(Duration::from_millis(50)))
        .build()
        .unwrap();
    client.wait_for_initialization(PATIENCE).await.unwrap();
    let mut changes = client.flag_changes();
    set_on(&app, "checkout", false).await;
    wait_change(&mut changes, "checkout", PATIENCE).await;
    assert!(!client.is_enabled("checkout", &Context::new("u")));
    client.close();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_known_good_snapshot_outlives_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    let app = spawn_app(Backend::Postgres).await;
    let key = setup(&app).await;
    let first = Client::builder(&key)
        .base_url(&app.base_url)
        .last_known_good(&path)
        .build()
        .unwrap();
    first.wait_for_initialization(PATIENCE).await.unwrap();
    let version = first.version();
    first.close();
    let url = app.base_url.clone();
    app.stop().await;

    // The server is gone; a new process starts.
    let second = Client::builder(&key)
        .base_url(&url)
        .last_known_good(&path)
        .init_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let status =
        crate::harness::wait_status(&second, "the last-known-good snapshot", |s| s.has_data())
            .await;
    assert_eq!(status.origin, Some(vexil_sdk::DataOrigin::LastKnownGood));
    assert_eq!(status.state, State::Stale);
    assert_eq!(status.version, version);
    assert!(second.is_enabled("checkout", &Context::new("u")));
}

/// A segment key edit reaches the SDK as a `delta`; the SDK applies it and persists the
/// result to its last-known-good file, which holds the edited list exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_delta_is_applied_and_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    let app = spawn_app(Backend::Postgres).await;
    let key = setup(&app).await;
    let segments = "/api/v1/projects/shop/environments/production/segments";
    let included: Vec<String> = (0..10_000).map(|i| format!("acct-{i}")).collect();
    let res = app
        .post(
            segments,
            &json!({"key": "enterprise", "name": "Enterprise", "included": included}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = app
        .patch(
            "/api/v1/projects/shop/flags/checkout/environments/production",
            &json!({"fallthrough": {"variation": 1}, "rules": [{"id": "ent", "serve": {"variation": 0},
                "clauses": [{"attribute": "key", "op": "segment_match", "values": ["enterprise"]}]}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let client = Client::builder(&key)
        .base_url(&app.base_url)
        .last_known_good(&path)
        .build()
        .unwrap();
    client.wait_for_initialization(PATIENCE).await.unwrap();
    assert!(!client.is_enabled("checkout", &Context::new("newcomer")));
    let mut changes = client.flag_changes();
    let res = app
        .post(
            &format!("{segments}/enterprise/keys"),
            &json!({"included": {"add": ["newcomer"], "remove": ["acct-0"]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    wait_change(&mut changes, "checkout", PATIENCE).await;
    assert!(client.is_enabled("checkout", &Context::new("newcomer")));
    assert!(!client.is_enabled("checkout", &Context::new("acct-0")));
    let version = client.version();
    // Closing waits for pending writes, so the file is complete now.
    client.close();
    let text = std::fs::read_to_string(&path).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    let persisted: vexil_schema::EnvironmentSnapshot =
        serde_json::from_value(file["snapshot"].clone()).unwrap();
    assert_eq!(Some(persisted.version), version);
    let list = &persisted.segments[0].included;
    assert_eq!(list.len(), 10_000);
    assert_eq!(list.first(), Some("acct-1"));
    assert_eq!(list.last(), Some("newcomer"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_an_unknown_key_once() {
    let app = spawn_app(Backend::Postgres).await;
    setup(&app).await;
    let client = Client::builder("vxs_not-a-real-key")
        .base_url(&app.base_url)
        .build()
        .unwrap();
    assert_eq!(
        client.wait_for_initialization(PATIENCE).await,
        Err(InitError::Failed(DataSourceError::Unauthorized))
    );
    assert_eq!(client.status().state, State::Failed);
    app.stop().await;
}
