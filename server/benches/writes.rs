//! Sustained flag-configuration writes through the real HTTP API, with audit, on PostgreSQL
//! (or SQLite with `VEXIL_BENCH_BACKEND=sqlite`).
//!
//! `W` concurrent writers (`VEXIL_BENCH_WRITERS`, default 16) each update their own flag, in one
//! environment or spread over `VEXIL_BENCH_ENVIRONMENTS` (default 1), among
//! `VEXIL_BENCH_FLAGS` flags (default 200), for `VEXIL_BENCH_SECONDS` (default 10) after a
//! 2-second warm-up. Writes to one environment are serialised (each holds the environment's
//! lock through its commit, so the environment's versions follow commit order); every update
//! is a full PUT with `If-Match`, so each is validated, versioned, logged and audited. Then a
//! 100,000-key segment is created, read and replaced. Prints throughput and latency
//! percentiles. Run with:
//!
//! ```sh
//! cargo bench -p vexil-server --bench writes
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use vexil_testkit::{Backend, TestApp, spawn_app_with};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn writer(
    app: Arc<TestApp>,
    flag: String,
    environment: String,
    stop: Arc<AtomicBool>,
    record_after: Instant,
) -> (u64, u64, Vec<Duration>) {
    let path = format!("/api/v1/projects/bench/flags/{flag}/environments/{environment}");
    let mut version: u64 = 1;
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut latencies = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let body = json!({
            "on": i.is_multiple_of(2), "off_variation": 1,
            "targets": [{"variation": 0, "values": [format!("user-{i}")]}],
            "rules": [{"id": "beta", "clauses": [{"attribute": "email", "op": "ends_with", "values": ["@example.com"]}],
                       "serve": {"variation": 0}}],
            "fallthrough": {"rollout": {"variations": [{"variation": 0, "weight": 25000}, {"variation": 1, "weight": 75000}]}}
        });
        let t = Instant::now();
        let res = app
            .put(&path, &body)
            .header("if-match", format!("\"{version}\""))
            .send()
            .await;
        let elapsed = t.elapsed();
        match res {
            Ok(r) if r.status() == 200 => {
                version += 1;
                if t >= record_after {
                    ok += 1;
                    latencies.push(elapsed);
                }
            }
            Ok(r) => {
                failed += 1;
                eprintln!(
                    "unexpected {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
                break;
            }
            Err(e) => {
                failed += 1;
                eprintln!("request failed: {e}");
                break;
            }
        }
    }
    (ok, failed, latencies)
}

async fn segment_round_trip(app: &TestApp) {
    let base = "/api/v1/projects/bench/environments/env-0/segments";
    let included: Vec<String> = (0..100_000).map(|i| format!("user-{i:06}")).collect();
    let t = Instant::now();
    let r = app
        .post(
            base,
            &json!({"key": "big", "name": "Big", "included": included}),
        )
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 201);
    let create = t.elapsed();
    let t = Instant::now();
    let r = app.get(&format!("{base}/big")).send().await.expect("read");
    let body = r.bytes().await.expect("body");
    let read = t.elapsed();
    let t = Instant::now();
    let r = app
        .put(
            &format!("{base}/big"),
            &json!({"key": "big", "name": "Big", "included": included, "excluded": ["x"]}),
        )
        .send()
        .await
        .expect("update");
    assert_eq!(r.status(), 200);
    let update = t.elapsed();
    println!(
        "100k-key segment: create {create:.1?}, read {read:.1?} ({} bytes), replace {update:.1?}",
        body.len()
    );
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and test discovery
    }
    let backend = match std::env::var("VEXIL_BENCH_BACKEND").as_deref() {
        Ok("sqlite") => Backend::Sqlite,
        _ => Backend::Postgres,
    };
    let writers: usize = env_or("VEXIL_BENCH_WRITERS", 16);
    let seconds: u64 = env_or("VEXIL_BENCH_SECONDS", 10);
    let flags_in_env: usize = env_or("VEXIL_BENCH_FLAGS", 200).max(writers);
    let environments: usize = env_or("VEXIL_BENCH_ENVIRONMENTS", 1usize).clamp(1, 64);
    let env_names: Vec<String> = (0..environments).map(|i| format!("env-{i}")).collect();

    let app = spawn_app_with(backend, |c| c.database_max_connections = 20).await;
    let env_refs: Vec<&str> = env_names.iter().map(String::as_str).collect();
    app.project("bench", &env_refs).await;
    for i in 0..flags_in_env {
        let r = app
            .post(
                "/api/v1/projects/bench/flags",
                &json!({"key": format!("flag-{i}"), "kind": "boolean",
                "variations": [{"value": true}, {"value": false}]}),
            )
            .send()
            .await
            .expect("create flag");
        assert_eq!(r.status(), 201);
    }
    let app = Arc::new(app);
    let stop = Arc::new(AtomicBool::new(false));
    let warmup = Duration::from_secs(2);
    let start = Instant::now();
    let record_after = start + warmup;
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            tokio::spawn(writer(
                app.clone(),
                format!("flag-{i}"),
                env_names[i % environments].clone(),
                stop.clone(),
                record_after,
            ))
        })
        .collect();
    tokio::time::sleep(warmup + Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let measured = start.elapsed() - warmup;
    let (mut ok, mut failed, mut lat) = (0, 0, Vec::new());
    for t in tasks {
        let (o, f, l) = t.await.expect("writer");
        ok += o;
        failed += f;
        lat.extend(l);
    }
    lat.sort();
    println!(
        "backend {backend:?}, {writers} writers on different flags, spread over {environments} environment(s) of {flags_in_env} flags each, {seconds}s measured:"
    );
    println!(
        "  {ok} updates committed ({:.0}/s), {failed} failed; latency p50 {:.1?}, p90 {:.1?}, p99 {:.1?}, max {:.1?}",
        ok as f64 / measured.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
    let audit = app
        .get("/api/v1/audit?action=flag.config.update&limit=1")
        .send()
        .await
        .expect("audit");
    assert_eq!(audit.status(), 200);
    segment_round_trip(&app).await;
}
