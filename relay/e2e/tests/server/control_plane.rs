//! Server → relay → subscriber with the real control plane on PostgreSQL.

use serde_json::{Value, json};
use vexil_schema::EnvironmentSnapshot;
use vexil_testkit::{Backend, TestApp, spawn_app, spawn_app_with};

use crate::cable::Cable;
use crate::harness::*;

const ENVS: [&str; 2] = ["prod", "dev"];

/// The keys a test needs, created through the API.
struct Keys {
    sdk: Vec<(String, String)>,
    relay: String,
}

async fn expect(res: reqwest::Response, status: u16) -> Value {
    let got = res.status().as_u16();
    let body = res.text().await.unwrap();
    assert_eq!(got, status, "{body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// Project `shop` with environments prod and dev, an SDK key each, and a relay key for both.
async fn setup(app: &TestApp) -> Keys {
    app.project("shop", &ENVS).await;
    let mut sdk = Vec::new();
    for e in ENVS {
        let body = expect(
            app.post(
                &format!("/api/v1/projects/shop/environments/{e}/sdk-keys"),
                &json!({"name": "tests"}),
            )
            .send()
            .await
            .unwrap(),
            201,
        )
        .await;
        sdk.push((e.to_owned(), body["secret"].as_str().unwrap().to_owned()));
    }
    let envs: Vec<Value> = ENVS
        .iter()
        .map(|e| json!({"project": "shop", "environment": e}))
        .collect();
    let body = expect(
        app.post(
            "/api/v1/relay-keys",
            &json!({"name": "cluster-1", "environments": envs}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    Keys {
        sdk,
        relay: body["secret"].as_str().unwrap().to_owned(),
    }
}

/// Change number `i` through `app`'s API: a new flag (a new version of every environment)
/// and, every other time, a configuration change of an earlier flag in prod.
async fn change(app: &TestApp, admin: &str, i: usize) {
    let flag = json!({"key": format!("f{i}"), "name": format!("f{i}"), "kind": "string",
                      "variations": [{"value": format!("off-{i}")}, {"value": format!("on-{i}")}]});
    expect(
        app.request_as(reqwest::Method::POST, "/api/v1/projects/shop/flags", admin)
            .json(&flag)
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    if i % 2 == 1 {
        let path = format!("/api/v1/projects/shop/flags/f{}/environments/prod", i - 1);
        expect(
            app.request_as(reqwest::Method::PATCH, &path, admin)
                .json(&json!({"on": true, "fallthrough": {"variation": 1}}))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
    }
}

async fn snapshot(app: &TestApp, admin: &str, env: &str) -> EnvironmentSnapshot {
    let path = format!("/api/v1/projects/shop/environments/{env}/snapshot");
    let body = expect(
        app.request_as(reqwest::Method::GET, &path, admin)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    serde_json::from_value(body).unwrap()
}

/// Every subscriber holds exactly the database's state, reached through changes that each
/// followed the version held.
async fn assert_converged(subs: &mut [(String, Subscriber)], app: &TestApp, admin: &str) {
    for (e, sub) in subs.iter_mut() {
        let want = snapshot(app, admin, e).await;
        sub.wait_version(want.version).await;
        let seen = sub.seen();
        assert_eq!(seen.version, Some(want.version), "{e}");
        let want_flags: std::collections::BTreeMap<String, Value> = want
            .flags
            .iter()
            .map(|f| (f.key.to_string(), serde_json::to_value(f).unwrap()))
            .collect();
        assert_eq!(seen.flags, want_flags, "{e}");
        assert!(seen.violations.is_empty(), "{e}: {:?}", seen.violations);
    }
}

fn subscribers(url: &str, keys: &Keys, per_env: usize) -> Vec<(String, Subscriber)> {
    keys.sdk
        .iter()
        .flat_map(|(e, k)| (0..per_env).map(move |_| (e.clone(), Subscriber::start(url, k))))
        .collect()
}

fn config(upstream: &str, relay_key: &str) -> vexil_relay::RelayConfig {
    let mut c = relay_config(upstream);
    c.relay_key = relay_key.to_owned();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_subscribers_through_a_relay_and_a_chain_of_relays() {
    let app = spawn_app(Backend::Postgres).await;
    let keys = setup(&app).await;
    change(&app, &app.admin_token, 0).await;

    let first = InProcessRelay::start(config(&app.base_url, &keys.relay)).await;
    first.wait_ready().await;
    let second = InProcessRelay::start(config(&first.url(), &keys.relay)).await;
    second.wait_ready().await;

    let mut subs = subscribers(&first.url(), &keys, 2);
    subs.extend(subscribers(&second.url(), &keys, 2));
    assert_converged(&mut subs, &app, &app.admin_token).await;
    for i in 1..=12 {
        change(&app, &app.admin_token, i).await;
    }
    assert_converged(&mut subs, &app, &app.admin_token).await;
    for (_, s) in &subs {
        assert_eq!(s.seen().connections, 1);
    }

    // OFREP at the edge evaluates what the server evaluates.
    let (prod_key, dev_key) = (&keys.sdk[0].1, &keys.sdk[1].1);
    let eval = |base: String, key: String| async move {
        let res = reqwest::Client::new()
            .post(format!("{base}/ofrep/v1/evaluate/flags/f0"))
            .bearer_auth(key)
            .json(&json!({"context": {"targetingKey": "u1"}}))
            .send()
            .await
            .unwrap();
        expect(res, 200).await
    };
    let at_second = eval(second.url(), prod_key.clone()).await;
    assert_eq!(at_second["value"], "on-0");
    assert_eq!(at_second["reason"], "DEFAULT");
    assert_eq!(eval(second.url(), dev_key.clone()).await["value"], "off-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_converge_while_upstream_servers_die_and_return() {
    // Two control-plane instances on one database, as replicas behind a load balancer. B
    // owns the database and stays up; A is killed and restarted.
    let b = spawn_app(Backend::Postgres).await;
    let keys = setup(&b).await;
    let admin = b.admin_token.clone();
    let database_url = b.database.url.clone();
    let same_db = |c: &mut vexil_server::Config| c.database_url = database_url.clone();
    let a = spawn_app_with(Backend::Postgres, same_db).await;
    change(&b, &admin, 0).await;

    let mut cable = Cable::connect(a.addr).await;
    // The flag overrides the harness's VEXIL_RELAY_KEY.
    let mut relay = RelayProcess::start(
        &cable.url(),
        free_port().await,
        &["--relay-key", &keys.relay],
    )
    .await;
    relay.wait_ready().await;
    let mut subs = subscribers(&relay.url(), &keys, 5);
    assert_converged(&mut subs, &b, &admin).await;

    let mut a = Some(a);
    let mut i = 1;
    for _round in 0..3 {
        for _ in 0..4 {
            change(&b, &admin, i).await;
            i += 1;
        }
        // Server A dies: every connection through it drops at once.
        cable.cut().await;
        if let Some(old) = a.take() {
            old.stop().await;
        }
        for _ in 0..4 {
            change(&b, &admin, i).await; // written through the surviving replica
            i += 1;
        }
        // A restarts (fresh process state, same database) and the relay reaches it again.
        let restarted = spawn_app_with(Backend::Postgres, same_db).await;
        cable.reconnect(restarted.addr).await;
        for _ in 0..4 {
            change(&restarted, &admin, i).await;
            i += 1;
        }
        a = Some(restarted);
    }
    assert_converged(&mut subs, &b, &admin).await;
    for (_, s) in &subs {
        assert_eq!(
            s.seen().connections,
            1,
            "SDKs stayed connected to the relay"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_the_server_are_enforced_at_the_relay() {
    let app = spawn_app(Backend::Postgres).await;
    let keys = setup(&app).await;
    // A relay key scoped to prod only.
    let body = expect(
        app.post(
            "/api/v1/relay-keys",
            &json!({"name": "prod-only", "environments": [{"project": "shop", "environment": "prod"}]}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    let prod_only = body["secret"].as_str().unwrap().to_owned();
    let relay = InProcessRelay::start(config(&app.base_url, &prod_only)).await;
    relay.wait_ready().await;
    let snapshot_url = format!("{}/sdk/v1/snapshot", relay.url());
    let (prod_key, dev_key) = (&keys.sdk[0].1, &keys.sdk[1].1);

    assert_eq!(get(&snapshot_url, Some(prod_key)).await.0, 200);
    // A dev key is unknown to a prod-only relay; a made-up key too.
    assert_eq!(get(&snapshot_url, Some(dev_key)).await.0, 401);
    assert_eq!(get(&snapshot_url, Some("vxs_made-up")).await.0, 401);
    // The relay's own key is not an SDK key.
    assert_eq!(get(&snapshot_url, Some(&prod_only)).await.0, 403);

    // A new SDK key created on the server works at the relay once its hash arrives.
    let body = expect(
        app.post(
            "/api/v1/projects/shop/environments/prod/sdk-keys",
            &json!({"name": "late"}),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    let late = body["secret"].as_str().unwrap().to_owned();
    relay
        .wait_until("the new key is known", |r| {
            r.hub.keys().lookup(&late).is_some()
        })
        .await;
    assert_eq!(get(&snapshot_url, Some(&late)).await.0, 200);

    // The server refuses unknown keys on its relay stream (401, no body) and SDK keys, which
    // it knows but which may not stream the relay protocol (403, with the reason).
    let (status, _, body) = get(&app.url("/relay/v1/stream"), Some("vxr_made-up")).await;
    assert_eq!((status, body.as_str()), (401, ""));
    let (status, _, body) = get(&app.url("/relay/v1/stream"), Some(prod_key.as_str())).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("use a relay key"), "{body}");
}

/// Key edits travel as `delta` / `env-delta` events through a chain of two relays: every
/// subscriber converges on the database's targets, and OFREP at the far relay evaluates the
/// edited targets (its compiled snapshot applied the delta in place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_relays_forwards_deltas() {
    let app = spawn_app(Backend::Postgres).await;
    let keys = setup(&app).await;
    change(&app, &app.admin_token, 0).await;
    let first = InProcessRelay::start(config(&app.base_url, &keys.relay)).await;
    first.wait_ready().await;
    let second = InProcessRelay::start(config(&first.url(), &keys.relay)).await;
    second.wait_ready().await;
    let mut subs = subscribers(&first.url(), &keys, 1);
    subs.extend(subscribers(&second.url(), &keys, 1));
    assert_converged(&mut subs, &app, &app.admin_token).await;

    let on = json!({"on": true});
    let config = "/api/v1/projects/shop/flags/f0/environments/prod";
    expect(app.patch(config, &on).send().await.unwrap(), 200).await;
    let path = "/api/v1/projects/shop/flags/f0/environments/prod/targets";
    for i in 0..5usize {
        let remove: Vec<String> = (0..i)
            .skip(i.saturating_sub(1))
            .map(|j| format!("vip-{j}"))
            .collect();
        let body = json!({"targets": [{"variation": 1, "add": [format!("vip-{i}")],
                                       "remove": remove}]});
        expect(app.post(path, &body).send().await.unwrap(), 200).await;
    }
    assert_converged(&mut subs, &app, &app.admin_token).await;
    for (_, s) in &subs {
        assert_eq!(s.seen().connections, 1, "deltas never forced a reconnect");
    }
    let eval = |user: &'static str| {
        let base = second.url();
        let key = keys.sdk[0].1.clone();
        async move {
            let res = reqwest::Client::new()
                .post(format!("{base}/ofrep/v1/evaluate/flags/f0"))
                .bearer_auth(key)
                .json(&json!({"context": {"targetingKey": user}}))
                .send()
                .await
                .unwrap();
            expect(res, 200).await
        }
    };
    let vip = eval("vip-4").await;
    assert_eq!(
        (vip["value"].as_str(), vip["reason"].as_str()),
        (Some("on-0"), Some("TARGETING_MATCH"))
    );
    assert_eq!(eval("vip-0").await["value"], "off-0");
}
