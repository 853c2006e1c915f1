//! SDK streams fed from the change log: across processes, across listener failures, on
//! resume, at fan-out scale, and on SQLite.

use futures::future::join_all;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use vexil_testkit::{Backend, spawn_app, spawn_app_with};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_server_reaches_a_subscriber_of_another() {
    let app = spawn_app(Backend::Postgres).await;
    let keys = setup(&app, &["prod"]).await;
    create_flag(&app, "checkout").await;
    let peer = Peer::start(&app.database.url).await;

    let mut sse = Sse::open(&peer.base_url, &keys[0], None).await;
    let put = sse.next().await;
    assert_eq!(put.event, "put");
    let start: u64 = put.id.as_deref().unwrap().parse().unwrap();
    assert_eq!(put.json()["version"], start);
    assert_eq!(put.json()["flags"][0]["key"], "checkout");

    let v = set_on(&app, "checkout", "prod", true).await;
    assert_eq!(v, start + 1);
    let patch = sse.next().await;
    assert_eq!(patch.event, "patch");
    assert_eq!(patch.id.as_deref(), Some(v.to_string().as_str()));
    let data = patch.json();
    assert_eq!(data["version"], v);
    assert_eq!(data["flag"]["key"], "checkout");
    assert_eq!(data["flag"]["on"], true);
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_server_process_streams_changes_made_through_this_one() {
    let app = spawn_app(Backend::Postgres).await;
    let keys = setup(&app, &["prod"]).await;
    create_flag(&app, "checkout").await;
    let bin = env!("CARGO_BIN_EXE_vexil-server");
    let mut child = tokio::process::Command::new(bin)
        .env("VEXIL_DATABASE_URL", &app.database.url)
        .env("VEXIL_LISTEN", "127.0.0.1:0")
        .env("VEXIL_DATABASE_MAX_CONNECTIONS", "4")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("server binary starts");
    // Ready once it says where it listens (bound, built, about to serve: a request made now
    // waits in the accept queue); then its output is drained so it never blocks on a pipe.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("Vexil control plane listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!("the server process exited before listening");
    })
    .await
    .expect("the server process says where it listens");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let mut sse = Sse::open(&base, &keys[0], None).await;
    let put = sse.next().await;
    assert_eq!(put.event, "put");
    let v = set_on(&app, "checkout", "prod", true).await;
    let events = sse.until_id(v).await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "patch");
    assert_eq!(last.json()["flag"]["on"], true);
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_listener_connection_loses_no_change() {
    let app = spawn_app(Backend::Postgres).await;
    let keys = setup(&app, &["prod"]).await;
    create_flag(&app, "checkout").await;
    // The peer reaches PostgreSQL through a gate that can keep its listener from coming back.
    // No periodic resync during the test: a lost notification is recovered by the
    // listener's gap handling or not at all.
    let gate = DbGate::start(&app.database.url).await;
    let peer = Peer::start_with(&gate.url, |c| {
        c.listener_heartbeat_ms = 200;
        c.listener_heartbeat_timeout_ms = 1_000;
        c.resync_secs = 3_600;
    })
    .await;
    let mut sse = Sse::open(&peer.base_url, &keys[0], None).await;
    let put = sse.next().await;
    let mut version: u64 = put.id.as_deref().unwrap().parse().unwrap();

    // Write 40 changes from the first server while the second's listener is killed
    // repeatedly.
    let writer = {
        let app_url = app.base_url.clone();
        let token = app.admin_token.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut last = 0;
            for i in 0..40 {
                let res = client
                    .patch(format!("{app_url}{}", config_path("p", "checkout", "prod")))
                    .bearer_auth(&token)
                    .json(&json!({"on": i % 2 == 0}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                let body: serde_json::Value = res.json().await.unwrap();
                last = body["environment_version"].as_u64().unwrap();
            }
            last
        })
    };
    let mut kills = 0;
    for _ in 0..5 {
        kills += kill_listeners(&app).await;
        tokio::task::yield_now().await;
    }
    let written = writer.await.unwrap();
    assert!(kills >= 1, "a LISTEN connection was terminated");

    // The subscriber converges to the last version, in order, every step a patch that
    // follows the last one or a full put.
    let mut converge = async |sse: &mut Sse, target: u64| {
        while version < target {
            let ev = sse.next().await;
            let id: u64 = ev.id.as_deref().unwrap().parse().unwrap();
            match ev.event.as_str() {
                "patch" => assert_eq!(id, version + 1, "patches arrive in order without gaps"),
                "put" => assert!(id > version),
                other => panic!("unexpected event {other}"),
            }
            version = id;
        }
        assert_eq!(version, target);
    };
    converge(&mut sse, written).await;

    // Now the last change is committed while the peer's listener is dead, and nothing is
    // written after it: no later notification can bring it, only the gap handling can. The
    // gate cuts the peer off the database (its listener reconnects through its pool, so the
    // pool's connections go too) and the listening backends are gone before the commit.
    gate.set_open(false);
    gate.wait_refused(1).await; // the peer tried to come back, and could not
    kill_listeners(&app).await;
    let final_version = set_on(&app, "checkout", "prod", false).await;
    gate.set_open(true);
    converge(&mut sse, final_version).await;

    let snap = expect(
        reqwest::Client::new()
            .get(format!("{}/sdk/v1/snapshot", peer.base_url))
            .header("authorization", &keys[0])
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(snap["version"], final_version);
    assert_eq!(snap["flags"][0]["on"], false);
    peer.stop().await;
}

/// Terminates every LISTEN connection to the test database, waiting until each is gone;
/// returns how many.
async fn kill_listeners(app: &vexil_testkit::TestApp) -> u64 {
    app.database
        .execute(
            "SELECT pg_terminate_backend(pid, 20000) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'
               AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_from_the_ring_or_gets_a_put() {
    let app = spawn_app_with(Backend::Postgres, |c| {
        c.distribution.stream_ring_capacity = 4
    })
    .await;
    let keys = setup(&app, &["prod"]).await;
    create_flag(&app, "checkout").await;
    let mut sse = Sse::open(&app.base_url, &keys[0], None).await;
    let put = sse.next().await;
    let v0: u64 = put.id.as_deref().unwrap().parse().unwrap();
    drop(sse);

    let v1 = set_on(&app, "checkout", "prod", true).await;
    let v2 = set_on(&app, "checkout", "prod", false).await;
    let mut watcher = Sse::open(&app.base_url, &keys[0], None).await;
    watcher.until_id(v2).await;

    // Within the ring: only the missing changes.
    let mut resumed = Sse::open(&app.base_url, &keys[0], Some(&v0.to_string())).await;
    let a = resumed.next().await;
    let b = resumed.next().await;
    assert_eq!(
        (a.event.as_str(), a.id.clone()),
        ("patch", Some(v1.to_string()))
    );
    assert_eq!(
        (b.event.as_str(), b.id.clone()),
        ("patch", Some(v2.to_string()))
    );
    drop(resumed);

    // Beyond the ring (capacity 4): a put.
    let mut last = v2;
    for i in 0..6 {
        last = set_on(&app, "checkout", "prod", i % 2 == 0).await;
    }
    watcher.until_id(last).await;
    let mut resumed = Sse::open(&app.base_url, &keys[0], Some(&v2.to_string())).await;
    let ev = resumed.next().await;
    assert_eq!(ev.event, "put");
    assert_eq!(ev.id, Some(last.to_string()));
    assert_eq!(ev.json()["version"], last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_flag_is_a_delete_event_then_not_found() {
    let app = spawn_app(Backend::Postgres).await;
    let keys = setup(&app, &["prod"]).await;
    create_flag(&app, "old").await;
    create_flag(&app, "older").await;
    let mut sse = Sse::open(&app.base_url, &keys[0], None).await;
    sse.next().await;

    expect(
        app.post("/api/v1/projects/p/flags/old/archive", &json!({}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let ev = sse.next().await;
    assert_eq!(ev.event, "delete");
    let data = ev.json();
    assert_eq!(
        (data["kind"].as_str(), data["key"].as_str()),
        (Some("flag"), Some("old"))
    );

    expect(
        app.delete("/api/v1/projects/p/flags/older")
            .send()
            .await
            .unwrap(),
        204,
    )
    .await;
    let ev = sse.next().await;
    assert_eq!(ev.event, "delete");
    assert_eq!(ev.json()["key"], "older");

    for flag in ["old", "older"] {
        let res = reqwest::Client::new()
            .post(format!("{}/ofrep/v1/evaluate/flags/{flag}", app.base_url))
            .bearer_auth(&keys[0])
            .json(&json!({"context": {"targetingKey": "u1"}}))
            .send()
            .await
            .unwrap();
        let body = expect(res, 404).await;
        assert_eq!(body["errorCode"], "FLAG_NOT_FOUND");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_get_the_change_despite_one_that_stopped_reading() {
    let app = spawn_app(Backend::Postgres).await;
    let keys = setup(&app, &["prod"]).await;
    create_flag(&app, "checkout").await;

    // A subscriber that never reads past its response headers.
    let stalled = reqwest::Client::new()
        .get(format!("{}/sdk/v1/stream", app.base_url))
        .header("authorization", &keys[0])
        .send()
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);

    let opened = join_all((0..1000).map(|_| {
        let base = app.base_url.clone();
        let key = keys[0].clone();
        async move {
            let mut sse = Sse::open(&base, &key, None).await;
            assert_eq!(sse.next().await.event, "put");
            sse
        }
    }))
    .await;
    let v = set_on(&app, "checkout", "prod", true).await;
    let got = join_all(opened.into_iter().map(|mut sse| async move {
        let ev = sse.next().await;
        (ev.event, ev.id)
    }))
    .await;
    assert_eq!(got.len(), 1000);
    assert!(
        got.iter()
            .all(|(e, id)| e == "patch" && id.as_deref() == Some(v.to_string().as_str()))
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_feeds_subscribers_in_process() {
    let app = spawn_app(Backend::Sqlite).await;
    let keys = setup(&app, &["prod"]).await;
    create_flag(&app, "checkout").await;
    let mut sse = Sse::open(&app.base_url, &keys[0], None).await;
    let put = sse.next().await;
    assert_eq!(put.event, "put");
    let v = set_on(&app, "checkout", "prod", true).await;
    let ev = sse.next().await;
    assert_eq!(
        (ev.event.as_str(), ev.id.clone()),
        ("patch", Some(v.to_string()))
    );
    assert_eq!(ev.json()["flag"]["on"], true);

    // A new segment and a new environment copy reach subscribers too.
    expect(
        app.post(
            "/api/v1/projects/p/environments/prod/segments",
            &json!({"key": "beta", "name": "Beta", "included": ["u1"]}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    let ev = sse.next().await;
    assert_eq!(ev.event, "patch");
    assert_eq!(ev.json()["segment"]["key"], "beta");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_missing_from_the_change_log_is_rebuilt_from_the_tables() {
    // What a process sees after compaction deleted rows it had not applied: the next
    // version is not in the log. It must rebuild from the tables and send a `put`.
    let app = spawn_app(Backend::Postgres).await;
    let keys = setup(&app, &["prod"]).await;
    create_flag(&app, "checkout").await;
    let mut sse = Sse::open(&app.base_url, &keys[0], None).await;
    let put = sse.next().await;
    let v0: u64 = put.id.as_deref().unwrap().parse().unwrap();
    app.database
        .execute(
            "WITH c AS (
                 UPDATE flag_configs SET config = jsonb_set(config, '{on}', 'true'::jsonb)
                 WHERE environment_id = (SELECT id FROM environments WHERE key = 'prod')
             )
             UPDATE environments SET version = version + 1 WHERE key = 'prod'",
        )
        .await
        .unwrap();
    let ev = sse.next().await;
    assert_eq!(ev.event, "put");
    assert_eq!(ev.id, Some((v0 + 1).to_string()));
    assert_eq!(ev.json()["flags"][0]["on"], true);
    // And the log carries on from there.
    let v = set_on(&app, "checkout", "prod", false).await;
    let ev = sse.next().await;
    assert_eq!(
        (ev.event.as_str(), ev.id.clone()),
        ("patch", Some(v.to_string()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_sdk_keys_stop_working_at_once_on_every_server() {
    let app = spawn_app(Backend::Postgres).await;
    app.project("p", &["prod"]).await;
    create_flag(&app, "f").await;
    let peer = Peer::start(&app.database.url).await;
    let created = expect(
        app.post(
            "/api/v1/projects/p/environments/prod/sdk-keys",
            &json!({"name": "k"}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_i64().unwrap();
    let snapshot = |base: String, key: String| async move {
        reqwest::Client::new()
            .get(format!("{base}/sdk/v1/snapshot"))
            .header("authorization", format!("Bearer {key}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // A key created on one server works on the other at once.
    assert_eq!(snapshot(peer.base_url.clone(), secret.clone()).await, 200);
    assert_eq!(snapshot(app.base_url.clone(), secret.clone()).await, 200);
    // Streams open on both servers, and one with another key of the same environment.
    let other = sdk_key(&app, "p", "prod").await;
    let mut on_app = Sse::open(&app.base_url, &secret, None).await;
    let mut on_peer = Sse::open(&peer.base_url, &secret, None).await;
    let mut unrelated = Sse::open(&app.base_url, &other, None).await;
    for sse in [&mut on_app, &mut on_peer, &mut unrelated] {
        assert_eq!(sse.next().await.event, "put");
    }
    expect(
        app.delete(&format!(
            "/api/v1/projects/p/environments/prod/sdk-keys/{id}"
        ))
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(snapshot(app.base_url.clone(), secret.clone()).await, 401);
    // The other server learns it through NOTIFY; wait for it with a deadline.
    let refused = tokio::time::timeout(WAIT, async {
        loop {
            if snapshot(peer.base_url.clone(), secret.clone()).await == 401 {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(refused.is_ok(), "the peer refuses the revoked key");
    // Open streams of the revoked key end on both servers; the other key's stays open
    // and keeps receiving changes.
    assert!(
        on_app.ends().await,
        "the revoked key's stream ends on this server"
    );
    assert!(
        on_peer.ends().await,
        "the revoked key's stream ends on the peer"
    );
    let version = set_on(&app, "f", "prod", true).await;
    let events = unrelated.until_id(version).await;
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("patch"));
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_newest_versions_and_never_the_state() {
    let app = spawn_app(Backend::Postgres).await;
    let keys = setup(&app, &["prod"]).await;
    create_flag(&app, "checkout").await;
    let peer = Peer::start_with(&app.database.url, |c| c.change_log_retain_versions = 2).await;
    let mut last = 0;
    for i in 0..6 {
        last = set_on(&app, "checkout", "prod", i % 2 == 0).await;
    }
    assert!(peer.feed.compact().await.unwrap() >= 4);
    let log = expect(
        app.get("/api/v1/projects/p/environments/prod/changes?after=0")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let versions: Vec<u64> = log
        .as_array()
        .or_else(|| log["items"].as_array())
        .or_else(|| log["changes"].as_array())
        .unwrap_or_else(|| panic!("change list in {log}"))
        .iter()
        .map(|c| c["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![last - 1, last]);
    // A process starting now loads the state from the tables, not the log.
    let fresh = Peer::start(&app.database.url).await;
    let snap = expect(
        reqwest::Client::new()
            .get(format!("{}/sdk/v1/snapshot", fresh.base_url))
            .header("authorization", &keys[0])
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(snap["version"], last);
    assert_eq!(snap["flags"][0]["on"], false);
    fresh.stop().await;
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_the_feed_and_the_fan_out() {
    let app = spawn_app(Backend::Postgres).await;
    let keys = setup(&app, &["prod"]).await;
    create_flag(&app, "checkout").await;
    let mut sse = Sse::open(&app.base_url, &keys[0], None).await;
    assert_eq!(sse.next().await.event, "put");
    let version = set_on(&app, "checkout", "prod", true).await;
    sse.until_id(version).await;

    let res = reqwest::get(format!("{}/metrics", app.base_url))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    // The recorder is process-wide and every test's server (each with its own `p/prod`)
    // shares it, so values may come from another test: look for the series.
    for needle in [
        "vexil_fanout_environment_version{environment=\"p/prod\"}",
        "vexil_fanout_subscribers{environment=\"p/prod\"}",
        "vexil_fanout_events_sent_total{environment=\"p/prod\"}",
        "vexil_feed_listener_connected",
        "vexil_feed_notifications_total",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }
}

/// A one-key edit of a 100,000-key segment reaches subscribers as a `delta` of a few hundred
/// bytes (not the 1.8 MB segment); a subscriber resuming with `Last-Event-ID` across it gets
/// the same delta replayed, a server catching up from the change log streams it as a delta
/// too, and a fresh `put` holds the edited list exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_key_edit_of_a_large_segment_streams_as_a_delta_and_resumes() {
    let app = spawn_app(Backend::Postgres).await;
    let keys = setup(&app, &["prod"]).await;
    let base = "/api/v1/projects/p/environments/prod/segments";
    let included: Vec<String> = (0..100_000).map(|i| format!("user-{i:06}")).collect();
    expect(
        app.post(
            base,
            &json!({"key": "big", "name": "Big", "included": included}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    let peer = Peer::start(&app.database.url).await;
    let mut sse = Sse::open(&app.base_url, &keys[0], None).await;
    let put = sse.next().await;
    let start: u64 = put.id.as_deref().unwrap().parse().unwrap();
    let mut remote = Sse::open(&peer.base_url, &keys[0], None).await;
    remote.until_id(start).await;

    let edited = expect(
        app.post(
            &format!("{base}/big/keys"),
            &json!({"included": {"add": ["user-new"], "remove": ["user-000007"]}}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    let v = edited["environment_version"].as_u64().unwrap();
    let delta = sse.next().await;
    assert_eq!(delta.event, "delta");
    assert_eq!(delta.id.as_deref(), Some(v.to_string().as_str()));
    let data = delta.json();
    assert_eq!(
        data["segment"]["included"],
        json!({"add": ["user-new"], "remove": ["user-000007"]})
    );
    let bytes = delta.data.len();
    assert!(bytes < 1024, "a one-key delta is {bytes} bytes");
    eprintln!("one-key edit of a 100,000-key segment: {bytes} bytes of data per subscriber");
    // Another process applied the delta from the change log.
    let remote_delta = remote.until_id(v).await.pop().unwrap();
    assert_eq!(remote_delta.event, "delta");
    assert_eq!(remote_delta.data, delta.data);

    // Resume across the delta: replayed from the ring.
    let mut resumed = Sse::open(&app.base_url, &keys[0], Some(&start.to_string())).await;
    let replay = resumed.next().await;
    assert_eq!(
        (replay.event.as_str(), replay.data.as_str()),
        ("delta", delta.data.as_str())
    );
    // A new subscriber's put holds the list exactly as stored.
    let mut fresh = Sse::open(&app.base_url, &keys[0], None).await;
    let put = fresh.next().await;
    let list = put.json()["segments"][0]["included"].clone();
    let stored = expect(app.get(&format!("{base}/big")).send().await.unwrap(), 200).await;
    assert_eq!(list, stored["segment"]["included"]);
    assert_eq!(list.as_array().unwrap().last().unwrap(), "user-new");
    peer.stop().await;
}
