//! The web SDK (`sdk/web`) in real headless Chromium, against a real control plane and a
//! real edge relay process: a page on another origin shows a client-side flag, receives a
//! flip within a second, survives a relay restart, sends `track` events and exposures that
//! reach the control plane's database through the relay, and a page on an origin the
//! environment does not allow is refused.
//!
//! Needs Debian's `chromium` (`/usr/bin/chromium`, or `VEXIL_CHROMIUM`) and node/npm (the
//! harness builds `sdk/web/dist`); it fails, never skips, without them. Screenshots are saved
//! under `$CARGO_TARGET_TMPDIR/browser/`.

#[allow(dead_code)]
#[path = "../cluster/harness.rs"]
mod harness;
mod page;
#[path = "../shared/chromium.rs"]
mod shared_chromium;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::page::ScreenshotParams;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use harness::{Cluster, WAIT, config_path};
use page::StaticSite;
use shared_chromium::{chromium, eval};

/// A relay child process on a fixed port (so that it can be restarted where pages expect
/// it), killed on drop.
struct RelayProcess {
    base_url: String,
    child: Child,
}

impl RelayProcess {
    /// Starts the relay binary on `port` and waits until `/readyz` answers 200.
    async fn start(port: u16, upstream: &str, relay_key: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_vexil-e2e-relay"))
            .env("VEXIL_UPSTREAM_URL", upstream)
            .env("VEXIL_RELAY_KEY", relay_key)
            .env("VEXIL_LISTEN", format!("127.0.0.1:{port}"))
            .env("VEXIL_METRICS", "false")
            .env("VEXIL_DRAIN_WINDOW", "100ms")
            .env("VEXIL_UPSTREAM_BACKOFF_INITIAL", "50ms")
            .env("VEXIL_UPSTREAM_BACKOFF_MAX", "500ms")
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the relay binary starts");
        let base_url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let ready = tokio::time::timeout(WAIT, async {
            loop {
                if let Ok(res) = client.get(format!("{base_url}/readyz")).send().await
                    && res.status() == 200
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(ready.is_ok(), "the relay on port {port} is ready in time");
        Self { base_url, child }
    }

    /// Kills the process and waits for it to exit (its port is free afterwards).
    async fn kill(mut self) {
        self.child
            .kill()
            .await
            .expect("the relay process is killed");
    }
}

/// A free port on 127.0.0.1 (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until the page shows `text` (at most `limit`); panics with the page state if not.
async fn shows(page: &Page, text: &str, limit: Duration) {
    let js = format!("window.waitFor({text:?}, {})", limit.as_millis());
    if let Err(e) = eval(page, &js).await {
        panic!(
            "{e}; page state: {:?}",
            eval(page, "JSON.stringify(window.vexil)").await
        );
    }
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn screenshot(page: &Page, name: &str) {
    let path = screenshot_dir().join(name);
    page.save_screenshot(
        ScreenshotParams::builder()
            .format(CaptureScreenshotFormat::Png)
            .build(),
        &path,
    )
    .await
    .unwrap_or_else(|e| panic!("screenshot {}: {e}", path.display()));
}

/// The `custom` and `exposure` events stored, as `(kind, key, context key)` sorted, once at
/// least `n` are there (polled with a deadline: they travel page → relay → server).
async fn stored_events(database_url: &str, n: usize) -> Vec<(String, String, String)> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(database_url)
        .await
        .expect("the test database");
    let deadline = Instant::now() + WAIT;
    loop {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT kind, key, context_key FROM events \
             WHERE kind IN ('custom', 'exposure') ORDER BY kind, key",
        )
        .fetch_all(&mut c)
        .await
        .expect("events readable");
        if rows.len() >= n || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn web_sdk_in_chromium_streams_flips_survives_a_relay_restart_and_is_refused_elsewhere() {
    tokio::task::spawn_blocking(page::build_sdk)
        .await
        .expect("the SDK build runs");
    let (mut browser, _profile) = chromium().await;

    // Control plane with a client-side flag `banner` (on: true) and an internal flag.
    let cluster = Cluster::start(1, &[]).await;
    let server = cluster.servers[0].base_url.clone();
    for (key, client_side) in [("banner", true), ("internal", false)] {
        cluster
            .expect(
                0,
                "POST",
                "/api/v1/projects/p/flags",
                Some(
                    json!({"key": key, "name": key, "kind": "boolean", "client_side": client_side,
                            "variations": [{"value": true}, {"value": false}]}),
                ),
                201,
            )
            .await;
        cluster
            .expect(
                0,
                "PATCH",
                &config_path(key),
                Some(json!({"on": true, "off_variation": 1, "fallthrough": {"variation": 0}})),
                200,
            )
            .await;
    }
    // A client-side experiment flag: reading it records an exposure (from the page).
    cluster
        .expect(
            0,
            "POST",
            "/api/v1/projects/p/flags",
            Some(
                json!({"key": "checkout", "name": "checkout", "kind": "boolean", "client_side": true,
                        "variations": [{"value": true}, {"value": false}]}),
            ),
            201,
        )
        .await;
    cluster
        .expect(
            0,
            "PATCH",
            &config_path("checkout"),
            Some(json!({"on": true, "off_variation": 1,
                        "fallthrough": {"rollout": {"experiment": true, "variations": [
                            {"variation": 0, "weight": 50000}, {"variation": 1, "weight": 50000}]}}})),
            200,
        )
        .await;
    let allowed = StaticSite::start().await;
    let other = StaticSite::start().await;
    cluster
        .expect(
            0,
            "PATCH",
            "/api/v1/projects/p/environments/prod",
            Some(json!({"allowed_origins": [allowed.origin]})),
            200,
        )
        .await;
    let client_key = cluster
        .expect(
            0,
            "POST",
            "/api/v1/projects/p/environments/prod/client-keys",
            Some(json!({"name": "web"})),
            201,
        )
        .await["secret"]
        .as_str()
        .expect("client key secret")
        .to_owned();
    assert!(client_key.starts_with("vxc_"), "a client key: {client_key}");
    let relay_key = cluster.relay_key().await;
    let port = free_port();
    let relay = RelayProcess::start(port, &server, &relay_key).await;
    let relay_url = relay.base_url.clone();
    let url = |origin: &str| format!("{origin}/?relay={relay_url}&key={client_key}");

    // The page on the allowed origin shows the flag.
    let page = browser
        .new_page(url(&allowed.origin))
        .await
        .expect("page opens");
    shows(&page, "true", WAIT).await;
    assert_eq!(eval(&page, "window.vexil.state").await, Ok(json!("ready")));
    screenshot(&page, "1-initial.png").await;

    // A flip reaches the page within a second of the write's acknowledgement, and the
    // provider reports only that flag as changed.
    cluster
        .expect(
            0,
            "PATCH",
            &config_path("banner"),
            Some(json!({"on": false})),
            200,
        )
        .await;
    let acked = Instant::now();
    shows(&page, "false", Duration::from_secs(1)).await;
    let flip = acked.elapsed();
    assert!(flip < Duration::from_secs(1), "flip seen after {flip:?}");
    // A change to a flag that is not client-side sends the page nothing.
    cluster
        .expect(
            0,
            "PATCH",
            &config_path("internal"),
            Some(json!({"on": false})),
            200,
        )
        .await;
    cluster
        .expect(
            0,
            "PATCH",
            &config_path("banner"),
            Some(json!({"on": true})),
            200,
        )
        .await;
    shows(&page, "true", Duration::from_secs(1)).await;
    assert_eq!(
        eval(&page, "window.vexil.changes").await,
        Ok(json!([["banner"], ["banner"]])),
        "ConfigurationChanged named only the flipped flag, once per flip"
    );
    screenshot(&page, "2-flipped.png").await;

    // Events from the page: a conversion and the experiment flag used twice (one exposure),
    // sent by the SDK to the relay with the client key, forwarded upstream and stored.
    let used = eval(&page, "window.vexilUse()").await;
    assert!(
        matches!(&used, Ok(Value::String(v)) if v == "true" || v == "false"),
        "the experiment flag has a value: {used:?}"
    );
    assert_eq!(eval(&page, "window.vexilUse()").await, used);
    eval(&page, "window.vexilTrack('purchase', 12.5)")
        .await
        .expect("track runs");
    let rows = stored_events(&cluster.database_url, 2).await;
    assert_eq!(
        rows,
        [
            (
                "custom".to_owned(),
                "purchase".to_owned(),
                "user-1".to_owned()
            ),
            (
                "exposure".to_owned(),
                "checkout".to_owned(),
                "user-1".to_owned()
            ),
        ],
        "one conversion and one exposure from the page"
    );

    // Relay restart: the flag flips while the relay is down; the page reconnects (with its
    // backoff) to the new process on the same port and shows the new value.
    relay.kill().await;
    cluster
        .expect(
            0,
            "PATCH",
            &config_path("banner"),
            Some(json!({"on": false})),
            200,
        )
        .await;
    let relay = RelayProcess::start(port, &server, &relay_key).await;
    shows(&page, "false", Duration::from_secs(10)).await;
    screenshot(&page, "3-after-relay-restart.png").await;

    // The values are cached for the next page load: a reload shows them before any network.
    let cached: Value = eval(
        &page,
        "Object.keys(localStorage).filter((k) => k.startsWith('vexil:')).length",
    )
    .await
    .expect("localStorage readable");
    assert_eq!(
        cached,
        json!(1),
        "one cache entry for this base URL, key and context"
    );

    // A page on an origin the environment does not list is refused: no values, the
    // provider in error, and a direct request gets no CORS permission.
    let refused = browser
        .new_page(url(&other.origin))
        .await
        .expect("page opens");
    let state = tokio::time::timeout(WAIT, async {
        loop {
            let s = eval(&refused, "window.vexil && window.vexil.state").await;
            if let Ok(Value::String(s)) = &s
                && s != "loading"
            {
                return s.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the refused page settles in time");
    assert!(state.starts_with("error"), "refused page state: {state}");
    assert_eq!(
        eval(&refused, "window.vexil.value").await,
        Ok(json!("false"))
    );
    let direct = eval(
        &refused,
        &format!(
            "fetch('{relay_url}/ofrep/v1/evaluate/flags', {{method: 'POST', headers: {{'Authorization': 'Bearer {client_key}', 'Content-Type': 'application/json'}}, body: '{{\"context\":{{\"targetingKey\":\"user-1\"}}}}'}}).then((r) => 'status ' + r.status, (e) => 'blocked: ' + e.message)"
        ),
    )
    .await;
    assert!(
        matches!(&direct, Ok(Value::String(s)) if s.starts_with("blocked")),
        "a disallowed origin's request is blocked by CORS: {direct:?}"
    );
    screenshot(&refused, "4-disallowed-origin.png").await;

    browser.close().await.expect("Chromium closes");
    let _ = browser.wait().await;
    relay.kill().await;
}
