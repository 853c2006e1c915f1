//! The kill switch and rollback.

use serde_json::json;

use crate::both;
use crate::helpers::{bool_flag, config_path, expect};

async fn env_versions(app: &vexil_testkit::TestApp) -> Vec<i64> {
    let mut out = Vec::new();
    for env in ["dev", "staging", "prod"] {
        let e = expect(
            app.get(&format!("/api/v1/projects/p/environments/{env}"))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        out.push(e["version"].as_i64().unwrap());
    }
    out
}

both! {
    async fn kill_switch_turns_off_every_environment_at_once(app) {
        app.project("p", &["dev", "staging", "prod"]).await;
        expect(app.post("/api/v1/projects/p/flags", &bool_flag("risky")).send().await.unwrap(), 201).await;
        for env in ["staging", "prod"] {
            expect(app.patch(&config_path("p", "risky", env), &json!({"on": true})).send().await.unwrap(), 200).await;
        }
        let before = env_versions(&app).await;
        let res = app.post("/api/v1/projects/p/flags/risky/kill", &json!({})).send().await.unwrap();
        let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        let result = expect(res, 200).await;
        let turned: Vec<_> = result["turned_off"].as_array().unwrap().iter().map(|t| t["environment"].as_str().unwrap().to_owned()).collect();
        assert_eq!(turned, ["staging", "prod"]);
        assert_eq!(result["already_off"], json!(["dev"]));
        let after = env_versions(&app).await;
        assert_eq!(after, vec![before[0], before[1] + 1, before[2] + 1]);
        for env in ["dev", "staging", "prod"] {
            let c = expect(app.get(&config_path("p", "risky", env)).send().await.unwrap(), 200).await;
            assert_eq!(c["on"], false, "{env}");
        }
        let audit = expect(app.get("/api/v1/audit?project=p&flag=risky&action=flag.kill").send().await.unwrap(), 200).await;
        let entries = audit["items"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        for e in entries {
            assert_eq!(e["request_id"], request_id.as_str());
            assert_eq!(e["before"]["on"], true);
            assert_eq!(e["after"]["on"], false);
        }
        let snap = expect(app.get("/api/v1/projects/p/environments/prod/snapshot").send().await.unwrap(), 200).await;
        assert_eq!(snap["flags"][0]["on"], false);
        expect(app.post("/api/v1/projects/p/flags/ghost/kill", &json!({})).send().await.unwrap(), 404).await;
    }

    async fn rollback_restores_an_earlier_version_as_a_new_one(app) {
        app.project("p", &["e"]).await;
        let def = json!({"key": "msg", "name": "Message", "kind": "string",
            "variations": [{"value": "a"}, {"value": "b"}, {"value": "c"}]});
        expect(app.post("/api/v1/projects/p/flags", &def).send().await.unwrap(), 201).await;
        let path = config_path("p", "msg", "e");
        for v in [1, 2, 0] {
            expect(app.patch(&path, &json!({"on": true, "fallthrough": {"variation": v}})).send().await.unwrap(), 200).await;
        }
        // Versions: 1 (created), 2 (serves 1), 3 (serves 2), 4 (serves 0).
        let v2 = expect(app.get(&format!("{path}/versions/2")).send().await.unwrap(), 200).await;
        assert_eq!(v2["config"]["fallthrough"], json!({"variation": 1}));
        assert_eq!(v2["action"], "flag.config.update");

        let res = app.post(&format!("{path}/rollback"), &json!({"version": 2})).header("if-match", "\"4\"").send().await.unwrap();
        assert_eq!(res.headers()["etag"], "\"5\"");
        let rolled = expect(res, 200).await;
        assert_eq!(rolled["config"]["version"], 5);
        assert_eq!(rolled["config"]["fallthrough"], json!({"variation": 1}));
        let history = expect(app.get(&format!("{path}/versions")).send().await.unwrap(), 200).await;
        let items = history["items"].as_array().unwrap();
        assert_eq!(items.len(), 5);
        assert_eq!(items[0]["version"], 5);
        assert_eq!(items[0]["action"], "flag.rollback");
        let page = expect(app.get(&format!("{path}/versions?limit=2")).send().await.unwrap(), 200).await;
        let cursor = page["next_cursor"].as_str().unwrap();
        let page2 = expect(app.get(&format!("{path}/versions?limit=2&cursor={cursor}")).send().await.unwrap(), 200).await;
        assert_eq!(page2["items"][0]["version"], 3);
        let audit = expect(app.get("/api/v1/audit?project=p&flag=msg&action=flag.rollback").send().await.unwrap(), 200).await;
        assert_eq!(audit["items"][0]["before"]["fallthrough"], json!({"variation": 0}));
        assert_eq!(audit["items"][0]["after"]["fallthrough"], json!({"variation": 1}));

        expect(app.post(&format!("{path}/rollback"), &json!({"version": 99})).send().await.unwrap(), 404).await;
        expect(app.post(&format!("{path}/rollback"), &json!({"version": 1})).header("if-match", "\"4\"").send().await.unwrap(), 412).await;

        // An old version that no longer fits the definition is refused.
        expect(app.post(&format!("{path}/rollback"), &json!({"version": 4})).send().await.unwrap(), 200).await;
        let mut two = def.clone();
        two["variations"] = json!([{"value": "a"}, {"value": "b"}]);
        expect(app.put("/api/v1/projects/p/flags/msg", &two).send().await.unwrap(), 200).await;
        let bad = expect(app.post(&format!("{path}/rollback"), &json!({"version": 3})).send().await.unwrap(), 422).await;
        assert_eq!(bad["errors"][0]["path"], "fallthrough.variation");
    }
}
