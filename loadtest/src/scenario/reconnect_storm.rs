//! `reconnect-storm`: N subscribers on a relay; the relay is killed (SIGKILL, as in a crash),
//! a change is written while it is down, and the relay is restarted on the same port.
//! Measured: the time until every subscriber is connected again and holds the latest
//! version, per-subscriber recovery times, the relay's peak CPU and memory while they all
//! come back, and how many never did (subscribers retry with jittered exponential backoff,
//! as SDKs do, and never give up on their own).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::fleet::Fleet;
use crate::procstat::Sampler;
use crate::report::{Machine, Report, Row, count, ms};
use crate::scenario::{FleetOptions, command_line, secs, stack_with_relay, unix_now};
use crate::stats::Recorder;
use crate::subscriber::{Backoff, now_ns};
use crate::system::StackOptions;

/// Arguments of `reconnect-storm`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReconnectStormArgs {
    /// SSE subscribers on the relay.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: u32,
    /// How long the relay stays down.
    #[arg(long, default_value_t = 1_000)]
    pub down_ms: u64,
    /// Subscribers' first reconnection delay bound (full jitter, doubling), milliseconds.
    #[arg(long, default_value_t = 1_000)]
    pub backoff_initial_ms: u64,
    /// Subscribers' reconnection delay cap, milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub backoff_max_ms: u64,
    /// Time allowed for every subscriber to connect at the start.
    #[arg(long, default_value_t = 180)]
    pub connect_timeout_s: u64,
    /// Time allowed for every subscriber to be back and current after the restart.
    #[arg(long, default_value_t = 180)]
    pub recover_timeout_s: u64,
    /// The system under test.
    #[command(flatten)]
    pub stack: StackOptions,
    /// How subscribers are spread over processes and addresses.
    #[command(flatten)]
    pub fleet: FleetOptions,
}

/// Runs the scenario.
pub async fn run(args: &ReconnectStormArgs) -> anyhow::Result<Report> {
    let start = Instant::now();
    args.fleet.preflight(args.subscribers, 1)?;
    let (mut stack, target) = stack_with_relay(&args.stack).await?;
    let backoff = Backoff {
        reconnect: true,
        initial_ms: args.backoff_initial_ms,
        max_ms: args.backoff_max_ms,
    };
    let mut fleet = Fleet::spawn(&args.fleet.plan(target, args.subscribers, backoff)?).await?;
    let n = args.subscribers as usize;
    let mut failures = Vec::new();

    let v0 = stack
        .api
        .environment_version(&stack.project, &stack.environment)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(args.connect_timeout_s);
    if !fleet.wait_current(deadline, v0, "connecting").await {
        let have = fleet.ledger.current(v0);
        let reasons = fleet.ledger.down_reasons(3);
        fleet.stop().await;
        stack.shutdown().await;
        anyhow::bail!(
            "only {have} of {n} subscribers connected at the start; reasons: {reasons:?}"
        );
    }
    let downs_before: u32 = fleet.ledger.subs.iter().map(|s| s.downs).sum();

    // The crash, a change while the relay is away, and the restart.
    let killed_ns = now_ns();
    let killed = Instant::now();
    stack.kill_relay().await?;
    let version = stack.toggle(0, false).await?;
    tokio::time::sleep(Duration::from_millis(args.down_ms)).await;
    let restart = Instant::now();
    stack.start_relay(args.stack.relay_bin.as_deref()).await?;
    let ready_s = restart.elapsed().as_secs_f64();
    let pid = stack
        .relay_pid()
        .context("the restarted relay has no pid")?;
    let sampler = Sampler::start(pid, Duration::from_millis(100));

    let deadline = Instant::now() + Duration::from_secs(args.recover_timeout_s);
    let recovered = fleet.wait_current(deadline, version, "reconnecting").await;
    let all_back_s = killed.elapsed().as_secs_f64();
    let peaks = sampler.peaks();
    let after_restart_s = restart.elapsed().as_secs_f64();
    drop(sampler);
    let ledger = fleet.stop().await;
    stack.shutdown().await;

    let mut recovery = Recorder::new();
    let mut not_back = 0usize;
    for s in 0..n {
        match ledger.reached_at(s, version) {
            Some(at) => recovery.record(Duration::from_nanos(at.saturating_sub(killed_ns))),
            None => not_back += 1,
        }
    }
    let downs: u32 = ledger.subs.iter().map(|s| s.downs).sum::<u32>() - downs_before;
    let gaps: u32 = ledger.subs.iter().map(|s| s.gaps).sum();
    if !recovered {
        failures.push(format!(
            "{not_back} of {n} subscribers were not back and current {}s after the restart",
            args.recover_timeout_s
        ));
    }
    if gaps > 0 {
        failures.push(format!("{gaps} changes skipped versions"));
    }
    let r = recovery.percentiles();
    let rows = vec![
        Row::info("subscribers", count(n as u64)),
        Row::info("relay down for", ms(args.down_ms as f64)),
        Row::info("relay restart → ready", format!("{ready_s:.2} s")),
        Row::info(
            "kill → all back and current",
            if recovered {
                format!("{all_back_s:.2} s")
            } else {
                format!("not within {}s", args.recover_timeout_s)
            },
        ),
        Row::info(
            "restart → all back and current",
            if recovered {
                format!("{after_restart_s:.2} s")
            } else {
                "—".into()
            },
        ),
        Row::info(
            "per subscriber, kill → current p50 / p99",
            format!("{} / {}", ms(r.p50_ms), ms(r.p99_ms)),
        ),
        Row::info(
            "relay peak CPU while they return",
            format!("{:.2} cores", peaks.cpu_cores),
        ),
        Row::info(
            "relay peak RSS while they return",
            format!("{:.1} MiB", peaks.rss_kib as f64 / 1024.0),
        ),
        Row::info("disconnections / failed attempts", count(u64::from(downs))),
        Row::goal(
            "subscribers that gave up / never returned",
            count(not_back as u64),
            "0",
            not_back == 0,
        ),
    ];
    let details = json!({
        "subscribers": n,
        "down_ms": args.down_ms,
        "backoff_initial_ms": args.backoff_initial_ms,
        "backoff_max_ms": args.backoff_max_ms,
        "version_after": version,
        "relay_ready_s": ready_s,
        "kill_to_all_current_s": recovered.then_some(all_back_s),
        "restart_to_all_current_s": recovered.then_some(after_restart_s),
        "recovery_ms": r,
        "relay_peak": peaks,
        "disconnections": downs,
        "not_back": not_back,
    });
    Ok(Report {
        scenario: "reconnect-storm".into(),
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
