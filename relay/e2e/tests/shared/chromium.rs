//! Headless Chromium for the browser tests (the web SDK's and the console's): launching
//! Debian's `/usr/bin/chromium` (or `VEXIL_CHROMIUM`), failing loudly, never skipping, when
//! it is missing; and evaluating JavaScript in a page.

use std::time::Duration;

use chromiumoxide::Page;
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use chromiumoxide::error::CdpError;
use futures::StreamExt;
use serde_json::Value;

/// Headless Chromium with its CDP handler running, with a window of `width` × `height`;
/// panics (never skips) when it is missing.
pub async fn chromium_sized(width: u32, height: u32) -> (Browser, tempfile::TempDir) {
    let exe = std::env::var("VEXIL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&exe).is_file(),
        "the browser test needs Chromium at {exe} (Debian: apt-get install chromium; or set VEXIL_CHROMIUM)"
    );
    let profile = tempfile::tempdir().expect("a profile directory");
    let config = BrowserConfig::builder()
        .chrome_executable(&exe)
        .no_sandbox()
        .user_data_dir(profile.path())
        .window_size(width, height)
        .arg("--disable-gpu")
        .arg("--disable-dev-shm-usage")
        .launch_timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_else(|e| panic!("Chromium configuration: {e}"));
    let (browser, mut handler) = Browser::launch(config)
        .await
        .unwrap_or_else(|e| panic!("Chromium at {exe} starts: {e}"));
    tokio::spawn(async move { while handler.next().await.is_some() {} });
    (browser, profile)
}

/// Headless Chromium in a 900 × 500 window.
#[allow(dead_code)]
pub async fn chromium() -> (Browser, tempfile::TempDir) {
    chromium_sized(900, 500).await
}

/// Evaluates `js` in the page, awaiting a promise; returns its JSON value or the error text.
pub async fn eval(page: &Page, js: &str) -> Result<Value, String> {
    let params = EvaluateParams::builder()
        .expression(js)
        .await_promise(true)
        .return_by_value(true)
        .build()
        .map_err(|e| e.to_string())?;
    let res = page
        .evaluate_expression(params)
        .await
        .map_err(|e| match e {
            CdpError::JavascriptException(ex) => ex
                .exception
                .as_ref()
                .and_then(|e| e.description.clone())
                .unwrap_or_else(|| ex.text.clone()),
            other => other.to_string(),
        })?;
    Ok(res.value().cloned().unwrap_or(Value::Null))
}
