//! The audit log: who, what, when, before and after; queries; immutability.

use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::both;
use crate::helpers::{bool_flag, config_path, expect};

both! {
    async fn every_change_is_audited_and_queryable(app) {
        let alice = app.token("alice", "editor").await;
        let bob = app.token("bob", "editor").await;
        app.project("p", &["e"]).await;
        let as_user = |token: &str, path: &str, body: serde_json::Value, method: reqwest::Method| {
            app.request_as(method, path, token).json(&body)
        };
        let start = OffsetDateTime::now_utc();
        let res = as_user(&alice, "/api/v1/projects/p/flags", bool_flag("a"), reqwest::Method::POST).send().await.unwrap();
        let create_request = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        expect(res, 201).await;
        expect(as_user(&bob, "/api/v1/projects/p/flags", bool_flag("b"), reqwest::Method::POST).send().await.unwrap(), 201).await;
        expect(as_user(&bob, &config_path("p", "a", "e"), json!({"on": true}), reqwest::Method::PATCH).send().await.unwrap(), 200).await;

        let by_flag = expect(app.get("/api/v1/audit?project=p&flag=a").send().await.unwrap(), 200).await;
        let items = by_flag["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!((items[0]["action"].as_str(), items[0]["actor"].as_str()), (Some("flag.config.update"), Some("bob")));
        assert_eq!(items[0]["environment"], "e");
        assert_eq!(items[0]["before"]["on"], false);
        assert_eq!(items[0]["after"]["on"], true);
        assert_eq!((items[1]["action"].as_str(), items[1]["actor"].as_str()), (Some("flag.create"), Some("alice")));
        assert_eq!(items[1]["request_id"], create_request.as_str());
        assert!(items[1]["before"].is_null());
        assert_eq!(items[1]["after"]["definition"]["key"], "a");

        let by_bob = expect(app.get("/api/v1/audit?actor=bob").send().await.unwrap(), 200).await;
        assert_eq!(by_bob["items"].as_array().unwrap().len(), 2);
        let tokens = expect(app.get("/api/v1/audit?resource=token").send().await.unwrap(), 200).await;
        assert_eq!(tokens["items"].as_array().unwrap().len(), 3, "the bootstrap token, alice's and bob's");

        // Time range.
        let from = start.format(&Rfc3339).unwrap();
        let in_range = expect(app.get(&format!("/api/v1/audit?project=p&resource=flag&from={from}")).send().await.unwrap(), 200).await;
        assert_eq!(in_range["items"].as_array().unwrap().len(), 3);
        let future = (OffsetDateTime::now_utc() + time::Duration::hours(1)).format(&Rfc3339).unwrap();
        let none = expect(app.get(&format!("/api/v1/audit?from={future}")).send().await.unwrap(), 200).await;
        assert!(none["items"].as_array().unwrap().is_empty());
        let before_start = expect(app.get(&format!("/api/v1/audit?project=p&resource=flag&to={from}")).send().await.unwrap(), 200).await;
        assert!(before_start["items"].as_array().unwrap().is_empty());

        // Pagination walks everything once, newest first.
        let all = expect(app.get("/api/v1/audit?limit=500").send().await.unwrap(), 200).await;
        let total = all["items"].as_array().unwrap().len();
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = expect(app.get(&format!("/api/v1/audit?limit=3{cursor}")).send().await.unwrap(), 200).await;
            seen.extend(page["items"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()));
            match page["next_cursor"].as_str() { Some(c) => cursor = format!("&cursor={c}"), None => break }
        }
        assert_eq!(seen.len(), total);
        assert!(seen.windows(2).all(|w| w[0] > w[1]));

        expect(app.get("/api/v1/audit?flag=a").send().await.unwrap(), 422).await;
        let p = expect(app.get("/api/v1/audit?from=yesterday").send().await.unwrap(), 422).await;
        assert_eq!(p["errors"][0]["path"], "from");
        let p = expect(app.get("/api/v1/audit?cursor=12").send().await.unwrap(), 422).await;
        assert_eq!(p["errors"][0]["path"], "cursor", "a raw id is not a cursor from this API");
    }

    async fn the_audit_log_cannot_be_changed(app) {
        app.project("p", &[]).await;
        // No route edits or deletes entries.
        for method in [reqwest::Method::DELETE, reqwest::Method::PUT, reqwest::Method::PATCH, reqwest::Method::POST] {
            let r = app.request_as(method.clone(), "/api/v1/audit", &app.admin_token).json(&json!({})).send().await.unwrap();
            assert_eq!(r.status(), 405, "{method}");
        }
        // And the database itself refuses.
        assert!(app.database.execute("UPDATE audit_log SET actor = 'mallory'").await.is_err());
        assert!(app.database.execute("DELETE FROM audit_log").await.is_err());
        let all = expect(app.get("/api/v1/audit").send().await.unwrap(), 200).await;
        assert!(all["items"].as_array().unwrap().iter().all(|e| e["actor"] != "mallory"));
        assert!(!all["items"].as_array().unwrap().is_empty());
    }
}
