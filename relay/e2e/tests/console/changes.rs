//! Change requests under an approval policy, and the convergence shown after a flip.

use serde_json::{Value, json};
use vexil_testkit::sse::SseReader;
use vexil_testkit::{Backend, TestApp, spawn_app};

use crate::browser::{Tab, WAIT};
use crate::{api, open_console, sign_in};

/// A new SDK key of `environment` (project `shop`).
async fn sdk_key(app: &TestApp, environment: &str) -> String {
    api(
        app,
        "POST",
        &format!("/api/v1/projects/shop/environments/{environment}/sdk-keys"),
        Some(json!({"name": "backend"})),
        201,
    )
    .await["secret"]
        .as_str()
        .expect("SDK key secret")
        .to_owned()
}

/// An SDK stream connected to the server, past its first `put`.
async fn stream(app: &TestApp, key: &str) -> SseReader {
    let res = app
        .client
        .get(app.url("/sdk/v1/stream"))
        .header("authorization", key)
        .send()
        .await
        .expect("the SDK stream opens");
    assert_eq!(res.status(), 200);
    let mut sse = SseReader::new(res);
    assert_eq!(next(&mut sse).await.event, "put");
    sse
}

/// The next SDK event's data (keep-alives skipped), which must be a `patch`.
async fn next_patch(sse: &mut SseReader) -> Value {
    let e = next(sse).await;
    assert_eq!(e.event, "patch");
    e.json()
}

async fn next(sse: &mut SseReader) -> vexil_testkit::sse::Event {
    tokio::time::timeout(WAIT, sse.next_event())
        .await
        .expect("an SDK event arrives in time")
        .expect("the stream stays open")
}

async fn sign_out(tab: &Tab) {
    tab.click("form[action=\"/sign-out\"] button").await;
    tab.shows("Paste an API token").await;
}

/// The flag's configuration in `environment`, through the API.
async fn config(app: &TestApp, environment: &str) -> Value {
    api(
        app,
        "GET",
        &format!("/api/v1/projects/shop/flags/checkout/environments/{environment}"),
        None,
        200,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_request_is_proposed_approved_and_applied_and_each_flip_converges_inline() {
    let app = spawn_app(Backend::Postgres).await;
    app.project("shop", &["production", "staging"]).await;
    api(
        &app,
        "POST",
        "/api/v1/projects/shop/flags",
        Some(
            json!({"key": "checkout", "name": "New checkout", "kind": "boolean",
            "variations": [{"value": true}, {"value": false}]}),
        ),
        201,
    )
    .await;
    let alice = app.token("editor-alice", "editor").await;
    let bob = app.token("editor-bob", "editor").await;
    let viewer = app.token("viewer-vic", "viewer").await;
    let production_key = sdk_key(&app, "production").await;
    let staging_key = sdk_key(&app, "staging").await;
    let (_browser, _profile, tab) = open_console(&app).await;

    // An admin sets production's approval policy on the environments page.
    sign_in(&tab, &app.admin_token).await;
    tab.open("/projects/shop/settings").await;
    tab.shows("Approval policies").await;
    tab.shows("None: changes save directly").await;
    tab.click("button[aria-label=\"Set the approval policy of production\"]")
        .await;
    tab.shows("1 approval (role editor or higher)").await;
    tab.check("20-environments-policy").await;
    let policy = api(
        &app,
        "GET",
        "/api/v1/projects/shop/environments/production/approval-policy",
        None,
        200,
    )
    .await;
    assert_eq!(policy["required_approvals"], 1);
    sign_out(&tab).await;

    // Editor A saves in production: refused, and offered as a change request with its diff.
    let mut production = stream(&app, &production_key).await;
    sign_in(&tab, &alice).await;
    tab.open("/projects/shop/flags/checkout/environments/production/targeting")
        .await;
    tab.js("document.querySelector('input[name=on]').checked = true")
        .await;
    tab.click("button[value=preview]").await;
    tab.click("button[value=save]").await;
    tab.shows("This environment needs approval").await;
    tab.shows("Nothing was saved").await;
    tab.shows("After applying").await;
    tab.check("21-approval-required").await;
    tab.fill("#cr-desc", "Launch the new checkout").await;
    tab.click("#proposal button[type=submit]").await;
    tab.shows("Change request opened").await;
    tab.shows("0 of 1 approval").await;
    tab.shows("Launch the new checkout").await;
    assert!(
        !tab.has("button[value=approve]").await,
        "the author cannot approve their own request"
    );
    assert_eq!(config(&app, "production").await["on"], false);
    let request = tab
        .js("location.pathname")
        .await
        .as_str()
        .expect("a path")
        .to_owned();
    assert!(request.contains("/change-requests/"), "{request}");
    sign_out(&tab).await;

    // A viewer sees the request without review buttons; a forged approval is refused.
    sign_in(&tab, &viewer).await;
    tab.open(&request).await;
    tab.shows("Open").await;
    for b in ["approve", "reject", "apply"] {
        assert!(!tab.has(&format!("button[value={b}]")).await, "{b}");
    }
    let csrf = tab.csrf().await;
    let forged = json!({"csrf": csrf, "action": "approve"});
    assert_eq!(
        tab.post_status(&format!("{request}/review"), &forged).await,
        403
    );
    let forged = json!({"csrf": csrf, "action": "apply"});
    assert_eq!(
        tab.post_status(&format!("{request}/apply"), &forged).await,
        403
    );
    tab.check("22-change-request-viewer").await;
    sign_out(&tab).await;

    // Editor B approves.
    sign_in(&tab, &bob).await;
    tab.open(&request).await;
    tab.fill("#cr-comment", "Looks right").await;
    tab.click("button[value=approve]").await;
    tab.shows("Approved.").await;
    tab.shows("1 of 1 approval").await;
    tab.shows("Looks right").await;
    tab.check("change-request").await;
    sign_out(&tab).await;

    // Editor A applies: the SDK stream receives it, and the flag page shows it converge.
    sign_in(&tab, &alice).await;
    tab.open(&request).await;
    tab.click("button[value=apply]").await;
    tab.shows("Change request applied").await;
    let data = next_patch(&mut production).await;
    assert_eq!(data["flag"]["key"], "checkout");
    assert_eq!(data["flag"]["on"], true);
    tab.shows("Reaching the SDKs in production").await;
    tab.waits_for("Every connected stream has this change")
        .await;
    tab.shows("100 %").await;

    // The environment's list, filtered by state.
    tab.open("/projects/shop/environments/production/change-requests?state=applied")
        .await;
    tab.shows("editor-alice").await;
    tab.shows("Launch the new checkout").await;
    tab.check("change-requests").await;
    tab.open("/projects/shop/environments/production/change-requests?state=open")
        .await;
    tab.shows("No change requests").await;

    // A flip where no approval is needed converges inline too, with one stream connected.
    let mut staging = stream(&app, &staging_key).await;
    tab.open("/projects/shop/flags/checkout?env=staging").await;
    tab.click("button[aria-label=\"Turn on in staging\"]").await;
    tab.shows("Turned on").await;
    assert_eq!(next_patch(&mut staging).await["flag"]["on"], true);
    tab.shows("Reaching the SDKs in staging").await;
    tab.waits_for("Every connected stream has this change")
        .await;
    tab.shows("100 %").await;
    tab.shows("(1 of 1)").await;
    tab.check("flag-after-flip").await;
    drop(staging);
    drop(production);
}
