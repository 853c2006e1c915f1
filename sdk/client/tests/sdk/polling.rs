//! The polling source against the real snapshot endpoint.

use std::time::Duration;

use serde_json::json;
use vexil_fanout::HubConfig;
use vexil_sdk::{Client, Context, DataSourceError, InitError, PollingConfig, State};

use crate::harness::*;

fn polling(server: &TestServer, key: &str) -> Client {
    Client::builder(key)
        .base_url(server.url())
        .polling(PollingConfig::default().interval(Duration::from_millis(50)))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_with_etags_and_picks_up_changes() {
    let server = TestServer::start(
        HubConfig::default(),
        Some(snapshot(4, vec![string_flag("a", "v4")])),
    )
    .await;
    let client = polling(&server, SDK_KEY);
    client.wait_for_initialization(PATIENCE).await.unwrap();
    assert_eq!(json_of(&client, "a"), json!("v4"));
    let mut changes = client.flag_changes();

    // Unchanged: 304s, with the ETag of the first answer.
    let seen = server
        .requests
        .wait_for("three 304s", |s| {
            s.iter().filter(|r| r.status == 304).count() >= 3
        })
        .await;
    assert_eq!(seen[0].status, 200);
    assert_eq!(seen[0].if_none_match, None);
    assert!(
        seen.iter()
            .filter(|r| r.status == 304)
            .all(|r| r.if_none_match.as_deref() == Some("\"4\"")),
        "{seen:#?}"
    );
    assert!(seen.iter().all(|r| r.path == "/sdk/v1/snapshot"));

    server.patch(5, string_flag("a", "v5"));
    let change = wait_change(&mut changes, "a", PATIENCE).await;
    assert_eq!(change.version, 5);
    assert_eq!(json_of(&client, "a"), json!("v5"));
    assert_eq!(client.status().state, State::Ready);

    // A poll brought the same flags at a new version: no change notification.
    let seen = server
        .requests
        .wait_for("a 304 on the new version", |s| {
            s.iter()
                .any(|r| r.if_none_match.as_deref() == Some("\"5\"") && r.status == 304)
        })
        .await;
    assert!(seen.len() >= 5);
    assert!(changes.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_stops_polling() {
    let server = TestServer::start(HubConfig::default(), Some(snapshot(1, vec![]))).await;
    let client = polling(&server, "wrong-key");
    assert_eq!(
        client.wait_for_initialization(PATIENCE).await,
        Err(InitError::Failed(DataSourceError::Unauthorized))
    );
    // In the time a client polling every 50 ms makes eight attempts, this one made none.
    while_a_client_retries(8, |b| {
        b.polling(PollingConfig::default().interval(Duration::from_millis(50)))
    })
    .await;
    assert_eq!(server.requests.all().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_polls_keep_serving_and_recover() {
    let server = TestServer::start(
        HubConfig::default(),
        Some(snapshot(1, vec![string_flag("a", "v1")])),
    )
    .await;
    let client = polling(&server, SDK_KEY);
    client.wait_for_initialization(PATIENCE).await.unwrap();
    server.proxy.set(Mode::Cut);
    let stale = wait_state(&client, State::Stale).await;
    assert!(stale.last_error.is_some());
    assert_eq!(json_of(&client, "a"), json!("v1"));
    server.patch(2, string_flag("a", "v2"));
    server.proxy.set(Mode::Pass);
    wait_state(&client, State::Ready).await;
    let mut changes = client.flag_changes();
    if json_of(&client, "a") != json!("v2") {
        wait_change(&mut changes, "a", PATIENCE).await;
    }
    assert_eq!(
        client.string_variation("a", &Context::new("u"), "default"),
        "v2"
    );
}
