//! Flags: create, read, list, update, configurations, archive, delete, evaluate.

use serde_json::json;

use crate::both;
use crate::helpers::{bool_flag, config_path, expect};

both! {
    async fn create_gives_every_environment_a_default_configuration(app) {
        app.project("p", &["dev", "prod"]).await;
        let res = app.post("/api/v1/projects/p/flags", &json!({
            "key": "banner", "name": "Banner", "kind": "string", "tags": ["ui", "q3"],
            "variations": [{"value": "blue"}, {"value": "green"}]
        })).send().await.unwrap();
        assert_eq!(res.headers()["location"], "/api/v1/projects/p/flags/banner");
        assert_eq!(res.headers()["etag"], "\"1\"");
        let flag = expect(res, 201).await;
        for env in ["dev", "prod"] {
            let c = &flag["environments"][env];
            assert_eq!(c["on"], false);
            assert_eq!(c["off_variation"], 0);
            assert_eq!(c["fallthrough"], json!({"variation": 0}));
            assert_eq!(c["version"], 1);
            assert!(c["salt"].as_str().unwrap().len() >= 16);
        }
        assert_ne!(flag["environments"]["dev"]["salt"], flag["environments"]["prod"]["salt"]);
        // Boolean flags default to `false`, wherever it is.
        let b = expect(app.post("/api/v1/projects/p/flags", &bool_flag("kill-me")).send().await.unwrap(), 201).await;
        assert_eq!(b["environments"]["prod"]["off_variation"], 1);
        expect(app.post("/api/v1/projects/p/flags", &bool_flag("kill-me")).send().await.unwrap(), 409).await;
        expect(app.post("/api/v1/projects/nope/flags", &bool_flag("x")).send().await.unwrap(), 404).await;

        let res = app.get("/api/v1/projects/p/flags/banner").send().await.unwrap();
        assert_eq!(res.headers()["etag"], "\"1\"");
        let got = expect(res, 200).await;
        assert_eq!(got["definition"]["tags"], json!(["ui", "q3"]));
    }

    async fn list_filters_searches_and_paginates(app) {
        app.project("p", &["e"]).await;
        for (key, name, tags) in [
            ("checkout-v2", "New checkout", vec!["payments"]),
            ("dark-mode", "Dark Mode", vec!["ui"]),
            ("search_beta", "Search 100% rewrite", vec!["ui", "search"]),
            ("zeta", "Zeta", vec![]),
        ] {
            let mut f = bool_flag(key);
            f["name"] = json!(name);
            f["tags"] = json!(tags);
            expect(app.post("/api/v1/projects/p/flags", &f).send().await.unwrap(), 201).await;
        }
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v["items"].as_array().unwrap().iter().map(|f| f["key"].as_str().unwrap().to_owned()).collect()
        };
        let ui = expect(app.get("/api/v1/projects/p/flags?tag=ui").send().await.unwrap(), 200).await;
        assert_eq!(keys(&ui), ["dark-mode", "search_beta"]);
        let q = expect(app.get("/api/v1/projects/p/flags?q=CHECK").send().await.unwrap(), 200).await;
        assert_eq!(keys(&q), ["checkout-v2"]);
        let by_name = expect(app.get("/api/v1/projects/p/flags?q=dark%20mode").send().await.unwrap(), 200).await;
        assert_eq!(keys(&by_name), ["dark-mode"]);
        // LIKE wildcards in the query are literal.
        let pct = expect(app.get("/api/v1/projects/p/flags?q=100%25").send().await.unwrap(), 200).await;
        assert_eq!(keys(&pct), ["search_beta"]);
        let underscore = expect(app.get("/api/v1/projects/p/flags?q=h_b").send().await.unwrap(), 200).await;
        assert_eq!(keys(&underscore), ["search_beta"]);

        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/projects/p/flags?limit=3&cursor={c}"),
                None => "/api/v1/projects/p/flags?limit=3".to_owned(),
            };
            let page = expect(app.get(&path).send().await.unwrap(), 200).await;
            seen.extend(keys(&page));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, ["checkout-v2", "dark-mode", "search_beta", "zeta"]);

        expect(app.post("/api/v1/projects/p/flags/zeta/archive", &json!({})).send().await.unwrap(), 200).await;
        let archived = expect(app.get("/api/v1/projects/p/flags?archived=true").send().await.unwrap(), 200).await;
        assert_eq!(keys(&archived), ["zeta"]);
        let live = expect(app.get("/api/v1/projects/p/flags?archived=false").send().await.unwrap(), 200).await;
        assert_eq!(keys(&live).len(), 3);
    }

    async fn definition_updates_are_versioned_and_checked(app) {
        app.project("p", &["e"]).await;
        let def = json!({"key": "color", "name": "Color", "kind": "string",
            "variations": [{"value": "red"}, {"value": "green"}, {"value": "blue"}]});
        expect(app.post("/api/v1/projects/p/flags", &def).send().await.unwrap(), 201).await;
        // The configuration serves variation 2.
        expect(app.patch(&config_path("p", "color", "e"), &json!({"fallthrough": {"variation": 2}})).send().await.unwrap(), 200).await;

        let mut renamed = def.clone();
        renamed["name"] = json!("Colour");
        let res = app.put("/api/v1/projects/p/flags/color", &renamed).header("if-match", "\"1\"").send().await.unwrap();
        assert_eq!(res.headers()["etag"], "\"2\"");
        expect(res, 200).await;
        let stale = expect(app.put("/api/v1/projects/p/flags/color", &renamed).header("if-match", "\"1\"").send().await.unwrap(), 412).await;
        assert_eq!(stale["current_version"], 2);

        // Dropping the variation the configuration serves is refused, naming the environment.
        let mut shorter = renamed.clone();
        shorter["variations"] = json!([{"value": "red"}, {"value": "green"}]);
        let bad = expect(app.put("/api/v1/projects/p/flags/color", &shorter).send().await.unwrap(), 422).await;
        assert!(bad["errors"].as_array().unwrap().iter().any(|e| e["path"] == "environments.e.fallthrough.variation"), "{bad}");

        let mut other_key = renamed.clone();
        other_key["key"] = json!("colour");
        let bad = expect(app.put("/api/v1/projects/p/flags/color", &other_key).send().await.unwrap(), 422).await;
        assert_eq!(bad["errors"][0]["path"], "key");

        // The change reached the environment's change log with the new definition.
        let snap = expect(app.get("/api/v1/projects/p/environments/e/snapshot").send().await.unwrap(), 200).await;
        assert_eq!(snap["flags"][0]["variations"].as_array().unwrap().len(), 3);
    }

    async fn configurations_put_patch_and_evaluate(app) {
        app.project("p", &["e"]).await;
        expect(app.post("/api/v1/projects/p/flags", &bool_flag("checkout")).send().await.unwrap(), 201).await;
        let path = config_path("p", "checkout", "e");
        let res = app.get(&path).send().await.unwrap();
        assert_eq!(res.headers()["etag"], "\"1\"");
        let current = expect(res, 200).await;
        let salt = current["salt"].as_str().unwrap().to_owned();

        let cfg = json!({
            "on": true, "off_variation": 1,
            "targets": [{"variation": 0, "values": ["vip"]}],
            "rules": [{"id": "staff", "clauses": [{"attribute": "email", "op": "ends_with", "values": ["@example.com"]}],
                       "serve": {"variation": 0}}],
            "fallthrough": {"rollout": {"variations": [{"variation": 0, "weight": 25000}, {"variation": 1, "weight": 75000}]}}
        });
        let res = app.put(&path, &cfg).header("if-match", "\"1\"").send().await.unwrap();
        assert_eq!(res.headers()["etag"], "\"2\"");
        let put = expect(res, 200).await;
        assert_eq!(put["config"]["version"], 2);
        assert_eq!(put["config"]["salt"], salt.as_str(), "an empty salt keeps the current one");

        let eval = |key: &str, attrs: serde_json::Value| json!({"project": "p", "environment": "e", "flag": "checkout",
            "context": {"key": key, "attributes": attrs}});
        let r = expect(app.post("/api/v1/evaluate", &eval("vip", json!({}))).send().await.unwrap(), 200).await;
        assert_eq!((r["value"].clone(), r["reason"]["kind"].clone()), (json!(true), json!("TARGET_MATCH")));
        let r = expect(app.post("/api/v1/evaluate", &eval("u1", json!({"email": "a@example.com"}))).send().await.unwrap(), 200).await;
        assert_eq!(r["reason"], json!({"kind": "RULE_MATCH", "rule_index": 0, "rule_id": "staff"}));
        let mut on = 0;
        for i in 0..400 {
            let r = expect(app.post("/api/v1/evaluate", &eval(&format!("user-{i}"), json!({}))).send().await.unwrap(), 200).await;
            assert_eq!(r["reason"]["kind"], "FALLTHROUGH");
            if r["value"] == json!(true) { on += 1; }
        }
        assert!((60..=140).contains(&on), "25% rollout served true to {on}/400");

        let res = app.patch(&path, &json!({"on": false})).header("if-match", "\"2\"").send().await.unwrap();
        let patched = expect(res, 200).await;
        assert_eq!(patched["config"]["on"], false);
        assert_eq!(patched["config"]["rules"][0]["id"], "staff", "PATCH keeps what it does not name");
        let r = expect(app.post("/api/v1/evaluate", &eval("vip", json!({}))).send().await.unwrap(), 200).await;
        assert_eq!((r["value"].clone(), r["reason"]["kind"].clone()), (json!(false), json!("OFF")));
        let unknown = expect(app.post("/api/v1/evaluate", &json!({"project": "p", "environment": "e", "flag": "nope", "context": {"key": "u"}})).send().await.unwrap(), 200).await;
        assert_eq!(unknown["reason"], json!({"kind": "ERROR", "error_kind": "FLAG_NOT_FOUND"}));

        let stale = expect(app.patch(&path, &json!({"on": true})).header("if-match", "\"2\"").send().await.unwrap(), 412).await;
        assert_eq!(stale["current_version"], 3);
        expect(app.patch(&path, &json!({"on": true})).header("if-match", "banana").send().await.unwrap(), 400).await;
        expect(app.get(&config_path("p", "checkout", "nope")).send().await.unwrap(), 404).await;
    }

    async fn archive_hides_and_freezes(app) {
        app.project("p", &["e"]).await;
        expect(app.post("/api/v1/projects/p/flags", &bool_flag("a")).send().await.unwrap(), 201).await;
        expect(app.post("/api/v1/projects/p/flags", &bool_flag("b")).send().await.unwrap(), 201).await;
        // b requires a.
        expect(app.patch(&config_path("p", "b", "e"), &json!({"prerequisites": [{"key": "a", "variation": 0}]})).send().await.unwrap(), 200).await;
        let blocked = expect(app.post("/api/v1/projects/p/flags/a/archive", &json!({})).send().await.unwrap(), 409).await;
        assert_eq!(blocked["blockers"], json!(["flag 'b' in environment 'e'"]));

        let v = expect(app.post("/api/v1/projects/p/flags/b/archive", &json!({})).send().await.unwrap(), 200).await;
        assert_eq!(v["archived"], true);
        let snap = expect(app.get("/api/v1/projects/p/environments/e/snapshot").send().await.unwrap(), 200).await;
        let keys: Vec<_> = snap["flags"].as_array().unwrap().iter().map(|f| f["key"].clone()).collect();
        assert_eq!(keys, [json!("a")]);
        expect(app.patch(&config_path("p", "b", "e"), &json!({"on": true})).send().await.unwrap(), 409).await;
        // With b archived, a can be archived too; b cannot come back while a is archived.
        expect(app.post("/api/v1/projects/p/flags/a/archive", &json!({})).send().await.unwrap(), 200).await;
        let bad = expect(app.post("/api/v1/projects/p/flags/b/unarchive", &json!({})).send().await.unwrap(), 422).await;
        assert_eq!(bad["errors"][0]["rule"], "unknown_flag");
        expect(app.post("/api/v1/projects/p/flags/a/unarchive", &json!({})).send().await.unwrap(), 200).await;
        expect(app.post("/api/v1/projects/p/flags/b/unarchive", &json!({})).send().await.unwrap(), 200).await;
        let snap = expect(app.get("/api/v1/projects/p/environments/e/snapshot").send().await.unwrap(), 200).await;
        assert_eq!(snap["flags"].as_array().unwrap().len(), 2);
    }

    async fn delete_is_refused_while_a_prerequisite(app) {
        app.project("p", &["dev", "prod"]).await;
        for k in ["base", "child", "other"] {
            expect(app.post("/api/v1/projects/p/flags", &bool_flag(k)).send().await.unwrap(), 201).await;
        }
        expect(app.patch(&config_path("p", "child", "prod"), &json!({"prerequisites": [{"key": "base", "variation": 0}]})).send().await.unwrap(), 200).await;
        expect(app.patch(&config_path("p", "other", "dev"), &json!({"prerequisites": [{"key": "base", "variation": 0}]})).send().await.unwrap(), 200).await;
        let before = app.database.fingerprint().await;
        let blocked = expect(app.delete("/api/v1/projects/p/flags/base").send().await.unwrap(), 409).await;
        assert_eq!(blocked["blockers"], json!(["flag 'child' in environment 'prod'", "flag 'other' in environment 'dev'"]));
        assert_eq!(app.database.fingerprint().await, before);
        // A prerequisite on a missing flag is refused too.
        let bad = expect(app.patch(&config_path("p", "child", "dev"), &json!({"prerequisites": [{"key": "ghost", "variation": 0}]})).send().await.unwrap(), 422).await;
        assert_eq!(bad["errors"][0]["path"], "prerequisites[0].key");

        expect(app.patch(&config_path("p", "child", "prod"), &json!({"prerequisites": []})).send().await.unwrap(), 200).await;
        expect(app.patch(&config_path("p", "other", "dev"), &json!({"prerequisites": []})).send().await.unwrap(), 200).await;
        expect(app.delete("/api/v1/projects/p/flags/base").send().await.unwrap(), 204).await;
        expect(app.get("/api/v1/projects/p/flags/base").send().await.unwrap(), 404).await;
        let changes = expect(app.get("/api/v1/projects/p/environments/prod/changes").send().await.unwrap(), 200).await;
        let last = changes.as_array().unwrap().last().unwrap().clone();
        assert_eq!((last["op"].clone(), last["key"].clone()), (json!("delete"), json!("base")));
    }
}
