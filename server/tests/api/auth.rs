//! Authentication and the role matrix.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both;
use crate::helpers::{bool_flag, config_path, expect};

/// Every write endpoint, in an order that works when each succeeds, for project `p`; `{sdk}`,
/// `{token}` and `{relay}` are ids of keys created beforehand by an admin. The flag says
/// whether an editor may call it (viewers may call none, admins all). Each write changes
/// something, so each must leave an audit entry.
fn writes(p: &str) -> Vec<(Method, String, Value, bool)> {
    let cfg = config_path(p, "f", "e");
    vec![
        (
            Method::POST,
            "/api/v1/projects".into(),
            json!({"key": p, "name": p}),
            true,
        ),
        (
            Method::PATCH,
            format!("/api/v1/projects/{p}"),
            json!({"description": "d"}),
            true,
        ),
        (
            Method::POST,
            format!("/api/v1/projects/{p}/environments"),
            json!({"key": "e", "name": "E"}),
            true,
        ),
        (
            Method::PATCH,
            format!("/api/v1/projects/{p}/environments/e"),
            json!({"name": "E2"}),
            true,
        ),
        (
            Method::POST,
            format!("/api/v1/projects/{p}/flags"),
            bool_flag("f"),
            true,
        ),
        (
            Method::PUT,
            format!("/api/v1/projects/{p}/flags/f"),
            json!({"key": "f", "name": "F2", "kind": "boolean",
                   "variations": [{"value": true}, {"value": false}]}),
            true,
        ),
        (
            Method::PUT,
            cfg.clone(),
            json!({"off_variation": 0, "fallthrough": {"variation": 0}}),
            true,
        ),
        (
            Method::POST,
            format!("{cfg}/rollback"),
            json!({"version": 1}),
            true,
        ),
        (Method::PATCH, cfg.clone(), json!({"on": true}), true),
        (
            Method::POST,
            format!("/api/v1/projects/{p}/flags/f/kill"),
            json!({}),
            true,
        ),
        (
            Method::POST,
            format!("/api/v1/projects/{p}/flags/f/archive"),
            json!({}),
            true,
        ),
        (
            Method::POST,
            format!("/api/v1/projects/{p}/flags/f/unarchive"),
            json!({}),
            true,
        ),
        (
            Method::POST,
            format!("/api/v1/projects/{p}/environments/e/segments"),
            json!({"key": "s", "name": "S"}),
            true,
        ),
        (
            Method::PUT,
            format!("/api/v1/projects/{p}/environments/e/segments/s"),
            json!({"key": "s", "name": "S2"}),
            true,
        ),
        (
            Method::DELETE,
            format!("/api/v1/projects/{p}/environments/e/segments/s"),
            Value::Null,
            true,
        ),
        (
            Method::DELETE,
            format!("/api/v1/projects/{p}/flags/f"),
            Value::Null,
            true,
        ),
        (
            Method::POST,
            format!("/api/v1/projects/{p}/environments/e/sdk-keys"),
            json!({"name": "svc"}),
            false,
        ),
        (
            Method::POST,
            format!("/api/v1/projects/{p}/environments/e/sdk-keys/{{sdk}}/rotate"),
            json!({}),
            false,
        ),
        (
            Method::DELETE,
            format!("/api/v1/projects/{p}/environments/e/sdk-keys/{{sdk}}"),
            Value::Null,
            false,
        ),
        (
            Method::POST,
            "/api/v1/tokens".into(),
            json!({"name": format!("made-in-{p}"), "role": "viewer"}),
            false,
        ),
        (
            Method::DELETE,
            "/api/v1/tokens/{token}".into(),
            Value::Null,
            false,
        ),
        (
            Method::POST,
            "/api/v1/relay-keys".into(),
            json!({"name": "edge", "environments": [{"project": p, "environment": "e"}]}),
            false,
        ),
        (
            Method::POST,
            "/api/v1/relay-keys/{relay}/rotate".into(),
            json!({"grace_seconds": 60}),
            false,
        ),
        (
            Method::DELETE,
            "/api/v1/relay-keys/{relay}".into(),
            Value::Null,
            false,
        ),
        // Deleting an environment or a whole project is an admin action.
        (
            Method::DELETE,
            format!("/api/v1/projects/{p}/environments/e"),
            Value::Null,
            false,
        ),
        (
            Method::DELETE,
            format!("/api/v1/projects/{p}"),
            Value::Null,
            false,
        ),
    ]
}

async fn admin_keys(app: &vexil_testkit::TestApp, p: &str) -> (String, String, String) {
    // Keys for the admin-only rotate/revoke endpoints, in an environment that outlives the run.
    let sdk = expect(
        app.post(
            &format!("/api/v1/projects/{p}/environments/e/sdk-keys"),
            &json!({"name": "pre"}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    let tok = expect(
        app.post(
            "/api/v1/tokens",
            &json!({"name": format!("pre-{p}"), "role": "viewer"}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    let relay = expect(
        app.post(
            "/api/v1/relay-keys",
            &json!({"name": "pre", "environments": [{"project": p, "environment": "e"}]}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    (
        sdk["id"].to_string(),
        tok["id"].to_string(),
        relay["id"].to_string(),
    )
}

async fn send(
    app: &vexil_testkit::TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: &Value,
    request_id: &str,
) -> reqwest::Response {
    let mut req = app
        .request_as(method, path, token)
        .header("x-request-id", request_id);
    if !body.is_null() {
        req = req.json(body);
    }
    req.send().await.unwrap()
}

both! {
    async fn missing_bad_and_wrong_credentials_are_401(app) {
        let r = app.client.get(app.url("/api/v1/projects")).send().await.unwrap();
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"vexil\"");
        let p = expect(r, 401).await;
        assert_eq!(p["type"], "urn:vexil:problem:unauthorized");
        expect(app.client.get(app.url("/api/v1/projects")).bearer_auth("vxa_0000").send().await.unwrap(), 401).await;
        expect(app.client.get(app.url("/api/v1/projects")).header("authorization", "Basic abc").send().await.unwrap(), 401).await;
        // SDK keys do not open the management API.
        app.project("p", &["e"]).await;
        let sdk = expect(app.post("/api/v1/projects/p/environments/e/sdk-keys", &json!({"name": "svc"})).send().await.unwrap(), 201).await;
        let secret = sdk["secret"].as_str().unwrap();
        assert!(secret.starts_with("vxs_"));
        expect(app.client.get(app.url("/api/v1/projects")).bearer_auth(secret).send().await.unwrap(), 401).await;
        // A revoked token stops at once.
        let t = expect(app.post("/api/v1/tokens", &json!({"name": "temp", "role": "editor"})).send().await.unwrap(), 201).await;
        let secret = t["secret"].as_str().unwrap().to_owned();
        let me = expect(app.client.get(app.url("/api/v1/me")).bearer_auth(&secret).send().await.unwrap(), 200).await;
        assert_eq!(me, json!({"name": "temp", "role": "editor", "token_id": t["id"]}));
        expect(app.delete(&format!("/api/v1/tokens/{}", t["id"])).send().await.unwrap(), 200).await;
        expect(app.client.get(app.url("/api/v1/me")).bearer_auth(&secret).send().await.unwrap(), 401).await;
    }

    async fn role_matrix(app) {
        let viewer = app.token("viewer", "viewer").await;
        let editor = app.token("editor", "editor").await;
        for (role, token) in [("viewer", viewer.as_str()), ("editor", editor.as_str()), ("admin", app.admin_token.as_str())] {
            let p = format!("rm-{role}");
            // An admin prepares the project for roles that cannot create it, and the keys
            // for the admin-only endpoints.
            if role == "viewer" {
                app.project(&p, &["e"]).await;
                expect(app.post(&format!("/api/v1/projects/{p}/flags"), &bool_flag("f")).send().await.unwrap(), 201).await;
                expect(app.post(&format!("/api/v1/projects/{p}/environments/e/segments"), &json!({"key": "s", "name": "S"})).send().await.unwrap(), 201).await;
            }
            let mut ids: Option<(String, String, String)> = None;
            let before = app.database.fingerprint().await;
            for (i, (method, path, body, editor_may)) in writes(&p).into_iter().enumerate() {
                if ids.is_none() && (path.contains("{sdk}") || path.contains("/tokens") || path.contains("relay")) {
                    ids = Some(admin_keys(&app, &p).await);
                }
                let path = match &ids {
                    Some((sdk, tok, relay)) => path.replace("{sdk}", sdk).replace("{token}", tok).replace("{relay}", relay),
                    None => path,
                };
                let allowed = match role { "viewer" => false, "editor" => editor_may, _ => true };
                let request_id = format!("rm-{role}-{i}");
                let res = send(&app, token, method.clone(), &path, &body, &request_id).await;
                let status = res.status();
                let text = res.text().await.unwrap();
                if allowed {
                    assert!(status.is_success(), "{role} {method} {path}: {status} {text}");
                    // Every successful write is in the audit log, under its request id.
                    let audit = expect(app.get("/api/v1/audit?limit=20").send().await.unwrap(), 200).await;
                    assert!(
                        audit["items"].as_array().unwrap().iter().any(|e| e["request_id"] == request_id.as_str()),
                        "{role} {method} {path} left no audit entry: {audit}"
                    );
                } else {
                    assert_eq!(status, 403, "{role} {method} {path}: {text}");
                    assert!(text.contains("urn:vexil:problem:forbidden"));
                }
            }
            if role == "viewer" {
                let after = app.database.fingerprint().await;
                let mut expected = before.clone();
                // Only the admin-prepared keys were added.
                expected.insert("access_keys", before["access_keys"] + 2);
                expected.insert("api_tokens", before["api_tokens"] + 1);
                expected.insert("audit_log", before["audit_log"] + 3);
                assert_eq!(after, expected);
            }
        }
        // Every role reads.
        for token in [viewer.as_str(), editor.as_str()] {
            for path in ["/api/v1/projects", "/api/v1/projects/rm-viewer/flags", "/api/v1/projects/rm-viewer/flags/f",
                         "/api/v1/projects/rm-viewer/environments/e/segments", "/api/v1/audit", "/api/v1/projects/rm-viewer/environments/e/snapshot"] {
                let r = app.request_as(Method::GET, path, token).send().await.unwrap();
                assert_eq!(r.status(), 200, "{path}");
            }
            // Listing tokens and keys is for admins.
            assert_eq!(app.request_as(Method::GET, "/api/v1/tokens", token).send().await.unwrap().status(), 403);
            assert_eq!(app.request_as(Method::GET, "/api/v1/relay-keys", token).send().await.unwrap().status(), 403);
        }
    }
}

/// Creates a scoped token as admin and returns its secret.
async fn scoped_token(
    app: &vexil_testkit::TestApp,
    name: &str,
    role: &str,
    scopes: Value,
) -> String {
    let t = expect(
        app.post(
            "/api/v1/tokens",
            &json!({"name": name, "role": role, "scopes": scopes}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    assert_eq!(t["scopes"], scopes, "{t}");
    t["secret"].as_str().unwrap().to_owned()
}

both! {
    async fn scoped_role_matrix(app) {
        app.project("web", &["staging", "production"]).await;
        app.project("other", &["staging"]).await;
        for p in ["web", "other"] {
            expect(app.post(&format!("/api/v1/projects/{p}/flags"), &bool_flag("f")).send().await.unwrap(), 201).await;
        }
        // Editor on web/staging, viewer on web/production, nothing elsewhere.
        let scopes = json!([
            {"project": "web", "environment": "staging", "role": "editor"},
            {"project": "web", "environment": "production", "role": "viewer"}
        ]);
        let token = scoped_token(&app, "web-staging-editor", "editor", scopes.clone()).await;
        let me = expect(app.request_as(Method::GET, "/api/v1/me", &token).send().await.unwrap(), 200).await;
        assert_eq!(me["scopes"], scopes);
        let cfg_on = json!({"on": true});
        // (method, path, body, allowed)
        let cases: Vec<(Method, String, Value, bool)> = vec![
            // Environment-level writes: only where the grant is editor.
            (Method::PATCH, config_path("web", "f", "staging"), cfg_on.clone(), true),
            (Method::PATCH, config_path("web", "f", "production"), cfg_on.clone(), false),
            (Method::PATCH, config_path("other", "f", "staging"), cfg_on.clone(), false),
            (Method::POST, "/api/v1/projects/web/environments/staging/segments".into(), json!({"key": "s", "name": "S"}), true),
            (Method::POST, "/api/v1/projects/web/environments/production/segments".into(), json!({"key": "s", "name": "S"}), false),
            // Project-level writes need a project-wide grant.
            (Method::POST, "/api/v1/projects/web/flags".into(), bool_flag("g"), false),
            (Method::POST, "/api/v1/projects/web/flags/f/kill".into(), json!({}), false),
            (Method::PATCH, "/api/v1/projects/web".into(), json!({"description": "d"}), false),
            (Method::POST, "/api/v1/projects/web/import".into(),
             json!({"format": "vexil.project/v1", "project": {"key": "web", "name": "web"}, "environments": [], "flags": []}), false),
            // Admin-only, whatever the grant.
            (Method::DELETE, "/api/v1/projects/web/environments/staging".into(), Value::Null, false),
            (Method::POST, "/api/v1/projects/web/environments/staging/sdk-keys".into(), json!({"name": "k"}), false),
            // Reads: where a grant is, and at the level of its project.
            (Method::GET, config_path("web", "f", "production"), Value::Null, true),
            (Method::GET, "/api/v1/projects/web/environments/production/snapshot".into(), Value::Null, true),
            (Method::GET, "/api/v1/projects/web/flags/f".into(), Value::Null, true),
            (Method::GET, "/api/v1/projects/web/export".into(), Value::Null, true),
            (Method::GET, "/api/v1/projects/web/environments/staging/experiments".into(), Value::Null, true),
            (Method::GET, "/api/v1/projects/other/flags/f".into(), Value::Null, false),
            (Method::GET, "/api/v1/projects/other/environments/staging/snapshot".into(), Value::Null, false),
            (Method::GET, "/api/v1/projects/other/environments/staging/experiments".into(), Value::Null, false),
            (Method::GET, "/api/v1/projects/other/export".into(), Value::Null, false),
            // Outside projects: unscoped tokens only.
            (Method::GET, "/api/v1/projects".into(), Value::Null, false),
            (Method::GET, "/api/v1/audit".into(), Value::Null, false),
            (Method::POST, "/api/v1/projects".into(), json!({"key": "new", "name": "N"}), false),
            (Method::GET, "/api/v1/tokens".into(), Value::Null, false),
            // Evaluation names its environment in the body.
            (Method::POST, "/api/v1/evaluate".into(),
             json!({"project": "web", "environment": "production", "flag": "f", "context": {"key": "u"}}), true),
            (Method::POST, "/api/v1/evaluate/batch".into(),
             json!({"project": "other", "environment": "staging", "context": {"key": "u"}}), false),
        ];
        for (i, (method, path, body, allowed)) in cases.into_iter().enumerate() {
            let before = app.database.fingerprint().await;
            let request_id = format!("scoped-{i}");
            let res = send(&app, &token, method.clone(), &path, &body, &request_id).await;
            let status = res.status();
            let text = res.text().await.unwrap();
            if allowed {
                assert!(status.is_success(), "{method} {path}: {status} {text}");
                if method != Method::GET && !path.contains("evaluate") {
                    let audit = expect(app.get("/api/v1/audit?limit=20").send().await.unwrap(), 200).await;
                    assert!(
                        audit["items"].as_array().unwrap().iter().any(|e| e["request_id"] == request_id.as_str()
                            && e["actor"] == "web-staging-editor"),
                        "{method} {path} left no audit entry: {audit}"
                    );
                }
            } else {
                assert_eq!(status, 403, "{method} {path}: {text}");
                assert!(text.contains("urn:vexil:problem:forbidden"), "{text}");
                // A refused request changes nothing.
                assert_eq!(app.database.fingerprint().await, before, "{method} {path}");
            }
        }

        // A project-wide grant covers the project and its environments, and an environment
        // grant overrides it there; a project admin may delete its environments but still
        // cannot reach tokens.
        let admin = scoped_token(&app, "web-admin", "admin", json!([
            {"project": "web", "role": "admin"},
            {"project": "web", "environment": "production", "role": "viewer"}
        ])).await;
        expect(app.request_as(Method::POST, "/api/v1/projects/web/flags", &admin).json(&bool_flag("g")).send().await.unwrap(), 201).await;
        expect(app.request_as(Method::PATCH, &config_path("web", "g", "production"), &admin).json(&cfg_on).send().await.unwrap(), 403).await;
        expect(app.request_as(Method::GET, "/api/v1/tokens", &admin).send().await.unwrap(), 403).await;
        expect(app.request_as(Method::DELETE, "/api/v1/projects/other/environments/staging", &admin).send().await.unwrap(), 403).await;
        expect(app.request_as(Method::DELETE, "/api/v1/projects/web/environments/staging", &admin).send().await.unwrap(), 204).await;

        // Grants are checked when the token is made.
        for (role, scopes, path) in [
            ("viewer", json!([{"project": "web", "role": "editor"}]), "scopes[0].role"),
            ("editor", json!([{"project": "nope", "role": "viewer"}]), "scopes[0].project"),
            ("editor", json!([{"project": "web", "environment": "nope", "role": "viewer"}]), "scopes[0].environment"),
            ("editor", json!([]), "scopes"),
            ("editor", json!([{"project": "web", "role": "viewer"}, {"project": "web", "role": "editor"}]), "scopes[1]"),
        ] {
            let p = expect(app.post("/api/v1/tokens", &json!({"name": "bad", "role": role, "scopes": scopes})).send().await.unwrap(), 422).await;
            assert_eq!(p["errors"][0]["path"], path, "{p}");
        }
        // Revoking a scoped token works like any other.
        let tokens = expect(app.get("/api/v1/tokens").send().await.unwrap(), 200).await;
        let id = tokens["items"].as_array().unwrap().iter().find(|t| t["name"] == "web-staging-editor").unwrap()["id"].clone();
        expect(app.delete(&format!("/api/v1/tokens/{id}")).send().await.unwrap(), 200).await;
        expect(app.request_as(Method::GET, "/api/v1/me", &token).send().await.unwrap(), 401).await;
    }
}
