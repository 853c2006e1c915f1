//! Readiness and authentication at the relay's edge.

use serde_json::Value;

use crate::harness::*;

#[tokio::test]
async fn nothing_is_served_before_the_relay_holds_every_environment() {
    // The origin is down: the relay cannot load anything.
    let mut origin = Origin::start(&["shop/prod"]).await;
    origin.kill().await;
    let relay = InProcessRelay::start(relay_config(&origin.url())).await;

    let (status, retry, body) = get(&format!("{}/readyz", relay.url()), None).await;
    assert_eq!(status, 503);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "loading");
    assert_eq!(body["upstream"], "disconnected");
    assert!(!retry, "a probe answers now; it never asks to be retried");
    assert_eq!(get(&format!("{}/healthz", relay.url()), None).await.0, 200);
    // Every serving endpoint refuses, OFREP as much as the streams and the snapshot: an
    // evaluation on no state would answer FLAG_NOT_FOUND as if the flag did not exist.
    for path in [
        "/sdk/v1/stream",
        "/sdk/v1/snapshot",
        "/relay/v1/stream",
        "/ofrep/v1/configuration",
    ] {
        let (status, retry, body) = get(
            &format!("{}{path}", relay.url()),
            Some(&sdk_key("shop/prod")),
        )
        .await;
        assert_eq!(status, 503, "{path}");
        assert!(retry, "{path}: Retry-After");
        assert!(body.contains("loading"), "{path}: {body}");
    }
    for path in [
        "/ofrep/v1/evaluate/flags/initial",
        "/ofrep/v1/evaluate/flags",
    ] {
        let (status, retry, body) =
            post_ofrep(&format!("{}{path}", relay.url()), &sdk_key("shop/prod")).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert!(retry, "{path}: Retry-After");
        assert!(body.contains("loading"), "{path}: {body}");
    }

    origin.restart().await;
    relay.wait_ready().await;
    let (status, _, body) = get(&format!("{}/readyz", relay.url()), None).await;
    assert_eq!(status, 200, "{body}");
    let mut sub = Subscriber::start(&relay.url(), &sdk_key("shop/prod"));
    sub.wait_version(1).await;
    let (status, _, body) = post_ofrep(
        &format!("{}/ofrep/v1/evaluate/flags/initial", relay.url()),
        &sdk_key("shop/prod"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["value"], "v1");
}

#[tokio::test]
async fn a_relay_is_not_ready_while_any_environment_is_missing() {
    // Upstream scopes the relay to two environments but has a state for one only.
    let origin = Origin::start(&["shop/prod"]).await;
    origin.widen_scope("shop/late");
    let relay = InProcessRelay::start(relay_config(&origin.url())).await;
    relay
        .wait_until("shop/prod is loaded and shop/late known", |r| {
            r.hub.version(&env("shop/prod")).is_some()
                && r.state.scope().contains(&env("shop/late"))
        })
        .await;
    assert!(!relay.state.is_ready());
    let (status, _, body) = get(&format!("{}/readyz", relay.url()), None).await;
    assert_eq!(status, 503);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (body["environments"].as_u64(), body["loaded"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(body["upstream"], "connected");
    let (status, retry, _) = get(
        &format!("{}/sdk/v1/snapshot", relay.url()),
        Some(&sdk_key("shop/prod")),
    )
    .await;
    assert_eq!((status, retry), (503, true));

    let snapshot = vexil_schema::EnvironmentSnapshot {
        version: 3,
        ..Default::default()
    };
    let hub = origin.hub.clone().unwrap();
    hub.publish_snapshot(&env("shop/late"), &snapshot).unwrap();
    relay.wait_ready().await;
    let (status, _, body) = get(
        &format!("{}/sdk/v1/snapshot", relay.url()),
        Some(&sdk_key("shop/late")),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.starts_with("{\"version\":3"), "{body}");
}

#[tokio::test]
async fn keys_are_checked_locally() {
    let origin = Origin::start(&["shop/prod", "shop/dev"]).await;
    let relay = InProcessRelay::start(relay_config(&origin.url())).await;
    relay.wait_ready().await;
    let stream = format!("{}/sdk/v1/stream", relay.url());
    let snapshot = format!("{}/sdk/v1/snapshot", relay.url());

    // Missing or unknown SDK key: 401, no body.
    for url in [&stream, &snapshot] {
        let (status, _, body) = get(url, None).await;
        assert_eq!((status, body.as_str()), (401, ""));
        assert_eq!(get(url, Some("vxs_unknown")).await.0, 401);
    }
    // An SDK key of an environment outside the relay's scope is unknown here: 401.
    assert_eq!(get(&snapshot, Some(&sdk_key("other/prod"))).await.0, 401);
    // Each key reads its own environment and no other.
    for e in ["shop/prod", "shop/dev"] {
        let (status, _, body) = get(&snapshot, Some(&sdk_key(e))).await;
        assert_eq!(status, 200);
        let snap: vexil_schema::EnvironmentSnapshot = serde_json::from_str(&body).unwrap();
        assert_eq!(snap, origin.model.snapshot(&env(e)));
    }
    // A relay key is not an SDK key (403), and an SDK key cannot stream the relay
    // protocol (401: relays only accept relay keys).
    let (status, _, body) = get(&snapshot, Some(RELAY_KEY)).await;
    assert_eq!(status, 403, "{body}");
    let (status, _, _) = get(
        &format!("{}/relay/v1/stream", relay.url()),
        Some(&sdk_key("shop/prod")),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_revoked_key_loses_its_open_streams_and_other_keys_keep_theirs() {
    let origin = Origin::start(&["shop/prod"]).await;
    let (old, new) = (sdk_key("shop/prod"), "sdk-rotated-in".to_owned());
    origin.set_keys("shop/prod", &[&old, &new]);
    let relay = InProcessRelay::start(relay_config(&origin.url())).await;
    relay.wait_ready().await;
    relay
        .wait_until("the relay knows both keys", |r| {
            r.hub.keys().lookup(&new).is_some()
        })
        .await;
    let mut revoked = Subscriber::start(&relay.url(), &old);
    let mut kept = Subscriber::start(&relay.url(), &new);
    revoked.wait_version(1).await;
    kept.wait_version(1).await;

    // Upstream revokes the old key: the relay learns it from a `keys` event and ends the
    // stream at once; reconnecting with it is refused (the subscriber retries every 50 ms).
    origin.set_keys("shop/prod", &[&new]);
    revoked.wait_disconnects(1).await;
    let (status, _, _) = get(&format!("{}/sdk/v1/snapshot", relay.url()), Some(&old)).await;
    assert_eq!(status, 401);
    revoked
        .wait("three reconnections refused", |s| s.refused >= 3)
        .await;
    assert_eq!(
        revoked.seen().connections,
        1,
        "the revoked key cannot reconnect"
    );

    // The other key's stream is untouched and still receives changes.
    let mut origin = origin;
    origin.set("shop/prod", "after", serde_json::json!("v2"));
    kept.wait_version(2).await;
    let seen = kept.seen();
    assert_eq!((seen.connections, seen.disconnects), (1, 0));
}
