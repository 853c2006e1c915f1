//! Propagation latency: a write through one server process to receipt by 1,000 SSE
//! subscribers of another process on the same PostgreSQL database (NOTIFY → change log →
//! hub → socket). Not a criterion bench: it measures a distributed path end to end.
//!
//! `cargo bench -p vexil-server --bench propagation` (needs PostgreSQL, found as the tests
//! find it). Each sample is the time from just before the write request is sent to the
//! moment a subscriber has parsed the change's SSE event, so it includes the write's own
//! HTTP handling and transaction: an upper bound on commit-to-receipt.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use serde_json::json;
use tokio::sync::mpsc;
use vexil_testkit::{Backend, spawn_app};

const SUBSCRIBERS: usize = 1000;
const WRITES: usize = 50;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let writer = spawn_app(Backend::Postgres).await;
    writer.project("p", &["prod"]).await;
    let flag = json!({"key": "f", "name": "f", "kind": "boolean",
                      "variations": [{"value": true}, {"value": false}]});
    assert_eq!(
        writer
            .post("/api/v1/projects/p/flags", &flag)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let created = writer
        .post(
            "/api/v1/projects/p/environments/prod/sdk-keys",
            &json!({"name": "bench"}),
        )
        .send()
        .await
        .unwrap();
    let key = created.json::<serde_json::Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    // The subscribers' server: a second process-equivalent on the same database.
    let mut config = vexil_server::Config::with_database(writer.database.url.clone());
    config.database_max_connections = 4;
    let server = vexil_server::Server::build(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = server.serve(listener, std::future::pending()).await;
    });

    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, bool, Instant)>();
    let ready = join_all((0..SUBSCRIBERS).map(|_| {
        let (base, key, tx) = (base.clone(), key.clone(), tx.clone());
        async move {
            let res = reqwest::Client::new()
                .get(format!("{base}/sdk/v1/stream"))
                .header("authorization", key)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let mut body = res.bytes_stream();
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let mut ready_tx = Some(ready_tx);
                let mut buf = String::new();
                loop {
                    let chunk = match body.next().await {
                        Some(Ok(chunk)) => chunk,
                        Some(Err(e)) => {
                            eprintln!("a subscriber's stream failed: {e}");
                            break;
                        }
                        None => {
                            eprintln!("a subscriber's stream was ended by the server");
                            break;
                        }
                    };
                    buf.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = buf.find("\n\n") {
                        let block: String = buf.drain(..end + 2).collect();
                        let id = block.lines().find_map(|l| l.strip_prefix("id: "));
                        let put = block.starts_with("event: put");
                        if put && let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        } else if let Some(v) = id.and_then(|s| s.parse().ok()) {
                            // A later `put` is a resync (a subscriber that fell behind gets
                            // the whole state): it delivers the version too, and is counted.
                            let _ = tx.send((v, put, Instant::now()));
                        }
                    }
                }
            });
            let _ = ready_rx.await;
        }
    }))
    .await;
    drop(ready);

    let client = reqwest::Client::new();
    let mut samples: Vec<Duration> = Vec::with_capacity(SUBSCRIBERS * WRITES);
    let mut resyncs = 0usize;
    for i in 0..WRITES {
        let t0 = Instant::now();
        let res = client
            .patch(writer.url("/api/v1/projects/p/flags/f/environments/prod"))
            .bearer_auth(&writer.admin_token)
            .json(&json!({"on": i % 2 == 0}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let v = res.json::<serde_json::Value>().await.unwrap()["environment_version"]
            .as_u64()
            .unwrap();
        let mut got = 0;
        while got < SUBSCRIBERS {
            let (version, put, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("write {i} (version {v}): {got} of {SUBSCRIBERS} subscribers received it within 30 s")
                })
                .expect("the subscribers' channel stays open");
            assert_eq!(version, v, "changes arrive in order");
            resyncs += usize::from(put);
            samples.push(at - t0);
            got += 1;
        }
    }
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "propagation, {SUBSCRIBERS} subscribers x {WRITES} writes ({} samples, {resyncs} by resync): p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        pct(0.50),
        pct(0.99),
        samples[samples.len() - 1]
    );
}
