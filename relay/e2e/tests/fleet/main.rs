//! The fleet view end to end (issue 16): two control-plane instances on one PostgreSQL and
//! an edge relay, real SDK streams on each, a flag change, and `GET …/fleet` on either
//! instance showing the whole fleet and the change's convergence curve reaching 100 %; the
//! `vexil_fleet_*` and delivery metric families scraped and parsed; flag usage from SDK
//! evaluation summaries and the stale-flag report under a manual clock, on both engines.
//! `chain`: relays chained below a relay, whose reports their parent forwards.

#[allow(dead_code)]
#[path = "../../../tests/relay/harness.rs"]
mod harness;

mod chain;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use vexil_server::delivery::{Clock, ManualClock};
use vexil_server::{Config, Server};
use vexil_testkit::sse::SseReader;
use vexil_testkit::{Backend, ServerTask, TestApp, TestDatabase, spawn_app, spawn_app_with};

use crate::harness::{InProcessRelay, relay_config};

/// The relay binary (unused here; the harness names it).
#[allow(dead_code)]
const RELAY_BIN: &str = env!("CARGO_BIN_EXE_vexil-e2e-relay");

const WAIT: Duration = Duration::from_secs(30);

async fn expect(res: reqwest::Response, status: u16) -> Value {
    let got = res.status().as_u16();
    let body = res.text().await.unwrap();
    assert_eq!(got, status, "{body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// An SDK stream whose first frame (the `put`) was read.
async fn stream(base: &str, key: &str) -> SseReader {
    let res = reqwest::Client::new()
        .get(format!("{base}/sdk/v1/stream"))
        .header("authorization", key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut sse = SseReader::new(res);
    let put = tokio::time::timeout(WAIT, sse.next_event())
        .await
        .expect("the put arrives")
        .expect("the stream stays open");
    assert_eq!(put.event, "put");
    sse
}

/// Reads `sse` until a `patch` of `version` arrives.
async fn until_version(sse: &mut SseReader, version: u64) {
    tokio::time::timeout(WAIT, async {
        loop {
            let ev = sse.next_event().await.expect("the stream stays open");
            if ev.event == "patch" && ev.json()["version"].as_u64() == Some(version) {
                return;
            }
        }
    })
    .await
    .expect("the change arrives in time");
}

/// Polls `GET url` (with `token`) until `done` holds for its body, or fails with the last.
async fn poll(url: &str, token: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        every.tick().await;
        let body = expect(
            client.get(url).bearer_auth(token).send().await.unwrap(),
            200,
        )
        .await;
        if done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}: {body:#}"
        );
    }
}

async fn setup(app: &TestApp) -> (String, String) {
    app.project("shop", &["prod"]).await;
    let secret = |v: Value| v["secret"].as_str().unwrap().to_owned();
    let sdk = secret(
        expect(
            app.post(
                "/api/v1/projects/shop/environments/prod/sdk-keys",
                &json!({"name": "fleet"}),
            )
            .send()
            .await
            .unwrap(),
            201,
        )
        .await,
    );
    let relay = secret(
        expect(
            app.post(
                "/api/v1/relay-keys",
                &json!({"name": "edge", "environments": [{"project": "shop", "environment": "prod"}]}),
            )
            .send()
            .await
            .unwrap(),
            201,
        )
        .await,
    );
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
    (sdk, relay)
}

/// The samples of a Prometheus text exposition: `name{labels}` → value, every value parsed.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        out.insert(series.to_owned(), value);
    }
    out
}

const RELAY_STREAMS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_converges_across_a_relay_and_two_server_instances() {
    let a = spawn_app(Backend::Postgres).await;
    let (sdk_key, relay_key) = setup(&a).await;
    // A second instance on the same database.
    let url = a.database.url.clone();
    let b = spawn_app_with(Backend::Postgres, move |c| c.database_url = url).await;
    let mut config = relay_config(&a.base_url);
    config.relay_key = relay_key;
    config.relay_id = Some("edge-1".into());
    config.fleet_report_min_gap = Duration::from_millis(100);
    let mut relay = InProcessRelay::start(config).await;
    relay.wait_ready().await;

    let mut streams = Vec::new();
    for _ in 0..RELAY_STREAMS {
        streams.push(stream(&relay.url(), &sdk_key).await);
    }
    for _ in 0..3 {
        streams.push(stream(&a.base_url, &sdk_key).await);
    }
    for _ in 0..2 {
        streams.push(stream(&b.base_url, &sdk_key).await);
    }
    let total = streams.len() as u64;
    let fleet_a = a.url("/api/v1/projects/shop/environments/prod/fleet");
    let fleet_b = b.url("/api/v1/projects/shop/environments/prod/fleet");
    poll(&fleet_a, &a.admin_token, "every stream is reported", |f| {
        f["sdk_streams"].as_u64() == Some(total)
    })
    .await;

    let changed = expect(
        a.patch(
            "/api/v1/projects/shop/flags/checkout/environments/prod",
            &json!({"on": true}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    let _ = changed;
    let version = poll(&fleet_a, &a.admin_token, "the version moves", |f| {
        f["changes"][0]["version"].as_u64().is_some()
    })
    .await["environment_version"]
        .as_u64()
        .unwrap();
    for s in &mut streams {
        until_version(s, version).await;
    }

    // Either instance shows the whole fleet converged.
    for (url, token) in [(&fleet_a, &a.admin_token), (&fleet_b, &a.admin_token)] {
        let f = poll(url, token, "the change reached every stream", |f| {
            let c = &f["changes"][0];
            c["version"].as_u64() == Some(version)
                && c["delivered"].as_u64() == Some(total)
                && c["p100_ms"].is_number()
        })
        .await;
        let c = &f["changes"][0];
        assert_eq!(c["streams"].as_u64(), Some(total), "{f:#}");
        assert_eq!(c["delivered_percent"].as_f64(), Some(100.0), "{f:#}");
        let (p50, p90, p99, p100) = (
            c["p50_ms"].as_f64().unwrap(),
            c["p90_ms"].as_f64().unwrap(),
            c["p99_ms"].as_f64().unwrap(),
            c["p100_ms"].as_f64().unwrap(),
        );
        assert!(p50 <= p90 && p90 <= p99 && p99 <= p100, "{c}");
        assert_eq!(f["on_latest_percent"].as_f64(), Some(100.0), "{f:#}");
        assert_eq!(f["streams_on_latest"].as_u64(), Some(total));
        assert_eq!(f["direct_sdk_streams"].as_u64(), Some(5), "{f:#}");
        assert_eq!(f["servers"].as_array().unwrap().len(), 2, "{f:#}");
        let relays = f["relays"].as_array().unwrap();
        assert_eq!(relays.len(), 1, "{f:#}");
        assert_eq!(relays[0]["id"], "edge-1");
        assert_eq!(relays[0]["upstream"], "connected");
        assert_eq!(
            relays[0]["subscribers"].as_u64(),
            Some(RELAY_STREAMS as u64)
        );
        assert_eq!(relays[0]["environment_version"].as_u64(), Some(version));
    }

    // The same as Prometheus metrics, in families that parse.
    let deadline = tokio::time::Instant::now() + WAIT;
    let env = "environment=\"shop/prod\"";
    loop {
        let text = reqwest::get(a.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains("# TYPE vexil_fleet_sdk_streams gauge"),
            "{text}"
        );
        assert!(text.contains("# TYPE vexil_fanout_delivery_seconds histogram"));
        let samples = parse_metrics(&text);
        let on_latest = samples
            .get(&format!("vexil_fleet_streams_on_latest_ratio{{{env}}}"))
            .copied();
        let streams_now = samples
            .get(&format!("vexil_fleet_sdk_streams{{{env}}}"))
            .copied();
        let converged = samples
            .get(&format!(
                "vexil_fleet_convergence_seconds{{{env},quantile=\"1\"}}"
            ))
            .copied();
        if on_latest == Some(1.0)
            && streams_now == Some(total as f64)
            && converged.is_some_and(f64::is_finite)
        {
            assert_eq!(
                samples
                    .get(&format!("vexil_fleet_relays{{{env}}}"))
                    .copied(),
                Some(1.0)
            );
            assert!(
                samples
                    .iter()
                    .any(|(k, v)| k.starts_with("vexil_fanout_delivery_seconds_count") && *v > 0.0)
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fleet gauges never settled: {on_latest:?} {streams_now:?} {converged:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A relay key cannot report for an environment outside its scope, nor anyone without one.
    let refused = reqwest::Client::new()
        .post(a.url("/relay/v1/fleet"))
        .json(&json!({"relay_id": "x", "version": "0", "upstream_connected": true, "environments": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    drop(streams);
    relay.stop().await;
    b.stop().await;
    a.stop().await;
}

/// A server on `backend` whose clock the test moves.
async fn clocked(
    backend: Backend,
) -> (
    TestDatabase,
    Arc<ManualClock>,
    String,
    ServerTask<vexil_server::StartError>,
    String,
) {
    vexil_testkit::init_tracing();
    let database = TestDatabase::create(backend).await;
    let clock = ManualClock::new(OffsetDateTime::now_utc());
    let token = format!("vxa_{}", uuid::Uuid::new_v4().simple());
    let mut config = Config::with_database(database.url.clone());
    config.bootstrap_token = Some(token.clone());
    config.drain_ms = 200;
    config.metrics = false;
    let server = Server::build(config)
        .await
        .expect("the server starts")
        .with_clock(Clock::manual(clock.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = ServerTask::spawn("the test server", move |stop| {
        server.serve(listener, async {
            let _ = stop.await;
        })
    });
    (database, clock, token, task, base)
}

async fn usage_and_stale_flags(backend: Backend) {
    let (_db, clock, token, task, base) = clocked(backend).await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
    };
    expect(
        post("/api/v1/projects", json!({"key": "p", "name": "p"}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    expect(
        post(
            "/api/v1/projects/p/environments",
            json!({"key": "e", "name": "e"}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    for (key, temporary) in [("old-temp", true), ("used", false), ("kept", false)] {
        expect(
            post(
                "/api/v1/projects/p/flags",
                json!({"key": key, "name": key, "kind": "boolean", "temporary": temporary,
                       "variations": [{"value": true}, {"value": false}]}),
            )
            .send()
            .await
            .unwrap(),
            201,
        )
        .await;
    }
    let sdk = expect(
        post(
            "/api/v1/projects/p/environments/e/sdk-keys",
            json!({"name": "s"}),
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
    // An SDK's evaluation summary (at the real time: the ingestion checks it).
    let now = u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap();
    let batch = json!({"schema_version": 1,
        "sdk": {"name": "vexil-test", "version": "9.9.9", "instance_id": "i-1"},
        "events": [{"kind": "summary", "start": now - 1000, "end": now, "environment_version": 1,
                    "counters": [
                        {"flag_key": "used", "variation": 0, "reason": "FALLTHROUGH", "count": 7},
                        {"flag_key": "used", "variation": 1, "reason": "RULE_MATCH", "count": 2},
                        {"flag_key": "used", "reason": "ERROR", "count": 1}]}]});
    let res = http
        .post(format!("{base}/events/v1/bulk"))
        .header("authorization", &sdk)
        .json(&batch)
        .send()
        .await
        .unwrap();
    expect(res, 200).await;

    let get = |path: String| http.get(format!("{base}{path}")).bearer_auth(&token).send();
    let usage = expect(
        get("/api/v1/projects/p/environments/e/flag-usage".into())
            .await
            .unwrap(),
        200,
    )
    .await;
    let used = &usage.as_array().unwrap()[0];
    assert_eq!(used["flag_key"], "used");
    assert_eq!(used["evaluations"].as_u64(), Some(10));
    assert_eq!(used["last_evaluated_ms"].as_u64(), Some(now));
    assert_eq!(
        used["by_variation"],
        json!([{"variation": null, "evaluations": 1}, {"variation": 0, "evaluations": 7},
               {"variation": 1, "evaluations": 2}])
    );
    assert_eq!(used["sdks"][0]["name"], "vexil-test");
    assert_eq!(used["sdks"][0]["version"], "9.9.9");

    let stale = "/api/v1/projects/p/environments/e/stale-flags";
    let fresh = expect(get(stale.into()).await.unwrap(), 200).await;
    assert_eq!(
        fresh["flags"],
        json!([]),
        "nothing is stale on day one: {fresh:#}"
    );

    // 45 days later, with nothing evaluated or changed since.
    clock.advance(Duration::from_secs(45 * 86_400));
    let report = expect(get(stale.into()).await.unwrap(), 200).await;
    let reasons = |key: &str| -> Vec<Value> {
        report["flags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == key)
            .unwrap_or_else(|| panic!("{key} not in {report:#}"))["reasons"]
            .as_array()
            .unwrap()
            .clone()
    };
    let kinds = |key: &str| -> Vec<String> {
        reasons(key)
            .iter()
            .map(|r| r["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        kinds("old-temp"),
        ["not_evaluated", "past_lifetime", "uniform"]
    );
    assert_eq!(kinds("kept"), ["not_evaluated", "uniform"]);
    assert_eq!(kinds("used"), ["not_evaluated", "uniform"]);
    let used = reasons("used");
    assert_eq!(used[0]["last_evaluated_ms"].as_u64(), Some(now));
    // Whole days from the summary's end (real time, just after the clock started) to the
    // clock's now.
    let clock_ms = u64::try_from(clock.now().unix_timestamp_nanos() / 1_000_000).unwrap();
    assert_eq!(
        used[0]["days"].as_u64(),
        Some((clock_ms - now) / 86_400_000)
    );
    assert_eq!(used[1]["because"], "off");
    assert_eq!(used[1]["variation"].as_u64(), Some(1));
    let temp = reasons("old-temp");
    assert!(temp[0]["last_evaluated_ms"].is_null());
    let created = temp[1]["created_at_ms"].as_u64().unwrap();
    assert!(created >= clock_ms - 45 * 86_400_000 && created < clock_ms);
    assert_eq!(
        temp[1]["age_days"].as_u64(),
        Some((clock_ms - created) / 86_400_000)
    );

    // Thresholds from the query.
    let lenient = expect(
        get(format!(
            "{stale}?unused_days=60&lifetime_days=90&uniform_days=60"
        ))
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(lenient["flags"], json!([]), "{lenient:#}");
    let only_lifetime = expect(
        get(format!(
            "{stale}?unused_days=60&lifetime_days=30&uniform_days=60"
        ))
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(only_lifetime["flags"].as_array().unwrap().len(), 1);
    assert_eq!(only_lifetime["flags"][0]["key"], "old-temp");

    task.stop(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_usage_and_stale_flags_on_postgres() {
    usage_and_stale_flags(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_usage_and_stale_flags_on_sqlite() {
    usage_and_stale_flags(Backend::Sqlite).await;
}
