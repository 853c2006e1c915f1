//! Events through a relay into the real control plane on PostgreSQL: forwarding with
//! acknowledgement after upstream's commit, rejections mapped back to each SDK's batch, `503`
//! when the buffer is full or upstream unreachable, OFREP exposures at the relay.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sqlx::Connection;
use vexil_relay::RelayConfig;
use vexil_testkit::{Backend, TestApp, spawn_app};

use crate::cable::Cable;
use crate::harness::{InProcessRelay, WAIT};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn expect(res: reqwest::Response, status: u16) -> Value {
    let got = res.status().as_u16();
    let body = res.text().await.unwrap();
    assert_eq!(got, status, "{body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// Project `shop` with `prod`, its SDK key and a relay key for it.
async fn setup(app: &TestApp) -> (String, String) {
    app.project("shop", &["prod"]).await;
    let sdk = expect(
        app.post(
            "/api/v1/projects/shop/environments/prod/sdk-keys",
            &json!({"name": "tests"}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let relay = expect(
        app.post(
            "/api/v1/relay-keys",
            &json!({"name": "edge", "environments": [{"project": "shop", "environment": "prod"}]}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    (sdk, relay)
}

fn config(upstream: &str, relay_key: &str) -> RelayConfig {
    let mut c = RelayConfig::new(upstream, relay_key);
    c.upstream_backoff_initial = Duration::from_millis(50);
    c.upstream_backoff_max = Duration::from_millis(500);
    c.drain_window = Duration::from_millis(200);
    c
}

fn custom(i: usize) -> Value {
    json!({"kind": "custom", "time": now_ms(), "event_key": "purchase",
           "context_key": format!("user-{i}"), "value": 2.0})
}

async fn post(base: &str, key: &str, events: Vec<Value>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/events/v1/bulk"))
        .bearer_auth(key)
        .json(&json!({"schema_version": 1,
                      "sdk": {"name": "test", "version": "0", "instance_id": "i"},
                      "events": events}))
        .send()
        .await
        .unwrap()
}

async fn stored(app: &TestApp, kind: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(&app.database.url)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE kind = $1")
        .bind(kind)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_acknowledges_what_upstream_committed() {
    let app = spawn_app(Backend::Postgres).await;
    let (sdk, relay_key) = setup(&app).await;
    let mut relay = InProcessRelay::start(config(&app.base_url, &relay_key)).await;
    relay.wait_ready().await;
    let base = relay.url();
    // 20 SDKs at once, 50 events each; every SDK's event 7 is malformed.
    let sends = (0..20).map(|s| {
        let base = base.clone();
        let sdk = sdk.clone();
        async move {
            let mut events: Vec<Value> = (0..50).map(|i| custom(s * 100 + i)).collect();
            events[7] = json!({"kind": "custom", "time": now_ms(), "event_key": ""});
            expect(post(&base, &sdk, events).await, 200).await
        }
    });
    let answers = futures::future::join_all(sends).await;
    for a in &answers {
        assert_eq!(a["accepted"], 49, "{a}");
        assert_eq!(a["rejected"].as_array().unwrap().len(), 1, "{a}");
        assert_eq!(a["rejected"][0]["index"], 7, "{a}");
    }
    // Acknowledged means committed upstream: every accepted event is there, no waiting.
    assert_eq!(stored(&app, "custom").await, 20 * 49);
    // Keys the relay does not know are refused at the relay.
    assert_eq!(
        post(&base, "vxs_unknown", vec![custom(0)]).await.status(),
        401
    );
    relay.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_answers_503_when_full_or_upstream_is_gone() {
    let app = spawn_app(Backend::Postgres).await;
    let (sdk, relay_key) = setup(&app).await;
    let mut cable = Cable::connect(app.addr).await;
    let mut c = config(&cable.url(), &relay_key);
    c.events_buffer = 100;
    c.events_upstream_attempts = 2;
    c.events_upstream_timeout = Duration::from_secs(2);
    let mut relay = InProcessRelay::start(c).await;
    relay.wait_ready().await;
    let base = relay.url();

    // More events than the buffer holds: refused at once, with Retry-After.
    let res = post(&base, &sdk, (0..101).map(custom).collect()).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    expect(post(&base, &sdk, (0..100).map(custom).collect()).await, 200).await;

    // Upstream unreachable: 503 after the attempts, nothing acknowledged.
    cable.cut().await;
    let res = tokio::time::timeout(WAIT, post(&base, &sdk, vec![custom(1)]))
        .await
        .expect("the relay answers within its attempts");
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(stored(&app, "custom").await, 100);

    // Back: the SDK's retry is acknowledged and stored.
    cable.reconnect(app.addr).await;
    expect(post(&base, &sdk, vec![custom(1)]).await, 200).await;
    assert_eq!(stored(&app, "custom").await, 101);
    relay.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofrep_at_the_relay_records_exposures_upstream() {
    let app = spawn_app(Backend::Postgres).await;
    let (sdk, relay_key) = setup(&app).await;
    expect(
        app.post(
            "/api/v1/projects/shop/flags",
            &json!({"key": "checkout", "name": "checkout", "kind": "boolean",
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
            "/api/v1/projects/shop/flags/checkout/environments/prod",
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
    let mut relay = InProcessRelay::start(config(&app.base_url, &relay_key)).await;
    relay.wait_ready().await;
    relay
        .wait_until("the flag reached the relay", |r| {
            r.state
                .evaluator(&vexil_schema::stream::EnvironmentId::parse("shop/prod").unwrap())
                .is_some_and(|c| c.flag("checkout").is_some())
        })
        .await;
    for user in ["u1", "u1", "u2"] {
        let res = reqwest::Client::new()
            .post(format!("{}/ofrep/v1/evaluate/flags/checkout", relay.url()))
            .bearer_auth(&sdk)
            .json(&json!({"context": {"targetingKey": user}}))
            .send()
            .await
            .unwrap();
        expect(res, 200).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while stored(&app, "exposure").await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "exposures never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored(&app, "exposure").await, 2);
    relay.stop().await;
    app.stop().await;
}
