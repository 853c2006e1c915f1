//! Driving console pages in headless Chromium: navigation, form filling and submission,
//! waiting for text, the axe-core accessibility check and screenshots.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::page::ScreenshotParams;
use serde_json::{Value, json};

use crate::shared_chromium::eval;

/// How long a page may take to show what a step expects.
pub const WAIT: Duration = Duration::from_secs(15);

/// axe-core 4.14.1 (vendored with its licence), injected into every page checked.
const AXE: &str = include_str!("vendor/axe-core/axe.min.js");

/// A console page in the browser.
#[derive(Debug)]
pub struct Tab {
    pub page: Page,
    pub base: String,
}

impl Tab {
    /// Runs `js`, panicking with the error.
    pub async fn js(&self, js: &str) -> Value {
        eval(&self.page, js)
            .await
            .unwrap_or_else(|e| panic!("{js}: {e}"))
    }

    /// The visible text of the page.
    pub async fn text(&self) -> String {
        self.js("document.body ? document.body.innerText : ''")
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Waits until a new document has loaded after `act` started a navigation.
    async fn navigating(&self, act: &str) {
        self.js("window.__vexilOld = true").await;
        self.js(act).await;
        let start = Instant::now();
        loop {
            let done = eval(
                &self.page,
                "window.__vexilOld === undefined && document.readyState === 'complete'",
            )
            .await;
            if done == Ok(Value::Bool(true)) {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "no new page after {act}; page shows: {}",
                self.text().await
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Opens `path` and waits for it to load.
    pub async fn open(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.navigating(&format!("location.href = {}", json!(url)))
            .await;
    }

    /// Clicks the element `selector` (a submit button or a link) and waits for the page
    /// it leads to.
    pub async fn click(&self, selector: &str) {
        let found = self
            .js(&format!("!!document.querySelector({})", json!(selector)))
            .await;
        assert_eq!(
            found,
            Value::Bool(true),
            "no {selector} on the page: {}",
            self.text().await
        );
        self.navigating(&format!(
            "setTimeout(() => document.querySelector({}).click(), 0)",
            json!(selector)
        ))
        .await;
    }

    /// Sets the value of the field `selector`.
    pub async fn fill(&self, selector: &str, value: &str) {
        let ok = self
            .js(&format!(
                "(() => {{ const e = document.querySelector({}); if (!e) return false; e.value = {}; \
                 e.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
                json!(selector),
                json!(value)
            ))
            .await;
        assert_eq!(ok, Value::Bool(true), "no field {selector}");
    }

    /// Selects exactly `values` in the multiple select `selector`.
    pub async fn select_many(&self, selector: &str, values: &[&str]) {
        let ok = self
            .js(&format!(
                "(() => {{ const e = document.querySelector({}); if (!e) return false; \
                 const want = {}; for (const o of e.options) o.selected = want.includes(o.value); return true; }})()",
                json!(selector),
                json!(values)
            ))
            .await;
        assert_eq!(ok, Value::Bool(true), "no select {selector}");
    }

    /// Asserts that the page shows `text`.
    pub async fn shows(&self, text: &str) {
        let body = self.text().await;
        assert!(
            body.contains(text),
            "the page should show {text:?}; it shows:\n{body}"
        );
    }

    /// Waits (up to [`WAIT`]) until the page shows `text`: for content that updates itself.
    pub async fn waits_for(&self, text: &str) {
        let start = Instant::now();
        loop {
            let body = self.text().await;
            if body.contains(text) {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "the page should come to show {text:?}; it shows:\n{body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether `selector` matches something.
    pub async fn has(&self, selector: &str) -> bool {
        self.js(&format!("!!document.querySelector({})", json!(selector)))
            .await
            == Value::Bool(true)
    }

    /// Runs axe-core on the page and fails on any serious or critical violation; then saves
    /// a full-page screenshot as `name`.png.
    pub async fn check(&self, name: &str) {
        if self.js("typeof window.axe").await != json!("object") {
            self.js(AXE).await;
        }
        let violations = self
            .js(
                "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations \
                 .filter(v => v.impact === 'serious' || v.impact === 'critical') \
                 .map(v => ({id: v.id, impact: v.impact, help: v.help, \
                             nodes: v.nodes.slice(0, 5).map(n => n.html)})))",
            )
            .await;
        self.screenshot(name).await;
        assert_eq!(
            violations,
            json!([]),
            "accessibility violations on {name}: {violations:#}"
        );
    }

    /// Saves a full-page screenshot under the target directory's `console-screenshots/`.
    pub async fn screenshot(&self, name: &str) {
        let path = screenshot_dir().join(format!("{name}.png"));
        self.page
            .save_screenshot(
                ScreenshotParams::builder()
                    .format(CaptureScreenshotFormat::Png)
                    .full_page(true)
                    .build(),
                &path,
            )
            .await
            .unwrap_or_else(|e| panic!("screenshot {}: {e}", path.display()));
    }

    /// The session's CSRF token (from the sign-out form every signed-in page has).
    pub async fn csrf(&self) -> String {
        self.js("document.querySelector('form[action=\"/sign-out\"] input[name=csrf]').value")
            .await
            .as_str()
            .expect("a signed-in page has the sign-out form")
            .to_owned()
    }

    /// POSTs a form from the page (same origin, with its cookie); returns the status.
    pub async fn post_status(&self, path: &str, fields: &Value) -> u64 {
        self.js(&format!(
            "fetch({}, {{method: 'POST', body: new URLSearchParams({}), redirect: 'manual'}}).then(r => r.status)",
            json!(path),
            fields
        ))
        .await
        .as_u64()
        .expect("a status")
    }
}

/// `<target>/console-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp
        .parent()
        .map(|p| p.join("console-screenshots"))
        .unwrap_or_else(|| tmp.join("console-screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}
