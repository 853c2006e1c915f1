use vexil_fanout::HubConfig;

use crate::helpers::*;

fn publish_versions(app: &App, to: u64) {
    app.hub
        .publish_snapshot(&env(), &snapshot(1, vec![flag("a", 0)]))
        .unwrap();
    for v in 2..=to {
        app.hub
            .publish_change(&env(), &patch(v, flag("a", (v % 2) as usize)))
            .unwrap();
    }
}

#[tokio::test]
async fn resume_within_the_ring_replays_only_the_missing_changes() {
    let app = spawn(HubConfig::default()).await;
    publish_versions(&app, 5);

    let mut sse = app.connect(Some("3")).await;
    assert_eq!(sse.next_event().await.unwrap().event().1, "4");
    assert_eq!(sse.next_event().await.unwrap().event().1, "5");
    app.hub.publish_change(&env(), &delete(6, "a")).unwrap();
    let e = sse.next_event().await.unwrap();
    assert_eq!((e.event().0, e.event().1), ("delete", "6"));
}

#[tokio::test]
async fn resume_when_current_sends_nothing_until_the_next_change() {
    let app = spawn(HubConfig::default()).await;
    publish_versions(&app, 5);

    let mut sse = app.connect(Some("5")).await;
    app.hub.publish_change(&env(), &delete(6, "a")).unwrap();
    let e = sse.next_event().await.unwrap();
    assert_eq!((e.event().0, e.event().1), ("delete", "6"));
}

#[tokio::test]
async fn resume_beyond_the_ring_gets_a_fresh_put() {
    let app = spawn(HubConfig::default().ring_capacity(2)).await;
    publish_versions(&app, 6);

    let mut sse = app.connect(Some("3")).await;
    let e = sse.next_event().await.unwrap();
    assert_eq!((e.event().0, e.event().1), ("put", "6"));

    // Exactly at the ring's edge: 4 is missing from a ring holding 5 and 6.
    let mut sse = app.connect(Some("4")).await;
    let e = sse.next_event().await.unwrap();
    assert_eq!((e.event().0, e.event().1), ("patch", "5"));
}

#[tokio::test]
async fn malformed_or_future_last_event_id_gets_a_fresh_put() {
    let app = spawn(HubConfig::default()).await;
    publish_versions(&app, 3);
    for bad in ["abc", "-1", "2,3", "99", ""] {
        let mut sse = app.connect(Some(bad)).await;
        let e = sse.next_event().await.unwrap();
        assert_eq!((e.event().0, e.event().1), ("put", "3"), "{bad:?}");
    }
}

#[tokio::test]
async fn a_snapshot_jump_empties_the_ring() {
    let app = spawn(HubConfig::default()).await;
    publish_versions(&app, 3);
    app.hub
        .publish_snapshot(&env(), &snapshot(10, vec![]))
        .unwrap();
    let mut sse = app.connect(Some("2")).await;
    let e = sse.next_event().await.unwrap();
    assert_eq!((e.event().0, e.event().1), ("put", "10"));
}
