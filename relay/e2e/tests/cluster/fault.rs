//! PostgreSQL stopped and restarted under writes, on a throwaway cluster of the test's own:
//! every write is answered 200 or 503, no acknowledged write is lost, and every SDK stream
//! (on the server and through a relay) converges to the final version.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::Connection;
use tokio::sync::watch;
use vexil_testkit::PostgresCluster;

use crate::harness::*;

/// Writes acknowledged before PostgreSQL is stopped, and again after it is back.
const ACKED_EACH_SIDE: usize = 5;
/// Writes refused while PostgreSQL is down before it is restarted.
const REFUSED: usize = 2;
/// How long each phase may take (a refused write may wait for the pool's timeout).
const PHASE: Duration = Duration::from_secs(90);

/// What the writer has seen so far.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    acked: usize,
    refused: usize,
}

async fn wait_for(rx: &mut watch::Receiver<Progress>, what: &str, f: impl Fn(&Progress) -> bool) {
    let waited = tokio::time::timeout(PHASE, rx.wait_for(|p| f(p)))
        .await
        .map(|r| r.is_ok());
    assert_eq!(waited, Ok(true), "in time: {what} ({:?})", *rx.borrow());
}

/// Follows an SDK stream (reopening it if the server ends it) until it holds `last`.
async fn converge(name: &str, base: &str, key: &str, mut stream: Sse, last: u64) {
    let mut version = 0;
    let reached = tokio::time::timeout(PHASE, async {
        while version < last {
            match stream.next().await {
                Some(ev) => {
                    if let Some(v) = ev.version() {
                        version = v;
                    }
                }
                None => stream = Sse::open(base, key).await,
            }
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "{name} reached version {last} (at {version})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_and_restarted_under_writes_loses_no_acknowledged_write() {
    let pg = Arc::new(
        tokio::task::spawn_blocking(PostgresCluster::start)
            .await
            .expect("initdb runs")
            .unwrap_or_else(|e| panic!("a throwaway PostgreSQL cluster starts: {e}")),
    );
    let cluster = Cluster::start_at(pg.admin_url.clone(), None, 1, &["f"]).await;
    let base = cluster.servers[0].base_url.clone();
    let (_, key) = cluster.sdk_key(0).await;
    let relay_key = cluster.relay_key().await;
    let relay = EdgeRelay::start(&base, &relay_key).await;
    let mut direct = Sse::open(&base, &key).await;
    let mut relayed = Sse::open(&relay.base_url, &key).await;
    for s in [&mut direct, &mut relayed] {
        assert_eq!(s.next().await.expect("the initial state").event, "put");
    }

    let (done_tx, done_rx) = watch::channel(false);
    let (progress_tx, mut progress) = watch::channel(Progress::default());
    let path = config_path("f");
    let writer = async {
        let mut acked: Vec<(usize, u64)> = Vec::new();
        let mut i = 0;
        while !*done_rx.borrow() {
            i += 1;
            let body = json!({"targets": [{"variation": 0, "values": [format!("user-{i}")]}]});
            let (status, answer) = cluster.send(0, "PATCH", &path, Some(body), None).await;
            match status {
                200 => acked.push((i, answer["config"]["version"].as_u64().expect("version"))),
                503 => progress_tx.send_modify(|p| p.refused += 1),
                other => panic!(
                    "write {i} answered {other}, not 200 or 503: {answer}\n{}",
                    cluster.servers[0].logs()
                ),
            }
            progress_tx.send_modify(|p| p.acked = acked.len());
        }
        acked
    };
    let controller = async {
        wait_for(&mut progress, "writes acknowledged", |p| {
            p.acked >= ACKED_EACH_SIDE
        })
        .await;
        let stop = Arc::clone(&pg);
        tokio::task::spawn_blocking(move || stop.stop_fast())
            .await
            .expect("pg_ctl runs")
            .expect("PostgreSQL stops");
        let before = progress.borrow().refused;
        wait_for(&mut progress, "writes refused while down", |p| {
            p.refused >= before + REFUSED
        })
        .await;
        let start = Arc::clone(&pg);
        tokio::task::spawn_blocking(move || start.restart())
            .await
            .expect("pg_ctl runs")
            .expect("PostgreSQL restarts");
        let acked = progress.borrow().acked;
        wait_for(
            &mut progress,
            "writes acknowledged after the restart",
            |p| p.acked >= acked + ACKED_EACH_SIDE,
        )
        .await;
        let _ = done_tx.send(true);
    };
    let (acked, ()) = tokio::join!(writer, controller);

    // Every acknowledged write is in the database, as acknowledged.
    let mut db = sqlx::PgConnection::connect(&cluster.database_url)
        .await
        .expect("connect to the restarted database");
    for (i, version) in &acked {
        let config: serde_json::Value = sqlx::query_scalar(
            "SELECT v.config FROM flag_config_versions v JOIN flags f ON f.id = v.flag_id
             WHERE f.key = 'f' AND v.version = $1",
        )
        .bind(i64::try_from(*version).expect("a small version"))
        .fetch_one(&mut db)
        .await
        .unwrap_or_else(|e| panic!("acknowledged write {i} (version {version}) is stored: {e}"));
        assert_eq!(
            config["targets"][0]["values"][0],
            format!("user-{i}"),
            "version {version} holds write {i}"
        );
    }
    let _ = db.close().await;

    // Every subscriber converges to the final version.
    let last = cluster.environment_version().await;
    tokio::join!(
        converge("the server's stream", &base, &key, direct, last),
        converge("the relay's stream", &relay.base_url, &key, relayed, last),
    );
}
