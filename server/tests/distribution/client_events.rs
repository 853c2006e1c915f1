//! Browsers' analytics events and exposures (issue 15): `POST /events/v1/bulk` with a
//! client-side key (header, or `?key=` as `sendBeacon` sends it), origins and CORS, and OFREP
//! items carrying what a page needs to record its own exposures.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use sqlx::Connection;
use vexil_testkit::{Backend, TestApp, spawn_app, spawn_app_with};

use crate::client::{ALLOWED, OTHER, client_setup};
use crate::events::wait_count;
use crate::helpers::*;

fn batch(event_key: &str, user: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    json!({"schema_version": 1,
           "sdk": {"name": "vexil-web", "version": "0.1.0", "instance_id": "page-1"},
           "events": [{"kind": "custom", "time": now, "event_key": event_key,
                       "context_key": user, "context_kind": "user"}]})
    .to_string()
}

/// `POST /events/v1/bulk` as a page would: with `Authorization` (fetch) or `?key=` and a
/// `text/plain` body (sendBeacon).
async fn send(
    app: &TestApp,
    key: &str,
    origin: Option<&str>,
    beacon: bool,
    body: String,
) -> reqwest::Response {
    let mut req = if beacon {
        reqwest::Client::new()
            .post(format!("{}/events/v1/bulk?key={key}", app.base_url))
            .header("content-type", "text/plain;charset=UTF-8")
    } else {
        reqwest::Client::new()
            .post(format!("{}/events/v1/bulk", app.base_url))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .header("x-vexil-event-schema", "1")
    };
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.body(body).send().await.unwrap()
}

async fn custom_users(app: &TestApp) -> Vec<String> {
    let mut c = sqlx::PgConnection::connect(&app.database.url)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT context_key FROM events WHERE kind = 'custom' ORDER BY context_key")
        .fetch_all(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_send_events_with_client_keys_from_allowed_origins_only() {
    let app = spawn_app(Backend::Postgres).await;
    let (sdk, client) = client_setup(&app).await;

    // Preflight of a fetch with Authorization and the schema header.
    let res = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/events/v1/bulk", app.base_url),
        )
        .header("origin", ALLOWED)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, x-vexil-event-schema",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["access-control-allow-origin"], ALLOWED);
    let allowed = res.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for h in ["authorization", "content-type", "x-vexil-event-schema"] {
        assert!(allowed.contains(h), "{h} in {allowed}");
    }

    // fetch(keepalive) with the key in Authorization.
    let res = send(
        &app,
        &client,
        Some(ALLOWED),
        false,
        batch("buy", "u-header"),
    )
    .await;
    assert_eq!(res.headers()["access-control-allow-origin"], ALLOWED);
    assert_eq!(expect(res, 200).await["accepted"], 1);
    // sendBeacon: text/plain, the key in the query.
    let res = send(&app, &client, Some(ALLOWED), true, batch("buy", "u-beacon")).await;
    assert_eq!(expect(res, 200).await["accepted"], 1);
    // A mobile app (no Origin) may use the client key too.
    let res = send(&app, &client, None, false, batch("buy", "u-app")).await;
    assert_eq!(expect(res, 200).await["accepted"], 1);

    // Refused: another origin (header or query), a server-side key from a browser, a
    // server-side key in the URL, no key. Nothing the browser may read on refusals.
    for (key, origin, beacon, status) in [
        (client.as_str(), Some(OTHER), false, 403),
        (client.as_str(), Some(OTHER), true, 403),
        (sdk.as_str(), Some(ALLOWED), false, 403),
        (sdk.as_str(), Some(ALLOWED), true, 403),
        (sdk.as_str(), None, true, 401),
        ("", None, true, 401),
    ] {
        let res = send(&app, key, origin, beacon, batch("buy", "refused")).await;
        assert_eq!(res.status(), status, "{key:?} {origin:?} beacon={beacon}");
        assert!(res.headers().get("access-control-allow-origin").is_none());
    }
    // The server-side key still works from a server.
    let res = send(&app, &sdk, None, false, batch("buy", "u-server")).await;
    assert_eq!(expect(res, 200).await["accepted"], 1);

    wait_count(&app.database, "custom", 4).await;
    assert_eq!(
        custom_users(&app).await,
        ["u-app", "u-beacon", "u-header", "u-server"]
    );
    app.stop().await;
}

/// A client-side experiment flag `checkout` (50/50, `experiment`) in prod.
async fn client_experiment(app: &TestApp) {
    expect(
        app.post(
            "/api/v1/projects/p/flags",
            &json!({"key": "checkout", "name": "checkout", "kind": "boolean", "client_side": true,
                    "variations": [{"value": true}, {"value": false}]}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    expect(
        app.put(
            &config_path("p", "checkout", "prod"),
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

async fn ofrep_bulk(app: &TestApp, key: &str, user: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/ofrep/v1/evaluate/flags", app.base_url))
        .header("authorization", format!("Bearer {key}"))
        .json(&json!({"context": {"targetingKey": user}}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_bulk_items_carry_experiment_metadata_and_record_no_exposure() {
    let app = spawn_app(Backend::Postgres).await;
    let (sdk, client) = client_setup(&app).await;
    client_experiment(&app).await;

    let body = expect(ofrep_bulk(&app, &client, "u1").await, 200).await;
    let items = body["flags"].as_array().unwrap();
    let checkout = items.iter().find(|i| i["key"] == "checkout").unwrap();
    let meta = &checkout["metadata"];
    assert_eq!(meta["inExperiment"], true, "{checkout}");
    let index = meta["variationIndex"].as_u64().unwrap();
    assert_eq!(checkout["value"], json!(index == 0), "{checkout}");
    assert!(meta["flagVersion"].as_u64().unwrap() >= 1, "{checkout}");
    // Items outside experiments carry no per-item metadata.
    let banner = items.iter().find(|i| i["key"] == "banner").unwrap();
    assert!(banner.get("metadata").is_none(), "{banner}");

    // The page records its exposure itself: the client-key evaluation recorded none, the
    // server-side key's did (recorded in order, so u1's would be in by then).
    expect(ofrep_bulk(&app, &sdk, "u2").await, 200).await;
    wait_count(&app.database, "exposure", 1).await;
    let mut c = sqlx::PgConnection::connect(&app.database.url)
        .await
        .unwrap();
    let users: Vec<String> = sqlx::query_scalar(
        "SELECT context_key FROM events WHERE kind = 'exposure' ORDER BY context_key",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(users, ["u2"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keys_are_rate_limited_like_sdk_keys() {
    // One request per second, burst one: of 20 sent at once, some are refused (however slow
    // the machine, 20 requests do not spread over 19 seconds) and the first passes.
    let app = spawn_app_with(Backend::Postgres, |c| c.distribution.ofrep_rate_limit = 1).await;
    let (_, client) = client_setup(&app).await;
    let answers = futures::future::join_all((0..20).map(|_| ofrep_bulk(&app, &client, "u"))).await;
    let ok = answers.iter().filter(|r| r.status() == 200).count();
    let limited: Vec<&reqwest::Response> = answers.iter().filter(|r| r.status() == 429).collect();
    assert!(ok >= 1, "{ok} passed");
    assert!(!limited.is_empty(), "none limited");
    assert_eq!(ok + limited.len(), 20);
    assert!(limited[0].headers().get("retry-after").is_some());
    app.stop().await;
}
