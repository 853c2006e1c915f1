use std::time::Duration;

use futures::future::join_all;
use vexil_fanout::HubConfig;
use vexil_schema::stream::SdkEvent;

use crate::helpers::*;

#[tokio::test]
async fn put_then_patch_and_delete_in_order() {
    let app = spawn(HubConfig::default()).await;
    let snap = snapshot(1, vec![flag("a", 0), flag("b", 1)]);
    app.hub.publish_snapshot(&env(), &snap).unwrap();

    let mut sse = app.connect(None).await;
    let put = sse.next_event().await.unwrap();
    let (event, id, data) = put.event();
    assert_eq!((event, id), ("put", "1"));
    assert_eq!(SdkEvent::decode(event, data).unwrap(), SdkEvent::Put(snap));

    let change = patch(2, flag("a", 1));
    assert_eq!(app.hub.publish_change(&env(), &change).unwrap(), 2);
    app.hub.publish_change(&env(), &delete(3, "b")).unwrap();

    let e = sse.next_event().await.unwrap();
    let (event, id, data) = e.event();
    assert_eq!((event, id), ("patch", "2"));
    let SdkEvent::Patch(p) = SdkEvent::decode(event, data).unwrap() else {
        panic!("not a patch")
    };
    assert_eq!(vexil_schema::stream::Change::Patch(p), change);

    let e = sse.next_event().await.unwrap();
    let (event, id, data) = e.event();
    assert_eq!((event, id), ("delete", "3"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(data).unwrap(),
        serde_json::json!({"version": 3, "kind": "flag", "key": "b"})
    );
}

#[tokio::test]
async fn a_new_snapshot_reaches_connected_subscribers_as_a_put() {
    let app = spawn(HubConfig::default()).await;
    app.hub
        .publish_snapshot(&env(), &snapshot(1, vec![]))
        .unwrap();
    let mut sse = app.connect(None).await;
    assert_eq!(sse.next_event().await.unwrap().event().1, "1");

    let newer = snapshot(9, vec![flag("x", 0)]);
    app.hub.publish_snapshot(&env(), &newer).unwrap();
    let e = sse.next_event().await.unwrap();
    let (event, id, data) = e.event();
    assert_eq!((event, id), ("put", "9"));
    assert_eq!(SdkEvent::decode(event, data).unwrap(), SdkEvent::Put(newer));

    // And changes continue from the new version.
    app.hub.publish_change(&env(), &delete(10, "x")).unwrap();
    assert_eq!(sse.next_event().await.unwrap().event().1, "10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_all_receive_a_change() {
    const N: usize = 1_000;
    let app = spawn(HubConfig::default()).await;
    app.hub
        .publish_snapshot(&env(), &snapshot(1, vec![flag("a", 0)]))
        .unwrap();

    let clients = join_all((0..N).map(|_| async {
        let mut sse = app.connect(None).await;
        assert_eq!(sse.next_event().await.unwrap().event().0, "put");
        sse
    }))
    .await;
    assert_eq!(app.hub.subscriber_count(&env()), N);

    app.hub
        .publish_change(&env(), &patch(2, flag("a", 1)))
        .unwrap();
    let received = join_all(clients.into_iter().map(|mut sse| async move {
        let e = sse.next_event().await.unwrap();
        let (event, id, _) = e.event();
        (event.to_owned(), id.to_owned())
    }))
    .await;
    assert!(received.iter().all(|(e, id)| e == "patch" && id == "2"));
}

#[tokio::test]
async fn keep_alive_comments_arrive_on_idle_streams() {
    let app = spawn(HubConfig::default().keep_alive(Duration::from_millis(50))).await;
    app.hub
        .publish_snapshot(&env(), &snapshot(1, vec![]))
        .unwrap();
    let mut sse = app.connect(None).await;
    assert_eq!(sse.next().await.unwrap().event().0, "put");
    assert_eq!(sse.next().await.unwrap(), Sse::Comment("keep-alive".into()));
    assert_eq!(sse.next().await.unwrap(), Sse::Comment("keep-alive".into()));
    // Changes still flow between keep-alives.
    app.hub.publish_change(&env(), &delete(2, "zz")).unwrap();
    assert_eq!(sse.next_event().await.unwrap().event().1, "2");
}
