//! Faults: the upstream killed and restarted, the relay serving while its upstream is down,
//! the relay killed and restarted, SIGTERM, SIGHUP without TLS, a silent upstream, a refused
//! relay key.

use serde_json::{Value, json};

use crate::harness::*;

const ENVS: [&str; 2] = ["shop/prod", "shop/dev"];

/// Every subscriber holds exactly the model's final state, reached through changes that
/// each followed the version held (no change skipped or applied twice).
async fn assert_converged(subs: &mut [(String, Subscriber)], origin: &Origin) {
    for (e, sub) in subs.iter_mut() {
        let e = env(e);
        sub.wait_version(origin.model.version(&e)).await;
        let seen = sub.seen();
        assert_eq!(seen.version, Some(origin.model.version(&e)));
        assert_eq!(seen.values, origin.model.values(&e), "{e}");
        assert!(seen.violations.is_empty(), "{e}: {:?}", seen.violations);
    }
}

fn subscribers(url: &str, per_env: usize) -> Vec<(String, Subscriber)> {
    ENVS.iter()
        .flat_map(|e| (0..per_env).map(move |_| e))
        .map(|e| (e.to_string(), Subscriber::start(url, &sdk_key(e))))
        .collect()
}

/// Changes spread over both environments: each touches its own flag (so every version's
/// effect is checked at the end), some overwrite or delete earlier ones.
fn make_changes(origin: &mut Origin, round: usize, n: usize) {
    for i in 0..n {
        let e = ENVS[i % 2];
        let key = format!("r{round}-f{i}");
        origin.set(e, &key, json!({ "round": round, "i": i }));
        if i % 5 == 4 {
            origin.set(e, "shared", json!(format!("{round}-{i}")));
        }
        if i % 7 == 6 {
            origin.delete(e, &format!("r{round}-f{}", i - 2));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_converge_when_the_upstream_dies_and_returns_while_changes_are_made() {
    let mut origin = Origin::start(&ENVS).await;
    let relay = InProcessRelay::start(relay_config(&origin.url())).await;
    relay.wait_ready().await;
    let mut subs = subscribers(&relay.url(), 10);
    for (_, s) in subs.iter_mut() {
        s.wait_version(1).await;
    }

    for round in 0..4 {
        make_changes(&mut origin, round * 3, 15);
        // Killed: every connection dropped at once, the hub lost (a process dying).
        origin.kill().await;
        make_changes(&mut origin, round * 3 + 1, 10); // written while it is down
        origin.restart().await; // a fresh hub from the "database": the ring is empty
        make_changes(&mut origin, round * 3 + 2, 15);
    }
    assert_converged(&mut subs, &origin).await;
    // SDKs stayed connected to the relay throughout.
    for (_, s) in &subs {
        assert_eq!(s.seen().connections, 1);
    }
    assert!(relay.state.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_loses_its_connection_resumes_with_a_replay() {
    let mut origin = Origin::start(&ENVS).await;
    let relay = InProcessRelay::start(relay_config(&origin.url())).await;
    relay.wait_ready().await;
    let mut subs = subscribers(&relay.url(), 3);
    for (_, s) in subs.iter_mut() {
        s.wait_version(1).await;
    }
    for round in 0..3 {
        make_changes(&mut origin, round, 12);
        origin.drop_connections().await; // the hub and its ring survive
        make_changes(&mut origin, round + 10, 12);
        origin.serve_again().await;
    }
    assert_converged(&mut subs, &origin).await;
    // Resuming within the ring: subscribers never needed a put after the first one.
    for (e, s) in &subs {
        let seen = s.seen();
        let last = origin.model.version(&env(e));
        assert_eq!(seen.changes, (2..=last).collect::<Vec<_>>(), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_upstream_is_down_the_relay_serves_its_last_state_from_memory() {
    let mut origin = Origin::start(&["shop/prod"]).await;
    let mut relay = RelayProcess::start(&origin.url(), free_port().await, &[]).await;
    relay.wait_ready().await;
    let e = env("shop/prod");
    let key = sdk_key("shop/prod");
    let mut open = Subscriber::start(&relay.url(), &key);
    open.wait_version(1).await;
    origin.set("shop/prod", "checkout", json!("on"));
    origin.delete("shop/prod", "initial");
    let last = origin.model.version(&e);
    open.wait_version(last).await;

    // The upstream dies; the relay notices, and its next attempt to reach it fails.
    origin.kill().await;
    relay.wait_log("upstream connection lost").await;
    relay.wait_log("upstream unavailable").await;

    // The snapshot: the last state, with its version.
    let resp = tokio::time::timeout(
        WAIT,
        reqwest::Client::new()
            .get(format!("{}/sdk/v1/snapshot", relay.url()))
            .header("authorization", &key)
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"], format!("\"{last}\"").as_str());
    let snapshot: vexil_schema::EnvironmentSnapshot = resp.json().await.unwrap();
    assert_eq!(snapshot, origin.model.snapshot(&e));

    // A new SDK stream: a put of the last state.
    let mut late = Subscriber::start(&relay.url(), &key);
    late.wait_version(last).await;
    let seen = late.seen();
    assert_eq!(seen.values, origin.model.values(&e));
    assert!(seen.changes.is_empty(), "a put, not changes: {seen:?}");
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);

    // OFREP evaluates on the last state.
    let ofrep = |flag: &str| format!("{}/ofrep/v1/evaluate/flags/{flag}", relay.url());
    let (status, _, body) = post_ofrep(&ofrep("checkout"), &key).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&body["value"], &body["metadata"]["environmentVersion"]),
        (&json!("on"), &json!(last))
    );
    let (status, _, body) = post_ofrep(&ofrep("initial"), &key).await;
    assert_eq!(status, 404, "the deleted flag stays deleted: {body}");

    // Still ready (a last state is not no state), saying where it stands.
    let (status, _, body) = get(&format!("{}/readyz", relay.url()), None).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["upstream"], "disconnected");
    // The stream opened before is untouched.
    let seen = open.seen();
    assert_eq!((seen.connections, seen.disconnects), (1, 0));

    // The upstream returns: both streams follow its changes again.
    origin.restart().await;
    origin.set("shop/prod", "checkout", json!("off"));
    for sub in [&mut open, &mut late] {
        sub.wait_version(last + 1).await;
        let seen = sub.seen();
        assert_eq!(seen.values, origin.model.values(&e));
        assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_reconnect_and_converge_when_the_relay_process_restarts() {
    let mut origin = Origin::start(&ENVS).await;
    let listen = free_port().await;
    let mut relay = RelayProcess::start(&origin.url(), listen, &[]).await;
    relay.wait_ready().await;
    let mut subs = subscribers(&relay.url(), 10);
    for (_, s) in subs.iter_mut() {
        s.wait_version(1).await;
    }
    make_changes(&mut origin, 0, 10);
    assert_converged(&mut subs, &origin).await;

    for round in 1..3 {
        relay.kill().await; // SIGKILL: every SDK connection drops
        make_changes(&mut origin, round, 10);
        relay = RelayProcess::start(&origin.url(), listen, &[]).await;
        relay.wait_ready().await;
        make_changes(&mut origin, round + 10, 10);
        assert_converged(&mut subs, &origin).await;
        for (_, s) in &subs {
            assert_eq!(s.seen().connections, round as u32 + 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_stream_then_exits() {
    let origin = Origin::start(&ENVS).await;
    let mut relay = RelayProcess::start(
        &origin.url(),
        free_port().await,
        &["--drain-window", "300ms"],
    )
    .await;
    relay.wait_ready().await;
    let mut subs = subscribers(&relay.url(), 20);
    for (_, s) in subs.iter_mut() {
        s.wait_version(1).await;
    }
    let status = relay.terminate().await;
    assert!(status.success(), "{status:?}");
    for (_, s) in subs.iter_mut() {
        s.wait_disconnects(1).await;
        assert!(s.seen().violations.is_empty());
    }
}

#[tokio::test]
async fn a_silent_upstream_is_dropped_by_the_read_timeout() {
    // The origin sends keep-alives every 10 minutes; the relay expects a byte every 300 ms.
    let origin = Origin::start_with(&ENVS, std::time::Duration::from_secs(600)).await;
    let mut config = relay_config(&origin.url());
    config.upstream_read_timeout = std::time::Duration::from_millis(300);
    let relay = InProcessRelay::start(config).await;
    relay.wait_ready().await;
    origin.wait_stream_requests(3).await;
    // Still serving its state meanwhile.
    let (status, _, _) = get(
        &format!("{}/sdk/v1/snapshot", relay.url()),
        Some(&sdk_key("shop/prod")),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_refused_relay_key_is_reported_and_not_retried_soon() {
    let origin = Origin::start(&ENVS).await;
    let listen = free_port().await;
    let mut relay = RelayProcess::start(
        &origin.url(),
        listen,
        &["--relay-key", "vxr_wrong", "--upstream-auth-backoff", "1h"],
    )
    .await;
    let line = relay.wait_log("upstream refused this relay").await;
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["status"], 401);
    assert_eq!(line["retry_in"], "3600s");
    let (status, _, body) = get(&format!("{}/readyz", relay.url()), None).await;
    assert_eq!(status, 503);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "loading");
    let (_, _, metrics) = get(&format!("{}/metrics", relay.url()), None).await;
    assert!(
        metrics.contains("vexil_relay_upstream_reconnects_total{reason=\"refused\"} 1"),
        "{metrics}"
    );
    assert_eq!(origin.stream_requests(), 1);
}

/// The systemd unit's `ExecReload` sends SIGHUP, which reloads TLS files. A relay without TLS
/// has nothing to reload: it logs so and keeps serving (the signal's default action would
/// have ended it), and its subscribers keep receiving changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_tls_is_logged_and_the_relay_keeps_serving() {
    let mut origin = Origin::start(&["shop/prod"]).await;
    let mut relay = RelayProcess::start(&origin.url(), free_port().await, &[]).await;
    relay.wait_ready().await;
    let mut sub = Subscriber::start(&relay.url(), &sdk_key("shop/prod"));
    sub.wait_version(1).await;

    for _ in 0..2 {
        relay.hangup();
        relay.wait_log("SIGHUP received: nothing to reload").await;
    }
    assert!(relay.running(), "the relay exited on SIGHUP");
    let health = reqwest::get(format!("{}/healthz", relay.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    origin.set("shop/prod", "checkout", json!("on"));
    sub.wait_version(origin.model.version(&env("shop/prod")))
        .await;
    assert!(sub.seen().violations.is_empty());
}
