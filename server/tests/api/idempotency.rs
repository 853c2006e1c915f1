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

/// Every stored idempotency response body, read from the database itself.
async fn stored_bodies(db: &vexil_testkit::TestDatabase) -> Vec<Vec<u8>> {
    use sqlx::Connection;
    const SQL: &str = "SELECT body FROM idempotency_keys WHERE body IS NOT NULL";
    match db.backend {
        vexil_testkit::Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(SQL).fetch_all(&mut c).await.unwrap()
        }
        vexil_testkit::Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.url))
                .await
                .unwrap();
            sqlx::query_scalar(SQL).fetch_all(&mut c).await.unwrap()
        }
    }
}

/// Makes storing any idempotency response fail, as if the server stopped right after the
/// write committed (the crash window the record must survive).
async fn fail_response_storage(db: &vexil_testkit::TestDatabase, on: bool) {
    let statements: &[&'static str] = match (db.backend, on) {
        (vexil_testkit::Backend::Postgres, true) => &[
            "CREATE OR REPLACE FUNCTION vexil_test_fail_body() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.body IS NOT NULL THEN RAISE EXCEPTION 'fault injected: response lost'; END IF;
               RETURN NEW;
             END $$",
            "CREATE TRIGGER vexil_test_fail_body BEFORE UPDATE ON idempotency_keys
             FOR EACH ROW EXECUTE FUNCTION vexil_test_fail_body()",
        ],
        (vexil_testkit::Backend::Postgres, false) => {
            &["DROP TRIGGER vexil_test_fail_body ON idempotency_keys"]
        }
        (vexil_testkit::Backend::Sqlite, true) => &[
            "CREATE TRIGGER vexil_test_fail_body BEFORE UPDATE OF body ON idempotency_keys
             WHEN NEW.body IS NOT NULL BEGIN SELECT RAISE(ABORT, 'fault injected'); END",
        ],
        (vexil_testkit::Backend::Sqlite, false) => &["DROP TRIGGER vexil_test_fail_body"],
    };
    for sql in statements {
        db.execute(sql).await.unwrap();
    }
}

both! {
    async fn secrets_are_never_stored_for_replay(app) {
        app.project("p", &["e"]).await;
        let creations = [
            ("/api/v1/tokens", json!({"name": "ci", "role": "editor"})),
            ("/api/v1/projects/p/environments/e/sdk-keys", json!({"name": "web"})),
            ("/api/v1/relay-keys", json!({"name": "edge", "environments": [{"project": "p", "environment": "e"}]})),
        ];
        for (i, (path, body)) in creations.iter().enumerate() {
            let key = format!("create-{i}");
            let first = expect(app.post(path, body).header("idempotency-key", &key).send().await.unwrap(), 201).await;
            let secret = first["secret"].as_str().expect("the creator sees the secret").to_owned();
            for stored in stored_bodies(&app.database).await {
                let stored = String::from_utf8_lossy(&stored);
                assert!(!stored.contains(&secret), "{path}: a secret was stored: {stored}");
            }
            let again = app.post(path, body).header("idempotency-key", &key).send().await.unwrap();
            assert_eq!(again.status(), 201, "{path}");
            assert_eq!(again.headers()["idempotent-replayed"], "true");
            let again: serde_json::Value = again.json().await.unwrap();
            assert!(again.get("secret").is_none(), "{path}: a replay shows the secret again: {again}");
            assert_eq!(again["secret_withheld"], true, "{path}");
            assert_eq!(again["id"], first["id"], "{path}: the replay names what was created");
            assert_eq!(again["hint"], first["hint"]);
        }
        // The token created once works; the replays created nothing.
        let tokens = expect(app.get("/api/v1/tokens").send().await.unwrap(), 200).await;
        let text = tokens.to_string();
        assert_eq!(text.matches("\"ci\"").count(), 1, "{text}");
    }

    async fn a_write_whose_response_was_lost_is_never_applied_twice(app) {
        app.project("p", &["e"]).await;
        fail_response_storage(&app.database, true).await;
        // The write commits; storing its response fails (the crash window).
        let first = app.post("/api/v1/projects/p/flags", &bool_flag("f")).header("idempotency-key", "k-lost").send().await.unwrap();
        assert_eq!(first.status(), 201, "the client of the first request still gets its answer");
        fail_response_storage(&app.database, false).await;
        let before = app.database.fingerprint().await;

        // A retry neither runs again nor waits for a request that already finished.
        let p = expect(app.post("/api/v1/projects/p/flags", &bool_flag("f")).header("idempotency-key", "k-lost").send().await.unwrap(), 409).await;
        assert_eq!(p["type"], "urn:vexil:problem:idempotency-response-lost", "{p}");
        assert_eq!(app.database.fingerprint().await, before, "the retry changed nothing");
        expect(app.get("/api/v1/projects/p/flags/f").send().await.unwrap(), 200).await;

        // A request that committed nothing (a refused one) leaves no "applied" record behind.
        fail_response_storage(&app.database, true).await;
        expect(app.post("/api/v1/projects/p/flags", &json!({"key": "bad key"})).header("idempotency-key", "k-bad").send().await.unwrap(), 422).await;
        fail_response_storage(&app.database, false).await;
        let p = expect(app.post("/api/v1/projects/p/flags", &json!({"key": "bad key"})).header("idempotency-key", "k-bad").send().await.unwrap(), 409).await;
        assert_eq!(p["type"], "urn:vexil:problem:idempotency-key-in-progress", "{p}");
    }
}
