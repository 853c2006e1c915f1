//! The API's edges as a new user meets them: `null` in a PATCH, query parameters, the
//! flag-list filters, list envelopes, field paths of store-level rules.

use serde_json::{Value, json};
use vexil_testkit::{Backend, spawn_app};

use crate::both;
use crate::helpers::{bool_flag, config_path, expect};

/// The keys of a page of flags.
fn keys(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap().to_owned())
        .collect()
}

/// The first field error of a problem: (path, rule).
fn first_error(p: &Value) -> (String, String) {
    (
        p["errors"][0]["path"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        p["errors"][0]["rule"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

both! {
    async fn null_is_not_absent_in_a_patch(app) {
        app.project("p", &["e"]).await;
        expect(app.post("/api/v1/projects/p/flags", &bool_flag("f")).send().await.unwrap(), 201).await;
        let before = app.database.fingerprint().await;
        for (path, body, field) in [
            (config_path("p", "f", "e"), json!({"on": null}), "on"),
            (config_path("p", "f", "e"), json!({"on": true, "rules": null}), "rules"),
            (config_path("p", "f", "e"), json!({"fallthrough": null}), "fallthrough"),
            ("/api/v1/projects/p".to_owned(), json!({"name": null}), "name"),
            ("/api/v1/projects/p/environments/e".to_owned(), json!({"description": null}), "description"),
        ] {
            let p = expect(app.patch(&path, &body).send().await.unwrap(), 422).await;
            assert_eq!(first_error(&p), (field.to_owned(), "not_null".to_owned()), "{path} {body}: {p}");
        }
        assert_eq!(app.database.fingerprint().await, before, "a refused PATCH changes nothing");
        // Absent still means "keep".
        let cfg = expect(app.patch(&config_path("p", "f", "e"), &json!({"on": true})).send().await.unwrap(), 200).await;
        assert_eq!(cfg["config"]["on"], true);
    }

    async fn query_parameters_are_checked(app) {
        app.project("p", &["e"]).await;
        expect(app.post("/api/v1/projects/p/flags", &bool_flag("f")).send().await.unwrap(), 201).await;
        for path in ["/api/v1/projects?limit=0", "/api/v1/projects?limit=501", "/api/v1/projects/p/flags?limit=9999",
                     "/api/v1/tokens?limit=0", "/api/v1/audit?limit=501", "/api/v1/projects/p/environments/e/segments?limit=-1"] {
            let p = expect(app.get(path).send().await.unwrap(), 422).await;
            assert_eq!(p["errors"][0]["path"], "limit", "{path}: {p}");
        }
        expect(app.get("/api/v1/projects?limit=500").send().await.unwrap(), 200).await;
        expect(app.get("/api/v1/projects?limit=1").send().await.unwrap(), 200).await;
        for path in ["/api/v1/projects?cursor=zzz", "/api/v1/projects/p/flags?cursor=p", "/api/v1/tokens?cursor=1",
                     "/api/v1/relay-keys?cursor=%00", "/api/v1/projects/p/flags/f/environments/e/versions?cursor=7"] {
            let p = expect(app.get(path).send().await.unwrap(), 422).await;
            assert_eq!(p["errors"][0]["path"], "cursor", "{path}: {p}");
        }
        // Unknown parameters are refused on every route, listed or not.
        for path in ["/api/v1/projects?temporary=true", "/api/v1/projects/p/environments/e/segments?q=x",
                     "/api/v1/me?verbose=1", "/api/v1/projects/p/flags/f?expand=all"] {
            let p = expect(app.get(path).send().await.unwrap(), 422).await;
            assert_eq!(first_error(&p).1, "unknown_parameter", "{path}: {p}");
        }
        let p = expect(app.delete("/api/v1/projects/p/flags/f?force=true").send().await.unwrap(), 422).await;
        assert_eq!(first_error(&p), ("force".to_owned(), "unknown_parameter".to_owned()));
        expect(app.get("/api/v1/projects/p/flags/f").send().await.unwrap(), 200).await;
        let p = expect(app.get("/api/v1/projects/p/flags?archived=maybe").send().await.unwrap(), 422).await;
        assert_eq!(p["errors"][0]["path"], "archived");
        let p = expect(app.get("/api/v1/projects/p/environments/e/changes?limit=10001").send().await.unwrap(), 422).await;
        assert_eq!(p["errors"][0]["path"], "limit");
    }

    async fn the_flag_list_filters_by_lifetime_state_tag_and_text(app) {
        app.project("p", &["e"]).await;
        for (key, temporary, tags) in [("a-release", true, vec!["ui"]), ("b-ops", false, vec!["ops"]),
                                       ("c-release", true, vec![]), ("d-kill", false, vec!["ui", "ops"])] {
            let mut def = bool_flag(key);
            def["temporary"] = json!(temporary);
            def["tags"] = json!(tags);
            expect(app.post("/api/v1/projects/p/flags", &def).send().await.unwrap(), 201).await;
        }
        expect(app.post("/api/v1/projects/p/flags/c-release/archive", &json!({})).send().await.unwrap(), 200).await;
        let list = |q: &'static str| {
            let app = &app;
            async move { keys(&expect(app.get(&format!("/api/v1/projects/p/flags{q}")).send().await.unwrap(), 200).await) }
        };
        assert_eq!(list("?temporary=true").await, ["a-release", "c-release"]);
        assert_eq!(list("?temporary=false").await, ["b-ops", "d-kill"]);
        assert_eq!(list("?archived=any").await, ["a-release", "b-ops", "c-release", "d-kill"]);
        assert_eq!(list("").await, ["a-release", "b-ops", "c-release", "d-kill"]);
        assert_eq!(list("?archived=false&temporary=true").await, ["a-release"]);
        assert_eq!(list("?archived=true").await, ["c-release"]);
        assert_eq!(list("?tag=ops&temporary=false&q=KILL").await, ["d-kill"]);
        assert_eq!(list("?q=release&archived=false").await, ["a-release"]);
        // Filters and pages combine.
        let first = expect(app.get("/api/v1/projects/p/flags?temporary=false&limit=1").send().await.unwrap(), 200).await;
        assert_eq!(keys(&first), ["b-ops"]);
        let cursor = first["next_cursor"].as_str().unwrap();
        let second = expect(app.get(&format!("/api/v1/projects/p/flags?temporary=false&limit=1&cursor={cursor}")).send().await.unwrap(), 200).await;
        assert_eq!(keys(&second), ["d-kill"]);
        assert!(second.get("next_cursor").is_none());
    }

    async fn tokens_and_keys_are_listed_in_pages(app) {
        app.project("p", &["e"]).await;
        for i in 0..3 {
            expect(app.post("/api/v1/tokens", &json!({"name": format!("t{i}"), "role": "viewer"})).send().await.unwrap(), 201).await;
            expect(app.post("/api/v1/projects/p/environments/e/sdk-keys", &json!({"name": format!("s{i}")})).send().await.unwrap(), 201).await;
            expect(app.post("/api/v1/relay-keys", &json!({"name": format!("r{i}"), "environments": [{"project": "p", "environment": "e"}]})).send().await.unwrap(), 201).await;
        }
        for (path, total) in [("/api/v1/tokens", 4), ("/api/v1/projects/p/environments/e/sdk-keys", 3), ("/api/v1/relay-keys", 3)] {
            let mut names = Vec::new();
            let mut url = format!("{path}?limit=2");
            loop {
                let page = expect(app.get(&url).send().await.unwrap(), 200).await;
                let items = page["items"].as_array().unwrap_or_else(|| panic!("{path}: {page}"));
                assert!(items.len() <= 2);
                names.extend(items.iter().map(|k| k["name"].as_str().unwrap().to_owned()));
                match page["next_cursor"].as_str() {
                    Some(c) => url = format!("{path}?limit=2&cursor={c}"),
                    None => break,
                }
            }
            assert_eq!(names.len(), total, "{path}: {names:?}");
            let mut dedup = names.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(dedup.len(), total, "{path}: each once");
        }
    }

    async fn store_rules_name_their_field(app) {
        app.project("p", &["e"]).await;
        // Paths are carried with the error, not cut out of its message.
        let p = expect(app.post("/api/v1/projects", &json!({"key": "x", "name": "  "})).send().await.unwrap(), 422).await;
        assert_eq!(first_error(&p), ("name".to_owned(), "required".to_owned()));
        let p = expect(app.patch("/api/v1/projects/p", &json!({"description": "d".repeat(5000)})).send().await.unwrap(), 422).await;
        assert_eq!(first_error(&p), ("description".to_owned(), "limit_exceeded".to_owned()));
        let p = expect(app.post("/api/v1/relay-keys", &json!({"name": "r", "environments": [
            {"project": "p", "environment": "e"}, {"project": "nope", "environment": "e"}]})).send().await.unwrap(), 422).await;
        assert_eq!(first_error(&p), ("environments[1].project".to_owned(), "unknown_project".to_owned()));
        let p = expect(app.post("/api/v1/projects/p/environments", &json!({"key": "f", "name": "F", "copy_from": "nope"})).send().await.unwrap(), 422).await;
        assert_eq!(first_error(&p), ("copy_from".to_owned(), "unknown_environment".to_owned()));
        let p = expect(app.post("/api/v1/evaluate/batch", &json!({"project": "p", "environment": "e",
            "flags": (0..1001).map(|i| format!("f{i}")).collect::<Vec<_>>(), "context": {"key": "u"}})).send().await.unwrap(), 422).await;
        assert_eq!(first_error(&p), ("flags".to_owned(), "limit_exceeded".to_owned()));
    }
}

/// Listing stays a database query at 10,000 flags: every filter runs in SQL, so walking the
/// temporary flags page by page returns exactly them, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_flags_filter_and_page_in_the_database() {
    let app = spawn_app(Backend::Postgres).await;
    app.project("big", &[]).await;
    app.database
        .execute(
            "INSERT INTO flags (project_id, key, name, definition, archived, version, created_at, updated_at)
             SELECT p.id, 'f' || lpad(i::text, 5, '0'), 'Flag ' || i,
                    jsonb_build_object('key', 'f' || lpad(i::text, 5, '0'), 'name', 'Flag ' || i,
                        'kind', 'boolean', 'variations', '[{\"value\": true}, {\"value\": false}]'::jsonb,
                        'temporary', i % 2 = 0),
                    i % 5 = 0, 1, now(), now()
             FROM projects p, generate_series(1, 10000) i WHERE p.key = 'big'",
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut seen = 0;
    let mut url = "/api/v1/projects/big/flags?temporary=true&archived=false&limit=500".to_owned();
    loop {
        let page = expect(app.get(&url).send().await.unwrap(), 200).await;
        for f in page["items"].as_array().unwrap() {
            assert_eq!(
                (f["temporary"].as_bool(), f["archived"].as_bool()),
                (Some(true), Some(false))
            );
            seen += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => {
                url = format!(
                    "/api/v1/projects/big/flags?temporary=true&archived=false&limit=500&cursor={c}"
                )
            }
            None => break,
        }
    }
    // Even numbers not divisible by 5: 5,000 - 1,000.
    assert_eq!(seen, 4000);
    let q = expect(
        app.get("/api/v1/projects/big/flags?q=flag%20999&temporary=false")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        keys(&q),
        ["f00999", "f09991", "f09993", "f09995", "f09997", "f09999"]
    );
    // Generous: a page costs milliseconds; this only catches a per-flag round trip.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
