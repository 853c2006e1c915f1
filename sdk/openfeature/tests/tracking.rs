//! OpenFeature's tracking API through the provider, to a real `POST /events/v1/bulk`
//! receiver on a real socket.

use std::future::IntoFuture;
use std::io::Read;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use open_feature::EvaluationContext;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use vexil_openfeature::VexilProvider;
use vexil_schema::events::{BulkResponse, Event, EventBatch};
use vexil_sdk::{Client, EventsConfig};

async fn bulk(
    State(tx): State<mpsc::UnboundedSender<EventBatch>>,
    body: Bytes,
) -> axum::Json<BulkResponse> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut json)
        .unwrap();
    let batch: EventBatch = serde_json::from_slice(&json).unwrap();
    let accepted = batch.events.len() as u64;
    let _ = tx.send(batch);
    axum::Json(BulkResponse {
        accepted,
        rejected: vec![],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_reaches_the_receiver() {
    let (tx, mut batches) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/events/v1/bulk", post(bulk))
        .with_state(tx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).into_future().await;
    });
    // No flags are served here (the stream is refused): tracking does not depend on them.
    let client = Client::builder("sdk-key")
        .base_url(&url)
        .events(
            EventsConfig::default()
                .flush_interval(Duration::from_secs(3600))
                .summaries(false),
        )
        .build()
        .unwrap();
    let provider = VexilProvider::new(client.clone());
    let ctx = EvaluationContext::default().with_targeting_key("user-9");
    provider.track("purchase", &ctx, Some(19.99));
    provider.track("signup", &ctx, None);
    client.close();

    let batch = tokio::time::timeout(Duration::from_secs(10), batches.recv())
        .await
        .unwrap()
        .unwrap();
    let events: Vec<Event> = batch.events.iter().map(|e| e.decode().unwrap()).collect();
    let custom: Vec<_> = events
        .iter()
        .map(|e| match e {
            Event::Custom(c) => (c.event_key.as_str(), c.context_key.as_str(), c.value),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        custom,
        [
            ("purchase", "user-9", Some(19.99)),
            ("signup", "user-9", None)
        ]
    );
    server.abort();
}
