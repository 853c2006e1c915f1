//! `events`: sustained event ingestion through one relay into one server on PostgreSQL. N
//! senders post gzip-compressed batches of B events to the relay's `/events/v1/bulk`
//! (one request in flight each, keep-alive); the relay groups them into upstream requests
//! and answers each once the server committed it. The scenario reports acknowledged events
//! per second, then counts the rows in the database: every acknowledged event must be there
//! (0 lost). Bodies are compressed once before the run, so the client costs little of the
//! shared cores.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::json;
use sqlx::Connection as _;

use crate::procstat;
use crate::report::{Machine, Report, Row, count, ms};
use crate::scenario::{command_line, secs, unix_now};
use crate::stats::{Percentiles, Recorder};
use crate::system::{Stack, StackOptions};

/// Arguments of `events`.
#[derive(Debug, Clone, clap::Args)]
pub struct EventsArgs {
    /// Concurrent senders (one request in flight each).
    #[arg(long, default_value_t = 16)]
    pub senders: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Measured time.
    #[arg(long, default_value_t = 20)]
    pub duration_s: u64,
    /// Goal: acknowledged events per second.
    #[arg(long, default_value_t = 50_000.0)]
    pub goal_eps: f64,
    /// The system under test (`--database-url` must name an empty PostgreSQL database).
    #[command(flatten)]
    pub stack: StackOptions,
}

/// The outcome.
#[derive(Debug, Clone, Serialize)]
pub struct EventsResult {
    /// Events the relay acknowledged (200, accepted).
    pub acknowledged: u64,
    /// Rows in the database's `events` table after the run.
    pub stored: u64,
    /// Acknowledged events missing from the database.
    pub lost: u64,
    /// Acknowledged events per second.
    pub events_per_s: f64,
    /// Non-200 answers by status.
    pub refused: BTreeMap<u16, u64>,
    /// Connection or protocol failures.
    pub io_errors: u64,
    /// Latency of acknowledged batches.
    pub latency: Percentiles,
    /// CPU milliseconds per 1,000 events: relay, server.
    pub cpu_ms_per_1000: [Option<f64>; 2],
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A gzip-compressed batch of `n` events (custom events and exposures of distinct users).
fn body(sender: usize, variant: usize, n: usize) -> anyhow::Result<Vec<u8>> {
    let now = now_ms();
    let events: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let user = format!("user-{sender}-{variant}-{i}");
            if i % 2 == 0 {
                json!({"kind": "exposure", "time": now, "flag_key": "flag-000",
                       "flag_version": 1, "environment_version": 1, "variation": i % 2,
                       "context_key": user, "context_kind": "user"})
            } else {
                json!({"kind": "custom", "time": now, "event_key": "purchase",
                       "context_key": user, "value": 9.99})
            }
        })
        .collect();
    let json = serde_json::to_vec(&json!({
        "schema_version": 1,
        "sdk": {"name": "vexil-loadtest", "version": "0", "instance_id": format!("sender-{sender}")},
        "events": events,
    }))?;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&json)?;
    Ok(enc.finish()?)
}

#[derive(Debug, Default)]
struct Tally {
    acknowledged: u64,
    refused: BTreeMap<u16, u64>,
    io_errors: u64,
    latency: Recorder,
}

/// Runs the scenario.
pub async fn run(args: &EventsArgs) -> anyhow::Result<Report> {
    let start = Instant::now();
    let database = args
        .stack
        .database_url
        .clone()
        .filter(|u| u.starts_with("postgres"))
        .context("events needs --database-url postgres://… (an empty database)")?;
    let mut stack = Stack::start(&args.stack, 1).await?;
    let relay = stack.start_relay(args.stack.relay_bin.as_deref()).await?;
    let key = stack.sdk_keys[0].clone();
    let url = format!("http://{relay}/events/v1/bulk");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.senders)
        .timeout(Duration::from_secs(30))
        .build()?;
    let cpu_before = [
        stack.relay_pid().and_then(procstat::sample),
        stack.server_pid().and_then(procstat::sample),
    ];
    let load_start = Instant::now();
    let end = load_start + Duration::from_secs(args.duration_s);
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..args.senders.max(1) {
        let bodies = (0..4)
            .map(|v| body(s, v, args.batch).map(bytes::Bytes::from))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (client, url, key) = (client.clone(), url.clone(), key.clone());
        tasks.spawn(async move {
            let mut tally = Tally::default();
            let mut i = 0;
            while Instant::now() < end {
                let sent = Instant::now();
                let res = client
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .header("x-vexil-event-schema", "1")
                    .body(bodies[i % bodies.len()].clone())
                    .send()
                    .await;
                i += 1;
                match res {
                    Ok(r) if r.status() == 200 => match r.json::<serde_json::Value>().await {
                        Ok(v) => {
                            tally.acknowledged += v["accepted"].as_u64().unwrap_or(0);
                            tally.latency.record(sent.elapsed());
                        }
                        Err(_) => tally.io_errors += 1,
                    },
                    Ok(r) => {
                        *tally.refused.entry(r.status().as_u16()).or_default() += 1;
                        // The relay said when to come back (503, Retry-After): a short pause.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(_) => tally.io_errors += 1,
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(t) = tasks.join_next().await {
        let t = t.context("a sender panicked")?;
        total.acknowledged += t.acknowledged;
        total.io_errors += t.io_errors;
        for (k, v) in t.refused {
            *total.refused.entry(k).or_default() += v;
        }
        total.latency.merge(&t.latency);
    }
    let elapsed = load_start.elapsed().max(Duration::from_millis(1));
    let cpu_after = [
        stack.relay_pid().and_then(procstat::sample),
        stack.server_pid().and_then(procstat::sample),
    ];
    let cpu_ms_per_1000 = [0, 1].map(|i| match (&cpu_before[i], &cpu_after[i]) {
        (Some(a), Some(b)) if total.acknowledged > 0 => Some(
            procstat::ticks_to_ms(b.cpu_ticks.saturating_sub(a.cpu_ticks)) * 1000.0
                / total.acknowledged as f64,
        ),
        _ => None,
    });
    let mut db = sqlx::PgConnection::connect(&database)
        .await
        .context("cannot connect to the database to count the stored events")?;
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&mut db)
        .await
        .context("cannot count the stored events")?;
    let _ = db.close().await;
    stack.shutdown().await;

    let stored = u64::try_from(stored).unwrap_or(0);
    let result = EventsResult {
        acknowledged: total.acknowledged,
        stored,
        lost: total.acknowledged.saturating_sub(stored),
        events_per_s: total.acknowledged as f64 / elapsed.as_secs_f64(),
        refused: total.refused,
        io_errors: total.io_errors,
        latency: total.latency.percentiles(),
        cpu_ms_per_1000,
    };
    let mut failures = Vec::new();
    if result.lost > 0 {
        failures.push(format!("{} acknowledged events are missing", result.lost));
    }
    if result.acknowledged == 0 {
        failures.push("no event was acknowledged".into());
    }
    let mut rows = vec![
        Row::goal(
            "acknowledged events/s",
            count(result.events_per_s as u64),
            format!("≥ {}", count(args.goal_eps as u64)),
            result.events_per_s >= args.goal_eps,
        ),
        Row::goal(
            "acknowledged events lost",
            count(result.lost),
            "0",
            result.lost == 0,
        ),
        Row::info(
            "acknowledged / stored",
            format!("{} / {}", count(result.acknowledged), count(result.stored)),
        ),
        Row::info(
            "batch latency p50 / p99",
            format!(
                "{} / {}",
                ms(result.latency.p50_ms),
                ms(result.latency.p99_ms)
            ),
        ),
        Row::info(
            "non-200 / I/O errors",
            format!("{:?} / {}", result.refused, result.io_errors),
        ),
    ];
    if let [Some(relay), Some(server)] = result.cpu_ms_per_1000 {
        rows.push(Row::info(
            "CPU per 1,000 events: relay / server",
            format!("{} / {}", ms(relay), ms(server)),
        ));
    }
    let details = json!({
        "senders": args.senders,
        "batch": args.batch,
        "duration_s": args.duration_s,
        "result": result,
    });
    Ok(Report {
        scenario: "events".into(),
        command: command_line(),
        machine: Machine::detect(),
        started_unix: unix_now().saturating_sub(start.elapsed().as_secs()),
        duration_s: secs(start),
        rows,
        details,
        passed: failures.is_empty(),
        failures,
    })
}
