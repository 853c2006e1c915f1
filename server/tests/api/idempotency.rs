//! `Idempotency-Key` on POST.

use serde_json::json;

use crate::both;
use crate::helpers::{bool_flag, expect};

both! {
    async fn repeated_posts_return_the_first_response(app) {
        app.project("p", &["e"]).await;
        let first = app.post("/api/v1/projects/p/flags", &bool_flag("f")).header("idempotency-key", "k-1").send().await.unwrap();
        assert_eq!(first.status(), 201);
        assert!(first.headers().get("idempotent-replayed").is_none());
        let location = first.headers()["location"].clone();
        let first_body = first.text().await.unwrap();
        let before = app.database.fingerprint().await;

        let again = app.post("/api/v1/projects/p/flags", &bool_flag("f")).header("idempotency-key", "k-1").send().await.unwrap();
        assert_eq!(again.status(), 201);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.headers()["location"], location);
        assert_eq!(again.text().await.unwrap(), first_body);
        assert_eq!(app.database.fingerprint().await, before, "a replay changes nothing");

        // Same key, different body: refused.
        let mut other = bool_flag("g");
        other["name"] = json!("other");
        let p = expect(app.post("/api/v1/projects/p/flags", &other).header("idempotency-key", "k-1").send().await.unwrap(), 422).await;
        assert_eq!(p["type"], "urn:vexil:problem:idempotency-key-reused");
        assert_eq!(app.database.fingerprint().await, before);

        // Keys belong to a token: another token's identical key is a new request (here a
        // duplicate flag).
        let editor = app.token("ed", "editor").await;
        let before = app.database.fingerprint().await;
        let r = app.request_as(reqwest::Method::POST, "/api/v1/projects/p/flags", &editor).json(&bool_flag("f"))
            .header("idempotency-key", "k-1").send().await.unwrap();
        assert_eq!(r.status(), 409);
        // Error responses are replayed too, and change nothing.
        let r = app.request_as(reqwest::Method::POST, "/api/v1/projects/p/flags", &editor).json(&bool_flag("f"))
            .header("idempotency-key", "k-1").send().await.unwrap();
        assert_eq!(r.status(), 409);
        assert_eq!(r.headers()["idempotent-replayed"], "true");
        let p: serde_json::Value = r.json().await.unwrap();
        assert_eq!(p["instance"], "/api/v1/projects/p/flags");
        assert_eq!(app.database.fingerprint().await, before);

        // Without a key, a repeat is a new request.
        expect(app.post("/api/v1/projects/p/flags", &bool_flag("f")).send().await.unwrap(), 409).await;
        expect(app.post("/api/v1/projects/p/flags", &bool_flag("f")).header("idempotency-key", "").send().await.unwrap(), 400).await;
    }

    async fn kill_switch_retries_are_safe(app) {
        app.project("p", &["a", "b"]).await;
        expect(app.post("/api/v1/projects/p/flags", &bool_flag("f")).send().await.unwrap(), 201).await;
        for env in ["a", "b"] {
            expect(app.patch(&format!("/api/v1/projects/p/flags/f/environments/{env}"), &json!({"on": true})).send().await.unwrap(), 200).await;
        }
        let first = expect(app.post("/api/v1/projects/p/flags/f/kill", &json!({})).header("idempotency-key", "incident-42").send().await.unwrap(), 200).await;
        assert_eq!(first["turned_off"].as_array().unwrap().len(), 2);
        let again = expect(app.post("/api/v1/projects/p/flags/f/kill", &json!({})).header("idempotency-key", "incident-42").send().await.unwrap(), 200).await;
        assert_eq!(again, first);
        let audit = expect(app.get("/api/v1/audit?action=flag.kill").send().await.unwrap(), 200).await;
        assert_eq!(audit["items"].as_array().unwrap().len(), 2);
    }
}
