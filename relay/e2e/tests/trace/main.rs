//! A flag change is one trace from write to SDK: the control plane (PostgreSQL, its change
//! feed), an edge relay and the Rust SDK in this process export spans over OTLP/HTTP to a
//! real receiver (an axum endpoint decoding the protobuf with `opentelemetry-proto`), and
//! the spans of one change, on the server and on the relay, share the trace id of the
//! caller's `traceparent`, each hop a child of the previous one; the SDK frames carry it.
//!
//! Its own test binary: the OpenTelemetry layer is the process's global subscriber.

#[allow(dead_code)]
#[path = "../../../tests/relay/harness.rs"]
mod harness;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use vexil_sdk::{Client, Context};
use vexil_testkit::sse::SseReader;
use vexil_testkit::{Backend, TestApp, spawn_app};

use crate::harness::{InProcessRelay, relay_config};

/// The relay binary (unused here; the harness names it).
#[allow(dead_code)]
const RELAY_BIN: &str = env!("CARGO_BIN_EXE_vexil-e2e-relay");

const WAIT: Duration = Duration::from_secs(20);

/// One span as the receiver decoded it (ids in lowercase hex).
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `POST /v1/traces`: an OTLP/HTTP receiver (protobuf bodies).
async fn export(State(r): State<Receiver>, body: Bytes) -> axum::http::StatusCode {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    let mut spans = r.spans.lock().unwrap();
    for rs in req.resource_spans {
        for ss in rs.scope_spans {
            for s in ss.spans {
                spans.push(Received {
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                });
            }
        }
    }
    drop(spans);
    r.arrived.notify_waiters();
    axum::http::StatusCode::OK
}

impl Receiver {
    async fn start() -> (Self, String) {
        let r = Receiver::default();
        let app = Router::new()
            .route("/v1/traces", post(export))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, format!("http://{addr}/v1/traces"))
    }

    fn find(&self, name: &str, trace_id: &str) -> Vec<Received> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == name && s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

async fn expect(res: reqwest::Response, status: u16) -> Value {
    let got = res.status().as_u16();
    let body = res.text().await.unwrap();
    assert_eq!(got, status, "{body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

async fn sdk_stream(base: &str, key: &str) -> SseReader {
    let res = reqwest::Client::new()
        .get(format!("{base}/sdk/v1/stream"))
        .header("authorization", key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    SseReader::new(res)
}

/// The next `patch` event's data on `sse`.
async fn next_patch(sse: &mut SseReader) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            let ev = sse.next_event().await.expect("the stream stays open");
            if ev.event == "patch" {
                return ev.json();
            }
        }
    })
    .await
    .expect("a patch arrives in time")
}

async fn setup(app: &TestApp) -> (String, String) {
    app.project("shop", &["prod"]).await;
    let sdk = expect(
        app.post(
            "/api/v1/projects/shop/environments/prod/sdk-keys",
            &json!({"name": "trace"}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let relay = expect(
        app.post(
            "/api/v1/relay-keys",
            &json!({"name": "edge", "environments": [{"project": "shop", "environment": "prod"}]}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    expect(
        app.post(
            "/api/v1/projects/shop/flags",
            &json!({"key": "checkout", "name": "checkout", "kind": "boolean",
                    "variations": [{"value": true}, {"value": false}]}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    (sdk, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_change_is_one_trace_from_the_write_through_the_relay_to_the_sdk() {
    let (receiver, endpoint) = Receiver::start().await;
    let provider =
        vexil_fanout::trace::otlp_provider_to("vexil-trace-test", Some(&endpoint)).unwrap();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(
            "info,sqlx=warn,h2=off,hyper=off,reqwest=off",
        ))
        .with(vexil_fanout::trace::layer(&provider))
        .init();

    let app = spawn_app(Backend::Postgres).await;
    let (sdk_key, relay_key) = setup(&app).await;
    let mut config = relay_config(&app.base_url);
    config.relay_key = relay_key;
    let mut relay = InProcessRelay::start(config).await;
    relay.wait_ready().await;
    let client = Client::builder(&sdk_key)
        .base_url(relay.url())
        .build()
        .unwrap();
    client.wait_for_initialization(WAIT).await.unwrap();
    let mut changes = client.flag_changes();
    let mut direct = sdk_stream(&app.base_url, &sdk_key).await;
    let mut edge = sdk_stream(&relay.url(), &sdk_key).await;

    // The caller's trace: the write continues it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = format!("00-{trace_id}-00f067aa0ba902b7-01");
    expect(
        app.patch(
            "/api/v1/projects/shop/flags/checkout/environments/prod",
            &json!({"on": true}),
        )
        .header("traceparent", &caller)
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;

    // Both SDK streams carry a context of the write's trace, each from its own hop.
    let from_server = next_patch(&mut direct).await;
    let from_relay = next_patch(&mut edge).await;
    if from_server.get("traceparent").is_none() {
        let flushing = provider.clone();
        let _ = tokio::task::spawn_blocking(move || flushing.force_flush()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        panic!(
            "no traceparent in {from_server}; spans exported: {:#?}",
            receiver.spans.lock().unwrap()
        );
    }
    let tp_server = from_server["traceparent"]
        .as_str()
        .expect("traceparent")
        .to_owned();
    let tp_relay = from_relay["traceparent"]
        .as_str()
        .expect("traceparent")
        .to_owned();
    assert_eq!(&tp_server[3..35], trace_id, "{from_server}");
    assert_eq!(&tp_relay[3..35], trace_id, "{from_relay}");
    assert_ne!(tp_server, tp_relay, "the relay's hop is a span of its own");
    // The frame is otherwise what it was.
    assert_eq!(from_relay["flag"]["key"], "checkout");
    assert_eq!(from_relay["version"], from_server["version"]);

    // The Rust SDK gets the context to continue the trace.
    let change = tokio::time::timeout(WAIT, async {
        loop {
            let c = changes.recv().await.unwrap();
            if c.contains("checkout") {
                return c;
            }
        }
    })
    .await
    .expect("the SDK sees the change");
    assert_eq!(change.traceparent.as_deref(), Some(tp_relay.as_str()));
    // On, serving its fallthrough (variation 1, `false`) from the relay's state.
    assert!(!client.bool_variation("checkout", &Context::new("u"), true));

    // Flush every span to the receiver (blocking: the exporter's thread sends them).
    let flushing = provider.clone();
    tokio::task::spawn_blocking(move || flushing.force_flush())
        .await
        .unwrap()
        .unwrap();
    let waited = tokio::time::timeout(WAIT, async {
        loop {
            let arrived = receiver.arrived.notified();
            if !receiver.find("relay.fanout", trace_id).is_empty() {
                return;
            }
            arrived.await;
        }
    })
    .await;
    assert!(waited.is_ok(), "no relay span of the trace arrived");

    // write (HTTP span, child of the caller) → feed.publish (server) → relay.fanout.
    let write: Vec<Received> = receiver
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.trace_id == trace_id && s.parent_span_id == "00f067aa0ba902b7")
        .cloned()
        .collect();
    assert_eq!(write.len(), 1, "{:?}", receiver.spans.lock().unwrap());
    assert!(
        write[0].name.starts_with("PATCH /api/v1/projects/{"),
        "named by route template: {}",
        write[0].name
    );
    let publish = receiver.find("feed.publish", trace_id);
    assert_eq!(publish.len(), 1, "one server published it");
    assert_eq!(publish[0].parent_span_id, write[0].span_id);
    assert_eq!(&tp_server[36..52], publish[0].span_id);
    let fanout = receiver.find("relay.fanout", trace_id);
    assert_eq!(fanout.len(), 1);
    assert_eq!(fanout[0].parent_span_id, publish[0].span_id);
    assert_eq!(&tp_relay[36..52], fanout[0].span_id);
    // Database work of the write is in the trace too.
    assert!(
        !receiver.find("db", trace_id).is_empty(),
        "database spans of the write"
    );

    client.close();
    relay.stop().await;
    app.stop().await;
    let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
}
