//! Projects, environments, health, OpenAPI.

use serde_json::json;

use crate::both;
use crate::helpers::{bool_flag, config_path, expect};

both! {
    async fn projects_crud_and_pagination(app) {
        for k in ["alpha", "beta", "gamma"] {
            let body = expect(app.post("/api/v1/projects", &json!({"key": k, "name": k.to_uppercase()})).send().await.unwrap(), 201).await;
            assert_eq!(body["key"], k);
        }
        let dup = expect(app.post("/api/v1/projects", &json!({"key": "alpha", "name": "again"})).send().await.unwrap(), 409).await;
        assert_eq!(dup["type"], "urn:vexil:problem:already-exists");

        let page1 = expect(app.get("/api/v1/projects?limit=2").send().await.unwrap(), 200).await;
        assert_eq!(page1["items"].as_array().unwrap().len(), 2);
        let cursor = page1["next_cursor"].as_str().unwrap().to_owned();
        let page2 = expect(app.get(&format!("/api/v1/projects?limit=2&cursor={cursor}")).send().await.unwrap(), 200).await;
        assert_eq!(page2["items"][0]["key"], "gamma");
        assert!(page2.get("next_cursor").is_none());

        let p = expect(app.patch("/api/v1/projects/beta", &json!({"description": "second"})).send().await.unwrap(), 200).await;
        assert_eq!(p["description"], "second");
        assert_eq!(p["name"], "BETA");

        expect(app.delete("/api/v1/projects/beta").send().await.unwrap(), 204).await;
        expect(app.get("/api/v1/projects/beta").send().await.unwrap(), 404).await;
        let bad = expect(app.post("/api/v1/projects", &json!({"key": "has space", "name": "x"})).send().await.unwrap(), 422).await;
        assert_eq!(bad["errors"][0]["path"], "key");
    }

    async fn environments_get_configs_for_existing_flags_and_can_copy(app) {
        app.project("shop", &["staging"]).await;
        expect(app.post("/api/v1/projects/shop/flags", &bool_flag("checkout")).send().await.unwrap(), 201).await;
        // Configure staging: on, with a rule matching a segment.
        expect(app.post("/api/v1/projects/shop/environments/staging/segments",
            &json!({"key": "beta", "name": "Beta", "included": ["u1", "u2"]})).send().await.unwrap(), 201).await;
        let cfg = json!({"on": true, "off_variation": 1, "fallthrough": {"variation": 1},
            "rules": [{"id": "r1", "clauses": [{"attribute": "key", "op": "segment_match", "values": ["beta"]}], "serve": {"variation": 0}}]});
        expect(app.put(&config_path("shop", "checkout", "staging"), &cfg).send().await.unwrap(), 200).await;

        // A fresh environment: default configuration, off.
        let env = expect(app.post("/api/v1/projects/shop/environments", &json!({"key": "dev", "name": "Dev"})).send().await.unwrap(), 201).await;
        assert_eq!(env["version"], 1);
        let dev = expect(app.get(&config_path("shop", "checkout", "dev")).send().await.unwrap(), 200).await;
        assert_eq!(dev["on"], false);
        assert_eq!(dev["off_variation"], 1);
        assert!(dev.get("rules").is_none());

        // A copy: same configuration and the segment it needs.
        expect(app.post("/api/v1/projects/shop/environments",
            &json!({"key": "production", "name": "Production", "copy_from": "staging"})).send().await.unwrap(), 201).await;
        let prod = expect(app.get(&config_path("shop", "checkout", "production")).send().await.unwrap(), 200).await;
        assert_eq!(prod["on"], true);
        assert_eq!(prod["rules"][0]["id"], "r1");
        assert_eq!(prod["version"], 1);
        let seg = expect(app.get("/api/v1/projects/shop/environments/production/segments/beta").send().await.unwrap(), 200).await;
        assert_eq!(seg["segment"]["included"], json!(["u1", "u2"]));
        let snap = expect(app.get("/api/v1/projects/shop/environments/production/snapshot").send().await.unwrap(), 200).await;
        assert_eq!(snap["flags"].as_array().unwrap().len(), 1);
        assert_eq!(snap["segments"].as_array().unwrap().len(), 1);

        let missing = expect(app.post("/api/v1/projects/shop/environments",
            &json!({"key": "qa", "name": "QA", "copy_from": "nope"})).send().await.unwrap(), 422).await;
        assert_eq!(missing["errors"][0]["path"], "copy_from");
        expect(app.post("/api/v1/projects/shop/environments", &json!({"key": "dev", "name": "Dev"})).send().await.unwrap(), 409).await;

        let list = expect(app.get("/api/v1/projects/shop/environments").send().await.unwrap(), 200).await;
        let keys: Vec<_> = list["items"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap().to_owned()).collect();
        assert_eq!(keys, ["dev", "production", "staging"]);
        let e = expect(app.patch("/api/v1/projects/shop/environments/dev", &json!({"name": "Development"})).send().await.unwrap(), 200).await;
        assert_eq!(e["name"], "Development");
        expect(app.delete("/api/v1/projects/shop/environments/dev").send().await.unwrap(), 204).await;
        expect(app.get(&config_path("shop", "checkout", "dev")).send().await.unwrap(), 404).await;
    }

    async fn changes_are_versioned_per_environment(app) {
        app.project("p", &["e"]).await;
        expect(app.post("/api/v1/projects/p/flags", &bool_flag("a")).send().await.unwrap(), 201).await;
        expect(app.patch(&config_path("p", "a", "e"), &json!({"on": true})).send().await.unwrap(), 200).await;
        expect(app.delete("/api/v1/projects/p/flags/a").send().await.unwrap(), 204).await;
        let changes = expect(app.get("/api/v1/projects/p/environments/e/changes").send().await.unwrap(), 200).await;
        let changes = changes.as_array().unwrap();
        let summary: Vec<(i64, &str)> = changes.iter().map(|c| (c["version"].as_i64().unwrap(), c["op"].as_str().unwrap())).collect();
        assert_eq!(summary, [(1, "put"), (2, "put"), (3, "delete")]);
        assert_eq!(changes[1]["payload"]["on"], true);
        assert_eq!(changes[1]["payload"]["variations"][0]["value"], true);
        let env = expect(app.get("/api/v1/projects/p/environments/e").send().await.unwrap(), 200).await;
        assert_eq!(env["version"], 3);
        let later = expect(app.get("/api/v1/projects/p/environments/e/changes?after=2").send().await.unwrap(), 200).await;
        assert_eq!(later.as_array().unwrap().len(), 1);
    }

    async fn health_and_openapi(app) {
        let r = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("x-request-id"));
        let doc: serde_json::Value = app.client.get(app.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for path in ["/api/v1/projects", "/api/v1/projects/{project}/flags/{flag}/kill", "/api/v1/audit", "/api/v1/evaluate"] {
            assert!(doc["paths"].get(path).is_some(), "missing {path}");
        }
        let ui = app.client.get(app.url("/api/v1/docs/")).send().await.unwrap();
        assert_eq!(ui.status(), 200);
    }
}

both! {
    async fn flags_and_environments_created_concurrently_all_meet(app) {
        use std::sync::Arc;
        app.project("p", &["base"]).await;
        let app = Arc::new(app);
        let mut tasks = Vec::new();
        for i in 0..12 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let res = if i % 3 == 0 {
                    app.post("/api/v1/projects/p/environments", &json!({"key": format!("env-{i}"), "name": "E"})).send().await
                } else {
                    app.post("/api/v1/projects/p/flags", &bool_flag(&format!("flag-{i}"))).send().await
                };
                res.unwrap().status().as_u16()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 201);
        }
        // Every flag has a configuration in every environment, whatever the interleaving.
        let envs = expect(app.get("/api/v1/projects/p/environments").send().await.unwrap(), 200).await;
        let env_count = envs["items"].as_array().unwrap().len();
        assert_eq!(env_count, 5);
        let flags = expect(app.get("/api/v1/projects/p/flags?limit=500").send().await.unwrap(), 200).await;
        for f in flags["items"].as_array().unwrap() {
            let key = f["key"].as_str().unwrap();
            let flag = expect(app.get(&format!("/api/v1/projects/p/flags/{key}")).send().await.unwrap(), 200).await;
            assert_eq!(flag["environments"].as_object().unwrap().len(), env_count, "{key}");
        }
        for e in envs["items"].as_array().unwrap() {
            let key = e["key"].as_str().unwrap();
            let snap = expect(app.get(&format!("/api/v1/projects/p/environments/{key}/snapshot")).send().await.unwrap(), 200).await;
            assert_eq!(snap["flags"].as_array().unwrap().len(), 8, "{key}");
        }
    }
}
