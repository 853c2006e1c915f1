//! `/api/v1/evaluate`, `/api/v1/evaluate/batch` and explain on the in-memory snapshots.

use serde_json::json;
use vexil_testkit::{Backend, spawn_app};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_batch_and_explain_read_the_latest_write() {
    let app = spawn_app(Backend::Postgres).await;
    setup(&app, &["prod"]).await;
    create_flag(&app, "a").await;
    create_flag(&app, "b").await;
    expect(
        app.put(
            &config_path("p", "a", "prod"),
            &json!({"on": true, "off_variation": 1, "fallthrough": {"variation": 1},
                    "rules": [{"id": "beta", "clauses": [{"attribute": "plan", "op": "in", "values": ["beta"]}],
                               "serve": {"variation": 0}}]}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    let viewer = app.token("reader", "viewer").await;
    let ctx = json!({"key": "u1", "attributes": {"plan": "beta"}});

    // Read-your-writes on the in-memory snapshot.
    let body = expect(
        app.request_as(reqwest::Method::POST, "/api/v1/evaluate", &viewer)
            .json(&json!({"project": "p", "environment": "prod", "flag": "a", "context": ctx}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(body["value"], true);
    assert_eq!(
        body["reason"],
        json!({"kind": "RULE_MATCH", "rule_index": 0, "rule_id": "beta"})
    );
    let version = body["environment_version"].as_u64().unwrap();

    let batch = expect(
        app.request_as(reqwest::Method::POST, "/api/v1/evaluate/batch", &viewer)
            .json(&json!({"project": "p", "environment": "prod", "context": ctx}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(batch["environment_version"], version);
    let results = batch["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(
        (results[0]["flag"].as_str(), results[0]["value"].as_bool()),
        (Some("a"), Some(true))
    );
    assert_eq!(results[1]["flag"], "b");
    assert_eq!(results[1]["reason"]["kind"], "OFF");
    let named = expect(
        app.request_as(reqwest::Method::POST, "/api/v1/evaluate/batch", &viewer)
            .json(&json!({"project": "p", "environment": "prod", "flags": ["b", "missing"], "context": ctx}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        named["results"][1]["reason"],
        json!({"kind": "ERROR", "error_kind": "FLAG_NOT_FOUND"})
    );

    let explained = expect(
        app.request_as(
            reqwest::Method::POST,
            "/api/v1/projects/p/environments/prod/flags/a/explain",
            &viewer,
        )
        .json(&json!({"context": {"key": "u2", "attributes": {"plan": "free"}}}))
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    let ex = &explained["explanation"];
    assert_eq!(ex["flag_key"], "a");
    assert_eq!(ex["value"], false);
    assert_eq!(ex["reason"]["kind"], "FALLTHROUGH");
    let rules = ex["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{ex}");
    assert_eq!(rules[0]["matched"], false, "{ex}");

    expect(
        app.request_as(
            reqwest::Method::POST,
            "/api/v1/projects/p/environments/prod/flags/nope/explain",
            &viewer,
        )
        .json(&json!({"context": {"key": "u2"}}))
        .send()
        .await
        .unwrap(),
        404,
    )
    .await;
    expect(
        app.request_as(reqwest::Method::POST, "/api/v1/evaluate", &viewer)
            .json(&json!({"project": "p", "environment": "nope", "flag": "a", "context": {"key": "u"}}))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
}
