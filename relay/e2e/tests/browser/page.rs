//! The pages the browser loads: a small static server (one per origin) for the built web
//! SDK (`sdk/web/dist`), the OpenFeature web SDK it imports, and a page that shows a flag.

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::Router;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// `sdk/web` in this repository.
pub fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/web")
}

/// Installs the web SDK's dev dependencies (when missing) and builds `sdk/web/dist`, as CI
/// does; panics with npm's output when node or npm cannot be run.
pub fn build_sdk() {
    let dir = sdk_dir();
    if !dir.join("node_modules/@openfeature/web-sdk").exists() {
        run_npm(&dir, &["ci", "--no-audit", "--no-fund"]);
    }
    run_npm(&dir, &["run", "build"]);
    assert!(
        dir.join("dist/index.js").is_file(),
        "npm run build produced sdk/web/dist/index.js"
    );
}

fn run_npm(dir: &Path, args: &[&str]) {
    let out = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("the browser test needs node and npm on PATH to build sdk/web: {e}")
        });
    assert!(
        out.status.success(),
        "npm {args:?} in sdk/web failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test page: imports the built SDK through an import map, shows flag `banner` for
/// context `user-1` and exposes `waitFor(text, ms)` and the state to the test.
const INDEX_HTML: &str = r#"<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>Vexil web SDK</title>
<script type="importmap">
{"imports": {"@openfeature/web-sdk": "/vendor/web-sdk/index.js",
             "@openfeature/core": "/vendor/core/index.js"}}
</script>
<style>
body { font: 20px sans-serif; margin: 40px; }
#value { font-size: 64px; font-weight: bold; }
.true { color: #080; } .false { color: #a00; }
</style>
</head>
<body>
<h1>banner = <span id="value">?</span></h1>
<p>state: <span id="state">loading</span></p>
<p>origin: <span id="origin"></span></p>
<p>changes: <span id="changes"></span></p>
<script type="module">
import { OpenFeature, ProviderEvents } from '@openfeature/web-sdk';
import { VexilWebProvider } from '/sdk/index.js';

const params = new URLSearchParams(location.search);
window.vexil = { state: 'loading', changes: [], value: null, waiters: [] };
document.getElementById('origin').textContent = location.origin;
const setState = (s) => { window.vexil.state = s; document.getElementById('state').textContent = s; };
const client = OpenFeature.getClient();
function render() {
  const details = client.getBooleanDetails('banner', false);
  window.vexil.details = { reason: details.reason, variant: details.variant, errorCode: details.errorCode, errorMessage: details.errorMessage };
  const v = String(details.value);
  window.vexil.value = v;
  const el = document.getElementById('value');
  el.textContent = v;
  el.className = v;
  window.vexil.waiters = window.vexil.waiters.filter((w) => !w());
}
// Resolves when the page shows `text`, rejects after `ms`.
window.waitFor = (text, ms) => new Promise((resolve, reject) => {
  const check = () => { if (window.vexil.value === text) { resolve(text); return true; } return false; };
  if (check()) return;
  window.vexil.waiters.push(check);
  setTimeout(() => reject(new Error(`page shows ${window.vexil.value}, not ${text}, after ${ms} ms (state ${window.vexil.state})`)), ms);
});
client.addHandler(ProviderEvents.ConfigurationChanged, (d) => {
  window.vexil.changes.push(d.flagsChanged);
  document.getElementById('changes').textContent = JSON.stringify(window.vexil.changes);
  render();
});
client.addHandler(ProviderEvents.Ready, () => { setState('ready'); render(); });
client.addHandler(ProviderEvents.Stale, () => setState('stale'));
const provider = new VexilWebProvider({
  baseUrl: params.get('relay'),
  clientKey: params.get('key'),
  initialBackoffMs: 100,
  maxBackoffMs: 1000,
  initTimeoutMs: 3000,
  events: { flushIntervalMs: 200 },
});
// What the test drives: a conversion (`track`) and a use of the experiment flag (an exposure).
window.vexilTrack = (name, value) => client.track(name, { value });
window.vexilUse = () => String(client.getBooleanValue('checkout', false));
try {
  await OpenFeature.setProviderAndWait(provider, { targetingKey: 'user-1' });
  setState('ready');
} catch (e) {
  setState('error: ' + e.message);
}
render();
</script>
</body>
</html>
"#;

/// A static HTTP server on its own port (so its own origin), stopped on drop.
pub struct StaticSite {
    /// `http://127.0.0.1:port`: the page's origin.
    pub origin: String,
    stop: Option<oneshot::Sender<()>>,
}

impl StaticSite {
    /// Serves the test page, the built SDK and the OpenFeature web SDK.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let app = Router::new().fallback(serve);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            origin: format!("http://{addr}"),
            stop: Some(stop),
        }
    }
}

impl Drop for StaticSite {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve(uri: Uri) -> Response {
    let path = uri.path();
    if path == "/" || path == "/index.html" {
        return (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            INDEX_HTML,
        )
            .into_response();
    }
    if path.split('/').any(|seg| seg == "..") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let sdk = sdk_dir();
    let file = if let Some(rest) = path.strip_prefix("/sdk/") {
        sdk.join("dist").join(rest)
    } else if path == "/vendor/web-sdk/index.js" {
        sdk.join("node_modules/@openfeature/web-sdk/dist/esm/index.js")
    } else if path == "/vendor/core/index.js" {
        sdk.join("node_modules/@openfeature/core/dist/esm/index.js")
    } else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match tokio::fs::read(&file).await {
        Ok(bytes) => {
            let kind = if path.ends_with(".js") {
                "text/javascript; charset=utf-8"
            } else if path.ends_with(".map") {
                "application/json"
            } else {
                "application/octet-stream"
            };
            ([(header::CONTENT_TYPE, kind)], bytes).into_response()
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
