//! The admin console in real headless Chromium against the real server (in process on a real
//! socket, PostgreSQL and SQLite): sign in, create a flag, add a rule with a segment, turn
//! it on and see an SDK stream receive it, a stale edit's conflict view, rollback from
//! history, a viewer who cannot edit, sign out; tokens and keys shown once and revoked;
//! release plans and scheduled changes on a moved clock, session expiry, flag definitions,
//! environments and projects, experiment results; change requests under an approval policy
//! and each flip's convergence shown inline.
//! axe-core runs in every page (no serious or critical violation) and each page is saved as
//! a screenshot under `<target>/console-screenshots/`.
//!
//! Needs Debian's `chromium` (`/usr/bin/chromium`, or `VEXIL_CHROMIUM`); fails, never skips,
//! without it.

mod browser;
mod changes;
mod flows;
mod pages;
#[path = "../shared/chromium.rs"]
mod shared_chromium;

use browser::Tab;
use serde_json::{Value, json};
use vexil_testkit::TestApp;

/// A browser with one page on `app`'s console.
pub async fn open_console(app: &TestApp) -> (chromiumoxide::Browser, tempfile::TempDir, Tab) {
    open_console_at(&app.base_url).await
}

/// A browser with one page on the console served at `base_url`.
pub async fn open_console_at(base_url: &str) -> (chromiumoxide::Browser, tempfile::TempDir, Tab) {
    let (browser, profile) = shared_chromium::chromium_sized(1280, 860).await;
    let page = browser.new_page("about:blank").await.expect("a page opens");
    let tab = Tab {
        page,
        base: base_url.to_owned(),
    };
    (browser, profile, tab)
}

/// Signs in with `token` through the sign-in form.
pub async fn sign_in(tab: &Tab, token: &str) {
    tab.open("/sign-in").await;
    tab.fill("#token", token).await;
    tab.click("form[action=\"/sign-in\"] button").await;
    tab.shows("Sign out").await;
}

/// Sends an API request as admin and checks its status; returns the body.
pub async fn api(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = app.request_as(method, path, &app.admin_token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("API request");
    let got = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    assert_eq!(got, status, "{path}: {text}");
    serde_json::from_str(&text).unwrap_or(json!(null))
}
