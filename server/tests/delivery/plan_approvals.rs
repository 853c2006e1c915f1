//! Release plans under an approval policy: each step is proposed as a change request by the
//! plan on behalf of its author, the plan waits (`waiting_for_approval`), its author cannot
//! approve, another editor's approval gets the step applied by the scheduler (SDKs receive
//! it) and the next step waits again; a rejection pauses the plan, abort withdraws the open
//! request; three servers on one PostgreSQL apply an approved step once; a guardrail breach
//! rolls back past an exempting policy (audited as a bypass) and only pauses under one that
//! exempts nothing.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use vexil_sdk::Context;
use vexil_testkit::Backend;

use crate::approvals::{
    act, as_token, assert_approval_required, audit_actions, crs_path, set_policy, token,
};
use crate::guardrails::{client, plan_until, plans_path, sent};
use crate::helpers::*;

const HOUR: Duration = Duration::from_secs(3600);
const SECRET: &str = "a-very-secret-signing-key";

/// Change request `id` of `checkout`.
async fn request(app: &App, id: &Value) -> Value {
    let path = format!("{}/{id}", crs_path("shop", "checkout"));
    expect(app.get(&path).send().await.unwrap(), 200).await
}

/// Acts on plan `id` of `checkout` as the admin, expecting `status`.
async fn plan_act(app: &App, id: &Value, action: &str, status: u16) -> Value {
    let path = format!("{}/{id}/{action}", plans_path("checkout"));
    expect(app.post(&path, &json!({})).send().await.unwrap(), status).await
}

/// `shop/checkout` on in `prod` (serving variation 1 to everyone), then the policy `policy`
/// on `prod`; returns the configuration then.
async fn governed(app: &App, policy: Value) -> Value {
    app.setup("shop", &["checkout"]).await;
    let on = app.patch(&config_path("shop", "checkout"), &json!({"on": true}));
    expect(on.send().await.unwrap(), 200).await;
    set_policy(app, "shop", policy).await;
    app.config("shop", "checkout").await
}

/// Creates a plan on `checkout` as `token`.
async fn create_plan(app: &App, token: &str, body: Value) -> Value {
    let res = as_token(
        app,
        token,
        Method::POST,
        &plans_path("checkout"),
        Some(body),
    );
    expect(res.send().await.unwrap(), 201).await
}

/// How many configuration versions of `checkout` a release plan wrote.
async fn versions_by_plans(app: &App) -> usize {
    let path = format!("{}/versions", config_path("shop", "checkout"));
    let versions = expect(app.get(&path).send().await.unwrap(), 200).await;
    versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| {
            v["actor"]
                .as_str()
                .unwrap_or("")
                .starts_with("release plan ")
        })
        .count()
}

both! {
    async fn each_step_waits_for_approval_then_applies_and_reaches_sdks(app) {
        let before = governed(&app, json!({"required_approvals": 1})).await;
        let alice = token(&app, "alice", "editor", None).await;
        let bob = token(&app, "bob", "editor", None).await;
        let mut hook = Receiver::start(&[]).await;
        app.subscribe("shop", &hook.url, &["plan.*"], "json").await;
        let mut sse = app.sdk_stream("shop").await;

        // Created under the policy: the first step is a change request, nothing is written.
        let plan = create_plan(&app, &alice, json!({
            "to_variation": 0, "description": "new checkout",
            "steps": [{"percentage": 10, "hold_minutes": 60}, {"percentage": 100}]})).await;
        let id = plan["id"].clone();
        assert_eq!(plan["state"], "waiting_for_approval", "{plan}");
        assert_eq!(plan["current_step"], -1);
        let first = plan["change_request_id"].clone();
        let cr = request(&app, &first).await;
        assert_eq!(cr["state"], "open");
        assert_eq!(cr["author"], format!("release plan {id} (on behalf of alice)"));
        let description = cr["description"].as_str().unwrap();
        assert!(description.contains(&format!("release plan {id} step 1 of 2")), "{description}");
        assert!(description.contains("new checkout"), "{description}");
        assert_eq!(cr["base_version"], before["version"]);
        assert_eq!(cr["patch"]["fallthrough"]["rollout"]["variations"][0],
                   json!({"variation": 0, "weight": 10000}), "{cr}");
        assert_eq!(app.config("shop", "checkout").await, before);
        let waiting = hook.next_event("plan.waiting_for_approval").await;
        assert!(signature_ok(&waiting, SECRET));
        assert_eq!(waiting.json()["after"]["change_request_id"], first);

        // Its author's token cannot approve it; another editor's can.
        let own = act(&app, &alice, "checkout", &first, "approve", 409).await;
        assert!(own["detail"].as_str().unwrap().contains("author"), "{own}");
        assert_eq!(act(&app, &bob, "checkout", &first, "approve", 200).await["state"], "approved");

        // The scheduler applies it through the change request; the hold starts then.
        let running = plan_until(&app, "checkout", &id, |p| p["state"] != "waiting_for_approval").await;
        assert_eq!(running["state"], "running", "{running}");
        assert_eq!(running["current_step"], 0);
        assert!(running.get("change_request_id").is_none(), "{running}");
        let applied = request(&app, &first).await;
        assert_eq!(applied["state"], "applied", "{applied}");
        assert_eq!(applied["applied_by"], format!("release plan {id} (on behalf of alice)"));
        assert_eq!(running["step_started_at"], applied["updated_at"]);
        let step = sse.next_patch("checkout").await;
        assert_eq!(step["fallthrough"]["rollout"]["variations"][0]["weight"], 10000, "{step}");
        let config = app.config("shop", "checkout").await;
        assert_eq!(config["version"], before["version"].as_u64().unwrap() + 1);
        assert_eq!(applied["applied_version"], config["version"]);
        assert_eq!(hook.next_event("plan.step").await.json()["after"]["current_step"], 0);

        // When the hold is over the next step waits for approval again.
        app.clock.advance(HOUR);
        let again = plan_until(&app, "checkout", &id, |p| p["state"] == "waiting_for_approval").await;
        let second = again["change_request_id"].clone();
        assert_ne!(second, first);
        assert_eq!(again["current_step"], 0);
        assert_eq!(app.config("shop", "checkout").await, config);
        assert_eq!(act(&app, &bob, "checkout", &second, "approve", 200).await["state"], "approved");
        let done = plan_until(&app, "checkout", &id, |p| p["state"] != "waiting_for_approval").await;
        assert_eq!(done["state"], "completed", "{done}");
        assert_eq!(sse.next_patch("checkout").await["fallthrough"], json!({"variation": 0}));
        assert_eq!(versions_by_plans(&app).await, 2);
        assert_eq!(audit_actions(&app, "plan.waiting_for_approval").await.len(), 2);
    }

    async fn a_rejection_pauses_the_plan_and_abort_withdraws_the_open_request(app) {
        let before = governed(&app, json!({"required_approvals": 1})).await;
        let bob = token(&app, "bob", "editor", None).await;
        let plan = create_plan(&app, &app.admin_token, json!({
            "to_variation": 0,
            "steps": [{"percentage": 50, "hold_minutes": 60}, {"percentage": 100}]})).await;
        let id = plan["id"].clone();
        let first = plan["change_request_id"].clone();
        // Only abort and pause apply while waiting.
        plan_act(&app, &id, "advance", 409).await;
        plan_act(&app, &id, "resume", 409).await;

        act(&app, &bob, "checkout", &first, "reject", 200).await;
        let paused = plan_until(&app, "checkout", &id, |p| p["state"] != "waiting_for_approval").await;
        assert_eq!(paused["state"], "paused", "{paused}");
        let reason = paused["reason"].as_str().unwrap();
        assert!(reason.contains(&format!("change request {first} for step 1 was rejected by bob")), "{reason}");
        assert!(reason.contains("reject from a test"), "{reason}");
        assert_eq!(app.config("shop", "checkout").await, before);

        // Resuming proposes the step again.
        plan_act(&app, &id, "resume", 200).await;
        let again = plan_until(&app, "checkout", &id, |p| p["state"] == "waiting_for_approval").await;
        let second = again["change_request_id"].clone();
        assert_ne!(second, first);

        // Abort withdraws (rejects) the open request: it can no longer be approved.
        let aborted = plan_act(&app, &id, "abort", 200).await;
        assert_eq!(aborted["state"], "aborted", "{aborted}");
        let withdrawn = request(&app, &second).await;
        assert_eq!(withdrawn["state"], "rejected", "{withdrawn}");
        let last = withdrawn["reviews"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["kind"], "reject");
        assert!(last["comment"].as_str().unwrap().contains("withdrawn by release plan"), "{last}");
        act(&app, &bob, "checkout", &second, "approve", 409).await;
        // Nothing was written, so nothing was restored and no policy was bypassed.
        assert_eq!(app.config("shop", "checkout").await, before);
        assert_eq!(audit_actions(&app, "approval.bypass").await.len(), 0);
        assert_eq!(audit_actions(&app, "change_request.reject").await.len(), 2);
    }

    async fn a_guardrail_rolls_back_past_an_exempting_policy_with_a_bypass(app) {
        let id = breached(&app, json!({"required_approvals": 1})).await;
        app.clock.advance(Duration::from_secs(60));
        let rolled = plan_until(&app, "checkout", &id, |p| p["state"] == "rolled_back" || p["state"] == "paused").await;
        assert_eq!(rolled["state"], "rolled_back", "{rolled}");
        assert_eq!(app.config("shop", "checkout").await["fallthrough"], json!({"variation": 1}));
        let bypass = audit_actions(&app, "approval.bypass").await;
        assert_eq!(bypass.len(), 1, "{bypass:?}");
        assert_eq!(bypass[0]["after"]["operation"], "plan.rolled_back");
        assert_eq!(bypass[0]["actor"], format!("guardrail of release plan {id} (on behalf of bootstrap-admin)"));
        // The request of the next step, proposed as the hold ended, is withdrawn.
        let withdrawn = requests_in(&app, "rejected").await;
        assert_eq!(withdrawn.len(), 1, "{withdrawn:?}");
        assert!(withdrawn[0]["description"].as_str().unwrap().contains("step 2 of 2"));
        assert_eq!(requests_in(&app, "open").await.len(), 0);
    }

    async fn a_policy_exempting_nothing_pauses_the_breached_plan_instead(app) {
        let id = breached(&app, json!({"required_approvals": 1, "kill_switch_exempt": false})).await;
        let step = app.config("shop", "checkout").await;
        app.clock.advance(Duration::from_secs(60));
        let paused = plan_until(&app, "checkout", &id, |p| p["state"] == "rolled_back" || p["state"] == "paused").await;
        assert_eq!(paused["state"], "paused", "{paused}");
        let reason = paused["reason"].as_str().unwrap();
        assert!(reason.contains("metric 'errors' breached") && reason.contains("not rolled back"), "{reason}");
        assert_eq!(paused["evidence"]["readings"][0]["verdict"], "breached", "{paused}");
        assert_eq!(app.config("shop", "checkout").await, step);
        assert_eq!(requests_in(&app, "rejected").await.len(), 1, "the next step's request is withdrawn");
        // Abort would restore the configuration: refused by this policy too.
        let res = app.post(&format!("{}/{id}/abort", plans_path("checkout")), &json!({}));
        assert_approval_required(&expect(res.send().await.unwrap(), 409).await);
        assert_eq!(audit_actions(&app, "approval.bypass").await.len(), 0);
    }
}

/// A governed plan with an error-rate guardrail whose first step (50 % for a minute) was
/// approved and applied, and real SDK traffic where the new variation errs five times as
/// often; returns the plan's id. Advancing the clock a minute then ends the hold (the next
/// step is proposed: the plan waits for approval) and runs the check, which still watches the
/// step in force.
async fn breached(app: &App, policy: Value) -> Value {
    governed(app, policy).await;
    let bob = token(app, "bob", "editor", None).await;
    let metric = json!({"key": "errors", "name": "Errors", "kind": "conversion",
                        "event_key": "error", "direction": "decrease"});
    let res = app.post("/api/v1/projects/shop/metrics", &metric);
    expect(res.send().await.unwrap(), 201).await;
    let plan = create_plan(
        app,
        &app.admin_token,
        json!({
        "to_variation": 0,
        "steps": [{"percentage": 50, "hold_minutes": 1}, {"percentage": 100}],
        "guardrails": [{"kind": "metric", "metric": "errors", "max_regression": 0.2,
                        "min_units": 200}]}),
    )
    .await;
    let id = plan["id"].clone();
    act(
        app,
        &bob,
        "checkout",
        &plan["change_request_id"],
        "approve",
        200,
    )
    .await;
    plan_until(app, "checkout", &id, |p| p["state"] == "running").await;

    // The SDK starts after the step was applied: its first state has the step.
    let sdk = client(app).await;
    let mut n = 0;
    for i in 0..2_000u32 {
        let ctx = Context::new(format!("user-{i}"));
        let new = sdk.bool_variation("checkout", &ctx, false);
        n += 1;
        if (new && i % 2 == 0) || (!new && i % 10 == 0) {
            sdk.track("error", &ctx);
            n += 1;
        }
    }
    sent(&sdk, n).await;
    id
}

/// The change requests of `checkout` in `state`, newest first.
async fn requests_in(app: &App, state: &str) -> Vec<Value> {
    let path = format!("{}?state={state}", crs_path("shop", "checkout"));
    let page = expect(app.get(&path).send().await.unwrap(), 200).await;
    page["items"].as_array().unwrap().clone()
}

/// Two more server processes of the real binary join the in-process server on one
/// PostgreSQL database: all three see the approval at once, one applies the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_apply_an_approved_step_exactly_once() {
    let app = spawn(Backend::Postgres).await;
    let before = governed(&app, json!({"required_approvals": 1})).await;
    let bob = token(&app, "bob", "editor", None).await;
    let (mut a, _) = spawn_process(&app.database.url, &app.admin_token).await;
    let (mut b, _) = spawn_process(&app.database.url, &app.admin_token).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        // One plan at a time per flag: each ramps straight to 100 % once approved.
        let plan = create_plan(
            &app,
            &app.admin_token,
            json!({
            "to_variation": 0, "steps": [{"percentage": 100}]}),
        )
        .await;
        let id = plan["id"].clone();
        act(
            &app,
            &bob,
            "checkout",
            &plan["change_request_id"],
            "approve",
            200,
        )
        .await;
        let done = plan_until(&app, "checkout", &id, |p| {
            p["state"] != "waiting_for_approval"
        })
        .await;
        assert_eq!(done["state"], "completed", "{done}");
        // Back to the old variation for the next round, through a change request.
        let cr = as_token(
            &app,
            &bob,
            Method::POST,
            &crs_path("shop", "checkout"),
            Some(json!({"patch": {"fallthrough": {"variation": 1}}})),
        );
        let cr = expect(cr.send().await.unwrap(), 201).await;
        act(
            &app,
            &app.admin_token,
            "checkout",
            &cr["id"],
            "approve",
            200,
        )
        .await;
        act(&app, &bob, "checkout", &cr["id"], "apply", 200).await;
        ids.push(id);
    }
    // Each approved step was applied once: one configuration version and one `plan.completed`
    // per plan, and one `change_request.apply` per request.
    assert_eq!(versions_by_plans(&app).await, 3);
    assert_eq!(audit_actions(&app, "plan.completed").await.len(), 3);
    assert_eq!(audit_actions(&app, "change_request.apply").await.len(), 6);
    let config = app.config("shop", "checkout").await;
    assert_eq!(config["version"], before["version"].as_u64().unwrap() + 6);
    let _ = a.kill().await;
    let _ = b.kill().await;
}
