//! `deploy/observability/`: the alert rules pass `promtool check rules` and their unit tests
//! (`promtool test rules alerts.test.yml`), every alert has its
//! runbook, the Grafana dashboard is well formed, and every metric the rules and the dashboard
//! name is exported by a live control plane (PostgreSQL) or relay, scraped here. Also the
//! relay's `/metrics` options: its own listener and a bearer token.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use vexil_testkit::{Backend, TestApp, spawn_app};

use crate::harness::{InProcessRelay, relay_config};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn expect(res: reqwest::Response, status: u16) -> Value {
    let got = res.status().as_u16();
    let body = res.text().await.unwrap();
    assert_eq!(got, status, "{body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// Every `vexil_…` metric name in `expr`, histogram suffixes removed.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("vexil_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_owned());
        rest = &tail[end..];
    }
    out
}

/// The metric families of a Prometheus text exposition (from its `# TYPE` lines, and the
/// names of its samples), checking each sample line has a name and a numeric value.
fn families(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            out.insert(rest.split_whitespace().next().unwrap().to_owned());
        } else if !line.starts_with('#') {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            assert!(
                value.parse::<f64>().is_ok() || value == "+Inf" || value == "-Inf",
                "{line}"
            );
            let name = series.split('{').next().unwrap();
            out.insert(name.to_owned());
        }
    }
    out
}

async fn scrape(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

#[test]
fn alert_rules_pass_promtool_and_each_has_a_runbook() {
    let rules = repo_root().join("deploy/observability/alerts.yml");
    let promtool = ["/usr/bin/promtool", "promtool"]
        .into_iter()
        .find(|p| {
            std::process::Command::new(p)
                .arg("--version")
                .output()
                .is_ok()
        })
        .expect("promtool is required (Debian's `prometheus` package; .ci/run installs it)");
    let out = std::process::Command::new(promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The rules' unit tests: the fleet alerts fire on the series that should raise them.
    let out = std::process::Command::new(promtool)
        .args(["test", "rules"])
        .arg(repo_root().join("deploy/observability/alerts.test.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&rules).unwrap();
    let alerts: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for alert in &alerts {
        let page = format!("docs/runbooks/{alert}.md");
        assert!(
            text.contains(&format!("runbook_url: {page}")),
            "{alert} links its runbook"
        );
        let body = std::fs::read_to_string(repo_root().join(&page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        for section in ["## Symptoms", "## Diagnose", "## Remedy", "## Verify"] {
            assert!(body.contains(section), "{page} has {section}");
        }
    }
    // The named situations have pages too.
    for page in [
        "change-not-reaching-sdks",
        "sdk-connection-storm",
        "relay-cannot-reach-upstream",
        "postgresql-down",
        "lost-admin-token",
        "key-leaked",
    ] {
        let path = repo_root().join(format!("docs/runbooks/{page}.md"));
        assert!(path.exists(), "{}", path.display());
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The metric names the rules and the dashboard use, and a check of the dashboard's shape.
fn referenced_metrics() -> BTreeSet<String> {
    let root = repo_root();
    let rules = std::fs::read_to_string(root.join("deploy/observability/alerts.yml")).unwrap();
    let mut names = BTreeSet::new();
    for line in rules.lines().filter(|l| !l.trim_start().starts_with('#')) {
        // Annotations hold queries too; the metric names are all that matters here.
        names.extend(metric_names(line));
    }
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/observability/grafana-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut graphs = 0;
    for p in panels {
        let id = p["id"].as_u64().expect("a panel id");
        assert!(ids.insert(id), "panel id {id} is unique");
        let pos = &p["gridPos"];
        let (x, w) = (pos["x"].as_u64().unwrap(), pos["w"].as_u64().unwrap());
        assert!(x + w <= 24 && pos["h"].as_u64().unwrap() > 0, "{p}");
        if p["type"] == "row" {
            continue;
        }
        graphs += 1;
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{p}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{p}");
        for t in targets {
            let expr = t["expr"].as_str().expect("an expr");
            let used = metric_names(expr);
            assert!(!used.is_empty(), "{expr} names a Vexil metric");
            names.extend(used);
        }
    }
    assert!(graphs >= 20, "{graphs} graphs");
    names
}

/// Project `shop`/`prod`, an SDK key, a relay key, one flag.
async fn setup(app: &TestApp) -> (String, String) {
    app.project("shop", &["prod"]).await;
    let sdk = expect(
        app.post(
            "/api/v1/projects/shop/environments/prod/sdk-keys",
            &json!({"name": "obs"}),
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

async fn ofrep(base: &str, key: &str) {
    let res = reqwest::Client::new()
        .post(format!("{base}/ofrep/v1/evaluate/flags/checkout"))
        .bearer_auth(key)
        .json(&json!({"context": {"targetingKey": "u1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_rules_use_is_exported() {
    let wanted = referenced_metrics();
    let app = spawn_app(Backend::Postgres).await;
    let (sdk, relay_key) = setup(&app).await;
    let mut config = relay_config(&app.base_url);
    config.relay_key = relay_key.clone();
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config.metrics_token = Some("scrape-me".into());
    config.fleet_report_min_gap = std::time::Duration::from_millis(100);
    let mut relay = InProcessRelay::start(config).await;
    relay.wait_ready().await;
    let metrics_addr = relay.metrics_addr.expect("a metrics listener");
    // A relay chained below it, whose fleet reports it forwards.
    let mut chained = relay_config(&relay.url());
    chained.relay_key = relay_key;
    chained.metrics = false;
    chained.fleet_report_min_gap = std::time::Duration::from_millis(100);
    let mut chained = InProcessRelay::start(chained).await;
    chained.wait_ready().await;

    // Traffic that creates the series: an SDK stream, a change, evaluations on both, a
    // refused authentication, events through the relay.
    let stream = reqwest::Client::new()
        .get(format!("{}/sdk/v1/stream", relay.url()))
        .header("authorization", &sdk)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let chained_stream = reqwest::Client::new()
        .get(format!("{}/sdk/v1/stream", chained.url()))
        .header("authorization", &sdk)
        .send()
        .await
        .unwrap();
    assert_eq!(chained_stream.status(), 200);
    expect(
        app.patch(
            "/api/v1/projects/shop/flags/checkout/environments/prod",
            &json!({"on": true}),
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    ofrep(&app.base_url, &sdk).await;
    ofrep(&relay.url(), &sdk).await;
    let events = reqwest::Client::new()
        .post(format!("{}/events/v1/bulk", relay.url()))
        .bearer_auth(&sdk)
        .header("x-vexil-event-schema", "1")
        .json(&json!({"schema_version": 1,
            "sdk": {"name": "test", "version": "0", "instance_id": "i-1"},
            "events": [{"kind": "custom", "time": now_ms(), "event_key": "buy", "context_key": "u1"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let refused = reqwest::Client::new()
        .get(app.url("/api/v1/projects"))
        .bearer_auth("vxa_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let version = expect(
        app.get("/api/v1/projects/shop/environments/prod")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await["version"]
        .as_u64()
        .unwrap();
    relay
        .wait_until("the relay holds the change", |r| {
            r.hub
                .version(&vexil_schema::stream::EnvironmentId::parse("shop/prod").unwrap())
                == Some(version)
        })
        .await;

    // The relay's metrics: not on its public port, only on its own, only with the token.
    assert_eq!(
        scrape(&format!("{}/metrics", relay.url()), None)
            .await
            .status(),
        404
    );
    let relay_metrics = format!("http://{metrics_addr}/metrics");
    assert_eq!(scrape(&relay_metrics, None).await.status(), 401);
    assert_eq!(scrape(&relay_metrics, Some("nope")).await.status(), 401);
    // Fleet series appear once reports (the chained relay's forwarded) reach the server and
    // the change is tracked: scrape until every family is there.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let res = scrape(&relay_metrics, Some("scrape-me")).await;
        assert_eq!(res.status(), 200);
        let mut exported = families(&res.text().await.unwrap());
        let res = scrape(&app.url("/metrics"), None).await;
        assert_eq!(res.status(), 200);
        exported.extend(families(&res.text().await.unwrap()));
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|m| !exported.contains(*m) && !exported.contains(&format!("{m}_bucket")))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "named by the dashboard or the rules but not exported: {missing:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop((stream, chained_stream));
    chained.stop().await;
    relay.stop().await;
    app.stop().await;
}

/// The samples of `name` whose labels include every one of `labels`, summed, from a text
/// exposition.
fn sum_of(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

/// A relay binary in its own process (so that its registry holds its own series only):
/// HTTP requests by route template and status, OFREP evaluations by flag and reason, events
/// received and forwarded, each counted exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_process_counts_its_requests_evaluations_and_events() {
    let app = spawn_app(Backend::Sqlite).await;
    let (sdk, relay_key) = setup(&app).await;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut relay = crate::harness::RelayProcess::start(
        &app.base_url,
        listen,
        &["--relay-key", &relay_key, "--fleet-report-interval", "0s"],
    )
    .await;
    relay.wait_ready().await;
    for _ in 0..3 {
        ofrep(&relay.url(), &sdk).await;
    }
    let unknown = reqwest::Client::new()
        .post(format!("{}/ofrep/v1/evaluate/flags/nope", relay.url()))
        .bearer_auth(&sdk)
        .json(&json!({"context": {"targetingKey": "u1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let events = reqwest::Client::new()
        .post(format!("{}/events/v1/bulk", relay.url()))
        .bearer_auth(&sdk)
        .header("x-vexil-event-schema", "1")
        .json(&json!({"schema_version": 1,
            "sdk": {"name": "test", "version": "0", "instance_id": "i-1"},
            "events": [{"kind": "custom", "time": now_ms(), "event_key": "buy", "context_key": "u1"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);

    let res = scrape(&format!("{}/metrics", relay.url()), None).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    families(&text);
    let env = ("environment", "shop/prod");
    assert_eq!(
        sum_of(
            &text,
            "vexil_flag_evaluations_total",
            &[env, ("flag", "checkout")]
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        sum_of(
            &text,
            "vexil_flag_evaluations_total",
            &[env, ("flag", "checkout"), ("reason", "OFF")]
        ),
        3.0
    );
    assert_eq!(
        sum_of(
            &text,
            "vexil_flag_evaluations_total",
            &[env, ("flag", "__unknown__")]
        ),
        1.0
    );
    let route = ("route", "/ofrep/v1/evaluate/flags/{key}");
    assert_eq!(
        sum_of(
            &text,
            "vexil_http_requests_total",
            &[route, ("status", "200")]
        ),
        3.0
    );
    assert_eq!(
        sum_of(
            &text,
            "vexil_http_requests_total",
            &[route, ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        sum_of(
            &text,
            "vexil_http_request_duration_seconds_bucket",
            &[route, ("status", "200"), ("le", "+Inf")]
        ),
        3.0
    );
    assert!(
        !text.contains("flags/nope"),
        "raw paths never become labels"
    );
    // The custom event, plus the OFREP exposures, handed to the forwarder and acknowledged.
    let received = sum_of(&text, "vexil_relay_events_received_total", &[]);
    let forwarded = sum_of(&text, "vexil_relay_events_forwarded_total", &[]);
    assert!(
        received >= 1.0 && forwarded >= 1.0,
        "{received} {forwarded}"
    );
    relay.kill().await;
    app.stop().await;
}
