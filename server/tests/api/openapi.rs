//! The OpenAPI round trip: the published document describes the API exactly.
//!
//! 1. Every operation is called for real, to success and to failure; each answer's status
//!    must be declared for that operation, with the content type sent, and its body must
//!    validate against the declared schema (error bodies against `Problem`). Every operation
//!    must have been seen to succeed and to fail, so a new route cannot go unchecked.
//! 2. Representative values of the model's serde types are serialised and validated against
//!    the published schemas, and every variant with one field nulled or removed must be
//!    accepted by the schema exactly when serde accepts it: a mirror that drifts from its
//!    serde type (a field renamed, a null the type refuses) fails here.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::{Value, json};
use vexil_schema::{Context, FlagConfig, FlagDefinition, Segment};
use vexil_server::store::ConfigPatch;
use vexil_testkit::{Backend, TestApp, spawn_app};

use crate::schema_check::{Doc, mutations};

/// Calls the API and checks each answer against the document.
struct Checker<'a> {
    app: &'a TestApp,
    doc: Doc,
    /// (method, template) → statuses seen.
    seen: BTreeMap<(String, String), BTreeSet<u16>>,
    problems: Vec<String>,
}

/// Who calls.
#[derive(Clone, Copy)]
enum As<'t> {
    Token(&'t str),
    Nobody,
}

impl<'a> Checker<'a> {
    /// Sends a request and checks the answer; returns its status and JSON body.
    async fn call(
        &mut self,
        who: As<'_>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.app.client.request(method.clone(), self.app.url(path));
        if let As::Token(t) = who {
            req = req.bearer_auth(t);
        }
        if let Some(b) = &body {
            req = req.json(b);
        }
        let res = req.send().await.unwrap();
        self.check(method, path, body.as_ref(), res).await
    }

    /// As admin.
    async fn admin(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
        expect: u16,
    ) -> Value {
        let token = self.app.admin_token.clone();
        self.expect(As::Token(&token), method, path, body, expect)
            .await
    }

    async fn expect(
        &mut self,
        who: As<'_>,
        method: Method,
        path: &str,
        body: Option<Value>,
        expect: u16,
    ) -> Value {
        let (status, v) = self.call(who, method.clone(), path, body).await;
        assert_eq!(status, expect, "{method} {path}: {v}");
        v
    }

    /// Sends a raw body with a content type.
    async fn raw(
        &mut self,
        method: Method,
        path: &str,
        content_type: &str,
        body: &str,
        expect: u16,
    ) {
        let res = self
            .app
            .request_as(method.clone(), path, &self.app.admin_token)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let (status, v) = self.check(method.clone(), path, None, res).await;
        assert_eq!(status, expect, "{method} {path}: {v}");
    }

    async fn check(
        &mut self,
        method: Method,
        path: &str,
        sent: Option<&Value>,
        res: reqwest::Response,
    ) -> (u16, Value) {
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned());
        let text = res.text().await.unwrap();
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text.clone()))
        };
        let m = method.as_str().to_lowercase();
        let route = path.split('?').next().unwrap();
        let Some(template) = self.doc.template_of(&m, route) else {
            self.problems.push(format!(
                "{method} {route}: no such operation in the document"
            ));
            return (status, body);
        };
        self.seen
            .entry((m.clone(), template.clone()))
            .or_default()
            .insert(status);
        let op = self.doc.operation(&m, &template).clone();
        let at = format!("{method} {template} -> {status}");
        // A request the API accepted must be one the document accepts.
        if let (Some(sent), true) = (sent, (200..300).contains(&status)) {
            match op["requestBody"]["content"]["application/json"]["schema"].as_object() {
                Some(_) => {
                    let mut errors = Vec::new();
                    self.doc.validate(
                        &op["requestBody"]["content"]["application/json"]["schema"],
                        sent,
                        "$",
                        &mut errors,
                    );
                    if !errors.is_empty() {
                        self.problems.push(format!("{at}: the request body the API accepted breaks the documented schema: {errors:?}"));
                    }
                }
                None if !sent.is_null() && sent != &json!({}) => {
                    self.problems.push(format!(
                        "{at}: the API accepted a body the document does not describe"
                    ));
                }
                None => {}
            }
        }
        let Some(declared) = op["responses"].get(status.to_string()) else {
            self.problems.push(format!(
                "{at}: status not declared (declared: {:?})",
                op["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .collect::<Vec<_>>()
            ));
            return (status, body);
        };
        let content = declared.get("content").and_then(Value::as_object);
        match (content, content_type, text.is_empty()) {
            (None, _, true) => {}
            (None, ct, false) => self.problems.push(format!(
                "{at}: body ({ct:?}) where none is declared: {text}"
            )),
            (Some(c), _, true) => self.problems.push(format!(
                "{at}: empty body, declared {:?}",
                c.keys().collect::<Vec<_>>()
            )),
            (Some(c), ct, false) => match ct.as_deref().and_then(|ct| c.get(ct)) {
                None => self.problems.push(format!(
                    "{at}: content type {ct:?} not declared ({:?})",
                    c.keys().collect::<Vec<_>>()
                )),
                Some(media) => {
                    let mut errors = Vec::new();
                    self.doc.validate(&media["schema"], &body, "$", &mut errors);
                    if !errors.is_empty() {
                        self.problems.push(format!(
                            "{at}: body breaks the declared schema: {errors:?}\n  body: {body}"
                        ));
                    }
                    if status >= 400 && ct.as_deref() != Some("application/problem+json") {
                        self.problems.push(format!(
                            "{at}: an error that is not application/problem+json"
                        ));
                    }
                }
            },
        }
        (status, body)
    }
}

use Method as M;

/// A configuration that uses every part of the model.
fn rich_config() -> Value {
    json!({
        "on": true,
        "off_variation": 1,
        "targets": [{"variation": 0, "values": ["alice", "bob"]}],
        "rules": [
            {"id": "beta", "description": "beta users", "serve": {"variation": 0}, "clauses": [
                {"attribute": "email", "op": "ends_with", "values": ["@example.com"]},
                {"attribute": "plan", "op": "in", "values": ["pro"], "negate": true},
                {"attribute": "key", "op": "segment_match", "values": ["s"]}]},
            {"id": "split", "serve": {"rollout": {"variations": [{"variation": 0, "weight": 25000},
                {"variation": 1, "weight": 75000}], "bucket_by": "org", "experiment": true}},
             "clauses": [{"attribute": "country", "op": "exists"}]}
        ],
        "fallthrough": {"rollout": {"variations": [{"variation": 0, "weight": 50000}, {"variation": 1, "weight": 50000}]}},
        "prerequisites": [{"key": "g", "variation": 0}],
        "salt": "",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_the_document_says() {
    let app = spawn_app(Backend::Postgres).await;
    let doc: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let viewer = app.token("doc-viewer", "viewer").await;
    let v = As::Token(&viewer);
    let mut c = Checker {
        app: &app,
        doc: Doc(doc),
        seen: BTreeMap::new(),
        problems: Vec::new(),
    };

    // Who am I.
    c.admin(M::GET, "/api/v1/me", None, 200).await;
    c.expect(As::Nobody, M::GET, "/api/v1/me", None, 401).await;

    // Projects.
    c.admin(
        M::POST,
        "/api/v1/projects",
        Some(json!({"key": "p", "name": "P", "description": "d"})),
        201,
    )
    .await;
    c.admin(
        M::POST,
        "/api/v1/projects",
        Some(json!({"key": "doomed", "name": "D"})),
        201,
    )
    .await;
    c.admin(
        M::POST,
        "/api/v1/projects",
        Some(json!({"key": "p", "name": "P"})),
        409,
    )
    .await;
    c.admin(
        M::POST,
        "/api/v1/projects",
        Some(json!({"key": "bad key", "name": "P"})),
        422,
    )
    .await;
    c.expect(
        v,
        M::POST,
        "/api/v1/projects",
        Some(json!({"key": "q", "name": "Q"})),
        403,
    )
    .await;
    c.raw(
        M::POST,
        "/api/v1/projects",
        "application/json",
        "{\"key\": ",
        400,
    )
    .await;
    c.raw(M::POST, "/api/v1/projects", "text/plain", "{}", 415)
        .await;
    c.admin(M::GET, "/api/v1/projects?limit=1", None, 200).await;
    c.admin(M::GET, "/api/v1/projects?limit=0", None, 422).await;
    c.admin(M::GET, "/api/v1/projects/p", None, 200).await;
    c.admin(M::GET, "/api/v1/projects/nope", None, 404).await;
    c.admin(
        M::PATCH,
        "/api/v1/projects/p",
        Some(json!({"description": "d2"})),
        200,
    )
    .await;
    c.admin(
        M::PATCH,
        "/api/v1/projects/p",
        Some(json!({"name": null})),
        422,
    )
    .await;
    c.admin(
        M::PATCH,
        "/api/v1/projects/nope",
        Some(json!({"name": "N"})),
        404,
    )
    .await;

    // Environments.
    let envs = "/api/v1/projects/p/environments";
    c.admin(M::POST, envs, Some(json!({"key": "e", "name": "E"})), 201)
        .await;
    c.admin(
        M::POST,
        envs,
        Some(json!({"key": "gone", "name": "G", "copy_from": "e"})),
        201,
    )
    .await;
    c.admin(M::POST, envs, Some(json!({"key": "e", "name": "E"})), 409)
        .await;
    c.admin(
        M::POST,
        "/api/v1/projects/nope/environments",
        Some(json!({"key": "e", "name": "E"})),
        404,
    )
    .await;
    c.admin(M::GET, envs, None, 200).await;
    c.admin(M::GET, "/api/v1/projects/nope/environments", None, 404)
        .await;
    c.admin(M::GET, "/api/v1/projects/p/environments/e", None, 200)
        .await;
    c.admin(M::GET, "/api/v1/projects/p/environments/nope", None, 404)
        .await;
    c.admin(
        M::PATCH,
        "/api/v1/projects/p/environments/e",
        Some(json!({"name": "E2"})),
        200,
    )
    .await;
    c.admin(
        M::PATCH,
        "/api/v1/projects/p/environments/e",
        Some(json!({"colour": "red"})),
        422,
    )
    .await;
    c.admin(
        M::PATCH,
        "/api/v1/projects/p/environments/nope",
        Some(json!({"name": "X"})),
        404,
    )
    .await;

    // Flags.
    let flags = "/api/v1/projects/p/flags";
    let def = |key: &str| {
        json!({"key": key, "name": key, "description": "about", "kind": "boolean",
        "variations": [{"value": true, "name": "on", "description": "yes"}, {"value": false}], "tags": ["ui"], "temporary": true})
    };
    c.admin(M::POST, flags, Some(def("g")), 201).await;
    c.admin(M::POST, flags, Some(def("f")), 201).await;
    c.admin(M::POST, flags, Some(def("f")), 409).await;
    c.admin(
        M::POST,
        flags,
        Some(json!({"key": "h", "kind": "boolean", "variations": [{"value": 1}]})),
        422,
    )
    .await;
    c.admin(M::POST, "/api/v1/projects/nope/flags", Some(def("f")), 404)
        .await;
    c.admin(
        M::GET,
        &format!("{flags}?tag=ui&q=f&archived=any&temporary=true&limit=1"),
        None,
        200,
    )
    .await;
    c.admin(M::GET, &format!("{flags}?archived=maybe"), None, 422)
        .await;
    c.admin(M::GET, "/api/v1/projects/p/flags/f", None, 200)
        .await;
    c.admin(M::GET, "/api/v1/projects/p/flags/nope", None, 404)
        .await;
    let mut def2 = def("f");
    def2["name"] = json!("F2");
    c.admin(
        M::PUT,
        "/api/v1/projects/p/flags/f",
        Some(def2.clone()),
        200,
    )
    .await;
    c.admin(M::PUT, "/api/v1/projects/p/flags/f", Some(def("g")), 422)
        .await;
    c.admin(
        M::PUT,
        "/api/v1/projects/p/flags/nope",
        Some(def("nope")),
        404,
    )
    .await;
    let res = app
        .put("/api/v1/projects/p/flags/f", &def2)
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    let (s, _) = c
        .check(M::PUT, "/api/v1/projects/p/flags/f", Some(&def2), res)
        .await;
    assert_eq!(s, 412);

    // Segments (before the configuration that matches one).
    let segs = "/api/v1/projects/p/environments/e/segments";
    let seg = json!({"key": "s", "name": "S", "description": "d", "included": ["a"], "excluded": ["b"],
        "rules": [{"id": "r", "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}], "weight": 50000, "bucket_by": "org"}]});
    c.admin(M::POST, segs, Some(seg.clone()), 201).await;
    c.admin(M::POST, segs, Some(seg.clone()), 409).await;
    c.admin(M::POST, segs, Some(json!({"key": "t", "rules": null})), 422)
        .await;
    c.admin(
        M::POST,
        "/api/v1/projects/p/environments/nope/segments",
        Some(seg.clone()),
        404,
    )
    .await;
    c.admin(M::GET, segs, None, 200).await;
    c.admin(
        M::GET,
        "/api/v1/projects/p/environments/nope/segments",
        None,
        404,
    )
    .await;
    c.admin(M::GET, &format!("{segs}/s"), None, 200).await;
    c.admin(M::GET, &format!("{segs}/nope"), None, 404).await;
    let mut seg2 = seg.clone();
    seg2["name"] = json!("S2");
    c.admin(M::PUT, &format!("{segs}/s"), Some(seg2.clone()), 200)
        .await;
    c.admin(
        M::PUT,
        &format!("{segs}/s"),
        Some(json!({"key": "other"})),
        422,
    )
    .await;
    c.admin(
        M::PUT,
        &format!("{segs}/nope"),
        Some(json!({"key": "nope"})),
        404,
    )
    .await;
    let res = app
        .put(&format!("{segs}/s"), &seg2)
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    let (s, _) = c
        .check(M::PUT, &format!("{segs}/s"), Some(&seg2), res)
        .await;
    assert_eq!(s, 412);
    // Key edits and list sync (no-ops here, so later versions are unchanged).
    let keys = format!("{segs}/s/keys");
    c.admin(
        M::POST,
        &keys,
        Some(json!({"included": {"add": ["a"]}})),
        200,
    )
    .await;
    c.admin(M::POST, &format!("{segs}/nope/keys"), Some(json!({})), 404)
        .await;
    c.raw(
        M::PUT,
        &format!("{keys}/included"),
        "text/plain",
        "a\n",
        200,
    )
    .await;
    c.raw(
        M::PUT,
        &format!("{keys}/everyone"),
        "text/plain",
        "a\n",
        404,
    )
    .await;

    // Configurations, history, rollback, kill, archive.
    let cfg = "/api/v1/projects/p/flags/f/environments/e";
    c.admin(M::GET, cfg, None, 200).await;
    c.admin(
        M::POST,
        &format!("{cfg}/targets"),
        Some(json!({"targets": []})),
        200,
    )
    .await;
    c.admin(
        M::POST,
        "/api/v1/projects/p/flags/f/environments/nope/targets",
        Some(json!({"targets": []})),
        404,
    )
    .await;
    c.admin(
        M::GET,
        "/api/v1/projects/p/flags/f/environments/nope",
        None,
        404,
    )
    .await;
    c.admin(M::PUT, cfg, Some(rich_config()), 200).await;
    c.admin(
        M::PUT,
        cfg,
        Some(json!({"off_variation": 9, "fallthrough": {"variation": 0}})),
        422,
    )
    .await;
    c.admin(
        M::PUT,
        "/api/v1/projects/p/flags/nope/environments/e",
        Some(rich_config()),
        404,
    )
    .await;
    let res = app
        .put(cfg, &rich_config())
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    let (s, _) = c.check(M::PUT, cfg, Some(&rich_config()), res).await;
    assert_eq!(s, 412);
    c.admin(
        M::PATCH,
        cfg,
        Some(json!({"on": false, "off_variation": 0})),
        200,
    )
    .await;
    c.admin(M::PATCH, cfg, Some(json!({"on": null})), 422).await;
    c.admin(
        M::PATCH,
        "/api/v1/projects/p/flags/f/environments/nope",
        Some(json!({"on": true})),
        404,
    )
    .await;
    c.admin(M::GET, &format!("{cfg}/versions?limit=2"), None, 200)
        .await;
    c.admin(M::GET, &format!("{cfg}/versions?cursor=zz"), None, 422)
        .await;
    c.admin(
        M::GET,
        "/api/v1/projects/p/flags/nope/environments/e/versions",
        None,
        404,
    )
    .await;
    c.admin(M::GET, &format!("{cfg}/versions/1"), None, 200)
        .await;
    c.admin(M::GET, &format!("{cfg}/versions/999"), None, 404)
        .await;
    c.admin(
        M::POST,
        &format!("{cfg}/rollback"),
        Some(json!({"version": 2})),
        200,
    )
    .await;
    c.admin(
        M::POST,
        &format!("{cfg}/rollback"),
        Some(json!({"version": 999})),
        404,
    )
    .await;
    c.admin(
        M::POST,
        &format!("{cfg}/rollback"),
        Some(json!({"version": "two"})),
        422,
    )
    .await;
    c.admin(M::POST, "/api/v1/projects/p/flags/f/kill", None, 200)
        .await;
    c.admin(M::POST, "/api/v1/projects/p/flags/nope/kill", None, 404)
        .await;
    // g is a prerequisite of f: it cannot be archived or deleted.
    c.admin(M::POST, "/api/v1/projects/p/flags/g/archive", None, 409)
        .await;
    c.admin(M::POST, "/api/v1/projects/p/flags/f/archive", None, 200)
        .await;
    c.admin(M::POST, "/api/v1/projects/p/flags/nope/archive", None, 404)
        .await;
    c.admin(M::POST, "/api/v1/projects/p/flags/f/unarchive", None, 200)
        .await;
    c.admin(
        M::POST,
        "/api/v1/projects/p/flags/nope/unarchive",
        None,
        404,
    )
    .await;

    // Snapshot and change log.
    c.admin(
        M::GET,
        "/api/v1/projects/p/environments/e/snapshot",
        None,
        200,
    )
    .await;
    c.admin(
        M::GET,
        "/api/v1/projects/p/environments/nope/snapshot",
        None,
        404,
    )
    .await;
    c.admin(
        M::GET,
        "/api/v1/projects/p/environments/e/changes?after=1&limit=5",
        None,
        200,
    )
    .await;
    c.admin(
        M::GET,
        "/api/v1/projects/p/environments/e/changes?limit=0",
        None,
        422,
    )
    .await;
    c.admin(
        M::GET,
        "/api/v1/projects/p/environments/nope/changes",
        None,
        404,
    )
    .await;

    // Evaluation.
    let ctx = json!({"key": "alice", "kind": "user", "attributes": {"email": "a@example.com", "plan": "free"}});
    c.admin(
        M::POST,
        "/api/v1/evaluate",
        Some(json!({"project": "p", "environment": "e", "flag": "f", "context": ctx})),
        200,
    )
    .await;
    c.admin(
        M::POST,
        "/api/v1/evaluate",
        Some(json!({"project": "p", "environment": "nope", "flag": "f", "context": ctx})),
        404,
    )
    .await;
    c.admin(
        M::POST,
        "/api/v1/evaluate",
        Some(json!({"project": "p", "environment": "e", "flag": "f"})),
        422,
    )
    .await;
    c.expect(
        v,
        M::POST,
        "/api/v1/evaluate/batch",
        Some(json!({"project": "p", "environment": "e", "context": ctx})),
        200,
    )
    .await;
    c.admin(
        M::POST,
        "/api/v1/evaluate/batch",
        Some(json!({"project": "p", "environment": "e", "flags": ["f", "unknown"], "context": {}})),
        200,
    )
    .await;
    c.admin(
        M::POST,
        "/api/v1/evaluate/batch",
        Some(json!({"project": "nope", "environment": "e", "context": ctx})),
        404,
    )
    .await;
    c.admin(
        M::POST,
        "/api/v1/evaluate/batch",
        Some(json!({"project": "p", "environment": "e", "context": ctx, "extra": 1})),
        422,
    )
    .await;
    let explain = "/api/v1/projects/p/environments/e/flags/f/explain";
    c.admin(M::POST, explain, Some(json!({"context": ctx})), 200)
        .await;
    c.admin(
        M::POST,
        "/api/v1/projects/p/environments/e/flags/nope/explain",
        Some(json!({"context": ctx})),
        404,
    )
    .await;
    c.admin(M::POST, explain, Some(json!({"context": "alice"})), 422)
        .await;

    // Audit.
    c.expect(v, M::GET, "/api/v1/audit?project=p&limit=3", None, 200)
        .await;
    c.admin(M::GET, "/api/v1/audit?flag=f", None, 422).await;

    // Tokens.
    let t = c
        .admin(
            M::POST,
            "/api/v1/tokens",
            Some(json!({"name": "ci", "role": "editor"})),
            201,
        )
        .await;
    c.admin(
        M::POST,
        "/api/v1/tokens",
        Some(json!({"name": "ci", "role": "editor"})),
        409,
    )
    .await;
    c.admin(
        M::POST,
        "/api/v1/tokens",
        Some(json!({"name": "x", "role": "root"})),
        422,
    )
    .await;
    c.expect(
        v,
        M::POST,
        "/api/v1/tokens",
        Some(json!({"name": "y", "role": "viewer"})),
        403,
    )
    .await;
    c.admin(M::GET, "/api/v1/tokens?limit=2", None, 200).await;
    c.expect(v, M::GET, "/api/v1/tokens", None, 403).await;
    c.admin(M::DELETE, &format!("/api/v1/tokens/{}", t["id"]), None, 200)
        .await;
    c.admin(M::DELETE, "/api/v1/tokens/999999", None, 404).await;

    // SDK keys.
    let sdk = "/api/v1/projects/p/environments/e/sdk-keys";
    let k = c
        .admin(M::POST, sdk, Some(json!({"name": "web"})), 201)
        .await;
    c.admin(
        M::POST,
        "/api/v1/projects/p/environments/nope/sdk-keys",
        Some(json!({"name": "web"})),
        404,
    )
    .await;
    c.expect(v, M::POST, sdk, Some(json!({"name": "web"})), 403)
        .await;
    c.admin(M::GET, sdk, None, 200).await;
    c.admin(
        M::GET,
        "/api/v1/projects/p/environments/nope/sdk-keys",
        None,
        404,
    )
    .await;
    c.admin(
        M::POST,
        &format!("{sdk}/{}/rotate", k["id"]),
        Some(json!({"grace_seconds": 60})),
        200,
    )
    .await;
    c.admin(
        M::POST,
        &format!("{sdk}/{}/rotate", k["id"]),
        Some(json!({"grace_seconds": 99999999})),
        422,
    )
    .await;
    c.admin(
        M::POST,
        &format!("{sdk}/999999/rotate"),
        Some(json!({})),
        404,
    )
    .await;
    c.admin(M::DELETE, &format!("{sdk}/{}", k["id"]), None, 200)
        .await;
    c.admin(M::DELETE, &format!("{sdk}/999999"), None, 404)
        .await;

    // Client-side keys.
    let client = "/api/v1/projects/p/environments/e/client-keys";
    let ck = c
        .admin(M::POST, client, Some(json!({"name": "browser"})), 201)
        .await;
    c.expect(v, M::POST, client, Some(json!({"name": "browser"})), 403)
        .await;
    c.admin(M::GET, client, None, 200).await;
    c.admin(
        M::GET,
        "/api/v1/projects/p/environments/nope/client-keys",
        None,
        404,
    )
    .await;
    c.admin(M::DELETE, &format!("{client}/{}", ck["id"]), None, 200)
        .await;
    c.admin(M::DELETE, &format!("{client}/999999"), None, 404)
        .await;

    // Relay keys.
    let r = c
        .admin(
            M::POST,
            "/api/v1/relay-keys",
            Some(json!({"name": "edge", "environments": [{"project": "p", "environment": "e"}]})),
            201,
        )
        .await;
    c.admin(
        M::POST,
        "/api/v1/relay-keys",
        Some(json!({"name": "edge", "environments": []})),
        422,
    )
    .await;
    c.admin(M::GET, "/api/v1/relay-keys", None, 200).await;
    c.expect(v, M::GET, "/api/v1/relay-keys", None, 403).await;
    c.admin(
        M::POST,
        &format!("/api/v1/relay-keys/{}/rotate", r["id"]),
        Some(json!({})),
        200,
    )
    .await;
    c.admin(
        M::POST,
        "/api/v1/relay-keys/999999/rotate",
        Some(json!({})),
        404,
    )
    .await;
    c.admin(
        M::DELETE,
        &format!("/api/v1/relay-keys/{}", r["id"]),
        None,
        200,
    )
    .await;
    c.admin(M::DELETE, "/api/v1/relay-keys/999999", None, 404)
        .await;

    // Metrics and experiments.
    c.admin(M::POST, flags, Some(def("xf")), 201).await;
    let metrics = "/api/v1/projects/p/metrics";
    let metric = |key: &str, name: &str| {
        json!({"key": key, "name": name, "description": "d", "kind": "sum", "event_key": "purchase",
               "window_hours": 24, "direction": "decrease", "cap": {"percentile": 99.0}})
    };
    c.admin(M::POST, metrics, Some(metric("buy", "Buy")), 201)
        .await;
    c.admin(M::POST, metrics, Some(metric("buy", "Buy")), 409)
        .await;
    c.admin(M::GET, &format!("{metrics}?limit=1"), None, 200)
        .await;
    c.admin(M::GET, "/api/v1/projects/nope/metrics", None, 404)
        .await;
    c.admin(M::GET, &format!("{metrics}/buy"), None, 200).await;
    c.admin(M::GET, &format!("{metrics}/nope"), None, 404).await;
    c.admin(
        M::PUT,
        &format!("{metrics}/buy"),
        Some(metric("buy", "Buy 2")),
        200,
    )
    .await;
    c.admin(
        M::PUT,
        &format!("{metrics}/buy"),
        Some(metric("other", "B")),
        422,
    )
    .await;
    c.admin(M::POST, metrics, Some(metric("gone", "Gone")), 201)
        .await;
    c.admin(M::DELETE, &format!("{metrics}/gone"), None, 204)
        .await;
    c.admin(M::DELETE, &format!("{metrics}/gone"), None, 404)
        .await;
    let xs = "/api/v1/projects/p/environments/e/experiments";
    let x = json!({"key": "x", "name": "X", "hypothesis": "h", "flag": "xf", "control": 0,
                   "primary_metric": "buy", "secondary_metrics": [], "guardrail_metrics": ["buy"],
                   "method": "bayesian", "alpha": 0.1});
    c.admin(M::POST, xs, Some(x.clone()), 201).await;
    c.admin(M::POST, xs, Some(x.clone()), 409).await;
    c.admin(M::GET, &format!("{xs}?limit=5"), None, 200).await;
    c.admin(
        M::GET,
        "/api/v1/projects/p/environments/nope/experiments",
        None,
        404,
    )
    .await;
    c.admin(M::GET, &format!("{xs}/x"), None, 200).await;
    c.admin(M::GET, &format!("{xs}/nope"), None, 404).await;
    c.admin(M::PUT, &format!("{xs}/x"), Some(x.clone()), 200)
        .await;
    c.admin(M::PUT, &format!("{xs}/nope"), Some(x.clone()), 422)
        .await;
    c.admin(M::GET, &format!("{xs}/x/results"), None, 409).await;
    c.admin(M::POST, &format!("{xs}/x/stop"), None, 409).await;
    c.admin(M::POST, &format!("{xs}/x/start"), None, 200).await;
    c.admin(M::POST, &format!("{xs}/x/start"), None, 409).await;
    c.admin(
        M::GET,
        &format!("{xs}/x/results?mde=0.1&iteration=1"),
        None,
        200,
    )
    .await;
    c.admin(M::POST, &format!("{xs}/x/stop"), None, 200).await;
    c.admin(M::DELETE, &format!("{xs}/x"), None, 204).await;
    c.admin(M::DELETE, &format!("{xs}/x"), None, 404).await;

    // --- progressive delivery: scheduled changes and webhooks ---
    let sched = "/api/v1/projects/p/flags/f/environments/e/scheduled-changes";
    let later = json!({"execute_at": "2999-01-01T00:00:00Z", "description": "launch",
                       "patch": {"on": true}});
    let s = c.admin(M::POST, sched, Some(later.clone()), 201).await;
    c.admin(
        M::POST,
        sched,
        Some(json!({"execute_at": "2999-01-01T00:00:00Z"})),
        422,
    )
    .await;
    c.admin(M::GET, &format!("{sched}?state=pending&limit=5"), None, 200)
        .await;
    c.admin(
        M::GET,
        "/api/v1/projects/p/flags/nope/environments/e/scheduled-changes",
        None,
        404,
    )
    .await;
    c.admin(M::GET, &format!("{sched}/{}", s["id"]), None, 200)
        .await;
    c.admin(M::GET, &format!("{sched}/999999"), None, 404).await;
    c.admin(M::POST, &format!("{sched}/{}/cancel", s["id"]), None, 200)
        .await;
    c.admin(M::POST, &format!("{sched}/{}/cancel", s["id"]), None, 409)
        .await;
    let hooks = "/api/v1/projects/p/webhooks";
    let hook = json!({"url": "http://127.0.0.1:9/hook", "events": ["flag.*", "schedule.failed"],
                      "format": "slack", "description": "ops"});
    let h = c.admin(M::POST, hooks, Some(hook.clone()), 201).await;
    c.admin(
        M::POST,
        hooks,
        Some(json!({"url": "nope", "events": ["*"]})),
        422,
    )
    .await;
    c.admin(M::GET, &format!("{hooks}?limit=5"), None, 200)
        .await;
    c.admin(M::GET, "/api/v1/projects/nope/webhooks", None, 404)
        .await;
    let one = format!("{hooks}/{}", h["id"]);
    c.admin(M::GET, &one, None, 200).await;
    c.admin(M::GET, &format!("{hooks}/999999"), None, 404).await;
    c.admin(
        M::PATCH,
        &one,
        Some(json!({"enabled": false, "format": "json"})),
        200,
    )
    .await;
    c.admin(M::PATCH, &one, Some(json!({"events": []})), 422)
        .await;
    c.admin(M::GET, &format!("{one}/deliveries?limit=5"), None, 200)
        .await;
    c.admin(M::GET, &format!("{hooks}/999999/deliveries"), None, 404)
        .await;
    c.admin(M::DELETE, &one, None, 204).await;
    c.admin(M::DELETE, &one, None, 404).await;
    let plans = "/api/v1/projects/p/flags/f/environments/e/release-plans";
    let plan = json!({"from_variation": 1, "to_variation": 0, "description": "ramp",
                      "steps": [{"percentage": 10, "hold_minutes": 60}, {"percentage": 100}]});
    let rp = c.admin(M::POST, plans, Some(plan.clone()), 201).await;
    c.admin(M::POST, plans, Some(plan.clone()), 409).await;
    c.admin(M::GET, &format!("{plans}?limit=5"), None, 200)
        .await;
    c.admin(
        M::GET,
        "/api/v1/projects/p/flags/nope/environments/e/release-plans",
        None,
        404,
    )
    .await;
    let rp = format!("{plans}/{}", rp["id"]);
    c.admin(M::GET, &rp, None, 200).await;
    c.admin(M::GET, &format!("{plans}/999999"), None, 404).await;
    c.admin(M::POST, &format!("{rp}/resume"), None, 409).await;
    c.admin(M::POST, &format!("{rp}/pause"), None, 200).await;
    c.admin(M::POST, &format!("{rp}/advance"), None, 409).await;
    c.admin(M::POST, &format!("{rp}/resume"), None, 200).await;
    c.admin(M::POST, &format!("{rp}/advance"), None, 200).await;
    c.admin(M::POST, &format!("{rp}/pause"), None, 409).await;
    c.admin(M::POST, &format!("{rp}/abort"), None, 409).await;
    let rp2 = c.admin(M::POST, plans, Some(plan.clone()), 201).await;
    c.admin(M::POST, &format!("{plans}/{}/abort", rp2["id"]), None, 200)
        .await;
    // --- end progressive delivery ---
    // Flags as code (issue 17): export, a dry-run and a real import of the same document.
    let doc = c
        .admin(M::GET, "/api/v1/projects/p/export", None, 200)
        .await;
    c.admin(M::GET, "/api/v1/projects/nope/export", None, 404)
        .await;
    c.admin(
        M::POST,
        "/api/v1/projects/p/import?dry_run=true",
        Some(doc.clone()),
        200,
    )
    .await;
    c.admin(M::POST, "/api/v1/projects/p/import", Some(doc.clone()), 200)
        .await;
    c.admin(M::POST, "/api/v1/projects/other/import", Some(doc), 422)
        .await;

    // --- approvals and change requests ---
    let policy = "/api/v1/projects/p/environments/e/approval-policy";
    c.admin(M::GET, policy, None, 404).await;
    c.admin(M::PUT, policy, Some(json!({"required_approvals": 0})), 422)
        .await;
    c.admin(
        M::PUT,
        policy,
        Some(json!({"required_approvals": 1, "approver_role": "editor",
                    "kill_switch_exempt": true})),
        200,
    )
    .await;
    c.expect(v, M::GET, policy, None, 200).await;
    // Under the policy a direct write is a conflict pointing to change requests.
    c.admin(
        M::PATCH,
        "/api/v1/projects/p/flags/f/environments/e",
        Some(json!({"off_variation": 0})),
        409,
    )
    .await;
    let crs = "/api/v1/projects/p/flags/f/environments/e/change-requests";
    let approver = app.token("cr-approver", "editor").await;
    let cr = c
        .admin(
            M::POST,
            crs,
            Some(json!({"patch": {"off_variation": 0}, "description": "doc",
                        "base_version": null})),
            201,
        )
        .await;
    c.admin(M::POST, crs, Some(json!({"patch": {"nope": 1}})), 422)
        .await;
    c.expect(v, M::GET, &format!("{crs}?state=open&limit=5"), None, 200)
        .await;
    c.admin(
        M::GET,
        "/api/v1/projects/p/flags/nope/environments/e/change-requests",
        None,
        404,
    )
    .await;
    let one = format!("{crs}/{}", cr["id"]);
    c.admin(M::GET, &one, None, 200).await;
    c.admin(M::GET, &format!("{crs}/999999"), None, 404).await;
    c.expect(
        v,
        M::POST,
        &format!("{one}/comment"),
        Some(json!({"comment": "lgtm?"})),
        200,
    )
    .await;
    c.admin(M::POST, &format!("{one}/comment"), Some(json!({})), 422)
        .await;
    c.admin(M::POST, &format!("{one}/apply"), None, 409).await;
    // Its author cannot approve it; a viewer cannot either.
    c.admin(M::POST, &format!("{one}/approve"), Some(json!({})), 409)
        .await;
    c.expect(v, M::POST, &format!("{one}/approve"), Some(json!({})), 403)
        .await;
    c.expect(
        As::Token(&approver),
        M::POST,
        &format!("{one}/approve"),
        Some(json!({"comment": "ok"})),
        200,
    )
    .await;
    c.admin(M::POST, &format!("{one}/apply"), None, 200).await;
    c.admin(M::POST, &format!("{one}/reject"), Some(json!({})), 409)
        .await;
    let other = c
        .admin(M::POST, crs, Some(json!({"patch": {"on": true}})), 201)
        .await;
    c.expect(
        As::Token(&approver),
        M::POST,
        &format!("{crs}/{}/reject", other["id"]),
        Some(json!({"comment": "not now"})),
        200,
    )
    .await;
    c.admin(M::DELETE, policy, None, 204).await;
    c.admin(M::DELETE, policy, None, 404).await;
    // --- end approvals ---

    // Deletions.
    c.admin(M::DELETE, &format!("{segs}/s"), None, 409).await;
    c.admin(M::DELETE, "/api/v1/projects/p/flags/g", None, 409)
        .await;
    c.admin(M::DELETE, "/api/v1/projects/p/flags/f", None, 204)
        .await;
    c.admin(M::DELETE, "/api/v1/projects/p/flags/f", None, 404)
        .await;
    c.admin(M::DELETE, &format!("{segs}/s"), None, 204).await;
    c.admin(M::DELETE, &format!("{segs}/s"), None, 404).await;
    c.expect(
        v,
        M::DELETE,
        "/api/v1/projects/p/environments/gone",
        None,
        403,
    )
    .await;
    c.admin(M::DELETE, "/api/v1/projects/p/environments/gone", None, 204)
        .await;
    c.admin(M::DELETE, "/api/v1/projects/p/environments/gone", None, 404)
        .await;
    c.admin(M::DELETE, "/api/v1/projects/doomed", None, 204)
        .await;
    c.admin(M::DELETE, "/api/v1/projects/doomed", None, 404)
        .await;

    // --- fleet view and stale flags (issue 16) ---
    for what in ["fleet", "flag-usage", "stale-flags"] {
        let at = format!("/api/v1/projects/p/environments/e/{what}");
        c.admin(M::GET, &at, None, 200).await;
        let nope = format!("/api/v1/projects/p/environments/nope/{what}");
        c.admin(M::GET, &nope, None, 404).await;
    }
    c.admin(
        M::GET,
        "/api/v1/projects/p/environments/e/stale-flags?unused_days=1&lifetime_days=2&uniform_days=3",
        None,
        200,
    )
    .await;
    c.admin(
        M::GET,
        "/api/v1/projects/p/flags?stale=true&environment=e&limit=2",
        None,
        200,
    )
    .await;
    c.admin(M::GET, "/api/v1/projects/p/flags?stale=true", None, 422)
        .await;

    // Every operation was seen to succeed and to fail.
    for op in c.doc.operations() {
        let statuses = c.seen.get(&op).cloned().unwrap_or_default();
        if !statuses.iter().any(|s| *s < 300) || !statuses.iter().any(|s| *s >= 400) {
            c.problems.push(format!(
                "{} {}: not exercised to success and failure (saw {statuses:?})",
                op.0, op.1
            ));
        }
    }
    assert!(
        c.problems.is_empty(),
        "{} mismatches:\n{}",
        c.problems.len(),
        c.problems.join("\n")
    );
}

/// Checks that the schema `name` accepts `value` (the serde form of a real value) and that,
/// for every variant with one field nulled or removed, the schema and the serde type agree on
/// whether it is acceptable.
fn round_trip<T: serde::de::DeserializeOwned>(
    doc: &Doc,
    name: &str,
    value: Value,
    problems: &mut Vec<String>,
) {
    let errors = doc.errors_against(name, &value);
    if !errors.is_empty() {
        problems.push(format!(
            "{name}: a real value breaks the schema: {errors:?}\n  value: {value}"
        ));
    }
    for (what, variant) in mutations(&value) {
        let serde_ok = serde_json::from_value::<T>(variant.clone()).is_ok();
        let schema_ok = doc.errors_against(name, &variant).is_empty();
        if serde_ok != schema_ok {
            problems.push(format!(
                "{name} with {what}: serde {} it, the schema {} it",
                if serde_ok { "accepts" } else { "refuses" },
                if schema_ok { "accepts" } else { "refuses" }
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_round_trips_through_the_published_schemas() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc = Doc(app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap());
    let mut problems = Vec::new();

    let def: FlagDefinition = serde_json::from_value(json!({"key": "f", "name": "F", "description": "about", "kind": "string",
        "variations": [{"value": "a", "name": "A", "description": "first"}, {"value": "b"}], "tags": ["ui", "team:web"], "temporary": true})).unwrap();
    round_trip::<FlagDefinition>(
        &doc,
        "FlagDefinitionDoc",
        serde_json::to_value(&def).unwrap(),
        &mut problems,
    );
    let mut cfg: FlagConfig = serde_json::from_value(rich_config()).unwrap();
    cfg.salt = "0123abcd".into();
    cfg.version = 4;
    round_trip::<FlagConfig>(
        &doc,
        "FlagConfigDoc",
        serde_json::to_value(&cfg).unwrap(),
        &mut problems,
    );
    let seg: Segment = serde_json::from_value(json!({"key": "s", "name": "S", "description": "d", "included": ["a"], "excluded": ["b"],
        "rules": [{"id": "r", "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"], "negate": true}],
                   "weight": 50000, "bucket_by": "org"}], "salt": "ff", "version": 2})).unwrap();
    round_trip::<Segment>(
        &doc,
        "SegmentDoc",
        serde_json::to_value(&seg).unwrap(),
        &mut problems,
    );
    let ctx: Context = serde_json::from_value(
        json!({"key": "u", "kind": "user", "attributes": {"plan": "pro", "age": 3}}),
    )
    .unwrap();
    round_trip::<Context>(
        &doc,
        "ContextDoc",
        serde_json::to_value(&ctx).unwrap(),
        &mut problems,
    );
    round_trip::<ConfigPatch>(
        &doc,
        "ConfigPatch",
        json!({"on": true, "off_variation": 0, "targets": [{"variation": 0, "values": ["a"]}],
        "rules": [], "fallthrough": {"variation": 1}, "prerequisites": [{"key": "g", "variation": 0}]}),
        &mut problems,
    );
    // Every operator the engine knows is in the document.
    for op in [
        "in",
        "starts_with",
        "ends_with",
        "contains",
        "matches",
        "lt",
        "lte",
        "gt",
        "gte",
        "before",
        "after",
        "semver_eq",
        "semver_lt",
        "semver_gt",
        "segment_match",
        "exists",
    ] {
        let clause = json!({"attribute": "a", "op": op, "values": []});
        assert!(
            serde_json::from_value::<vexil_schema::Clause>(clause.clone()).is_ok(),
            "{op}"
        );
        if !doc.errors_against("ClauseDoc", &clause).is_empty() {
            problems.push(format!("ClauseDoc refuses the operator {op}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
