//! Approvals: a policy refuses direct writes (API, schedules, a schedule made before
//! it), the kill switch is exempt by default and audited as a bypass, change requests need N
//! distinct approvers of the policy's role (never their author), apply through the ordinary
//! write path (SDKs receive it), fail cleanly when the base moved, stay dead once rejected,
//! respect scoped tokens, and send webhooks for their state changes.

use std::time::Duration;

use serde_json::{Value, json};
use vexil_testkit::Backend;

use crate::helpers::*;

const SECRET: &str = "a-very-secret-signing-key";

pub(crate) fn policy_path(project: &str) -> String {
    format!("/api/v1/projects/{project}/environments/prod/approval-policy")
}

pub(crate) fn crs_path(project: &str, flag: &str) -> String {
    format!("{}/change-requests", config_path(project, flag))
}

/// An API token made by the admin; returns its secret.
pub(crate) async fn token(app: &App, name: &str, role: &str, scopes: Option<Value>) -> String {
    let mut body = json!({"name": name, "role": role});
    if let Some(s) = scopes {
        body["scopes"] = s;
    }
    let t = expect(app.post("/api/v1/tokens", &body).send().await.unwrap(), 201).await;
    t["secret"].as_str().unwrap().to_owned()
}

/// A request as another token.
pub(crate) fn as_token(
    app: &App,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::RequestBuilder {
    let req = app.client.request(method, app.url(path)).bearer_auth(token);
    match body {
        Some(b) => req.json(&b),
        None => req,
    }
}

pub(crate) async fn set_policy(app: &App, project: &str, policy: Value) -> Value {
    expect(
        app.client
            .put(app.url(&policy_path(project)))
            .bearer_auth(&app.admin_token)
            .json(&policy)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await
}

/// Opens a change request as `token`.
async fn propose(app: &App, token: &str, flag: &str, body: Value) -> Value {
    expect(
        as_token(
            app,
            token,
            reqwest::Method::POST,
            &crs_path("shop", flag),
            Some(body),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await
}

/// Reviews change request `id` of `flag` (`approve`, `reject`, `comment` or `apply`) as
/// `token`, expecting `status`.
pub(crate) async fn act(
    app: &App,
    token: &str,
    flag: &str,
    id: &Value,
    what: &str,
    status: u16,
) -> Value {
    let path = format!("{}/{id}/{what}", crs_path("shop", flag));
    let body = (what != "apply").then(|| json!({"comment": format!("{what} from a test")}));
    expect(
        as_token(app, token, reqwest::Method::POST, &path, body)
            .send()
            .await
            .unwrap(),
        status,
    )
    .await
}

pub(crate) fn assert_approval_required(problem: &Value) {
    assert_eq!(
        problem["type"], "urn:vexil:problem:approval-required",
        "{problem}"
    );
    assert_eq!(problem["status"], 409);
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("/change-requests"), "{detail}");
}

pub(crate) async fn audit_actions(app: &App, action: &str) -> Vec<Value> {
    let log = expect(
        app.get(&format!(
            "/api/v1/audit?project=shop&action={action}&limit=100"
        ))
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    log["items"].as_array().unwrap().clone()
}

both! {
    async fn a_policy_refuses_direct_writes_schedules_and_plans(app) {
        app.setup("shop", &["checkout"]).await;
        let editor = token(&app, "ed", "editor", None).await;
        // A schedule made before the policy may not slip past it when it runs.
        let early = app.schedule("shop", "checkout", json!({
            "execute_at": rfc3339(app.clock.now() + Duration::from_secs(3600)),
            "patch": {"on": true},
        })).await;

        // Only an admin sets a policy; values are checked.
        let p = json!({"required_approvals": 2});
        let res = as_token(&app, &editor, reqwest::Method::PUT, &policy_path("shop"), Some(p.clone()));
        expect(res.send().await.unwrap(), 403).await;
        expect(app.get(&policy_path("shop")).send().await.unwrap(), 404).await;
        for bad in [json!({"required_approvals": 0}), json!({"required_approvals": 2, "approver_role": "viewer"})] {
            let res = app.client.put(app.url(&policy_path("shop"))).bearer_auth(&app.admin_token).json(&bad);
            expect(res.send().await.unwrap(), 422).await;
        }
        let set = set_policy(&app, "shop", p).await;
        assert_eq!(set["required_approvals"], 2);
        assert_eq!(set["approver_role"], "editor");
        assert_eq!(set["kill_switch_exempt"], true);
        let got = expect(app.get(&policy_path("shop")).send().await.unwrap(), 200).await;
        assert_eq!(got, set);
        assert_eq!(audit_actions(&app, "approval_policy.update").await.len(), 1);

        // Direct writes, by an admin as much as by an editor, are refused and change nothing.
        let before = app.config("shop", "checkout").await;
        let res = app.patch(&config_path("shop", "checkout"), &json!({"on": true})).send().await.unwrap();
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert_approval_required(&expect(res, 409).await);
        let res = as_token(&app, &editor, reqwest::Method::PATCH, &config_path("shop", "checkout"), Some(json!({"on": true})));
        assert_approval_required(&expect(res.send().await.unwrap(), 409).await);
        let mut whole = before.clone();
        whole["on"] = json!(true);
        let res = app.client.put(app.url(&config_path("shop", "checkout"))).bearer_auth(&app.admin_token).json(&whole);
        assert_approval_required(&expect(res.send().await.unwrap(), 409).await);
        // New scheduled changes need approval too: refused at creation (release plans wait
        // for the approval of each step instead: see `plan_approvals`).
        let res = app.post(&schedules_path("shop", "checkout"), &json!({
            "execute_at": rfc3339(app.clock.now()), "patch": {"on": true}}));
        assert_approval_required(&expect(res.send().await.unwrap(), 409).await);
        assert_eq!(app.config("shop", "checkout").await, before);

        // The schedule from before the policy fails visibly when due.
        app.clock.advance(Duration::from_secs(3600));
        let id = early["id"].as_i64().unwrap();
        let failed = tokio::time::timeout(WAIT, async {
            loop {
                let s = app.scheduled("shop", "checkout", id).await;
                if s["state"] != "pending" {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }).await.expect("the schedule finishes in time");
        assert_eq!(failed["state"], "failed", "{failed}");
        assert!(failed["reason"].as_str().unwrap().contains("change request"), "{failed}");
        assert_eq!(app.config("shop", "checkout").await["on"], false);

        // Without the policy, direct writes work again.
        expect(app.client.delete(app.url(&policy_path("shop"))).bearer_auth(&app.admin_token).send().await.unwrap(), 204).await;
        expect(app.client.delete(app.url(&policy_path("shop"))).bearer_auth(&app.admin_token).send().await.unwrap(), 404).await;
        expect(app.patch(&config_path("shop", "checkout"), &json!({"on": true})).send().await.unwrap(), 200).await;
        assert_eq!(audit_actions(&app, "approval_policy.delete").await.len(), 1);
    }

    async fn the_kill_switch_is_exempt_by_default_and_the_bypass_is_audited(app) {
        app.setup("shop", &["checkout", "search"]).await;
        for flag in ["checkout", "search"] {
            expect(app.patch(&config_path("shop", flag), &json!({"on": true})).send().await.unwrap(), 200).await;
        }
        set_policy(&app, "shop", json!({"required_approvals": 1})).await;
        let res = app.post("/api/v1/projects/shop/flags/checkout/kill", &json!({})).send().await.unwrap();
        let killed = expect(res, 200).await;
        assert_eq!(killed["turned_off"][0]["environment"], "prod");
        assert_eq!(app.config("shop", "checkout").await["on"], false);
        let bypass = audit_actions(&app, "approval.bypass").await;
        assert_eq!(bypass.len(), 1);
        assert_eq!(bypass[0]["key"], "checkout");
        assert_eq!(bypass[0]["environment"], "prod");
        assert_eq!(bypass[0]["after"]["bypass"], "kill_switch_exempt");

        // A policy that says so explicitly blocks the kill switch too.
        set_policy(&app, "shop", json!({"required_approvals": 1, "kill_switch_exempt": false})).await;
        let res = app.post("/api/v1/projects/shop/flags/search/kill", &json!({})).send().await.unwrap();
        assert_approval_required(&expect(res, 409).await);
        assert_eq!(app.config("shop", "search").await["on"], true);
        assert_eq!(audit_actions(&app, "approval.bypass").await.len(), 1);
    }

    async fn n_distinct_approvers_never_the_author_then_apply_reaches_sdks(app) {
        app.setup("shop", &["checkout"]).await;
        set_policy(&app, "shop", json!({"required_approvals": 2})).await;
        let author = token(&app, "ann", "editor", None).await;
        let bob = token(&app, "bob", "editor", None).await;
        let cy = token(&app, "cy", "admin", None).await;
        let mut sse = app.sdk_stream("shop").await;

        let cr = propose(&app, &author, "checkout", json!({"patch": {"on": true}, "description": "launch"})).await;
        assert_eq!(cr["state"], "open");
        assert_eq!(cr["author"], "ann");
        assert_eq!(cr["base_version"], 1);
        assert_eq!(cr["required_approvals"], 2);
        let id = cr["id"].clone();
        // Invalid patches are refused up front.
        let res = as_token(&app, &author, reqwest::Method::POST, &crs_path("shop", "checkout"), Some(json!({"patch": {"onn": true}})));
        expect(res.send().await.unwrap(), 422).await;

        let own = act(&app, &author, "checkout", &id, "approve", 409).await;
        assert!(own["detail"].as_str().unwrap().contains("author"), "{own}");
        let one = act(&app, &bob, "checkout", &id, "approve", 200).await;
        assert_eq!(one["state"], "open");
        assert_eq!(one["approved_by"], json!(["bob"]));
        // Bob's second approval does not count twice.
        act(&app, &bob, "checkout", &id, "approve", 409).await;
        act(&app, &author, "checkout", &id, "apply", 409).await;
        assert_eq!(app.config("shop", "checkout").await["on"], false);

        let two = act(&app, &cy, "checkout", &id, "approve", 200).await;
        assert_eq!(two["state"], "approved");
        assert_eq!(two["approved_by"], json!(["bob", "cy"]));
        let applied = act(&app, &author, "checkout", &id, "apply", 200).await;
        assert_eq!(applied["state"], "applied");
        assert_eq!(applied["applied_by"], "ann");
        assert_eq!(applied["applied_version"], 2);
        assert_eq!(app.config("shop", "checkout").await["on"], true);
        // Through the ordinary write path: streamed to SDKs, in history and audit.
        assert_eq!(sse.next_patch("checkout").await["on"], true);
        let writes = audit_actions(&app, "flag.config.update").await;
        assert_eq!(writes[0]["actor"], "ann");
        assert_eq!(writes[0]["after"]["on"], true);
        for action in ["change_request.create", "change_request.approve", "change_request.approved", "change_request.apply"] {
            assert!(!audit_actions(&app, action).await.is_empty(), "no {action} in the audit log");
        }
        act(&app, &author, "checkout", &id, "apply", 409).await;

        let listed = expect(app.get(&format!("{}?state=applied", crs_path("shop", "checkout"))).send().await.unwrap(), 200).await;
        assert_eq!(listed["items"][0]["id"], id);
        let none = expect(app.get(&format!("{}?state=open", crs_path("shop", "checkout"))).send().await.unwrap(), 200).await;
        assert_eq!(none["items"], json!([]));
        expect(app.get(&format!("{}/999999", crs_path("shop", "checkout"))).send().await.unwrap(), 404).await;
    }

    async fn a_base_that_moved_in_a_touched_field_fails_cleanly(app) {
        app.setup("shop", &["checkout"]).await;
        set_policy(&app, "shop", json!({"required_approvals": 1})).await;
        let author = token(&app, "ann", "editor", None).await;
        let bob = token(&app, "bob", "editor", None).await;
        let first = propose(&app, &author, "checkout", json!({"patch": {"on": true}})).await;
        let second = propose(&app, &author, "checkout", json!({"patch": {"on": false, "off_variation": 0}})).await;
        let third = propose(&app, &author, "checkout", json!({"patch": {"off_variation": 0}})).await;
        for cr in [&first, &second, &third] {
            assert_eq!(act(&app, &bob, "checkout", &cr["id"], "approve", 200).await["state"], "approved");
        }
        act(&app, &author, "checkout", &first["id"], "apply", 200).await;
        let before = app.config("shop", "checkout").await;

        // `on` changed since version 1, which the second request was written against.
        let conflict = act(&app, &author, "checkout", &second["id"], "apply", 409).await;
        assert_eq!(conflict["type"], "urn:vexil:problem:conflict");
        assert_eq!(conflict["blockers"], json!(["on"]));
        assert!(conflict["detail"].as_str().unwrap().contains("version 1"), "{conflict}");
        assert_eq!(app.config("shop", "checkout").await, before);
        let still = expect(app.get(&format!("{}/{}", crs_path("shop", "checkout"), second["id"])).send().await.unwrap(), 200).await;
        assert_eq!(still["state"], "approved");
        // A request whose fields did not move applies over the newer version.
        let ok = act(&app, &author, "checkout", &third["id"], "apply", 200).await;
        assert_eq!(ok["applied_version"], 3);
        let now = app.config("shop", "checkout").await;
        assert_eq!(now["on"], true);
        assert_eq!(now["off_variation"], 0);
    }

    async fn a_rejected_request_cannot_be_approved_or_applied(app) {
        app.setup("shop", &["checkout"]).await;
        set_policy(&app, "shop", json!({"required_approvals": 1})).await;
        let author = token(&app, "ann", "editor", None).await;
        let bob = token(&app, "bob", "editor", None).await;
        let cy = token(&app, "cy", "editor", None).await;
        let cr = propose(&app, &author, "checkout", json!({"patch": {"on": true}})).await;
        let rejected = act(&app, &bob, "checkout", &cr["id"], "reject", 200).await;
        assert_eq!(rejected["state"], "rejected");
        assert_eq!(rejected["reviews"][0]["kind"], "reject");
        assert_eq!(rejected["reviews"][0]["actor"], "bob");
        act(&app, &cy, "checkout", &cr["id"], "approve", 409).await;
        act(&app, &bob, "checkout", &cr["id"], "reject", 409).await;
        act(&app, &author, "checkout", &cr["id"], "apply", 409).await;
        assert_eq!(app.config("shop", "checkout").await["on"], false);
        // Comments are still welcome; an empty one is not.
        let commented = act(&app, &cy, "checkout", &cr["id"], "comment", 200).await;
        assert_eq!(commented["reviews"][1]["kind"], "comment");
        let path = format!("{}/{}/comment", crs_path("shop", "checkout"), cr["id"]);
        expect(app.post(&path, &json!({"comment": " "})).send().await.unwrap(), 422).await;
        assert_eq!(audit_actions(&app, "change_request.reject").await.len(), 1);
    }

    async fn roles_and_scopes_decide_who_may_approve(app) {
        app.setup("shop", &["checkout"]).await;
        set_policy(&app, "shop", json!({"required_approvals": 1, "approver_role": "admin"})).await;
        let author = token(&app, "ann", "editor", None).await;
        let viewer = token(&app, "vic", "viewer", None).await;
        let editor = token(&app, "ed", "editor", None).await;
        // Admin in general, but only a viewer in prod of this project.
        let scoped_viewer = token(&app, "sv", "admin", Some(json!([
            {"project": "shop", "role": "admin"},
            {"project": "shop", "environment": "prod", "role": "viewer"}]))).await;
        let scoped_admin = token(&app, "sa", "admin", Some(json!([{"project": "shop", "role": "admin"}]))).await;

        // Viewers cannot propose; they can read and comment.
        let res = as_token(&app, &viewer, reqwest::Method::POST, &crs_path("shop", "checkout"), Some(json!({"patch": {"on": true}})));
        expect(res.send().await.unwrap(), 403).await;
        let cr = propose(&app, &author, "checkout", json!({"patch": {"on": true}})).await;
        let id = cr["id"].clone();
        assert_eq!(cr["approver_role"], "admin");
        act(&app, &viewer, "checkout", &id, "approve", 403).await;
        act(&app, &viewer, "checkout", &id, "reject", 403).await;
        act(&app, &viewer, "checkout", &id, "comment", 200).await;
        // The policy wants admins: an editor's approval is refused.
        act(&app, &editor, "checkout", &id, "approve", 403).await;
        // A scoped token's role in the environment is what counts.
        act(&app, &scoped_viewer, "checkout", &id, "approve", 403).await;
        let ok = act(&app, &scoped_admin, "checkout", &id, "approve", 200).await;
        assert_eq!(ok["state"], "approved");
        assert_eq!(ok["reviews"][1]["role"], "admin");
        // Applying takes an editor.
        act(&app, &viewer, "checkout", &id, "apply", 403).await;
        act(&app, &author, "checkout", &id, "apply", 200).await;
        assert_eq!(app.config("shop", "checkout").await["on"], true);
    }

    async fn change_request_state_changes_are_delivered_as_webhooks(app) {
        app.setup("shop", &["checkout"]).await;
        let mut hook = Receiver::start(&[]).await;
        app.subscribe("shop", &hook.url, &["change_request.*", "approval.*"], "json").await;
        set_policy(&app, "shop", json!({"required_approvals": 1})).await;
        let author = token(&app, "ann", "editor", None).await;
        let bob = token(&app, "bob", "editor", None).await;
        let cr = propose(&app, &author, "checkout", json!({"patch": {"on": true}, "description": "go"})).await;
        let created = hook.next_event("change_request.create").await;
        assert!(signature_ok(&created, SECRET), "bad signature");
        let body = created.json();
        assert_eq!(body["resource"], "change_request");
        assert_eq!(body["key"], cr["id"].to_string());
        assert_eq!(body["actor"], "ann");
        assert_eq!(body["after"]["state"], "open");

        act(&app, &bob, "checkout", &cr["id"], "approve", 200).await;
        let mut got = std::collections::HashMap::new();
        for _ in 0..2 {
            let r = hook.next().await;
            assert!(signature_ok(&r, SECRET));
            got.insert(r.header("vexil-event").to_owned(), r.json());
        }
        assert_eq!(got["change_request.approve"]["before"]["state"], "open");
        assert_eq!(got["change_request.approved"]["after"]["state"], "approved");
        act(&app, &author, "checkout", &cr["id"], "apply", 200).await;
        let applied = hook.next_event("change_request.apply").await.json();
        assert_eq!(applied["after"]["state"], "applied");
        assert_eq!(applied["after"]["applied_version"], 2);
    }
}
