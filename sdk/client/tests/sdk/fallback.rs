//! The last-known-good snapshot: persisted from upstream, served when upstream is down at
//! start, ignored when corrupt.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use vexil_fanout::HubConfig;
use vexil_sdk::{Client, Context, DataOrigin, ErrorKind, InitError, State, StreamingConfig};

use crate::harness::*;

fn with_lkg(server: &TestServer, path: &Path, init_timeout: Duration) -> Client {
    Client::builder(SDK_KEY)
        .base_url(server.url())
        .streaming(
            StreamingConfig::default()
                .reconnect_delay(Duration::from_millis(10), Duration::from_millis(50)),
        )
        .last_known_good(path)
        .persist_debounce(Duration::from_millis(20))
        .init_timeout(init_timeout)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_at_start_serves_the_last_known_good_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/flags.json");
    let server = TestServer::start(
        HubConfig::default(),
        Some(snapshot(
            1,
            vec![string_flag("banner", "v1"), bool_flag("f", true)],
        )),
    )
    .await;

    // A first run receives flags and persists them (closing flushes the pending write).
    let first = with_lkg(&server, &path, Duration::from_secs(5));
    first.wait_for_initialization(PATIENCE).await.unwrap();
    let mut changes = first.flag_changes();
    server.patch(2, string_flag("banner", "v2"));
    wait_change(&mut changes, "banner", PATIENCE).await;
    first.close();
    drop(first);
    assert!(path.exists());

    // Upstream goes down; a new process starts.
    server.proxy.set(Mode::Cut);
    server.patch(3, string_flag("banner", "v3"));
    let second = with_lkg(&server, &path, Duration::from_millis(200));
    let status = wait_status(&second, "the last-known-good snapshot", |s| {
        s.origin == Some(DataOrigin::LastKnownGood)
    })
    .await;
    assert_eq!(status.state, State::Stale);
    assert_eq!(status.version, Some(2));
    assert_eq!(json_of(&second, "banner"), json!("v2"));
    assert!(second.is_enabled("f", &Context::new("u")));
    let err = second
        .wait_for_initialization(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            InitError::TimedOut {
                serving: Some(DataOrigin::LastKnownGood),
                ..
            }
        ),
        "{err}"
    );

    // Upstream comes back: the client resumes from the persisted version and catches up.
    let mut changes = second.flag_changes();
    server.proxy.set(Mode::Pass);
    let change = wait_change(&mut changes, "banner", PATIENCE).await;
    assert_eq!(change.version, 3);
    assert_eq!(json_of(&second, "banner"), json!("v3"));
    let ready = wait_state(&second, State::Ready).await;
    assert_eq!(ready.origin, Some(DataOrigin::Upstream));
    let resumed = server.requests.to("/sdk/v1/stream");
    assert!(
        resumed
            .iter()
            .any(|r| r.last_event_id.as_deref() == Some("2")),
        "{resumed:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_in_vain_serves_the_snapshot_before_the_init_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    let server = TestServer::start(
        HubConfig::default(),
        Some(snapshot(7, vec![string_flag("a", "lkg")])),
    )
    .await;
    let first = with_lkg(&server, &path, Duration::from_secs(5));
    first.wait_for_initialization(PATIENCE).await.unwrap();
    first.close();

    server.proxy.set(Mode::Cut);
    // An init timeout far beyond the test: only the caller giving up can trigger it.
    let second = with_lkg(&server, &path, Duration::from_secs(3600));
    // Wait for the background load, then give up waiting.
    let _ = second
        .wait_for_initialization(Duration::from_millis(300))
        .await;
    let status = wait_status(&second, "the fallback", |s| s.has_data()).await;
    assert_eq!(status.origin, Some(DataOrigin::LastKnownGood));
    assert_eq!(json_of(&second, "a"), json!("lkg"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_snapshot_evaluations_return_defaults_with_an_error_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(HubConfig::default(), Some(snapshot(1, vec![]))).await;
    server.proxy.set(Mode::Cut);
    let client = with_lkg(
        &server,
        &dir.path().join("missing.json"),
        Duration::from_millis(50),
    );
    let err = client
        .wait_for_initialization(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(err, InitError::TimedOut { serving: None, .. }),
        "{err}"
    );
    let d = client.string_variation_detail("a", &Context::new("u"), "fallback");
    assert_eq!(d.value, "fallback");
    assert_eq!(d.error_kind(), Some(ErrorKind::ClientNotReady));
    assert_eq!(d.openfeature_reason(), "ERROR");
    assert_eq!(client.status().state, State::Initializing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_foreign_snapshot_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    let server = TestServer::start(HubConfig::default(), Some(snapshot(1, vec![]))).await;
    server.proxy.set(Mode::Cut);

    for content in [
        &b"{\"format\": \"vexil-sdk/last-known-good/1\", \"snapsh"[..],
        b"\x00\xff garbage",
        b"[]",
    ] {
        std::fs::write(&path, content).unwrap();
        let client = with_lkg(&server, &path, Duration::ZERO);
        let err = client
            .wait_for_initialization(Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(
            matches!(err, InitError::TimedOut { serving: None, .. }),
            "{err}"
        );
        assert!(!client.is_initialized());
    }

    // Written by a client with another key: another environment's flags, never served.
    let other = tempfile::tempdir().unwrap();
    let other_server = TestServer::start(
        HubConfig::default(),
        Some(snapshot(1, vec![string_flag("a", "x")])),
    )
    .await;
    let writer = Client::builder(SDK_KEY)
        .base_url(other_server.url())
        .last_known_good(other.path().join("flags.json"))
        .build()
        .unwrap();
    writer.wait_for_initialization(PATIENCE).await.unwrap();
    writer.close();
    std::fs::copy(other.path().join("flags.json"), &path).unwrap();
    let foreign = Client::builder("another-key")
        .base_url(server.url())
        .last_known_good(&path)
        .init_timeout(Duration::ZERO)
        .build()
        .unwrap();
    let err = foreign
        .wait_for_initialization(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(err, InitError::TimedOut { serving: None, .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_mode_serves_the_snapshot_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    let server = TestServer::start(
        HubConfig::default(),
        Some(snapshot(5, vec![string_flag("a", "saved")])),
    )
    .await;
    let online = with_lkg(&server, &path, Duration::from_secs(5));
    online.wait_for_initialization(PATIENCE).await.unwrap();
    online.close();
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();

    let offline = Client::builder(SDK_KEY)
        .offline()
        .last_known_good(&path)
        .build()
        .unwrap();
    offline.wait_for_initialization(PATIENCE).await.unwrap();
    let status = wait_status(&offline, "the snapshot", |s| s.has_data()).await;
    assert_eq!(status.state, State::Offline);
    assert_eq!(json_of(&offline, "a"), json!("saved"));
    offline.close();
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        before
    );
    // No request was made by the offline client.
    assert_eq!(server.requests.to("/sdk/v1/stream").len(), 1);
}
