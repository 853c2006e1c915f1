//! Propagation: origin → relay → subscriber, and through a chain of relays.

use futures::StreamExt;
use serde_json::json;
use vexil_fanout::StartKind;

use crate::harness::*;

#[tokio::test]
async fn a_change_reaches_subscribers_of_a_relay_with_the_same_ids() {
    let mut origin = Origin::start(&["shop/prod", "shop/dev"]).await;
    let mut relay = InProcessRelay::start(relay_config(&origin.url())).await;
    relay.wait_ready().await;
    assert!(relay.state.is_connected());

    let mut prod = Subscriber::start(&relay.url(), &sdk_key("shop/prod"));
    let mut dev = Subscriber::start(&relay.url(), &sdk_key("shop/dev"));
    prod.wait_version(1).await;
    dev.wait_version(1).await;

    origin.set("shop/prod", "checkout", json!("new"));
    origin.set("shop/prod", "checkout", json!("newer"));
    origin.delete("shop/prod", "initial");
    origin.set("shop/dev", "debug", json!(true));
    prod.wait_version(4).await;
    dev.wait_version(2).await;

    let model = &origin.model;
    let p = prod.seen();
    assert_eq!(p.values, model.values(&env("shop/prod")));
    assert_eq!(p.changes, vec![2, 3, 4], "each change as its own event");
    assert!(p.violations.is_empty(), "{:?}", p.violations);
    // A key of one environment reads that environment only.
    let d = dev.seen();
    assert_eq!(d.values, model.values(&env("shop/dev")));
    assert!(!d.values.contains_key("checkout"));

    // The relay's snapshot endpoint and its evaluators are current too.
    let (status, _, body) = get(
        &format!("{}/sdk/v1/snapshot", relay.url()),
        Some(&sdk_key("shop/prod")),
    )
    .await;
    assert_eq!(status, 200);
    let snap: vexil_schema::EnvironmentSnapshot = serde_json::from_str(&body).unwrap();
    assert_eq!(snap, model.snapshot(&env("shop/prod")));
    let compiled = relay.state.evaluator(&env("shop/prod")).unwrap();
    assert_eq!(compiled.version(), 4);
    assert_eq!(
        compiled
            .evaluate("checkout", &vexil_schema::Context::new("u1"))
            .value,
        Some(&json!("newer"))
    );
    assert!(compiled.flag("initial").is_none());

    // A graceful stop closes the streams (drain) and returns.
    relay.stop().await;
    prod.wait_disconnects(1).await;
    dev.wait_disconnects(1).await;
}

#[tokio::test]
async fn changes_flow_through_a_chain_of_relays() {
    let mut origin = Origin::start(&["shop/prod"]).await;
    let first = InProcessRelay::start(relay_config(&origin.url())).await;
    first.wait_ready().await;
    let second = InProcessRelay::start(relay_config(&first.url())).await;
    second.wait_ready().await;
    let third = InProcessRelay::start(relay_config(&second.url())).await;
    third.wait_ready().await;

    let mut subs: Vec<_> = [&first, &second, &third]
        .iter()
        .map(|r| Subscriber::start(&r.url(), &sdk_key("shop/prod")))
        .collect();
    for s in &mut subs {
        s.wait_version(1).await;
    }
    for i in 0..20 {
        origin.set("shop/prod", &format!("f{}", i % 7), json!(i));
    }
    let last = origin.model.version(&env("shop/prod"));
    for s in &mut subs {
        s.wait_version(last).await;
        let seen = s.seen();
        assert_eq!(seen.values, origin.model.values(&env("shop/prod")));
        assert_eq!(seen.changes, (2..=last).collect::<Vec<_>>());
        assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    }
    // Keys travel down the chain: the last relay authenticates SDKs itself.
    assert_eq!(
        third
            .hub
            .keys()
            .lookup(&sdk_key("shop/prod"))
            .map(|e| e.to_string()),
        Some("shop/prod".into())
    );
    // A subscriber that resumes from the last relay with a current id gets no put.
    let sub = third
        .hub
        .subscribe(&env("shop/prod"), Some(&last.to_string()))
        .unwrap();
    assert_eq!(sub.start(), StartKind::Current);
}

#[tokio::test]
async fn key_rotation_upstream_applies_at_the_relay() {
    let origin = Origin::start(&["shop/prod"]).await;
    let relay = InProcessRelay::start(relay_config(&origin.url())).await;
    relay.wait_ready().await;
    let url = format!("{}/sdk/v1/snapshot", relay.url());
    assert_eq!(get(&url, Some(&sdk_key("shop/prod"))).await.0, 200);

    let hub = origin.hub.clone().unwrap();
    hub.set_environment_keys(
        &env("shop/prod"),
        &[vexil_fanout::hash_sdk_key("vxs_rotated")],
    );
    relay
        .wait_until("the rotated key is known", |r| {
            r.hub.keys().lookup("vxs_rotated").is_some()
        })
        .await;
    assert_eq!(get(&url, Some("vxs_rotated")).await.0, 200);
    assert_eq!(get(&url, Some(&sdk_key("shop/prod"))).await.0, 401);
}

#[tokio::test]
async fn sdk_streams_at_the_relay_resume_from_last_event_id() {
    let mut origin = Origin::start(&["shop/prod"]).await;
    let relay = InProcessRelay::start(relay_config(&origin.url())).await;
    relay.wait_ready().await;
    for i in 0..3 {
        origin.set("shop/prod", "f", json!(i));
    }
    relay
        .wait_until("version 4", |r| r.hub.version(&env("shop/prod")) == Some(4))
        .await;
    let open = |last: Option<&str>| {
        let mut req = reqwest::Client::new()
            .get(format!("{}/sdk/v1/stream", relay.url()))
            .header("authorization", sdk_key("shop/prod"));
        if let Some(id) = last {
            req = req.header("last-event-id", id);
        }
        req.send()
    };
    // Behind by two: exactly the two missing changes, then live ones.
    let resp = open(Some("2")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    let mut behind = resp.bytes_stream();
    // Current: nothing until the next change.
    let mut current = open(Some("4")).await.unwrap().bytes_stream();
    origin.set("shop/prod", "f", json!("live"));
    let mut text = String::new();
    while text.matches("event: ").count() < 3 {
        let chunk = tokio::time::timeout(WAIT, behind.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert_eq!(ids, ["3", "4", "5"]);
    assert!(!text.contains("event: put"), "{text}");
    let chunk = tokio::time::timeout(WAIT, current.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first = std::str::from_utf8(&chunk).unwrap();
    assert!(first.starts_with("event: patch\nid: 5\n"), "{first}");
}
