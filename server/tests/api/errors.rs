//! Error responses: RFC 9457 problems with paths, for every way a request can be wrong.

use serde_json::json;
use vexil_testkit::{Backend, spawn_app_with};

use crate::both;
use crate::helpers::{bool_flag, config_path, expect};

both! {
    async fn malformed_requests_get_problems_naming_the_path(app) {
        app.project("p", &["e"]).await;
        let flags = app.url("/api/v1/projects/p/flags");
        let before = app.database.fingerprint().await;

        let r = app.client.post(&flags).bearer_auth(&app.admin_token).header("content-type", "application/json")
            .body("{\"key\": \"f\", ").send().await.unwrap();
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p = expect(r, 400).await;
        assert_eq!(p["type"], "urn:vexil:problem:bad-request");
        assert_eq!(p["status"], 400);
        assert_eq!(p["instance"], "/api/v1/projects/p/flags");
        assert!(p["request_id"].is_string());

        let r = app.client.post(&flags).bearer_auth(&app.admin_token).header("content-type", "text/plain")
            .body(bool_flag("f").to_string()).send().await.unwrap();
        expect(r, 415).await;

        let mut f = bool_flag("f");
        f["variations"][1]["colour"] = json!("red");
        f["owner"] = json!("me");
        let p = expect(app.post("/api/v1/projects/p/flags", &f).send().await.unwrap(), 422).await;
        let mut paths: Vec<_> = p["errors"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap().to_owned()).collect();
        paths.sort();
        assert_eq!(paths, ["owner", "variations[1].colour"]);
        assert!(p["errors"].as_array().unwrap().iter().all(|e| e["rule"] == "unknown_field"));

        let mut f = bool_flag("f");
        f["variations"] = json!("two");
        let p = expect(app.post("/api/v1/projects/p/flags", &f).send().await.unwrap(), 422).await;
        assert_eq!(p["errors"][0]["path"], "variations");
        assert_eq!(p["errors"][0]["rule"], "invalid_type");

        expect(app.post("/api/v1/projects/p/flags", &bool_flag("ok")).send().await.unwrap(), 201).await;
        let p = expect(app.put(&config_path("p", "ok", "e"), &json!({"off_variation": 0, "fallthrough": {"variation": 0},
            "rules": [{"id": "r", "clauses": [{"attribute": "a", "op": "bogus_op", "values": []}], "serve": {"variation": 0}}]}))
            .send().await.unwrap(), 422).await;
        assert_eq!(p["errors"][0]["path"], "rules[0].clauses[0].op");
        let p = expect(app.put(&config_path("p", "ok", "e"), &json!({"off_variation": 7, "fallthrough": {"variation": 0}}))
            .send().await.unwrap(), 422).await;
        assert_eq!((p["errors"][0]["path"].as_str(), p["errors"][0]["rule"].as_str()), (Some("off_variation"), Some("variation_index")));

        let before_ok = app.database.fingerprint().await;
        assert_eq!(before_ok["flags"], before["flags"] + 1);
        // A query string that parses but breaks a rule is a 422 naming the parameter, like a
        // body field.
        let p = expect(app.get("/api/v1/projects/p/flags?limit=many").send().await.unwrap(), 422).await;
        assert_eq!(p["type"], "urn:vexil:problem:validation");
        assert_eq!(p["errors"][0]["path"], "limit");
        let p = expect(app.get("/api/v1/nowhere").send().await.unwrap(), 404).await;
        assert_eq!(p["type"], "urn:vexil:problem:not-found");
        let p = expect(app.delete("/api/v1/projects").send().await.unwrap(), 405).await;
        assert_eq!(p["type"], "urn:vexil:problem:method-not-allowed");
        expect(app.get("/api/v1/projects/p/flags/ok/environments/e/versions?cursor=zzz").send().await.unwrap(), 422).await;
        assert_eq!(app.database.fingerprint().await, before_ok);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let app = spawn_app_with(backend, |c| c.max_body_bytes = 64 * 1024).await;
        app.project("p", &["e"]).await;
        let keys: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        let before = app.database.fingerprint().await;
        let p = expect(
            app.post(
                "/api/v1/projects/p/environments/e/segments",
                &json!({"key": "s", "name": "S", "included": keys}),
            )
            .send()
            .await
            .unwrap(),
            413,
        )
        .await;
        assert_eq!(p["type"], "urn:vexil:problem:payload-too-large");
        // The idempotency path buffers the body itself: same limit.
        let r = app
            .post(
                "/api/v1/projects/p/environments/e/segments",
                &json!({"key": "s", "name": "S", "included": keys}),
            )
            .header("idempotency-key", "big")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        assert_eq!(app.database.fingerprint().await, before);
    }
}
