//! The console's flows, page by page.

use std::time::Duration;

use serde_json::json;
use vexil_testkit::sse::SseReader;
use vexil_testkit::{Backend, spawn_app};

use crate::browser::WAIT;
use crate::{api, open_console, sign_in};

const CONFIG: &str = "/api/v1/projects/shop/flags/checkout/environments/production";

/// The next SDK stream event (keep-alives skipped), within [`WAIT`].
async fn next(sse: &mut SseReader) -> vexil_testkit::sse::Event {
    tokio::time::timeout(WAIT, sse.next_event())
        .await
        .expect("an SDK event arrives in time")
        .expect("the stream stays open")
}

/// The flag's production configuration, through the API.
async fn production(app: &vexil_testkit::TestApp) -> serde_json::Value {
    api(app, "GET", CONFIG, None, 200).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_editor_creates_targets_turns_on_resolves_a_conflict_and_rolls_back_a_viewer_cannot_edit()
 {
    let app = spawn_app(Backend::Postgres).await;
    app.project("shop", &["production", "staging"]).await;
    let editor = app.token("console-editor", "editor").await;
    let viewer = app.token("console-viewer", "viewer").await;
    let sdk_key = api(
        &app,
        "POST",
        "/api/v1/projects/shop/environments/production/sdk-keys",
        Some(json!({"name": "backend"})),
        201,
    )
    .await["secret"]
        .as_str()
        .expect("SDK key secret")
        .to_owned();
    let (_browser, _profile, tab) = open_console(&app).await;

    // Sign in: a wrong token is refused on the form; the editor's opens a session.
    tab.open("/projects").await;
    tab.shows("Paste an API token").await;
    tab.check("01-sign-in").await;
    tab.fill("#token", "vxa_not-a-token").await;
    tab.click("form[action=\"/sign-in\"] button").await;
    tab.shows("That token is not valid").await;
    sign_in(&tab, &editor).await;
    tab.shows("console-editor").await;
    tab.check("02-projects").await;

    // The flags list is empty and says what to do; create a flag.
    tab.open("/projects/shop/flags").await;
    tab.shows("No flags yet").await;
    tab.check("03-flags-empty").await;
    tab.click("a[href=\"/projects/shop/flags/new\"]").await;
    tab.check("04-new-flag").await;
    tab.fill("#key", "checkout").await;
    tab.fill("#name", "New checkout").await;
    tab.fill("#tags", "payments, web").await;
    tab.click("form[action=\"/projects/shop/flags\"] button[type=submit]")
        .await;
    tab.shows("Flag created").await;
    tab.shows("New checkout").await;
    tab.check("05-flag").await;

    // A segment with pasted keys.
    tab.open("/projects/shop/environments/production/segments")
        .await;
    tab.shows("No segments yet").await;
    tab.fill("#seg-key", "beta").await;
    tab.fill("#seg-name", "Beta testers").await;
    tab.click("form[action$=\"/segments\"] button").await;
    tab.fill("#keys", "alice\nbob\n\ncarol\n").await;
    tab.click("form[action$=\"/segments/beta\"] button[type=submit]")
        .await;
    tab.shows("List saved").await;
    tab.shows("Included (3)").await;
    tab.check("06-segment").await;

    // Targeting: add a rule matching the segment, review the diff, save.
    tab.open("/projects/shop/flags/checkout/environments/production/targeting")
        .await;
    tab.shows("No rules").await;
    tab.check("07-targeting").await;
    tab.click("button[value=add_rule]").await;
    tab.shows("Rule 1").await;
    tab.fill("select[name=\"rules[0].clauses[0].op\"]", "segment_match")
        .await;
    tab.select_many("select[name=\"rules[0].clauses[0].segments\"]", &["beta"])
        .await;
    tab.fill("select[name=\"rules[0].serve\"]", "v:0").await;
    tab.click("button[value=preview]").await;
    tab.shows("Review before saving").await;
    tab.shows("segment_match").await;
    tab.check("08-review-diff").await;
    tab.click("button[value=save]").await;
    tab.shows("Targeting saved").await;
    let cfg = production(&app).await;
    assert_eq!(cfg["rules"][0]["clauses"][0]["op"], "segment_match");
    assert_eq!(cfg["rules"][0]["clauses"][0]["values"], json!(["beta"]));
    assert_eq!(cfg["on"], false);

    // Turn it on: an SDK stream connected to the server receives the change.
    let res = app
        .client
        .get(app.url("/sdk/v1/stream"))
        .header("authorization", &sdk_key)
        .send()
        .await
        .expect("the SDK stream opens");
    assert_eq!(res.status(), 200);
    let mut sse = SseReader::new(res);
    let put = next(&mut sse).await;
    assert_eq!(put.event, "put");
    tab.click("button[aria-label=\"Turn on in production\"]")
        .await;
    tab.shows("Turned on").await;
    let patch = next(&mut sse).await;
    assert_eq!(patch.event, "patch");
    let data = patch.json();
    assert_eq!(data["flag"]["key"], "checkout");
    assert_eq!(data["flag"]["on"], true);
    assert_eq!(
        data["flag"]["rules"][0]["clauses"][0]["op"],
        "segment_match"
    );
    drop(sse);

    // The list shows it on in production, off in staging; its search and filter work.
    tab.open("/projects/shop/flags?env=production&state=on")
        .await;
    tab.shows("New checkout").await;
    tab.check("09-flags-list").await;
    tab.open("/projects/shop/flags?env=staging&state=on").await;
    tab.shows("No flags match").await;
    tab.open("/projects/shop/flags?q=nothing-like-this").await;
    tab.shows("No flags match").await;

    // A stale edit: someone changes the flag while the editor is open.
    tab.open("/projects/shop/flags/checkout/environments/production/targeting")
        .await;
    let before = production(&app).await["version"].as_u64().expect("version");
    api(
        &app,
        "PATCH",
        CONFIG,
        Some(json!({"off_variation": 0})),
        200,
    )
    .await;
    tab.fill("input[name=\"rules[0].description\"]", "Beta testers first")
        .await;
    tab.click("button[value=preview]").await;
    tab.shows("This flag changed while you were editing").await;
    tab.shows(&format!("You started from version {before}"))
        .await;
    tab.check("10-conflict").await;
    // Re-apply on the latest version: review, save; the other change is kept.
    tab.click("button[value=preview]").await;
    tab.shows("Review before saving").await;
    tab.click("button[value=save]").await;
    tab.shows("Targeting saved").await;
    let cfg = production(&app).await;
    assert_eq!(cfg["rules"][0]["description"], "Beta testers first");
    assert_eq!(cfg["off_variation"], 0, "the concurrent change survives");

    // A validation error lands on its field: a rollout that does not add up to 100%.
    tab.open("/projects/shop/flags/checkout/environments/production/targeting")
        .await;
    tab.fill("select[name=\"fallthrough.serve\"]", "rollout")
        .await;
    tab.fill("input[name=\"fallthrough.rollout.0\"]", "30")
        .await;
    tab.fill("input[name=\"fallthrough.rollout.1\"]", "30")
        .await;
    tab.click("button[value=preview]").await;
    tab.click("button[value=save]").await;
    tab.shows("Nothing was saved").await;
    assert!(
        tab.has("[data-path^=\"fallthrough.rollout\"]").await,
        "the error is shown beside the rollout: {}",
        tab.text().await
    );
    tab.check("11-field-error").await;

    // History: the version with the rule but before the concurrent change; roll back to it.
    let current = production(&app).await["version"].as_u64().expect("version");
    let target = before; // the version the conflicting edit started from
    tab.open(&format!(
        "/projects/shop/flags/checkout/environments/production/history?version={target}"
    ))
    .await;
    tab.shows(&format!("Version {target}")).await;
    tab.check("12-history").await;
    tab.click("form[action$=\"/rollback\"] button").await;
    tab.shows("Roll back checkout in production?").await;
    tab.check("13-rollback-confirm").await;
    tab.click("form[action$=\"/rollback\"] button").await;
    tab.shows("Rolled back").await;
    let cfg = production(&app).await;
    assert_eq!(cfg["version"], current + 1);
    assert_eq!(
        cfg["off_variation"], 1,
        "version {target}'s off variation is back"
    );
    assert!(cfg["rules"][0].get("description").is_none());
    assert_eq!(cfg["on"], true);

    // Explain: a segment member matches the rule.
    tab.open("/projects/shop/explain?env=production&flag=checkout")
        .await;
    tab.fill("#x-key", "alice").await;
    tab.click("form[action$=\"/explain\"] button[type=submit]")
        .await;
    tab.shows("rule 1").await;
    tab.shows("matched").await;
    tab.check("14-explain").await;

    // The audit log names the editor's token for the console's changes.
    tab.open("/audit?project=shop&flag=checkout").await;
    tab.shows("console-editor").await;
    tab.check("15-audit").await;
    let audit = api(
        &app,
        "GET",
        "/api/v1/audit?project=shop&flag=checkout",
        None,
        200,
    )
    .await;
    let by_editor = audit["items"]
        .as_array()
        .expect("audit items")
        .iter()
        .filter(|e| e["actor"] == "console-editor")
        .count();
    assert!(
        by_editor >= 4,
        "console changes are audited under the token's name: {audit:#}"
    );

    // Kill switch, after a confirmation page.
    tab.open("/projects/shop/flags/checkout").await;
    tab.click("form[action$=\"/kill\"] button").await;
    tab.shows("Turn checkout off in every environment").await;
    tab.check("16-kill-confirm").await;
    tab.click("form[action$=\"/kill\"] button").await;
    tab.shows("Killed").await;
    assert_eq!(production(&app).await["on"], false);

    // Sign out: the session is gone on the server, not only in the browser.
    let cookies = tab.page.get_cookies().await.expect("cookies");
    let session = cookies
        .iter()
        .find(|c| c.name == "vexil_session")
        .expect("the session cookie");
    assert!(session.http_only, "the session cookie is HttpOnly");
    let session_cookie = format!("vexil_session={}", session.value);
    tab.click("form[action=\"/sign-out\"] button").await;
    tab.shows("Sign in to Vexil").await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let res = no_redirects
        .get(app.url("/projects"))
        .header("cookie", &session_cookie)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 303, "a signed-out session no longer works");
    assert_eq!(res.headers()["location"], "/sign-in");

    // A viewer sees no edit controls, and the server refuses edits anyway.
    sign_in(&tab, &viewer).await;
    tab.open("/projects/shop/flags/checkout").await;
    tab.shows("New checkout").await;
    assert!(
        !tab.has("form[action$=\"/toggle\"]").await,
        "no on/off for a viewer"
    );
    assert!(
        !tab.has("form[action$=\"/kill\"]").await,
        "no kill switch for a viewer"
    );
    tab.check("17-viewer-flag").await;
    tab.open("/projects/shop/flags/checkout/environments/production/targeting")
        .await;
    tab.shows("Read only").await;
    assert!(!tab.has("button[value=preview]").await);
    tab.check("18-viewer-targeting").await;
    let csrf = tab.csrf().await;
    let version = production(&app).await["version"].clone();
    let status = tab
        .post_status(
            "/projects/shop/flags/checkout/toggle",
            &json!({"csrf": csrf, "environment": "production", "version": version.to_string(), "on": "true"}),
        )
        .await;
    assert_eq!(status, 403, "the server refuses a viewer's edit");
    assert_eq!(production(&app).await["on"], false, "nothing changed");
    tokio::time::sleep(Duration::ZERO).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_manages_projects_environments_keys_and_tokens_on_sqlite() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_browser, _profile, tab) = open_console(&app).await;
    sign_in(&tab, &app.admin_token).await;
    tab.shows("No projects yet").await;

    // A project and its environments.
    tab.fill("#p-key", "web").await;
    tab.fill("#p-name", "Web shop").await;
    tab.click("form[action=\"/projects\"] button").await;
    tab.shows("No environments yet").await;
    tab.fill("#e-key", "prod").await;
    tab.fill("#e-name", "Production").await;
    tab.click("form[action$=\"/environments\"] button").await;
    tab.shows("Production").await;
    // A bad key is an error on its field.
    tab.fill("#e-key", "Not A Key!").await;
    tab.fill("#e-name", "Broken").await;
    tab.click("form[action$=\"/environments\"] button").await;
    tab.shows("Nothing was changed").await;
    tab.check("20-environments").await;

    // An SDK key: its secret is shown once.
    tab.open("/projects/web/environments/prod/keys").await;
    tab.fill("#k-name", "checkout-service").await;
    tab.click("form[action$=\"/keys\"] button").await;
    tab.shows("shown only this once").await;
    let secret = tab
        .js("document.getElementById('new-secret').innerText")
        .await;
    let secret = secret.as_str().expect("secret").trim().to_owned();
    assert!(secret.starts_with("vxs_"), "{secret}");
    tab.check("21-key-created").await;
    tab.open("/projects/web/environments/prod/keys").await;
    assert!(
        !tab.text().await.contains(&secret),
        "the secret is never shown again"
    );
    let res = app
        .client
        .get(app.url("/sdk/v1/snapshot"))
        .header("authorization", &secret)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200, "the new key works");
    tab.click("form[action$=\"/revoke\"] button").await;
    tab.shows("Revoke this key?").await;
    tab.click("form[action$=\"/revoke\"] button").await;
    tab.shows("None yet").await;
    let res = app
        .client
        .get(app.url("/sdk/v1/snapshot"))
        .header("authorization", &secret)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401, "the revoked key is refused");

    // An API token, shown once; revoking it ends what it could do.
    tab.open("/tokens").await;
    tab.fill("#t-name", "ci-bot").await;
    tab.fill("#t-role", "editor").await;
    tab.click("form[action=\"/tokens\"] button").await;
    tab.shows("shown only this once").await;
    let token = tab
        .js("document.getElementById('new-secret').innerText")
        .await;
    let token = token.as_str().expect("token").trim().to_owned();
    assert!(token.starts_with("vxa_"), "{token}");
    tab.check("22-tokens").await;

    // A wrong CSRF token is refused and changes nothing.
    let status = tab
        .post_status(
            "/projects",
            &json!({"csrf": "forged", "key": "evil", "name": "Evil"}),
        )
        .await;
    assert_eq!(status, 400);
    let projects = api(&app, "GET", "/api/v1/projects", None, 200).await;
    assert_eq!(projects["items"].as_array().map(Vec::len), Some(1));
    tab.click("form[action=\"/sign-out\"] button").await;
    tab.shows("Sign in to Vexil").await;
    app.stop().await;
}
