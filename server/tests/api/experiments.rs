//! Metrics and experiments: the API (RBAC, audit, versions), the aggregates event ingestion
//! maintains (windows, multiple exposure, late events, iterations) and the results.

use serde_json::{Value, json};
use vexil_schema::events::{CustomEvent, Event, Exposure};
use vexil_server::Store;
use vexil_server::db::{Db, DbOptions};
use vexil_testkit::TestApp;

use crate::both;
use crate::helpers::{bool_flag, config_path, expect};

const METRICS: &str = "/api/v1/projects/p/metrics";
const EXPERIMENTS: &str = "/api/v1/projects/p/environments/e/experiments";

fn now_ms() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap()
}

fn exposure(t: u64, unit: &str, variation: u32) -> Event {
    Event::Exposure(Exposure {
        time: t,
        flag_key: "f".into(),
        flag_version: 1,
        environment_version: 1,
        variation,
        context_key: unit.into(),
        context_kind: "user".into(),
    })
}

fn purchase(t: u64, unit: &str, value: f64) -> Event {
    Event::Custom(CustomEvent {
        time: t,
        event_key: "purchase".into(),
        context_key: unit.into(),
        context_kind: "user".into(),
        value: Some(value),
    })
}

/// A second handle on the test's database, to feed events the way ingestion does.
async fn store(app: &TestApp) -> Store {
    let db = Db::connect(&DbOptions {
        url: app.database.url.clone(),
        max_connections: 2,
    })
    .await
    .unwrap();
    Store::new(db)
}

async fn ingest(store: &Store, events: &[Event]) {
    vexil_server::experiments::ingest_batch(store, "p", "e", events)
        .await
        .unwrap();
}

/// Project `p`, environment `e`, boolean flag `f` serving a 50/50 experiment rollout, and
/// metrics `buy` (conversion on `purchase` within an hour) and `rev` (sum of `purchase`
/// values, capped at 100).
async fn setup(app: &TestApp) {
    app.project("p", &["e"]).await;
    expect(
        app.post("/api/v1/projects/p/flags", &bool_flag("f"))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let rollout = json!({"on": true, "fallthrough": {"rollout": {"experiment": true, "variations": [
        {"variation": 0, "weight": 50000}, {"variation": 1, "weight": 50000}]}}});
    expect(
        app.patch(&config_path("p", "f", "e"), &rollout)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    expect(
        app.post(
            METRICS,
            &json!({"key": "buy", "name": "Buy", "kind": "conversion",
        "event_key": "purchase", "window_hours": 1}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    expect(
        app.post(
            METRICS,
            &json!({"key": "rev", "name": "Revenue", "kind": "sum",
        "event_key": "purchase", "cap": {"value": 100.0}}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
}

fn experiment(method: &str) -> Value {
    json!({"key": "x", "name": "X", "hypothesis": "the new checkout sells more", "flag": "f",
           "control": 0, "primary_metric": "buy", "guardrail_metrics": ["rev"], "method": method})
}

async fn results(app: &TestApp, query: &str) -> Value {
    expect(
        app.get(&format!("{EXPERIMENTS}/x/results{query}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await
}

both! {
    async fn metrics_and_experiments_are_versioned_audited_and_guarded(app) {
        setup(&app).await;
        let viewer = app.token("v", "viewer").await;
        // Metrics: validation names the field, versions, If-Match, RBAC.
        let bad = expect(app.post(METRICS, &json!({"key": "c", "name": "C", "kind": "conversion",
            "event_key": "purchase", "cap": {"percentile": 99.0}})).send().await.unwrap(), 422).await;
        assert_eq!(bad["errors"][0]["path"], "cap");
        expect(app.post(METRICS, &json!({"key": "buy", "name": "Again", "kind": "count",
            "event_key": "e"})).send().await.unwrap(), 409).await;
        expect(app.request_as(reqwest::Method::POST, METRICS, &viewer)
            .json(&json!({"key": "v", "name": "V", "kind": "count", "event_key": "e"})).send().await.unwrap(), 403).await;
        let got = app.request_as(reqwest::Method::GET, &format!("{METRICS}/buy"), &viewer).send().await.unwrap();
        assert_eq!(got.headers()["etag"], "\"1\"");
        let updated = expect(app.put(&format!("{METRICS}/buy"), &json!({"key": "buy", "name": "Buy now",
            "kind": "conversion", "event_key": "purchase", "window_hours": 2}))
            .header("if-match", "\"1\"").send().await.unwrap(), 200).await;
        assert_eq!(updated["version"], 2);
        expect(app.put(&format!("{METRICS}/buy"), &json!({"key": "buy", "name": "B",
            "kind": "conversion", "event_key": "purchase"})).header("if-match", "\"1\"").send().await.unwrap(), 412).await;
        let list = expect(app.get(&format!("{METRICS}?limit=1")).send().await.unwrap(), 200).await;
        assert_eq!(list["items"][0]["metric"]["key"], "buy");
        assert!(list["next_cursor"].is_string());

        // Experiments: the flag, control and metrics must exist.
        let mut wrong = experiment("fixed_horizon");
        wrong["primary_metric"] = json!("ghost");
        let e = expect(app.post(EXPERIMENTS, &wrong).send().await.unwrap(), 422).await;
        assert_eq!(e["errors"][0]["rule"], "unknown_metric");
        let mut wrong = experiment("fixed_horizon");
        wrong["control"] = json!(2);
        let e = expect(app.post(EXPERIMENTS, &wrong).send().await.unwrap(), 422).await;
        assert_eq!(e["errors"][0]["path"], "control");
        let created = expect(app.post(EXPERIMENTS, &experiment("fixed_horizon")).send().await.unwrap(), 201).await;
        assert_eq!(created["status"], "draft");
        expect(app.get(&format!("{EXPERIMENTS}/x/results")).send().await.unwrap(), 409).await;
        expect(app.request_as(reqwest::Method::POST, &format!("{EXPERIMENTS}/x/start"), &viewer)
            .send().await.unwrap(), 403).await;
        let started = expect(app.post(&format!("{EXPERIMENTS}/x/start"), &json!({})).send().await.unwrap(), 200).await;
        assert_eq!(started["status"], "running");
        assert_eq!(started["version"], 2);
        assert_eq!(started["iterations"][0]["allocation"]["weights"], json!([50000, 50000]));
        expect(app.post(&format!("{EXPERIMENTS}/x/start"), &json!({})).send().await.unwrap(), 409).await;
        // Running: the flag and control are fixed, the rest may change.
        let mut moved = experiment("fixed_horizon");
        moved["control"] = json!(1);
        expect(app.put(&format!("{EXPERIMENTS}/x"), &moved).send().await.unwrap(), 409).await;
        let seq = expect(app.put(&format!("{EXPERIMENTS}/x"), &experiment("sequential"))
            .header("if-match", "\"2\"").send().await.unwrap(), 200).await;
        assert_eq!(seq["experiment"]["method"], "sequential");
        // Metrics in use cannot go.
        let blocked = expect(app.delete(&format!("{METRICS}/rev")).send().await.unwrap(), 409).await;
        assert_eq!(blocked["blockers"], json!(["experiment 'x' in environment 'e'"]));
        let stopped = expect(app.post(&format!("{EXPERIMENTS}/x/stop"), &json!({})).send().await.unwrap(), 200).await;
        assert!(stopped["iterations"][0]["ended_at"].is_string());
        expect(app.post(&format!("{EXPERIMENTS}/x/stop"), &json!({})).send().await.unwrap(), 409).await;

        let audit = expect(app.get("/api/v1/audit?project=p&resource=experiment").send().await.unwrap(), 200).await;
        let actions: Vec<&str> = audit["items"].as_array().unwrap().iter()
            .map(|i| i["action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["experiment.stop", "experiment.update", "experiment.start", "experiment.create"]);
        expect(app.delete(&format!("{EXPERIMENTS}/x")).send().await.unwrap(), 204).await;
        expect(app.delete(&format!("{METRICS}/rev")).send().await.unwrap(), 204).await;
        expect(app.get(&format!("{METRICS}/rev")).send().await.unwrap(), 404).await;
    }

    async fn aggregates_follow_windows_exposures_late_events_and_iterations(app) {
        setup(&app).await;
        expect(app.post(EXPERIMENTS, &experiment("fixed_horizon")).send().await.unwrap(), 201).await;
        expect(app.post(&format!("{EXPERIMENTS}/x/start"), &json!({})).send().await.unwrap(), 200).await;
        let s = store(&app).await;
        let t = now_ms();
        let hour = 3_600_000;
        // Batch 1: u1 converts within the window; u2 only after it (but its revenue counts,
        // capped at 100); u3 sees both variations; u4 and u5 send events before any exposure.
        ingest(&s, &[
            exposure(t, "u1", 0), purchase(t + 10, "u1", 30.0),
            exposure(t, "u2", 1), purchase(t + 2 * hour, "u2", 500.0),
            exposure(t, "u3", 0), exposure(t + 5, "u3", 1),
            purchase(t + 1, "u4", 7.0),
            purchase(t + 50, "u5", 4.0),
            exposure(t, "u6", 0),
        ]).await;
        // Batch 2: the exposures arrive late: u4's event was before its exposure (pre-exposure
        // data), u5's after it (a conversion). u6 is seen again with the same variation.
        ingest(&s, &[exposure(t + 100, "u4", 1), exposure(t + 20, "u5", 1), exposure(t + 30, "u6", 0)]).await;
        // Batch 3: u4 converts.
        ingest(&s, &[purchase(t + 200, "u4", 3.0)]).await;

        let r = results(&app, "").await;
        assert_eq!(r["iteration"], 1);
        assert_eq!(r["units"], json!([2, 3]), "{r}");
        assert_eq!(r["excluded_units"], 1);
        assert_eq!(r["srm"]["observed"], json!([3, 3]), "SRM counts every assigned unit");
        let buy = &r["metrics"][0];
        assert_eq!((buy["metric"].as_str(), buy["role"].as_str()), (Some("buy"), Some("primary")));
        assert_eq!(buy["variations"][0]["conversions"], 1);
        assert_eq!(buy["variations"][1]["conversions"], 2);
        assert_eq!(buy["variations"][1]["mean"], 2.0 / 3.0);
        let rev = &r["metrics"][1];
        assert_eq!(rev["role"], "guardrail");
        assert_eq!(rev["variations"][0]["sum"], 30.0);
        assert_eq!(rev["variations"][1]["sum"], 107.0);

        // Changing the allocation starts iteration 2; results never mix iterations.
        let reweigh = json!({"fallthrough": {"rollout": {"experiment": true, "variations": [
            {"variation": 0, "weight": 30000}, {"variation": 1, "weight": 70000}]}}});
        expect(app.patch(&config_path("p", "f", "e"), &reweigh).send().await.unwrap(), 200).await;
        // A change that leaves the allocation alone does not.
        expect(app.patch(&config_path("p", "f", "e"), &json!({"off_variation": 1})).send().await.unwrap(), 200).await;
        let x = expect(app.get(&format!("{EXPERIMENTS}/x")).send().await.unwrap(), 200).await;
        assert_eq!(x["iterations"].as_array().unwrap().len(), 2);
        assert_eq!(x["iterations"][1]["reason"], "allocation_changed");
        assert_eq!(x["iterations"][1]["allocation"]["weights"], json!([30000, 70000]));
        let t2 = now_ms() + 1;
        ingest(&s, &[exposure(t2, "u7", 0), purchase(t2 + 1, "u7", 1.0), exposure(t2, "u1", 1)]).await;
        let r2 = results(&app, "").await;
        assert_eq!(r2["iteration"], 2);
        assert_eq!(r2["units"], json!([1, 1]));
        assert_eq!(r2["metrics"][0]["variations"][0]["conversions"], 1);
        let r1 = results(&app, "?iteration=1").await;
        assert_eq!(r1["units"], json!([2, 3]));
        assert_eq!(r1["excluded_units"], 1, "u1 in iteration 2 is not u1 in iteration 1");
        expect(app.get(&format!("{EXPERIMENTS}/x/results?iteration=3")).send().await.unwrap(), 404).await;
        expect(app.get(&format!("{EXPERIMENTS}/x/results?mde=-1")).send().await.unwrap(), 422).await;
        expect(app.get(&format!("{EXPERIMENTS}/x/results?peek=1")).send().await.unwrap(), 422).await;

        // Events of a draft or deleted experiment are not counted anywhere.
        expect(app.delete(&format!("{EXPERIMENTS}/x")).send().await.unwrap(), 204).await;
        ingest(&s, &[exposure(now_ms(), "u8", 0)]).await;
        s.db().close().await;
    }

    async fn results_match_vexil_stats_on_a_hand_computed_case(app) {
        use vexil_stats::{Method, Sample, SampleSizeInput, compare, sample_size, srm};
        setup(&app).await;
        expect(app.post(EXPERIMENTS, &experiment("fixed_horizon")).send().await.unwrap(), 201).await;
        expect(app.post(&format!("{EXPERIMENTS}/x/start"), &json!({})).send().await.unwrap(), 200).await;
        // 200 units each; control converts 20, treatment 40.
        let t = now_ms();
        let mut events = Vec::new();
        for i in 0..400u32 {
            let unit = format!("u{i}");
            let variation = i % 2;
            events.push(exposure(t, &unit, variation));
            let converts = if variation == 0 { i % 20 == 0 } else { i % 10 == 1 };
            if converts {
                events.push(purchase(t + 1000, &unit, 10.0));
            }
        }
        let s = store(&app).await;
        ingest(&s, &events).await;
        let r = results(&app, "?mde=0.1").await;
        let control = Sample::conversions(200, 20).moments().unwrap();
        let treatment = Sample::conversions(200, 40).moments().unwrap();
        let want = compare(&control, &treatment, Method::FixedHorizon, 0.05).unwrap();
        let got = &r["metrics"][0]["variations"][1];
        assert_eq!(got["conversions"], 40, "{r}");
        assert_eq!(r["metrics"][0]["variations"][0]["conversions"], 20);
        let vs = &got["vs_control"];
        let close = |a: &Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-12;
        assert!(close(&vs["relative_lift"], want.relative.estimate), "{vs}");
        assert!(close(&vs["interval_low"], want.relative.lower));
        assert!(close(&vs["interval_high"], want.relative.upper));
        assert!(close(&vs["p_value"], want.relative.p_value.unwrap()));
        assert!(close(&vs["p_value_adjusted"], want.relative.p_value.unwrap()), "one treatment: Holm changes nothing");
        assert_eq!(vs["significant"], want.significant);
        assert_eq!(vs["cuped"], false);
        let srm_want = srm(&[200, 200], &[50_000.0, 50_000.0]).unwrap();
        assert!(close(&r["srm"]["p_value"], srm_want.p_value));
        assert_eq!(r["srm"]["mismatch"], false);
        let plan = sample_size(&SampleSizeInput {
            baseline_mean: control.mean,
            baseline_variance: control.variance,
            mde_relative: 0.1,
            alpha: 0.05,
            power: 0.8,
            variations: 2,
            daily_units: None,
        })
        .unwrap();
        assert_eq!(r["sample_size"]["units_per_variation"], plan.per_variation);
        assert_eq!(r["sample_size"]["units_so_far"], 200);

        // The same data, read the Bayesian way.
        expect(app.put(&format!("{EXPERIMENTS}/x"), &experiment("bayesian")).send().await.unwrap(), 200).await;
        let r = results(&app, "").await;
        let want = compare(&control, &treatment, Method::Bayesian, 0.05).unwrap();
        let vs = &r["metrics"][0]["variations"][1]["vs_control"];
        let post = want.posterior.unwrap();
        assert!(close(&vs["chance_to_beat_control"], post.chance_to_beat_control), "{vs}");
        assert!(close(&vs["expected_loss"], post.expected_loss));
        assert!(vs["p_value"].is_null());
        s.db().close().await;
    }
}
