//! PostgreSQL stopped under a running server: readiness says so within a second, evaluation
//! keeps working from memory, writes fail fast with `503` and `Retry-After`, and everything
//! recovers when the database is back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;
use tokio::net::TcpListener;
use vexil_server::{Config, Server};

use crate::expect;
use vexil_testkit::PostgresCluster;

struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn evaluate(&self) -> reqwest::Response {
        self.req(reqwest::Method::POST, "/api/v1/evaluate")
            .json(
                &json!({"project": "p", "environment": "e", "flag": "f", "context": {"key": "u1"}}),
            )
            .send()
            .await
            .unwrap()
    }

    async fn set_on(&self, on: bool) -> reqwest::Response {
        self.req(
            reqwest::Method::PATCH,
            "/api/v1/projects/p/flags/f/environments/e",
        )
        .json(&json!({"on": on}))
        .send()
        .await
        .unwrap()
    }

    async fn snapshot(&self, sdk_key: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/sdk/v1/snapshot", self.base))
            .bearer_auth(sdk_key)
            .send()
            .await
            .unwrap()
    }

    async fn readyz(&self) -> reqwest::Response {
        self.client
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .unwrap()
    }
}

/// Runs `f`, returning its result and how long it took.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let t = Instant::now();
    let out = f.await;
    (out, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_fails_fast_and_recovers() {
    vexil_testkit::init_tracing();
    let cluster = Arc::new(
        tokio::task::spawn_blocking(|| {
            PostgresCluster::start()
                .unwrap_or_else(|e| panic!("a throwaway PostgreSQL cluster: {e}"))
        })
        .await
        .unwrap(),
    );
    let mut admin = sqlx::PgConnection::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    sqlx::raw_sql("CREATE DATABASE vexil")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();

    let token = format!("vxa_{}", uuid::Uuid::new_v4().simple());
    let mut config = Config::with_database(cluster.url("vexil"));
    config.bootstrap_token = Some(token.clone());
    config.database_probe_ms = 200;
    let server = Server::build(config).await.expect("the server starts");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    let api = Api {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        base,
        token,
    };

    for (path, body) in [
        ("/api/v1/projects", json!({"key": "p", "name": "p"})),
        (
            "/api/v1/projects/p/environments",
            json!({"key": "e", "name": "e"}),
        ),
        (
            "/api/v1/projects/p/flags",
            json!({"key": "f", "name": "f", "kind": "boolean", "variations": [{"value": true}, {"value": false}]}),
        ),
    ] {
        expect(
            api.req(reqwest::Method::POST, path)
                .json(&body)
                .send()
                .await
                .unwrap(),
            201,
        )
        .await;
    }
    expect(
        api.req(
            reqwest::Method::PUT,
            "/api/v1/projects/p/flags/f/environments/e",
        )
        .json(&json!({"on": true, "off_variation": 1, "fallthrough": {"variation": 0}}))
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(expect(api.evaluate().await, 200).await["value"], true);
    let sdk = expect(
        api.req(
            reqwest::Method::POST,
            "/api/v1/projects/p/environments/e/sdk-keys",
        )
        .json(&json!({"name": "web"}))
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    let sdk_key = sdk["secret"].as_str().unwrap().to_owned();
    assert_eq!(api.snapshot(&sdk_key).await.status(), 200);
    assert_eq!(api.readyz().await.status(), 200);

    // The outage.
    let c = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || c.stop_fast().expect("PostgreSQL stops"))
        .await
        .unwrap();

    let (res, took) = timed(api.readyz()).await;
    assert_eq!(res.status(), 503);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["type"], "urn:vexil:problem:database-unreachable", "{p}");
    assert!(
        took < Duration::from_millis(1500),
        "readiness took {took:?}"
    );

    let (res, took) = timed(api.evaluate()).await;
    let body: Value = expect(res, 200).await;
    assert_eq!(body["value"], true, "evaluation is served from memory");
    assert!(
        took < Duration::from_millis(1500),
        "evaluation took {took:?}"
    );

    // SDKs with known keys are served from memory; an unknown key needs the database and is
    // answered 503 once a connection attempt has failed, not after the pool's 10 s.
    let (res, took) = timed(api.snapshot(&sdk_key)).await;
    assert_eq!(res.status(), 200);
    assert!(
        took < Duration::from_millis(1500),
        "SDK snapshot took {took:?}"
    );
    let unknown = format!("vxs_{}", "0".repeat(64));
    let (res, took) = timed(api.snapshot(&unknown)).await;
    assert_eq!(res.status(), 503);
    assert!(
        took < Duration::from_secs(4),
        "unknown SDK key took {took:?}"
    );

    for attempt in 0..2 {
        let (res, took) = timed(api.set_on(false)).await;
        assert_eq!(res.status(), 503, "attempt {attempt}");
        let retry = res
            .headers()
            .get("retry-after")
            .expect("Retry-After on a 503")
            .clone();
        assert!(retry.to_str().unwrap().parse::<u32>().unwrap() >= 1);
        assert!(
            took < Duration::from_secs(3),
            "write {attempt} took {took:?}"
        );
    }
    let (res, took) = timed(
        api.req(reqwest::Method::GET, "/api/v1/projects/p/flags")
            .send(),
    )
    .await;
    assert_eq!(res.unwrap().status(), 503);
    // Reads need the database: they fail once a connection attempt has failed for 2 s.
    assert!(took < Duration::from_secs(4), "read took {took:?}");

    // Back again: readiness, writes and the change feed recover.
    let c = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || c.restart().expect("PostgreSQL starts again"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.readyz().await.status() != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready again after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let res = api.set_on(false).await;
        if res.status() == 200 {
            break;
        }
        assert_eq!(res.status(), 503);
        assert!(Instant::now() < deadline, "writes did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = expect(api.evaluate().await, 200).await;
        if body["value"] == false {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the write never reached evaluation: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
}
