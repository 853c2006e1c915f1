//! The real SDK (`vexil-sdk`, streaming over eventsource-client) against a relay: the lean
//! stream path must look like any SSE server to it.

use std::time::Duration;

use serde_json::json;
use vexil_schema::Context;
use vexil_sdk::Client;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_streams_from_a_relay_and_survives_its_restart() {
    let mut origin = Origin::start(&["shop/prod"]).await;
    let listen = free_port().await;
    let mut relay = RelayProcess::start(&origin.url(), listen, &[]).await;
    relay.wait_ready().await;

    let client = Client::builder(sdk_key("shop/prod"))
        .base_url(relay.url())
        .build()
        .unwrap();
    client
        .wait_for_initialization(Duration::from_secs(20))
        .await
        .unwrap();
    let ctx = Context::new("user-1");
    assert_eq!(
        client.json_variation("initial", &ctx, json!(null)),
        json!("v1")
    );

    let mut changes = client.flag_changes();
    origin.set("shop/prod", "checkout", json!("new"));
    let change = tokio::time::timeout(WAIT, changes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.version, 2);
    assert_eq!(
        client.json_variation("checkout", &ctx, json!(null)),
        json!("new")
    );

    // The relay dies; a change is made meanwhile; the relay comes back on the same address.
    relay.kill().await;
    origin.set("shop/prod", "checkout", json!("newer"));
    relay = RelayProcess::start(&origin.url(), listen, &[]).await;
    relay.wait_ready().await;
    let change = tokio::time::timeout(WAIT, changes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.version, 3);
    assert_eq!(
        client.json_variation("checkout", &ctx, json!(null)),
        json!("newer")
    );
    client.close();
}
