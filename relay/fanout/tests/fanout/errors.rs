use vexil_fanout::{AuthError, Hub, HubConfig, PublishError, SnapshotOutcome};

use crate::helpers::*;

#[tokio::test]
async fn endpoints_answer_503_with_retry_after_before_the_first_snapshot() {
    let app = spawn(HubConfig::default()).await;
    for path in ["/sdk/v1/stream", "/sdk/v1/snapshot"] {
        let resp = app
            .client
            .get(app.url(path))
            .header("authorization", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503, "{path}");
        assert_eq!(resp.headers()["retry-after"], "5");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["status"], 503);
    }
    // A change before any snapshot is refused and asks for a resync.
    let err = app.hub.publish_change(&env(), &delete(1, "a")).unwrap_err();
    assert!(matches!(err, PublishError::NoSnapshot) && err.needs_resync());
}

#[tokio::test]
async fn missing_or_unknown_keys_get_401_without_body() {
    let app = spawn(HubConfig::default()).await;
    app.hub
        .publish_snapshot(&env(), &snapshot(1, vec![]))
        .unwrap();
    for path in ["/sdk/v1/stream", "/sdk/v1/snapshot"] {
        for key in [None, Some("wrong"), Some("Bearer wrong"), Some("Basic abc")] {
            let mut req = app.client.get(app.url(path));
            if let Some(k) = key {
                req = req.header("authorization", k);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{path} {key:?}");
            assert!(resp.bytes().await.unwrap().is_empty());
        }
        let ok = app
            .client
            .get(app.url(path))
            .header("authorization", format!("Bearer {KEY}"))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn revoked_keys_stop_working() {
    let app = spawn(HubConfig::default()).await;
    app.hub
        .publish_snapshot(&env(), &snapshot(1, vec![]))
        .unwrap();
    app.keys.set_environment_keys(&env(), &[]);
    let resp = app
        .client
        .get(app.url("/sdk/v1/snapshot"))
        .header("authorization", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn forbidden_and_unavailable_auth_answers_map_to_403_and_503() {
    let hub = Hub::new(HubConfig::default());
    hub.publish_snapshot(&env(), &snapshot(1, vec![])).unwrap();
    let auth = |key: &str| match key {
        "ok" => Ok(env()),
        "client-side" => Err(AuthError::Forbidden(
            "client-side keys cannot stream".into(),
        )),
        "db-down" => Err(AuthError::Unavailable),
        _ => Err(AuthError::Unauthorized),
    };
    let addr = serve(hub, auth).await;
    let client = reqwest::Client::new();
    let get = |key: &'static str| {
        client
            .get(format!("http://{addr}/sdk/v1/snapshot"))
            .header("authorization", key)
            .send()
    };
    assert_eq!(get("ok").await.unwrap().status(), 200);
    let forbidden = get("client-side").await.unwrap();
    assert_eq!(forbidden.status(), 403);
    assert_eq!(
        forbidden.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = forbidden.json().await.unwrap();
    assert_eq!(body["detail"], "client-side keys cannot stream");
    let unavailable = get("db-down").await.unwrap();
    assert_eq!(unavailable.status(), 503);
    assert!(unavailable.headers().contains_key("retry-after"));
    assert_eq!(get("other").await.unwrap().status(), 401);
}

#[tokio::test]
async fn out_of_sequence_changes_are_refused_with_typed_errors() {
    let hub = Hub::new(HubConfig::default());
    let e = env();
    assert_eq!(
        hub.publish_snapshot(&e, &snapshot(5, vec![flag("a", 0)]))
            .unwrap(),
        SnapshotOutcome::Replaced { previous: None }
    );
    let dup = hub.publish_change(&e, &patch(5, flag("a", 1))).unwrap_err();
    assert!(matches!(dup, PublishError::Duplicate { version: 5 }) && !dup.needs_resync());
    let stale = hub.publish_change(&e, &patch(3, flag("a", 1))).unwrap_err();
    assert!(matches!(stale, PublishError::Stale { current: 5, got: 3 }) && !stale.needs_resync());
    let gap = hub.publish_change(&e, &patch(7, flag("a", 1))).unwrap_err();
    assert!(matches!(gap, PublishError::Gap { current: 5, got: 7 }) && gap.needs_resync());
    assert_eq!(hub.version(&e), Some(5));
    assert_eq!(hub.publish_change(&e, &patch(6, flag("a", 1))).unwrap(), 6);

    // Snapshots: same version ignored, older refused unless forced.
    assert_eq!(
        hub.publish_snapshot(&e, &snapshot(6, vec![])).unwrap(),
        SnapshotOutcome::Unchanged
    );
    assert!(matches!(
        hub.publish_snapshot(&e, &snapshot(2, vec![])),
        Err(PublishError::Stale { current: 6, got: 2 })
    ));
    assert_eq!(
        hub.replace_snapshot(&e, &snapshot(2, vec![])).unwrap(),
        SnapshotOutcome::Replaced { previous: Some(6) }
    );
    assert_eq!(hub.version(&e), Some(2));
}
