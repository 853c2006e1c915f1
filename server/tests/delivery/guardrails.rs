//! Guardrails end to end: real SDK traffic where the new variation produces five times the
//! errors of the old one rolls the plan back by itself within one check interval, SDKs and the
//! stream receive the rollback, and a webhook receiver gets a signed delivery retried after a
//! first 500; a PromQL guardrail against a real Prometheus does the same.

use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use vexil_sdk::{Client, Context, EventsConfig};
use vexil_testkit::Backend;

use crate::helpers::*;

const SECRET: &str = "a-very-secret-signing-key";
const MINUTE: Duration = Duration::from_secs(60);

pub(crate) fn plans_path(flag: &str) -> String {
    format!("{}/release-plans", config_path("shop", flag))
}

/// Polls the plan until `done` holds (the worker runs on its own), failing after [`WAIT`].
pub(crate) async fn plan_until(
    app: &App,
    flag: &str,
    id: &Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("{}/{id}", plans_path(flag));
    tokio::time::timeout(WAIT, async {
        loop {
            let p = expect(app.get(&path).send().await.unwrap(), 200).await;
            if done(&p) {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the plan reaches the expected state in time")
}

async fn sdk_key(app: &App) -> String {
    let key = expect(
        app.post(
            "/api/v1/projects/shop/environments/prod/sdk-keys",
            &json!({"name": "traffic"}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    key["secret"].as_str().unwrap().to_owned()
}

/// A real SDK client of `prod`, ready.
pub(crate) async fn client(app: &App) -> Client {
    let client = Client::builder(sdk_key(app).await)
        .base_url(app.base_url.clone())
        .events(EventsConfig::default().flush_interval(Duration::from_secs(3600)))
        .build()
        .expect("the SDK client builds");
    client
        .wait_for_initialization(WAIT)
        .await
        .expect("the SDK initialises");
    client
}

/// Waits until the SDK has sent `n` events (exposures and custom events) and the server has
/// acknowledged them, i.e. stored them.
pub(crate) async fn sent(client: &Client, n: u64) {
    client.flush();
    tokio::time::timeout(WAIT, async {
        loop {
            let s = client.event_stats();
            assert_eq!(s.failed + s.dropped + s.invalid, 0, "{s:?}");
            if s.sent >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the SDK's events are acknowledged in time");
}

both! {
    async fn five_times_the_errors_roll_the_plan_back(app) {
        app.setup("shop", &["checkout"]).await;
        expect(app.patch(&config_path("shop", "checkout"), &json!({"on": true})).send().await.unwrap(), 200).await;
        expect(app.post("/api/v1/projects/shop/metrics", &json!({
            "key": "errors", "name": "Errors", "kind": "conversion", "event_key": "error",
            "direction": "decrease"})).send().await.unwrap(), 201).await;
        let mut hook = Receiver::start(&[500]).await;
        let sub = app.subscribe("shop", &hook.url, &["plan.rolled_back"], "json").await;
        let mut sse = app.sdk_stream("shop").await;
        let plan = expect(app.post(&plans_path("checkout"), &json!({
            "to_variation": 0, "description": "new checkout",
            "steps": [{"percentage": 50, "hold_minutes": 60}, {"percentage": 100}],
            "guardrails": [{"kind": "metric", "metric": "errors", "max_regression": 0.2,
                            "min_units": 200}]})).send().await.unwrap(), 201).await;
        let id = plan["id"].clone();
        assert_eq!(plan["guardrails"][0]["alpha"], 0.05);
        // The step's rollout is marked as an experiment, so SDKs report exposures.
        let step = sse.next_patch("checkout").await;
        assert_eq!(step["fallthrough"]["rollout"]["experiment"], true, "{step}");
        // The first check runs at once: too few units yet.
        let first = plan_until(&app, "checkout", &id, |p| p.get("evidence").is_some()).await;
        assert_eq!(first["evidence"]["readings"][0]["verdict"], "insufficient_data", "{first}");

        // Real traffic: 2000 users evaluate the flag; 10 % of those on the old variation and
        // 50 % of those on the new one report an error.
        let sdk = client(&app).await;
        let (mut on_new, mut events) = (Vec::new(), 0);
        for i in 0..2_000u32 {
            let ctx = Context::new(format!("user-{i}"));
            let new = sdk.bool_variation("checkout", &ctx, false);
            events += 1;
            let error = if new { i % 2 == 0 } else { i % 10 == 0 };
            if error {
                sdk.track("error", &ctx);
                events += 1;
            }
            if new {
                on_new.push(ctx);
            }
        }
        assert!((800..1_200).contains(&on_new.len()), "{} on the new variation", on_new.len());
        sent(&sdk, events).await;

        // One check interval later the plan is rolled back, with the numbers.
        app.clock.advance(MINUTE);
        let rolled = plan_until(&app, "checkout", &id, |p| p["state"] != "running").await;
        assert_eq!(rolled["state"], "rolled_back", "{rolled}");
        assert!(rolled["reason"].as_str().unwrap().contains("metric 'errors'"), "{rolled}");
        assert!(rolled["finished_at"].is_string());
        let reading = &rolled["evidence"]["readings"][0];
        assert_eq!(reading["verdict"], "breached", "{reading}");
        let n = &reading["numbers"];
        assert_eq!(n["treatment_units"].as_f64().unwrap(), on_new.len() as f64);
        assert_eq!(n["control_units"].as_f64().unwrap(), (2_000 - on_new.len()) as f64);
        let regression = n["regression"].as_f64().unwrap();
        assert!((2.5..6.0).contains(&regression), "about +400 %: {regression}");
        assert!(n["p_value"].as_f64().unwrap() < 0.05, "{n}");
        assert_eq!(rolled["evidence"]["step"], 0);

        // The configuration from before the plan is back, and everyone hears of it.
        assert_eq!(app.config("shop", "checkout").await["fallthrough"], json!({"variation": 1}));
        assert_eq!(sse.next_patch("checkout").await["fallthrough"], json!({"variation": 1}));
        tokio::time::timeout(WAIT, async {
            while on_new.iter().any(|ctx| sdk.bool_variation("checkout", ctx, false)) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the SDK serves the old variation again");

        // The webhook: signed, refused once, resent after the backoff.
        let first = hook.next().await;
        assert_eq!(first.status, 500);
        assert_eq!(first.header("vexil-event"), "plan.rolled_back");
        assert!(signature_ok(&first, SECRET));
        let event = first.json();
        assert_eq!(event["after"]["state"], "rolled_back");
        assert_eq!(event["after"]["evidence"]["readings"][0]["verdict"], "breached");
        assert_eq!(event["actor"], format!("guardrail of release plan {id} (on behalf of bootstrap-admin)"));
        app.clock.advance(Duration::from_secs(10));
        let second = hook.next().await;
        assert_eq!(second.status, 200);
        assert_eq!(second.body, first.body, "the same event, resent");
        assert!(signature_ok(&second, SECRET));
        let _ = sub;

        // A rolled-back plan is finished: no action applies, and the next plan may start.
        let act = app.post(&format!("{}/{id}/resume", plans_path("checkout")), &json!({})).send().await.unwrap();
        assert_eq!(act.status(), 409);
        expect(app.post(&plans_path("checkout"), &json!({
            "to_variation": 0, "steps": [{"percentage": 100}]})).send().await.unwrap(), 201).await;
        drop(sdk);
    }

    async fn healthy_traffic_keeps_the_plan_running(app) {
        app.setup("shop", &["checkout"]).await;
        expect(app.patch(&config_path("shop", "checkout"), &json!({"on": true})).send().await.unwrap(), 200).await;
        expect(app.post("/api/v1/projects/shop/metrics", &json!({
            "key": "errors", "name": "Errors", "kind": "count", "event_key": "error",
            "direction": "decrease"})).send().await.unwrap(), 201).await;
        let plan = expect(app.post(&plans_path("checkout"), &json!({
            "to_variation": 0,
            "steps": [{"percentage": 50, "hold_minutes": 60}, {"percentage": 100}],
            "guardrails": [{"kind": "metric", "metric": "errors", "max_regression": 0.2,
                            "min_units": 200}]})).send().await.unwrap(), 201).await;
        let id = plan["id"].clone();
        let sdk = client(&app).await;
        let mut events = 0;
        for i in 0..1_000u32 {
            let ctx = Context::new(format!("user-{i}"));
            sdk.bool_variation("checkout", &ctx, false);
            events += 1;
            // The same error rate on both variations.
            if i % 10 == 0 {
                sdk.track("error", &ctx);
                events += 1;
            }
        }
        sent(&sdk, events).await;
        let checked = app.clock.now() + MINUTE;
        app.clock.advance(MINUTE);
        let p = plan_until(&app, "checkout", &id, |p| {
            p["evidence"]["checked_at"].as_str().is_some_and(|t| t >= rfc3339(checked).as_str())
        }).await;
        assert_eq!(p["state"], "running");
        assert_eq!(p["evidence"]["readings"][0]["verdict"], "healthy", "{p}");
        assert!(p["evidence"]["readings"][0]["numbers"]["treatment_units"].as_f64().unwrap() > 300.0);
        drop(sdk);
    }

    async fn bad_guardrails_are_refused(app) {
        app.setup("shop", &["checkout"]).await;
        for g in [
            json!({"kind": "metric", "metric": "nope", "max_regression": 0.1}),
            json!({"kind": "metric", "metric": "nope", "max_regression": -1}),
            json!({"kind": "prometheus", "query": "", "max": 1}),
            json!({"kind": "other"}),
        ] {
            let res = app.post(&plans_path("checkout"), &json!({
                "to_variation": 0, "steps": [{"percentage": 100}], "guardrails": [g]}))
                .send().await.unwrap();
            assert_eq!(res.status(), 422, "{g}");
        }
        assert_eq!(app.config("shop", "checkout").await["version"], 1, "nothing written");
    }
}

/// A real Prometheus (Debian's `prometheus` binary) scraping a tiny exporter served here.
struct Prometheus {
    url: String,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: shop\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        // Prometheus cannot report a port it picked: take a free one and hand it over.
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the `prometheus` binary (Debian package `prometheus`) must be on PATH");
        Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            child,
            _dir: dir,
        }
    }

    /// Waits until `query` returns `value` (Prometheus scrapes every second).
    async fn until(&mut self, query: &str, value: f64) {
        let http = reqwest::Client::new();
        let url = format!("{}/api/v1/query", self.url);
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("prometheus exited: {status}");
                }
                if let Ok(res) = http.get(&url).query(&[("query", query)]).send().await
                    && let Ok(body) = res.json::<Value>().await
                    && body["data"]["result"][0]["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        == Some(value)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("prometheus scrapes the exporter in time");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promql_guardrail_against_a_real_prometheus_rolls_back() {
    // The exporter: one gauge the test moves.
    let ratio = Arc::new(AtomicU64::new(0.1f64.to_bits()));
    let exporter = {
        let ratio = ratio.clone();
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let v = f64::from_bits(ratio.load(Ordering::SeqCst));
                async move { format!("# TYPE checkout_error_ratio gauge\ncheckout_error_ratio {v}\n") }
            }),
        )
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let served = tokio::spawn(async move { axum::serve(listener, exporter).await });
    let mut prometheus = Prometheus::start(&target).await;
    prometheus.until("checkout_error_ratio", 0.1).await;

    let url = prometheus.url.clone();
    let app = spawn_with(Backend::Postgres, move |c| c.prometheus_url = Some(url)).await;
    app.setup("shop", &["checkout"]).await;
    let mut hook = Receiver::start(&[]).await;
    app.subscribe("shop", &hook.url, &["plan.rolled_back"], "json")
        .await;
    let plan = expect(
        app.post(
            &plans_path("checkout"),
            &json!({
        "to_variation": 0,
        "steps": [{"percentage": 10, "hold_minutes": 60}, {"percentage": 100}],
        "guardrails": [{"kind": "prometheus", "query": "max(checkout_error_ratio)", "max": 0.5}]}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    let id = plan["id"].clone();
    let healthy = plan_until(&app, "checkout", &id, |p| p.get("evidence").is_some()).await;
    let reading = &healthy["evidence"]["readings"][0];
    assert_eq!(reading["verdict"], "healthy", "{healthy}");
    assert_eq!(reading["numbers"]["value"], 0.1);
    // A metric guardrail's rollout is an experiment; a Prometheus one's needs no exposures.
    assert!(
        app.config("shop", "checkout").await["fallthrough"]["rollout"]
            .get("experiment")
            .is_none_or(|e| e == false)
    );

    // The error ratio rises: rolled back at the next check.
    ratio.store(0.9f64.to_bits(), Ordering::SeqCst);
    prometheus.until("max(checkout_error_ratio)", 0.9).await;
    app.clock.advance(MINUTE);
    let rolled = plan_until(&app, "checkout", &id, |p| p["state"] != "running").await;
    assert_eq!(rolled["state"], "rolled_back", "{rolled}");
    assert_eq!(rolled["evidence"]["readings"][0]["numbers"]["value"], 0.9);
    assert!(
        rolled["reason"]
            .as_str()
            .unwrap()
            .contains("above the maximum 0.5"),
        "{rolled}"
    );
    assert_eq!(
        app.config("shop", "checkout").await["fallthrough"],
        json!({"variation": 1})
    );
    let delivered = hook.next_event("plan.rolled_back").await;
    assert!(signature_ok(&delivered, SECRET));
    served.abort();
}
