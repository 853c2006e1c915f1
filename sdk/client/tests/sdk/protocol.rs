//! Stream protocol edge cases the real hub never produces (malformed data, version gaps,
//! unknown events, duplicates), served by a scripted SSE endpoint on a real socket.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::Notify;
use vexil_schema::stream::{Patch, PatchItem};
use vexil_sdk::{Client, DataSourceError, State as SdkState, StreamingConfig};

use crate::harness::*;

/// In a connection's frames: wait for [`Script::release`] before sending the rest.
const HOLD: &str = "<hold>";

#[derive(Clone, Default)]
struct Script {
    /// Frames to send on each successive connection (then the stream stays open).
    connections: Arc<Mutex<VecDeque<Vec<String>>>>,
    /// Lets held connections go on (see [`HOLD`]).
    release: Arc<Notify>,
    /// The `Last-Event-ID` of each connection made.
    seen: Arc<Mutex<Vec<Option<String>>>>,
    notify: Arc<Notify>,
}

impl Script {
    async fn wait_connections(&self, n: usize) -> Vec<Option<String>> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let seen = self.seen.lock().unwrap().clone();
            if seen.len() >= n {
                return seen;
            }
            tokio::time::timeout_at(deadline, notified)
                .await
                .unwrap_or_else(|_| panic!("{n} connections expected, saw {seen:?}"));
        }
    }
}

async fn stream(State(script): State<Script>, headers: HeaderMap) -> Response {
    let leid = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    script.seen.lock().unwrap().push(leid);
    script.notify.notify_waiters();
    let frames = script
        .connections
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_default();
    let release = Arc::clone(&script.release);
    let body = futures::stream::iter(frames)
        .then(move |f| {
            let release = Arc::clone(&release);
            async move {
                if f == HOLD {
                    release.notified().await;
                    return Ok::<_, Infallible>(Bytes::new());
                }
                Ok(Bytes::from(f))
            }
        })
        .chain(futures::stream::pending());
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(body),
    )
        .into_response()
}

async fn serve(connections: Vec<Vec<String>>) -> (String, Script) {
    let script = Script::default();
    *script.connections.lock().unwrap() = connections.into();
    let app = Router::new()
        .route("/sdk/v1/stream", get(stream))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).into_future().await;
    });
    (url, script)
}

fn frame(event: &str, id: u64, data: &str) -> String {
    format!("event: {event}\nid: {id}\ndata: {data}\n\n")
}

fn put(version: u64, value: &str) -> String {
    let s = snapshot(version, vec![string_flag("a", value)]);
    frame("put", version, &serde_json::to_string(&s).unwrap())
}

fn patch(version: u64, value: &str) -> String {
    let p = Patch {
        version,
        item: PatchItem::Flag(string_flag("a", value)),
    };
    frame("patch", version, &serde_json::to_string(&p).unwrap())
}

fn client(url: &str) -> Client {
    Client::builder(SDK_KEY)
        .base_url(url)
        .streaming(
            StreamingConfig::default()
                .reconnect_delay(Duration::from_millis(10), Duration::from_millis(50)),
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_event_triggers_a_fresh_put() {
    let (url, script) = serve(vec![
        vec![put(1, "v1"), frame("patch", 2, "{not json")],
        vec![put(2, "v2")],
    ])
    .await;
    let client = client(&url);
    let seen = script.wait_connections(2).await;
    // The second connection asks for everything: no Last-Event-ID.
    assert_eq!(seen, [None, None]);
    wait_status(&client, "version 2", |s| s.version == Some(2)).await;
    assert_eq!(json_of(&client, "a"), json!("v2"));
    wait_state(&client, SdkState::Ready).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_gap_triggers_a_fresh_put() {
    // The second connection's put is held back, so the state between the gap and the
    // resynchronisation lasts until the test has looked at it.
    let (url, script) = serve(vec![
        vec![put(1, "v1"), patch(3, "v3")],
        vec![HOLD.to_owned(), put(3, "v3")],
    ])
    .await;
    let client = client(&url);
    let seen = script.wait_connections(2).await;
    assert_eq!(
        seen,
        [None, None],
        "the resynchronisation asks for everything"
    );
    // The gap was reported while resynchronising: stale, still serving version 1, and why.
    let gap = wait_status(&client, "the gap reported", |s| s.last_error.is_some()).await;
    assert_eq!(
        gap.last_error,
        Some(DataSourceError::VersionGap { current: 1, got: 3 }),
        "{gap:?}"
    );
    assert_eq!((gap.state, gap.version), (SdkState::Stale, Some(1)));
    assert_eq!(
        json_of(&client, "a"),
        json!("v1"),
        "the patch after the gap is not applied"
    );

    script.release.notify_one();
    let ready = wait_status(&client, "version 3", |s| s.version == Some(3)).await;
    assert_eq!(json_of(&client, "a"), json!("v3"));
    let ready = if ready.state == SdkState::Ready {
        ready
    } else {
        wait_state(&client, SdkState::Ready).await
    };
    assert_eq!(ready.last_error, None, "cleared once current again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_stale_and_duplicate_events_are_skipped() {
    let (url, script) = serve(vec![vec![
        put(2, "v2"),
        frame("some-future-event", 2, "{\"whatever\": true}"),
        patch(2, "duplicate"),
        patch(1, "stale"),
        patch(3, "v3"),
    ]])
    .await;
    let client = client(&url);
    wait_status(&client, "version 3", |s| s.version == Some(3)).await;
    assert_eq!(json_of(&client, "a"), json!("v3"));
    assert_eq!(client.status().state, SdkState::Ready);
    assert_eq!(script.seen.lock().unwrap().len(), 1, "no reconnection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_before_any_snapshot_triggers_a_fresh_put() {
    let (url, script) = serve(vec![vec![patch(5, "early")], vec![put(5, "v5")]]).await;
    let client = client(&url);
    assert_eq!(script.wait_connections(2).await, [None, None]);
    wait_status(&client, "version 5", |s| s.version == Some(5)).await;
    assert_eq!(json_of(&client, "a"), json!("v5"));
}
