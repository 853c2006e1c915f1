use std::time::Duration;

use vexil_fanout::HubConfig;

use crate::helpers::*;

#[tokio::test]
async fn shutdown_closes_streams_and_refuses_new_ones() {
    let app = spawn(HubConfig::default()).await;
    app.hub
        .publish_snapshot(&env(), &snapshot(1, vec![]))
        .unwrap();
    let mut streams = Vec::new();
    for _ in 0..10 {
        let mut sse = app.connect(None).await;
        assert_eq!(sse.next_event().await.unwrap().event().0, "put");
        streams.push(sse);
    }

    tokio::time::timeout(WAIT, app.hub.shutdown(Duration::from_millis(100)))
        .await
        .unwrap();
    for mut sse in streams {
        assert_eq!(sse.next().await, None, "stream should have ended");
    }
    let resp = app
        .client
        .get(app.url("/sdk/v1/stream"))
        .header("authorization", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn removing_an_environment_ends_its_streams() {
    let app = spawn(HubConfig::default()).await;
    app.hub
        .publish_snapshot(&env(), &snapshot(1, vec![]))
        .unwrap();
    let mut sse = app.connect(None).await;
    assert_eq!(sse.next_event().await.unwrap().event().0, "put");
    app.hub.remove_environment(&env());
    assert_eq!(sse.next().await, None);
    assert_eq!(app.hub.version(&env()), None);
    assert_eq!(app.hub.subscriber_count(&env()), 0);
}

#[tokio::test]
async fn serve_http1_streams_and_stops_after_the_hub_drains() {
    let hub = vexil_fanout::Hub::new(HubConfig::default());
    let keys = vexil_fanout::SdkKeyTable::new();
    keys.set_environment_keys(&env(), &[vexil_fanout::hash_sdk_key(KEY)]);
    hub.publish_snapshot(&env(), &snapshot(1, vec![])).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_hub = hub.clone();
    let server = tokio::spawn(vexil_fanout::serve_http1(
        listener,
        vexil_fanout::sdk_router(hub.clone(), keys),
        async move {
            let _ = stop_rx.await;
            drain_hub.shutdown(Duration::ZERO).await;
        },
    ));

    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/sdk/v1/stream"))
        .header("authorization", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut sse = SseClient::new(resp);
    assert_eq!(sse.next_event().await.unwrap().event().0, "put");
    hub.publish_change(&env(), &delete(2, "a")).unwrap();
    assert_eq!(sse.next_event().await.unwrap().event().1, "2");

    stop_tx.send(()).unwrap();
    assert_eq!(sse.next().await, None);
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}
