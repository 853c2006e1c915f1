//! The change feed across instances: under interleaved commits from two servers, every SDK
//! stream (on both servers and on a relay in front of each) receives every version once, in
//! order, as a patch, and no server rebuilds; a write on one server reaches the streams of
//! the other; a key revoked on one server stops working on the other.

use std::time::Duration;

use futures::future::join_all;
use serde_json::json;

use crate::harness::*;

/// Writers per server in the concurrent-writes test, each toggling its own flag.
const WRITERS_PER_SERVER: usize = 4;
/// Writes per writer (200 in all).
const WRITES_PER_WRITER: usize = 25;

/// Reads `stream` up to `last` and checks that it saw the initial state, then each later
/// version exactly once, in order, as a patch.
async fn check_stream(name: &str, mut stream: Sse, last: u64) {
    let first = stream.next().await.expect("the initial state");
    assert_eq!(first.event, "put", "{name}: starts with the full state");
    let start = first.version().expect("the put carries its version");
    let events = if start >= last {
        Vec::new()
    } else {
        stream.until(last).await
    };
    let mut expected = start + 1;
    for ev in &events {
        assert_eq!(
            ev.event, "patch",
            "{name}: every change after the first state is a patch: {ev:?}"
        );
        assert_eq!(
            ev.version(),
            Some(expected),
            "{name}: versions in order, once each"
        );
        expected += 1;
    }
    assert_eq!(expected, last + 1, "{name}: reached the last version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_on_two_servers_reach_every_subscriber_as_patches() {
    let flags: Vec<String> = (0..2 * WRITERS_PER_SERVER)
        .map(|w| format!("f{w}"))
        .collect();
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster = Cluster::start(2, &flag_refs).await;
    let (_, key) = cluster.sdk_key(0).await;
    let relay_key = cluster.relay_key().await;
    let relays = [
        EdgeRelay::start(&cluster.servers[0].base_url, &relay_key).await,
        EdgeRelay::start(&cluster.servers[1].base_url, &relay_key).await,
    ];
    let mut streams = Vec::new();
    for (i, s) in cluster.servers.iter().enumerate() {
        streams.push((format!("server {i}"), Sse::open(&s.base_url, &key).await));
    }
    for (i, r) in relays.iter().enumerate() {
        streams.push((
            format!("relay on server {i}"),
            Sse::open(&r.base_url, &key).await,
        ));
    }

    // Each writer toggles its own flag, so every write changes something; the writers of
    // both servers commit to the same environment, interleaved.
    let writers = (0..2 * WRITERS_PER_SERVER).map(|w| {
        let cluster = &cluster;
        let flag = flags[w].clone();
        async move {
            let mut last = 0;
            for i in 0..WRITES_PER_WRITER {
                let (status, body) = cluster
                    .send(
                        w % 2,
                        "PATCH",
                        &config_path(&flag),
                        Some(json!({"on": i % 2 == 0})),
                        None,
                    )
                    .await;
                assert_eq!(status, 200, "write {i} of {flag}: {body}");
                last = body["environment_version"]
                    .as_u64()
                    .expect("environment version");
            }
            last
        }
    });
    let last = join_all(writers).await.into_iter().max().unwrap_or(0);
    assert_eq!(last, cluster.environment_version().await);

    join_all(
        streams
            .into_iter()
            .map(|(name, s)| check_stream_owned(name, s, last)),
    )
    .await;
    for i in 0..cluster.servers.len() {
        assert_eq!(
            cluster.rebuilds(i).await,
            0,
            "server {i} rebuilt an environment under concurrent writes"
        );
    }
}

async fn check_stream_owned(name: String, stream: Sse, last: u64) {
    check_stream(&name, stream, last).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_server_reaches_the_streams_of_the_other_and_of_its_relay() {
    let cluster = Cluster::start(2, &["checkout"]).await;
    let (_, key) = cluster.sdk_key(0).await;
    let relay_key = cluster.relay_key().await;
    let relay = EdgeRelay::start(&cluster.servers[1].base_url, &relay_key).await;
    let mut on_b = Sse::open(&cluster.servers[1].base_url, &key).await;
    let mut on_relay = Sse::open(&relay.base_url, &key).await;
    for s in [&mut on_b, &mut on_relay] {
        assert_eq!(s.next().await.expect("the initial state").event, "put");
    }
    let body = cluster
        .expect(
            0,
            "PATCH",
            &config_path("checkout"),
            Some(json!({"on": true})),
            200,
        )
        .await;
    let v = body["environment_version"]
        .as_u64()
        .expect("environment version");
    for (name, s) in [("server B", &mut on_b), ("the relay on B", &mut on_relay)] {
        let events = s.until(v).await;
        let last = events.last().expect("an event");
        assert_eq!(last.event, "patch", "{name}: {events:?}");
        assert_eq!(last.version(), Some(v), "{name}");
        assert_eq!(last.json()["flag"]["key"], "checkout", "{name}");
        assert_eq!(last.json()["flag"]["on"], true, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_server_stops_working_on_the_other() {
    let cluster = Cluster::start(2, &["checkout"]).await;
    let (id, key) = cluster.sdk_key(0).await;
    let mut open = Sse::open(&cluster.servers[1].base_url, &key).await;
    assert_eq!(open.next().await.expect("the initial state").event, "put");
    cluster
        .expect(
            0,
            "DELETE",
            &format!("/api/v1/projects/p/environments/prod/sdk-keys/{id}"),
            None,
            200,
        )
        .await;
    // The open stream on the other server is closed… (normally well within a second; the
    // deadline leaves room for a CI machine loaded by the whole suite, where one run in four
    // took over 5 s)
    assert!(
        open.ends_within(Duration::from_secs(15)).await,
        "server B closed the key's open stream within 15 s"
    );
    // …and a new request with the key is refused there, within a few seconds.
    let refused = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let status = cluster
                .client
                .get(format!("{}/sdk/v1/snapshot", cluster.servers[1].base_url))
                .header("authorization", &key)
                .send()
                .await
                .expect("snapshot request")
                .status();
            if status == 401 {
                return;
            }
            assert_eq!(status, 200, "the key works until it is refused");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        refused.is_ok(),
        "server B refuses the revoked key within 15 s"
    );
}
