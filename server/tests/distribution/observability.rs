//! Metrics of the control plane on both engines: HTTP requests by route template and status,
//! evaluations by flag/variation/reason, database latency and pool use, the feed, events
//! received/accepted/stored/rejected; `/metrics`
//! behind a token and on a listener of its own. Scraped over real sockets and parsed.

use std::collections::BTreeMap;

use serde_json::json;
use tokio::net::TcpListener;
use vexil_server::{Config, Server, StartError};
use vexil_testkit::{Backend, ServerTask, TestDatabase, spawn_app, spawn_app_with};

use crate::helpers::*;

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text exposition format strictly enough to catch a malformed line:
/// every non-comment line is `name{label="value",…} number`, and every sample's family has a
/// `# TYPE` line before it.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut typed: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().expect("a TYPE line names a family");
            let kind = parts.next().expect("a TYPE line has a kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.push(name.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let mut labels = BTreeMap::new();
                // Label values here never hold `",`; split on it.
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| typed.iter().any(|t| t == f))
            .unwrap_or(&name);
        assert!(typed.iter().any(|t| t == family), "{name} has no TYPE line");
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The value of the sample `name` whose labels include `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// The sum of the samples of `name` whose labels include `labels` (0 when none).
pub fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("scrape")
}

async fn metrics_of(url: &str) -> Vec<Sample> {
    let res = scrape(url, None).await;
    assert_eq!(res.status(), 200);
    parse_exposition(&res.text().await.unwrap())
}

async fn ofrep(base: &str, key: &str, flag: &str, ctx: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/ofrep/v1/evaluate/flags/{flag}"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(format!(r#"{{"context":{{"targetingKey":"{ctx}"}}}}"#))
        .send()
        .await
        .unwrap()
}

async fn metric_families_are_exported(backend: Backend, project: &str) {
    let app = spawn_app(backend).await;
    app.project(project, &["prod"]).await;
    let key = sdk_key(&app, project, "prod").await;
    let flag = "obs-checkout";
    expect(
        app.post(
            &format!("/api/v1/projects/{project}/flags"),
            &bool_flag(flag),
        )
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    expect(
        app.put(
            &config_path(project, flag, "prod"),
            &json!({"on": true, "off_variation": 1, "fallthrough": {"variation": 0},
                    "targets": [{"variation": 1, "values": ["vip"]}]}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    for ctx in ["a", "b", "c"] {
        assert_eq!(ofrep(&app.base_url, &key, flag, ctx).await.status(), 200);
    }
    assert_eq!(ofrep(&app.base_url, &key, flag, "vip").await.status(), 200);
    assert_eq!(
        ofrep(&app.base_url, &key, "no-such-flag", "a")
            .await
            .status(),
        404
    );
    expect(
        app.post(
            "/api/v1/evaluate",
            &json!({"project": project, "environment": "prod", "flag": flag,
                    "context": {"key": "d"}}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    expect(
        app.post(
            "/api/v1/evaluate/batch",
            &json!({"project": project, "environment": "prod", "flags": [flag],
                    "context": {"key": "e"}}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        app.get("/api/v1/projects/nope")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Events: two valid ones and one of an unknown kind. The families carry no engine label
    // and other tests of this binary post events too: each counter must grow by at least
    // this batch.
    let before = metrics_of(&app.url("/metrics")).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let events = json!({"schema_version": 1,
    "sdk": {"name": "test", "version": "0", "instance_id": "i-1"},
    "events": [
        {"kind": "custom", "time": now, "event_key": "buy", "context_key": "u1"},
        {"kind": "custom", "time": now, "event_key": "buy", "context_key": "u2"},
        {"kind": "teleport", "time": now},
    ]});
    let answer = expect(
        reqwest::Client::new()
            .post(app.url("/events/v1/bulk"))
            .bearer_auth(&key)
            .header("x-vexil-event-schema", "1")
            .json(&events)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(answer["accepted"], 2, "{answer}");

    let samples = metrics_of(&app.url("/metrics")).await;
    for (family, labels, at_least) in [
        ("vexil_events_received_total", &[][..], 3.0),
        ("vexil_events_accepted_total", &[], 2.0),
        ("vexil_events_stored_total", &[], 2.0),
        (
            "vexil_events_rejected_total",
            &[("reason", "malformed")],
            1.0,
        ),
    ] {
        let grew = total(&samples, family, labels) - total(&before, family, labels);
        assert!(grew >= at_least, "{family} grew by {grew} on {backend:?}");
    }
    assert!(
        samples
            .iter()
            .any(|s| s.name == "vexil_events_batch_seconds_count" && s.value > 0.0)
    );
    let env = format!("{project}/prod");
    let evals = |variation: &str, reason: &str| {
        value(
            &samples,
            "vexil_flag_evaluations_total",
            &[
                ("environment", env.as_str()),
                ("flag", flag),
                ("variation", variation),
                ("reason", reason),
            ],
        )
    };
    // Three OFREP fallthroughs, one through /api/v1/evaluate and one through its batch; one
    // OFREP target match.
    assert_eq!(evals("0", "FALLTHROUGH"), Some(5.0));
    assert_eq!(evals("1", "TARGET_MATCH"), Some(1.0));
    assert_eq!(
        value(
            &samples,
            "vexil_flag_evaluations_total",
            &[("environment", env.as_str()), ("flag", "__unknown__")],
        ),
        Some(1.0)
    );
    // HTTP by route template, never by raw path.
    let ofrep_ok = value(
        &samples,
        "vexil_http_requests_total",
        &[
            ("method", "POST"),
            ("route", "/ofrep/v1/evaluate/flags/{key}"),
            ("status", "200"),
        ],
    );
    assert!(ofrep_ok >= Some(4.0), "{ofrep_ok:?}");
    assert!(
        value(
            &samples,
            "vexil_http_request_duration_seconds_bucket",
            &[
                ("method", "POST"),
                ("route", "/ofrep/v1/evaluate/flags/{key}"),
                ("status", "200"),
                ("le", "+Inf"),
            ],
        ) >= Some(4.0)
    );
    assert!(
        value(
            &samples,
            "vexil_http_requests_total",
            &[("route", "/api/v1/projects/{project}"), ("status", "404")],
        ) >= Some(1.0)
    );
    assert!(
        !samples.iter().any(|s| s
            .labels
            .get("route")
            .is_some_and(|r| r.contains("no-such-flag"))),
        "raw paths never become labels"
    );
    // The database, labelled by engine.
    let engine = match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    for op in ["execute", "fetch", "commit"] {
        assert!(
            value(
                &samples,
                "vexil_db_query_duration_seconds_count",
                &[("backend", engine), ("operation", op)],
            ) > Some(0.0),
            "{op} on {engine}"
        );
    }
    assert!(
        value(
            &samples,
            "vexil_db_acquire_duration_seconds_count",
            &[("backend", engine)]
        ) > Some(0.0)
    );
    assert!(
        value(
            &samples,
            "vexil_db_pool_max_connections",
            &[("backend", engine)]
        ) >= Some(1.0)
    );
    assert!(
        value(
            &samples,
            "vexil_db_pool_connections",
            &[("backend", engine), ("state", "idle")]
        )
        .is_some()
    );
    // The feed's series exist on both engines.
    assert_eq!(
        value(&samples, "vexil_feed_listener_connected", &[]),
        Some(1.0)
    );
    assert!(value(&samples, "vexil_feed_notifications_total", &[]) > Some(0.0));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_families_are_exported_on_postgres() {
    metric_families_are_exported(Backend::Postgres, "obspg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_families_are_exported_on_sqlite() {
    metric_families_are_exported(Backend::Sqlite, "obslite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_a_token() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.metrics_token = Some("scrape-secret".into());
    })
    .await;
    let url = app.url("/metrics");
    assert_eq!(scrape(&url, None).await.status(), 401);
    assert_eq!(scrape(&url, Some("wrong")).await.status(), 401);
    let ok = scrape(&url, Some("scrape-secret")).await;
    assert_eq!(ok.status(), 200);
    parse_exposition(&ok.text().await.unwrap());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_a_listener_of_their_own() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let mut config = Config::with_database(database.url.clone());
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config.drain_ms = 100;
    let server = Server::build(config).await.expect("starts");
    let metrics_addr = server.metrics_addr().expect("a metrics listener");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task: ServerTask<StartError> = ServerTask::spawn("the server", move |stop| {
        server.serve(listener, async {
            let _ = stop.await;
        })
    });
    // Not on the public port; on its own.
    assert_eq!(
        scrape(&format!("http://{addr}/metrics"), None)
            .await
            .status(),
        404
    );
    let samples = metrics_of(&format!("http://{metrics_addr}/metrics")).await;
    assert!(
        value(
            &samples,
            "vexil_db_pool_max_connections",
            &[("backend", "sqlite")]
        )
        .is_some()
    );
    task.stop(WAIT).await;
    // It stops with the server.
    assert!(
        tokio::net::TcpStream::connect(metrics_addr).await.is_err(),
        "the metrics listener is closed"
    );
}
