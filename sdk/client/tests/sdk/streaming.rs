//! The streaming source against the real hub and SDK endpoints over real sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use vexil_fanout::HubConfig;
use vexil_sdk::{
    Client, Context, DataOrigin, DataSourceError, ErrorKind, InitError, Reason, State,
    StreamingConfig,
};

use crate::harness::*;

/// Reconnection fast enough for tests.
fn fast() -> StreamingConfig {
    StreamingConfig::default().reconnect_delay(Duration::from_millis(10), Duration::from_millis(50))
}

fn client(server: &TestServer, config: StreamingConfig) -> Client {
    Client::builder(SDK_KEY)
        .base_url(server.url())
        .streaming(config)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialises_and_evaluates() {
    let server = TestServer::start(
        HubConfig::default(),
        Some(snapshot(
            3,
            vec![bool_flag("checkout", true), string_flag("banner", "blue")],
        )),
    )
    .await;
    let client = client(&server, fast());
    client.wait_for_initialization(PATIENCE).await.unwrap();

    let status = client.status();
    assert_eq!(status.state, State::Ready);
    assert_eq!(status.version, Some(3));
    assert_eq!(status.origin, Some(DataOrigin::Upstream));
    assert_eq!(status.last_error, None);

    let user = Context::new("u1");
    assert!(client.bool_variation("checkout", &user, false));
    assert!(client.is_enabled("checkout", &user));
    assert_eq!(client.string_variation("banner", &user, "none"), "blue");
    let d = client.bool_variation_detail("checkout", &Context::new("vip"), false);
    assert_eq!(d.reason, Reason::TargetMatch);
    assert_eq!(d.variation, Some(0));
    assert_eq!(d.variation_name.as_deref(), Some("enabled"));

    // Errors give the default with the reason.
    let missing = client.bool_variation_detail("nope", &user, true);
    assert!(missing.value);
    assert_eq!(missing.error_kind(), Some(ErrorKind::FlagNotFound));
    let wrong = client.number_variation_detail("banner", &user, 7.0);
    assert_eq!(wrong.value, 7.0);
    assert_eq!(wrong.error_kind(), Some(ErrorKind::WrongType));

    let all = client.all_flags(&user);
    assert!(all.is_valid());
    assert_eq!(all.version(), Some(3));
    assert_eq!(all.value("banner"), Some(&json!("blue")));
    assert_eq!(all.len(), 2);

    // The initial flags come from the (compressed) snapshot endpoint; the one stream then
    // resumes from their version.
    let seen = server.requests.all();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(
        (seen[0].path.as_str(), seen[0].status),
        ("/sdk/v1/snapshot", 200)
    );
    assert_eq!(seen[1].path, "/sdk/v1/stream");
    assert_eq!(seen[1].last_event_id.as_deref(), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_and_a_deletion_reach_receivers_and_callbacks() {
    let server = TestServer::start(
        HubConfig::default(),
        Some(snapshot(1, vec![bool_flag("f", false)])),
    )
    .await;
    let client = client(&server, fast());
    client.wait_for_initialization(PATIENCE).await.unwrap();
    let mut changes = client.flag_changes();
    let (tx, mut callback) = tokio::sync::mpsc::unbounded_channel();
    client.on_flag_change(move |c| {
        let _ = tx.send(c.clone());
    });
    let user = Context::new("u1");
    assert!(!client.bool_variation("f", &user, true));

    server.patch(2, bool_flag("f", true));
    let change = wait_change(&mut changes, "f", PATIENCE).await;
    assert_eq!(change.version, 2);
    assert_eq!(change.origin, DataOrigin::Upstream);
    assert!(client.bool_variation("f", &user, false));
    // Callbacks see the same notification, and not the initial load's, sent before they
    // were registered.
    let via_callback = tokio::time::timeout(PATIENCE, callback.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(via_callback, change);

    // Deletion: the flag is gone, callers get their default with FLAG_NOT_FOUND.
    server.delete(3, "f");
    wait_change(&mut changes, "f", PATIENCE).await;
    let d = client.bool_variation_detail("f", &user, true);
    assert!(d.value);
    assert_eq!(d.error_kind(), Some(ErrorKind::FlagNotFound));
    assert_eq!(client.version(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_listeners_hear_the_stream_lost_and_back() {
    let server = TestServer::start(
        HubConfig::default(),
        Some(snapshot(1, vec![string_flag("a", "a1")])),
    )
    .await;
    let client = client(&server, fast());
    client.wait_for_initialization(PATIENCE).await.unwrap();
    // Registered once ready: the baseline, so the first call is the cut.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let id = client.on_status_change(move |s| {
        let _ = tx.send((s.state, s.last_error.is_some()));
    });
    async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(State, bool)>) -> (State, bool) {
        tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("no status change in time")
            .expect("the listener was dropped")
    }
    server.proxy.set(Mode::Cut);
    assert_eq!(
        next(&mut rx).await,
        (State::Stale, true),
        "the stream was cut"
    );
    server.proxy.set(Mode::Pass);
    assert_eq!(next(&mut rx).await, (State::Ready, false), "reconnected");

    assert!(client.remove_status_listener(id));
    assert!(!client.remove_status_listener(id));
    assert!(
        !client.remove_flag_change_listener(id),
        "not a flag-change listener"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_during_a_cut_arrive_through_last_event_id_replay() {
    let server = TestServer::start(
        HubConfig::default(),
        Some(snapshot(
            1,
            vec![string_flag("a", "a1"), string_flag("b", "b1")],
        )),
    )
    .await;
    let client = client(&server, fast());
    client.wait_for_initialization(PATIENCE).await.unwrap();
    let mut changes = client.flag_changes();

    server.proxy.set(Mode::Cut);
    let stale = wait_state(&client, State::Stale).await;
    assert!(stale.last_error.is_some(), "{stale:?}");
    assert_eq!(
        json_of(&client, "a"),
        json!("a1"),
        "keeps serving while cut"
    );

    server.patch(2, string_flag("a", "a2"));
    server.delete(3, "b");
    server.proxy.set(Mode::Pass);

    let change = wait_change(&mut changes, "b", PATIENCE).await;
    assert_eq!(change.version, 3);
    assert_eq!(json_of(&client, "a"), json!("a2"));
    assert_eq!(json_of(&client, "b"), json!(null));
    wait_state(&client, State::Ready).await;

    // The reconnection resumed from the version held.
    let streams = server.requests.to("/sdk/v1/stream");
    assert!(
        streams
            .iter()
            .skip(1)
            .any(|s| s.last_event_id.as_deref() == Some("1")),
        "{streams:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_beyond_the_replay_ring_arrive_as_a_fresh_put() {
    let server = TestServer::start(
        HubConfig::default().ring_capacity(2),
        Some(snapshot(1, vec![string_flag("a", "v1")])),
    )
    .await;
    let client = client(&server, fast());
    client.wait_for_initialization(PATIENCE).await.unwrap();
    let mut changes = client.flag_changes();

    server.proxy.set(Mode::Cut);
    wait_state(&client, State::Stale).await;
    for v in 2..=6 {
        server.patch(v, string_flag("a", &format!("v{v}")));
    }
    server.proxy.set(Mode::Pass);
    let change = wait_change(&mut changes, "a", PATIENCE).await;
    // One put with everything, not five patches.
    assert_eq!(change.version, 6);
    assert_eq!(json_of(&client, "a"), json!("v6"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_replaced_after_the_read_timeout() {
    // Keep-alives every 50 ms; the SDK gives a silent stream 500 ms.
    let server = TestServer::start(
        HubConfig::default().keep_alive(Duration::from_millis(50)),
        Some(snapshot(1, vec![string_flag("a", "v1")])),
    )
    .await;
    let client = client(&server, fast().read_timeout(Duration::from_millis(500)));
    client.wait_for_initialization(PATIENCE).await.unwrap();
    let mut changes = client.flag_changes();

    // Keep-alives keep a healthy connection alive well past the read timeout: the one
    // connection is still the only one after a client with the same read timeout has timed
    // out on a silent server twice (its first attempt is the snapshot request).
    while_a_client_times_out(3, |b| {
        b.streaming(fast().read_timeout(Duration::from_millis(500)))
    })
    .await;
    assert_eq!(server.requests.to("/sdk/v1/stream").len(), 1);

    // Half-open: the connection stays up but nothing comes through.
    server.proxy.set(Mode::Stall);
    server.patch(2, string_flag("a", "v2"));
    let stale = wait_state(&client, State::Stale).await;
    assert_eq!(
        stale.last_error,
        Some(DataSourceError::ReadTimeout(Duration::from_millis(500)))
    );
    server.proxy.set(Mode::Pass);
    wait_change(&mut changes, "a", PATIENCE).await;
    assert_eq!(json_of(&client, "a"), json!("v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_fails_once_without_retrying() {
    let server = TestServer::start(
        HubConfig::default(),
        Some(snapshot(1, vec![bool_flag("f", true)])),
    )
    .await;
    let client = Client::builder("wrong-key")
        .base_url(server.url())
        .streaming(fast())
        .build()
        .unwrap();
    let err = client.wait_for_initialization(PATIENCE).await.unwrap_err();
    assert_eq!(err, InitError::Failed(DataSourceError::Unauthorized));
    let status = client.status();
    assert_eq!(status.state, State::Failed);
    assert_eq!(status.last_error, Some(DataSourceError::Unauthorized));

    // In the time a client with the same reconnection delays makes ten attempts, this one
    // made none.
    while_a_client_retries(10, |b| b.streaming(fast())).await;
    let attempts = server.requests.all();
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0].status, 401);

    // Evaluations still answer, with defaults.
    let d = client.bool_variation_detail("f", &Context::new("u"), false);
    assert!(!d.value);
    assert_eq!(
        d.reason,
        Reason::Error {
            error_kind: ErrorKind::ClientNotReady
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_key_fails_with_the_servers_reason() {
    let server = TestServer::start_with_auth(
        HubConfig::default(),
        Some(snapshot(1, vec![])),
        forbidding("this key is disabled"),
    )
    .await;
    let client = client(&server, fast());
    let err = client.wait_for_initialization(PATIENCE).await.unwrap_err();
    let InitError::Failed(DataSourceError::Forbidden { detail }) = err else {
        panic!("{err:?}")
    };
    assert_eq!(&*detail, "this key is disabled");
    while_a_client_retries(10, |b| b.streaming(fast())).await;
    assert_eq!(server.requests.all().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_not_loaded_yet_is_retried_until_it_is() {
    let server = TestServer::start(
        HubConfig::default().retry_after(Duration::from_secs(1)),
        None,
    )
    .await;
    let client = client(&server, fast());
    let status = wait_status(&client, "a 503", |s| s.last_error.is_some()).await;
    assert_eq!(status.state, State::Initializing);
    assert!(
        matches!(
            status.last_error,
            Some(DataSourceError::HttpStatus {
                status: 503,
                retryable: true,
                ..
            })
        ),
        "{status:?}"
    );
    server
        .hub
        .publish_snapshot(&server.env, &snapshot(1, vec![bool_flag("f", true)]))
        .unwrap();
    client.wait_for_initialization(PATIENCE).await.unwrap();
    assert!(client.is_enabled("f", &Context::new("u")));
    // Retry-After (1 s) was honoured: not one attempt per 10-50 ms backoff.
    let attempts = server.requests.to("/sdk/v1/stream").len();
    assert!(attempts <= 12, "{attempts} attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_keeps_retrying_in_the_background() {
    let server = TestServer::start(
        HubConfig::default(),
        Some(snapshot(1, vec![bool_flag("f", true)])),
    )
    .await;
    server.proxy.set(Mode::Cut);
    let client = client(&server, fast());
    let err = client
        .wait_for_initialization(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            InitError::TimedOut {
                state: State::Initializing,
                serving: None,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("the code's defaults"), "{err}");
    let d = client.bool_variation_detail("f", &Context::new("u"), false);
    assert_eq!(d.error_kind(), Some(ErrorKind::ClientNotReady));
    assert!(!client.all_flags(&Context::new("u")).is_valid());
    assert!(matches!(
        client.status().last_error,
        Some(DataSourceError::Network(_) | DataSourceError::StreamClosed)
    ));

    server.proxy.set(Mode::Pass);
    client.wait_for_initialization(PATIENCE).await.unwrap();
    assert!(client.is_enabled("f", &Context::new("u")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_stops_the_stream_and_keeps_evaluating() {
    let server = TestServer::start(
        HubConfig::default(),
        Some(snapshot(1, vec![bool_flag("f", true)])),
    )
    .await;
    let client = client(&server, fast());
    client.wait_for_initialization(PATIENCE).await.unwrap();
    let after_close = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&after_close);
    client.on_flag_change(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
    });
    client.close();
    assert_eq!(client.status().state, State::Offline);
    assert!(client.is_enabled("f", &Context::new("u")));
    assert_eq!(
        client.wait_for_initialization(PATIENCE).await,
        Err(InitError::Closed)
    );
    client.close();
    // Changes no longer arrive: not by the time an open client has the change, nor in the
    // time a few reconnections would take.
    let open = self::client(&server, fast());
    open.wait_for_initialization(PATIENCE).await.unwrap();
    let mut changes = open.flag_changes();
    server.patch(2, bool_flag("f", false));
    wait_change(&mut changes, "f", PATIENCE).await;
    while_a_client_retries(5, |b| b.streaming(fast())).await;
    assert!(client.is_enabled("f", &Context::new("u")));
    assert_eq!(after_close.load(Ordering::SeqCst), 0);
}
