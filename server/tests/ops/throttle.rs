//! Failed authentication is throttled per client address; correct traffic never is.

use std::time::Duration;

use vexil_testkit::{Backend, spawn_app_with};

use crate::expect;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_are_throttled_and_counted_but_valid_traffic_is_not() {
    let app = spawn_app_with(Backend::Postgres, |c| {
        c.auth_failure_limit = 5;
        c.auth_failure_window_secs = 60;
        // Long enough that the admin token stays verified through the test on a slow machine.
        c.token_cache_ms = 120_000;
    })
    .await;
    // Plenty of correctly authenticated traffic: never throttled.
    for _ in 0..40 {
        expect(app.get("/api/v1/projects").send().await.unwrap(), 200).await;
    }
    let fresh = app.token("fresh", "viewer").await;

    let wrong = |i: usize| {
        app.client
            .get(app.url("/api/v1/projects"))
            .bearer_auth(format!("vxa_{i:032}"))
            .send()
    };
    for i in 0..5 {
        expect(wrong(i).await.unwrap(), 401).await;
    }
    let res = wrong(5).await.unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let p: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        p["type"],
        "urn:vexil:problem:too-many-failed-authentications"
    );
    // Other failures from the address are refused the same way, without a lookup.
    let res = app
        .client
        .get(app.url("/api/v1/projects"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);

    // A caller verified a moment ago still gets through from the throttled address; one
    // never verified waits like everyone else there.
    expect(app.get("/api/v1/projects").send().await.unwrap(), 200).await;
    let res = app
        .request_as(reqwest::Method::GET, "/api/v1/projects", &fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);

    let metrics = tokio::time::timeout(Duration::from_secs(10), async {
        app.client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
    .await
    .unwrap();
    let count = |reason: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("vexil_auth_failures_total")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(count("unknown") >= 5.0, "{metrics}");
    assert!(count("throttled") >= 3.0, "{metrics}");
}
