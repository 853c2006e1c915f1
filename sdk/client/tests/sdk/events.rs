//! Analytics events against a real HTTP receiver: the real SDK endpoints of `vexil-fanout`
//! for flags, and on the same socket a `POST /events/v1/bulk` handler that checks the
//! headers, decodes the gzip body and hands each batch to the test, answering as scripted.

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vexil_fanout::{Hub, HubConfig, SdkKeyTable, hash_sdk_key, sdk_router};
use vexil_schema::events::{BulkResponse, Event, EventBatch};
use vexil_schema::{EnvironmentSnapshot, Flag};
use vexil_sdk::{Client, ClientBuilder, Context, EventSink, EventsConfig, TestData, TestFlag};

use crate::harness::*;

/// One upload, as the receiver saw it.
#[derive(Debug)]
struct Upload {
    at: Instant,
    batch: EventBatch,
    /// The request's `User-Agent`.
    user_agent: Option<String>,
}

impl Upload {
    fn events(&self) -> Vec<Event> {
        self.batch
            .events
            .iter()
            .map(|e| e.decode().unwrap())
            .collect()
    }
}

/// How the receiver answers the next uploads (then 200).
#[derive(Debug, Clone, Copy)]
enum Reply {
    Unavailable { retry_after: u64 },
    NotFound,
}

#[derive(Clone)]
struct Receiver {
    uploads: mpsc::UnboundedSender<Upload>,
    script: Arc<Mutex<VecDeque<Reply>>>,
}

async fn bulk(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("authorization"), Some(&*format!("Bearer {SDK_KEY}")));
    assert_eq!(header("content-encoding"), Some("gzip"));
    assert_eq!(header("content-type"), Some("application/json"));
    assert_eq!(header("x-vexil-event-schema"), Some("1"));
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut json)
        .unwrap();
    let batch: EventBatch = serde_json::from_slice(&json).unwrap();
    let accepted = batch.events.len() as u64;
    let _ = r.uploads.send(Upload {
        at: Instant::now(),
        batch,
        user_agent: header("user-agent").map(str::to_owned),
    });
    match r.script.lock().unwrap().pop_front() {
        Some(Reply::Unavailable { retry_after }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", retry_after.to_string())],
        )
            .into_response(),
        Some(Reply::NotFound) => StatusCode::NOT_FOUND.into_response(),
        None => axum::Json(BulkResponse {
            accepted,
            rejected: vec![],
        })
        .into_response(),
    }
}

/// The SDK endpoints (holding `flags`) and the events endpoint on one real socket.
struct EventServer {
    url: String,
    uploads: mpsc::UnboundedReceiver<Upload>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    task: JoinHandle<()>,
}

impl Drop for EventServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventServer {
    async fn start(flags: Vec<Flag>) -> Self {
        let hub = Hub::new(HubConfig::default());
        hub.publish_snapshot(&env(), &snapshot(7, flags)).unwrap();
        let keys = SdkKeyTable::new();
        keys.set_environment_keys(&env(), &[hash_sdk_key(SDK_KEY)]);
        let (tx, uploads) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let receiver = Receiver {
            uploads: tx,
            script: Arc::clone(&script),
        };
        let app = sdk_router(hub, keys).merge(
            Router::new()
                .route("/events/v1/bulk", post(bulk))
                .with_state(receiver),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).into_future().await;
        });
        Self {
            url,
            uploads,
            script,
            task,
        }
    }

    fn builder(&self, events: EventsConfig) -> ClientBuilder {
        Client::builder(SDK_KEY).base_url(&self.url).events(events)
    }

    async fn client(&self, events: EventsConfig) -> Client {
        let client = self.builder(events).build().unwrap();
        client.wait_for_initialization(PATIENCE).await.unwrap();
        client
    }

    async fn next(&mut self, what: &str) -> Upload {
        match tokio::time::timeout(PATIENCE, self.uploads.recv()).await {
            Ok(Some(upload)) => upload,
            _ => panic!("no upload: {what}"),
        }
    }
}

/// A 50/50 experiment on the fallthrough.
fn experiment_flag() -> Flag {
    serde_json::from_value(json!({
        "key": "checkout", "kind": "boolean",
        "variations": [{"value": false}, {"value": true}],
        "on": true, "off_variation": 0, "version": 3,
        "fallthrough": {"rollout": {"experiment": true, "variations": [
            {"variation": 0, "weight": 50000}, {"variation": 1, "weight": 50000}]}}
    }))
    .unwrap()
}

fn flags() -> Vec<Flag> {
    vec![experiment_flag(), bool_flag("plain", true)]
}

/// Events flushed only when the test says so (or at close).
fn manual() -> EventsConfig {
    EventsConfig::default()
        .flush_interval(Duration::from_secs(3600))
        .flush_at(10_000)
}

fn custom_keys(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Custom(c) => Some(c.event_key.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposures_are_deduplicated_and_summaries_count_every_evaluation() {
    let mut server = EventServer::start(flags()).await;
    let client = server.client(manual()).await;
    let (u1, u2) = (Context::new("user-1"), Context::new("user-2"));
    let served_1 = client.bool_variation_detail("checkout", &u1, false);
    assert!(served_1.in_experiment);
    for _ in 0..2 {
        client.bool_variation("checkout", &u1, false);
    }
    let served_2 = client.bool_variation_detail("checkout", &u2, false);
    for _ in 0..5 {
        client.bool_variation("plain", &u1, false);
    }
    client.bool_variation("missing", &u1, false);
    client.flush();

    let upload = server.next("the flushed batch").await;
    let sdk = upload.batch.sdk.clone().unwrap();
    assert_eq!(sdk.name, "vexil-rust");
    assert_eq!(sdk.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        upload.user_agent.as_deref(),
        Some(concat!("vexil-rust-sdk/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(uuid_version(&sdk.instance_id), Some(4));
    let events = upload.events();
    let exposures: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Exposure(x) => Some(x),
            _ => None,
        })
        .collect();
    assert_eq!(exposures.len(), 2, "{events:#?}");
    assert_eq!(exposures[0].context_key, "user-1");
    assert_eq!(exposures[0].context_kind, "user");
    assert_eq!(exposures[0].flag_key, "checkout");
    assert_eq!(exposures[0].flag_version, 3);
    assert_eq!(exposures[0].environment_version, 7);
    assert_eq!(Some(exposures[0].variation as usize), served_1.variation);
    assert_eq!(exposures[1].context_key, "user-2");
    assert_eq!(Some(exposures[1].variation as usize), served_2.variation);

    let summaries: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Summary(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(summaries.len(), 1);
    let s = summaries[0];
    assert_eq!(s.environment_version, 7);
    assert!(s.start <= s.end);
    let count = |flag: &str, variation: Option<u32>, reason: &str| {
        s.counters
            .iter()
            .filter(|c| c.flag_key == flag && c.variation == variation && c.reason == reason)
            .map(|c| c.count)
            .sum::<u64>()
    };
    let v = |d: Option<usize>| d.map(|v| v as u32);
    let (v1, v2) = (v(served_1.variation), v(served_2.variation));
    if v1 == v2 {
        assert_eq!(count("checkout", v1, "FALLTHROUGH"), 4);
    } else {
        assert_eq!(count("checkout", v1, "FALLTHROUGH"), 3);
        assert_eq!(count("checkout", v2, "FALLTHROUGH"), 1);
    }
    assert_eq!(count("plain", Some(0), "FALLTHROUGH"), 5);
    // 4 + 5: the unknown flag is not counted.
    assert_eq!(s.counters.iter().map(|c| c.count).sum::<u64>(), 9);

    // Later evaluations of the same context × flag × variation send no new exposure.
    client.bool_variation("checkout", &u1, false);
    client.flush();
    let events = server.next("the second batch").await.events();
    assert!(
        events.iter().all(|e| matches!(e, Event::Summary(_))),
        "{events:#?}"
    );
    // Closing waits for the sender, which counts each answer before going idle.
    client.close();
    let stats = client.status().events;
    assert_eq!((stats.recorded, stats.dropped, stats.failed), (2, 0, 0));
    assert_eq!(stats.sent, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrapping_sdk_names_itself_in_batches_and_the_user_agent() {
    let mut server = EventServer::start(flags()).await;
    let client = server
        .builder(manual())
        .sdk_identity("vexil-python", "1.2.3")
        .build()
        .unwrap();
    client.wait_for_initialization(PATIENCE).await.unwrap();
    client.bool_variation("plain", &Context::new("u"), false);
    client.flush();
    let upload = server.next("the flushed batch").await;
    let sdk = upload.batch.sdk.clone().unwrap();
    assert_eq!(
        (sdk.name.as_str(), sdk.version.as_str()),
        ("vexil-python", "1.2.3")
    );
    let agent = upload.user_agent.unwrap_or_default();
    assert!(
        agent.starts_with("vexil-python/1.2.3 vexil-rust-sdk/"),
        "{agent}"
    );
    client.close();
}

fn uuid_version(s: &str) -> Option<u32> {
    let parts: Vec<_> = s.split('-').collect();
    (parts.len() == 5 && s.len() == 36).then(|| parts[2].chars().next()?.to_digit(16))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_oldest_events_and_counts_them() {
    let mut server = EventServer::start(flags()).await;
    let client = server.client(manual().capacity(3).summaries(false)).await;
    let u = Context::new("u");
    for key in ["e1", "e2", "e3", "e4", "e5"] {
        client.track(key, &u);
    }
    let stats = client.status().events;
    assert_eq!((stats.recorded, stats.queued, stats.dropped), (5, 3, 2));
    client.flush();
    let upload = server.next("the batch").await;
    assert_eq!(custom_keys(&upload.events()), ["e3", "e4", "e5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_once_n_events_are_queued() {
    let mut server = EventServer::start(flags()).await;
    let client = server.client(manual().flush_at(3).summaries(false)).await;
    let u = Context::new("u");
    client.track("a", &u);
    client.track_value("b", &u, 2.5);
    client.track("c", &u);
    let upload = server.next("a batch at 3 events").await;
    let events = upload.events();
    assert_eq!(custom_keys(&events), ["a", "b", "c"]);
    match &events[1] {
        Event::Custom(c) => assert_eq!(c.value, Some(2.5)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_every_interval() {
    let mut server = EventServer::start(flags()).await;
    let config = EventsConfig::default()
        .flush_interval(Duration::from_millis(100))
        .flush_at(10_000);
    let client = server.client(config).await;
    client.track("a", &Context::new("u"));
    let first = server.next("the first interval's batch").await;
    assert_eq!(custom_keys(&first.events()), ["a"]);
    // And again at the next interval, with the summary of what was evaluated meanwhile.
    client.bool_variation("plain", &Context::new("u"), false);
    let summary = loop {
        let events = server.next("a later interval's batch").await.events();
        if let Some(Event::Summary(s)) = events.into_iter().next() {
            break s;
        }
    };
    assert_eq!(summary.counters[0].flag_key, "plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_after_its_retry_after() {
    let mut server = EventServer::start(flags()).await;
    server
        .script
        .lock()
        .unwrap()
        .push_back(Reply::Unavailable { retry_after: 1 });
    // Backoff alone would retry within 10 ms: only Retry-After explains a later retry.
    let config = manual()
        .summaries(false)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(10));
    let client = server.client(config).await;
    client.track("a", &Context::new("u"));
    client.flush();
    let refused = server.next("the first attempt").await;
    let retried = server.next("the retry").await;
    assert_eq!(retried.batch, refused.batch);
    let waited = retried.at - refused.at;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
    // Closing waits for the sender, which counted the answer before going idle.
    client.close();
    let stats = client.event_stats();
    assert_eq!((stats.sent, stats.failed), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_not_retried_and_counts_as_failed() {
    let mut server = EventServer::start(flags()).await;
    server.script.lock().unwrap().push_back(Reply::NotFound);
    let client = server.client(manual().summaries(false)).await;
    client.track("a", &Context::new("u"));
    client.flush();
    server.next("the only attempt").await;
    client.close();
    assert!(server.uploads.try_recv().is_err(), "a 404 was retried");
    let stats = client.event_stats();
    assert_eq!((stats.sent, stats.failed), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_sends_what_is_pending() {
    let mut server = EventServer::start(flags()).await;
    let client = server.client(manual()).await;
    let u = Context::new("u");
    client.track("before-close", &u);
    client.bool_variation("plain", &u, false);
    client.close();
    // `close` returned after the upload was answered: it is already here.
    let upload = server.uploads.try_recv().expect("close flushed");
    let events = upload.events();
    assert_eq!(custom_keys(&events), ["before-close"]);
    assert!(events.iter().any(|e| matches!(e, Event::Summary(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_file_and_test_data_clients_send_nothing() {
    let mut server = EventServer::start(flags()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flags.json");
    let snap: EnvironmentSnapshot = snapshot(1, flags());
    std::fs::write(&file, serde_json::to_vec(&snap).unwrap()).unwrap();
    let td = TestData::new();
    td.load(snap);
    let clients = [
        server
            .builder(EventsConfig::default())
            .offline()
            .build()
            .unwrap(),
        server
            .builder(EventsConfig::default())
            .file(&file)
            .build()
            .unwrap(),
        server
            .builder(EventsConfig::default())
            .data_source(td)
            .build()
            .unwrap(),
    ];
    let u = Context::new("u");
    for client in &clients {
        client.bool_variation("checkout", &u, false);
        client.track("a", &u);
        client.flush();
        client.close();
        assert_eq!(client.event_stats(), vexil_sdk::EventStats::default());
    }
    // Each close would have waited for its upload: there was none.
    assert!(server.uploads.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_events_send_nothing() {
    let mut server = EventServer::start(flags()).await;
    let client = server.client(EventsConfig::disabled()).await;
    let u = Context::new("u");
    client.bool_variation("checkout", &u, false);
    client.track("a", &u);
    client.flush();
    client.close();
    assert!(server.uploads.try_recv().is_err());
    assert_eq!(client.event_stats(), vexil_sdk::EventStats::default());
}

#[test]
fn test_data_with_a_sink_records_exposures_for_assertions() {
    let td = TestData::new();
    td.update(TestFlag::boolean("checkout").experiment(&[(0, 50_000), (1, 50_000)]))
        .unwrap();
    let sink = EventSink::new();
    let client = Client::builder("unused")
        .data_source(td)
        .event_sink(sink.clone())
        .build()
        .unwrap();
    let u = Context::new("user-1");
    for _ in 0..3 {
        client.bool_variation("checkout", &u, false);
    }
    client.track("purchase", &u);
    client.flush();
    let exposures = sink.exposures();
    assert_eq!(exposures.len(), 1);
    assert_eq!(exposures[0].context_key, "user-1");
    assert_eq!(sink.custom_events()[0].event_key, "purchase");
    assert_eq!(sink.summaries()[0].counters[0].count, 3);
}
