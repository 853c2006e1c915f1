//! The console's later pages: release plans and scheduled changes (on a server whose clock
//! the test moves, which also ends the session), a flag's definition, environments and
//! projects, and an experiment's results.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use vexil_schema::events::{CustomEvent, Event, Exposure};
use vexil_server::db::{Db, DbOptions};
use vexil_server::delivery::{Clock, ManualClock};
use vexil_server::{Config, Server, StartError, Store};
use vexil_testkit::{Backend, ServerTask, TestDatabase, spawn_app};

use crate::browser::WAIT;
use crate::{api, open_console, open_console_at, sign_in};

/// A server on a manual clock (its scheduler and its sessions read it).
struct ClockedApp {
    base_url: String,
    admin_token: String,
    client: reqwest::Client,
    clock: Arc<ManualClock>,
    /// Before `_database`: the server stops before its database goes.
    server: Option<ServerTask<StartError>>,
    _database: TestDatabase,
}

impl ClockedApp {
    async fn spawn(session_hours: u64) -> Self {
        vexil_testkit::init_tracing();
        let database = TestDatabase::create(Backend::Postgres).await;
        let admin_token = format!("vxa_{}", uuid::Uuid::new_v4().simple());
        let clock = ManualClock::new(Clock::system().now());
        let mut config = Config::with_database(database.url.clone());
        config.bootstrap_token = Some(admin_token.clone());
        config.database_max_connections = 8;
        config.drain_ms = 200;
        config.delivery_poll_ms = 50;
        config.console_session_hours = session_hours;
        let server = Server::build(config)
            .await
            .expect("the server starts")
            .with_clock(Clock::manual(clock.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local address");
        let task = ServerTask::spawn("the clocked test server", move |stop| {
            server.serve(listener, async {
                let _ = stop.await;
            })
        });
        Self {
            base_url: format!("http://{addr}"),
            admin_token,
            client: reqwest::Client::builder()
                .timeout(WAIT)
                .build()
                .expect("HTTP client"),
            clock,
            server: Some(task),
            _database: database,
        }
    }

    /// An API request as admin with the expected status; returns the body.
    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(&self.admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("API request");
        let got = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        assert_eq!(got, status, "{path}: {text}");
        serde_json::from_str(&text).unwrap_or(json!(null))
    }

    async fn stop(mut self) {
        if let Some(task) = self.server.take() {
            task.stop(WAIT).await;
        }
    }
}

/// The value of a `datetime-local` field `minutes` after the clock's time (UTC).
fn local_in(clock: &ManualClock, minutes: u64) -> String {
    let t = clock.now() + Duration::from_secs(minutes * 60);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

const FLAG: &str = "/api/v1/projects/shop/flags/checkout/environments/production";
const RELEASES: &str = "/projects/shop/flags/checkout/environments/production/releases";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_plans_and_scheduled_changes_run_from_the_console_and_sessions_expire() {
    use reqwest::Method;
    let app = ClockedApp::spawn(1).await;
    app.api(
        Method::POST,
        "/api/v1/projects",
        Some(json!({"key": "shop", "name": "Shop"})),
        201,
    )
    .await;
    app.api(
        Method::POST,
        "/api/v1/projects/shop/environments",
        Some(json!({"key": "production", "name": "Production"})),
        201,
    )
    .await;
    app.api(
        Method::POST,
        "/api/v1/projects/shop/flags",
        Some(
            json!({"key": "checkout", "name": "New checkout", "kind": "boolean",
            "variations": [{"value": true}, {"value": false}]}),
        ),
        201,
    )
    .await;
    app.api(
        Method::PATCH,
        FLAG,
        Some(json!({"on": true, "fallthrough": {"variation": 1}})),
        200,
    )
    .await;
    let editor = app
        .api(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "release-editor", "role": "editor"})),
            201,
        )
        .await["secret"]
        .as_str()
        .expect("token secret")
        .to_owned();
    let (_browser, _profile, tab) = open_console_at(&app.base_url).await;
    sign_in(&tab, &editor).await;

    // The flag page leads to its releases; none yet.
    tab.open("/projects/shop/flags/checkout").await;
    tab.click(&format!("a[href=\"{RELEASES}\"]")).await;
    tab.shows("No release plans yet").await;
    tab.shows("No scheduled changes").await;
    tab.check("40-releases-empty").await;

    // A plan from false to true in three steps: its first step applies at once.
    tab.fill("#plan-from", "1").await;
    tab.fill("#plan-to", "0").await;
    tab.fill("#plan-steps", "10, 60\n50, 60\n100").await;
    tab.click("form[action$=\"/releases/plans\"] button[type=submit]")
        .await;
    tab.shows("Release plan started").await;
    tab.shows("← in force").await;
    let cfg = app.api(Method::GET, FLAG, None, 200).await;
    assert_eq!(
        cfg["fallthrough"]["rollout"]["variations"][0],
        json!({"variation": 0, "weight": 10000})
    );
    tab.check("41-release-plan").await;
    let plan = app
        .api(Method::GET, &format!("{FLAG}/release-plans"), None, 200)
        .await["items"][0]["id"]
        .as_i64()
        .expect("plan id");

    // Pause, resume, advance: each through the delivery functions.
    tab.click(&format!("button[aria-label=\"Pause plan {plan}\"]"))
        .await;
    tab.shows("Paused at the current step").await;
    assert_eq!(
        app.api(
            Method::GET,
            &format!("{FLAG}/release-plans/{plan}"),
            None,
            200
        )
        .await["state"],
        "paused"
    );
    tab.click(&format!("button[aria-label=\"Resume plan {plan}\"]"))
        .await;
    tab.shows("Resumed").await;
    tab.click(&format!("button[aria-label=\"Advance plan {plan}\"]"))
        .await;
    tab.shows("Advanced to the next step").await;
    let cfg = app.api(Method::GET, FLAG, None, 200).await;
    assert_eq!(
        cfg["fallthrough"]["rollout"]["variations"][0]["weight"],
        50000
    );

    // Abort asks first, then restores the default rule found before the plan.
    tab.click(&format!("button[aria-label=\"Abort plan {plan}\"]"))
        .await;
    tab.shows(&format!("Abort release plan {plan}?")).await;
    tab.check("42-abort-confirm").await;
    tab.click("button.danger").await;
    tab.shows("Aborted").await;
    let cfg = app.api(Method::GET, FLAG, None, 200).await;
    assert_eq!(cfg["fallthrough"], json!({"variation": 1}));

    // Schedule "turn off" in ten minutes, and a second change that is cancelled.
    tab.fill("#at", &local_in(&app.clock, 10)).await;
    tab.fill("#what", "off").await;
    tab.fill("#sc-desc", "end of the campaign").await;
    tab.click("form[action$=\"/releases/schedules\"] button[type=submit]")
        .await;
    tab.shows("Change scheduled").await;
    tab.fill("#at", &local_in(&app.clock, 30)).await;
    tab.fill("#what", "serve:0").await;
    tab.click("form[action$=\"/releases/schedules\"] button[type=submit]")
        .await;
    tab.shows("default rule serves true").await;
    // The later change is listed first (newest first); cancel it.
    tab.click("form[action$=\"/cancel\"] button").await;
    tab.shows("Scheduled change cancelled").await;
    tab.shows("Cancelled").await;
    tab.shows("Pending").await;
    tab.check("43-scheduled-changes").await;

    // A bad time is an error on its field.
    tab.fill("#at", "").await;
    tab.js("document.getElementById('at').removeAttribute('required')")
        .await;
    tab.click("form[action$=\"/releases/schedules\"] button[type=submit]")
        .await;
    tab.shows("a date and time is required").await;
    assert!(tab.has("#at[aria-invalid=true]").await);

    // Eleven minutes later the scheduler has turned the flag off.
    app.clock.advance(Duration::from_secs(11 * 60));
    let start = Instant::now();
    while app.api(Method::GET, FLAG, None, 200).await["on"] != json!(false) {
        assert!(start.elapsed() < WAIT, "the scheduled change did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tab.open(RELEASES).await;
    tab.shows("Executed").await;

    // The session lasts an hour on the server's clock: past it, back to sign-in.
    let cookies = tab.page.get_cookies().await.expect("cookies");
    let session = cookies
        .iter()
        .find(|c| c.name == "vexil_session")
        .expect("the session cookie");
    let session_cookie = format!("vexil_session={}", session.value);
    app.clock.advance(Duration::from_secs(40 * 60));
    tab.open("/projects").await;
    tab.shows("release-editor").await;
    app.clock.advance(Duration::from_secs(11 * 60));
    tab.open("/projects").await;
    tab.shows("Sign in to Vexil").await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let res = no_redirects
        .get(format!("{}/projects", app.base_url))
        .header("cookie", &session_cookie)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 303, "an expired session no longer works");
    assert_eq!(res.headers()["location"], "/sign-in");
    // Signing in again works on the same clock.
    sign_in(&tab, &editor).await;
    app.stop().await;
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_edits_a_definition_environments_and_projects_and_reads_experiment_results() {
    let app = spawn_app(Backend::Postgres).await;
    app.project("shop", &["production"]).await;
    app.project("scratch", &["dev"]).await;
    api(
        &app,
        "POST",
        "/api/v1/projects/shop/flags",
        Some(json!({"key": "banner", "name": "Banner", "kind": "string",
            "variations": [{"value": "blue"}, {"value": "green"}]})),
        201,
    )
    .await;
    let viewer = app.token("console-viewer", "viewer").await;
    let (_browser, _profile, tab) = open_console(&app).await;
    sign_in(&tab, &app.admin_token).await;

    // The definition: a variation that is not JSON is refused on its field.
    tab.open("/projects/shop/flags/banner").await;
    tab.click("a[href=\"/projects/shop/flags/banner/edit\"]")
        .await;
    tab.click("button[value=add]").await;
    tab.fill("input[name=\"variations[2].value\"]", "red").await;
    tab.fill("input[name=\"variations[2].name\"]", "Red").await;
    tab.fill("#d-name", "Homepage banner").await;
    tab.fill("#d-tags", "marketing, web").await;
    tab.js("document.querySelector('input[name=temporary]').checked = true")
        .await;
    tab.js("document.querySelector('input[name=client_side]').checked = true")
        .await;
    tab.click("button[value=save]").await;
    tab.shows("Nothing was saved").await;
    assert!(
        tab.has("[data-path=\"variations[2].value\"]").await,
        "the error is on the variation's field: {}",
        tab.text().await
    );
    tab.check("30-definition-error").await;
    tab.fill("input[name=\"variations[2].value\"]", "\"red\"")
        .await;
    tab.click("button[value=save]").await;
    tab.shows("Definition saved").await;
    tab.shows("Homepage banner").await;
    let flag = api(&app, "GET", "/api/v1/projects/shop/flags/banner", None, 200).await;
    let def = if flag.get("definition").is_some() {
        &flag["definition"]
    } else {
        &flag
    };
    assert_eq!(def["variations"][2], json!({"value": "red", "name": "Red"}));
    assert_eq!(def["tags"], json!(["marketing", "web"]));
    assert_eq!(def["temporary"], true);
    assert_eq!(def["client_side"], true);
    // Removing a row, then saving: variation 2 goes.
    tab.open("/projects/shop/flags/banner/edit").await;
    tab.check("31-definition").await;
    tab.click("button[value=\"remove:2\"]").await;
    assert!(!tab.has("input[name=\"variations[2].value\"]").await);
    tab.click("button[value=save]").await;
    tab.shows("Definition saved").await;
    let flag = api(&app, "GET", "/api/v1/projects/shop/flags/banner", None, 200).await;
    let def = if flag.get("definition").is_some() {
        &flag["definition"]
    } else {
        &flag
    };
    assert_eq!(def["variations"].as_array().map(Vec::len), Some(2));

    // An environment's allowed origins: a bad one is named, a good list is saved.
    tab.open("/projects/shop/settings").await;
    tab.click("a[href=\"/projects/shop/environments/production/edit\"]")
        .await;
    tab.fill("#env-origins", "https://app.example.com\nnot an origin")
        .await;
    tab.click("form[action$=\"/edit\"] button[type=submit]")
        .await;
    tab.shows("Nothing was saved").await;
    tab.shows("not an origin:").await;
    tab.check("32-environment-error").await;
    tab.fill("#env-name", "Production (EU)").await;
    tab.fill(
        "#env-origins",
        "https://app.example.com\nhttps://admin.example.com",
    )
    .await;
    tab.click("form[action$=\"/edit\"] button[type=submit]")
        .await;
    tab.shows("https://app.example.com, https://admin.example.com")
        .await;
    tab.shows("Production (EU)").await;
    let env = api(
        &app,
        "GET",
        "/api/v1/projects/shop/environments/production",
        None,
        200,
    )
    .await;
    assert_eq!(
        env["allowed_origins"],
        json!(["https://app.example.com", "https://admin.example.com"])
    );
    tab.check("33-environments").await;

    // A project renamed; another deleted after a confirmation.
    tab.click("a[href=\"/projects/shop/edit\"]").await;
    tab.fill("#proj-name", "Web shop").await;
    tab.click("form[action=\"/projects/shop/edit\"] button")
        .await;
    assert_eq!(
        api(&app, "GET", "/api/v1/projects/shop", None, 200).await["name"],
        "Web shop"
    );
    tab.open("/projects/scratch/edit").await;
    tab.check("34-project").await;
    tab.click("form[action=\"/projects/scratch/delete\"] button")
        .await;
    tab.shows("cannot be undone").await;
    tab.check("35-project-delete-confirm").await;
    tab.click("form[action=\"/projects/scratch/delete\"] button")
        .await;
    tab.shows("Projects").await;
    api(&app, "GET", "/api/v1/projects/scratch", None, 404).await;

    // An experiment with a broken split: 300 units against 200 on a 50/50 rollout.
    api(
        &app,
        "POST",
        "/api/v1/projects/shop/flags",
        Some(
            json!({"key": "checkout", "name": "Checkout", "kind": "boolean",
            "variations": [{"value": true}, {"value": false}]}),
        ),
        201,
    )
    .await;
    api(
        &app,
        "PATCH",
        "/api/v1/projects/shop/flags/checkout/environments/production",
        Some(
            json!({"on": true, "fallthrough": {"rollout": {"experiment": true, "variations": [
            {"variation": 0, "weight": 50000}, {"variation": 1, "weight": 50000}]}}}),
        ),
        200,
    )
    .await;
    api(
        &app,
        "POST",
        "/api/v1/projects/shop/metrics",
        Some(json!({"key": "buy", "name": "Buy", "kind": "conversion", "event_key": "purchase"})),
        201,
    )
    .await;
    let x = "/api/v1/projects/shop/environments/production/experiments";
    api(
        &app,
        "POST",
        x,
        Some(
            json!({"key": "new-checkout", "name": "New checkout", "flag": "checkout",
            "control": 1, "primary_metric": "buy", "hypothesis": "one page sells more"}),
        ),
        201,
    )
    .await;
    tab.open("/projects/shop/environments/production/experiments/new-checkout")
        .await;
    tab.shows("No results yet").await;
    api(&app, "POST", &format!("{x}/new-checkout/start"), None, 200).await;
    let t = now_ms();
    let mut events = Vec::new();
    for i in 0..500u32 {
        let variation = u32::from(i >= 300);
        let unit = format!("u{i}");
        events.push(Event::Exposure(Exposure {
            time: t,
            flag_key: "checkout".into(),
            flag_version: 1,
            environment_version: 1,
            variation,
            context_key: unit.clone(),
            context_kind: "user".into(),
        }));
        // 10 % of variation 1 (control) convert, 20 % of variation 0.
        let converts = if variation == 0 {
            i % 5 == 0
        } else {
            i % 10 == 0
        };
        if converts {
            events.push(Event::Custom(CustomEvent {
                time: t + 1,
                event_key: "purchase".into(),
                context_key: unit,
                context_kind: "user".into(),
                value: None,
            }));
        }
    }
    let store = Store::new(
        Db::connect(&DbOptions {
            url: app.database.url.clone(),
            max_connections: 2,
        })
        .await
        .expect("a second handle on the database"),
    );
    vexil_server::experiments::ingest_batch(&store, "shop", "production", &events)
        .await
        .expect("events are folded");
    let results = api(&app, "GET", &format!("{x}/new-checkout/results"), None, 200).await;
    assert_eq!(results["srm"]["mismatch"], true, "{results:#}");
    tab.open("/projects/shop/environments/production/experiments")
        .await;
    tab.shows("New checkout").await;
    tab.check("36-experiments").await;
    tab.click("a[href$=\"/experiments/new-checkout\"]").await;
    tab.shows("Sample ratio mismatch").await;
    tab.shows("Variation 0 (true)").await;
    tab.shows("300").await;
    // The lift of variation 0 against control, as the API computes it.
    let lift = results["metrics"][0]["variations"]
        .as_array()
        .expect("variations")
        .iter()
        .find_map(|v| v["vs_control"]["relative_lift"].as_f64())
        .expect("a lift");
    tab.shows(&format!("{:+.1} %", lift * 100.0)).await;
    assert!(tab.has("svg.chart circle").await, "the lift is drawn");
    tab.check("37-experiment-results").await;

    // A viewer gets none of the edit pages, and the server refuses the writes.
    tab.click("form[action=\"/sign-out\"] button").await;
    sign_in(&tab, &viewer).await;
    tab.open("/projects/shop/flags/banner").await;
    assert!(!tab.has("a[href$=\"/banner/edit\"]").await);
    let csrf = tab.csrf().await;
    let status = tab
        .post_status(
            "/projects/shop/environments/production/edit",
            &json!({"csrf": csrf, "name": "Hacked", "allowed_origins": "*"}),
        )
        .await;
    assert_eq!(status, 403);
    let status = tab
        .post_status(
            "/projects/shop/delete",
            &json!({"csrf": csrf, "confirmed": "yes"}),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        api(
            &app,
            "GET",
            "/api/v1/projects/shop/environments/production",
            None,
            200
        )
        .await["allowed_origins"],
        json!(["https://app.example.com", "https://admin.example.com"])
    );
    app.stop().await;
}
