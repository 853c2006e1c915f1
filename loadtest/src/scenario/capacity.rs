//! `capacity`: how many idle SSE subscribers one relay process holds, and its resident
//! memory per subscriber (growth of `VmRSS` in `/proc/<relay pid>/status` from before the
//! first subscriber to after the last one has its state and has sat idle).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::fleet::Fleet;
use crate::procstat;
use crate::report::{Machine, Report, Row, count};
use crate::scenario::{FleetOptions, command_line, secs, stack_with_relay, unix_now};
use crate::subscriber::Backoff;
use crate::system::StackOptions;

/// Arguments of `capacity`.
#[derive(Debug, Clone, clap::Args)]
pub struct CapacityArgs {
    /// Idle subscribers to open on the relay.
    #[arg(long, default_value_t = 18_000)]
    pub subscribers: u32,
    /// Time allowed for every subscriber to connect and receive the initial state.
    #[arg(long, default_value_t = 300)]
    pub connect_timeout_s: u64,
    /// Idle time before memory is read (allocator and socket buffers settle).
    #[arg(long, default_value_t = 5)]
    pub hold_s: u64,
    /// Goal: subscribers per relay process.
    #[arg(long, default_value_t = 18_000)]
    pub goal_subscribers: u32,
    /// Goal: resident memory per subscriber, KiB.
    #[arg(long, default_value_t = 8.0)]
    pub goal_kib: f64,
    /// The system under test.
    #[command(flatten)]
    pub stack: StackOptions,
    /// How subscribers are spread over processes and addresses.
    #[command(flatten)]
    pub fleet: FleetOptions,
}

/// Runs the scenario.
pub async fn run(args: &CapacityArgs) -> anyhow::Result<Report> {
    let start = Instant::now();
    args.fleet.preflight(args.subscribers, 1)?;
    let (stack, target) = stack_with_relay(&args.stack).await?;
    let pid = stack.relay_pid().context("the relay has no pid")?;
    let before = procstat::sample(pid).context("cannot read the relay's /proc status")?;
    // Idle subscribers do not reconnect: a dropped one counts as not held.
    let backoff = Backoff {
        reconnect: false,
        initial_ms: 0,
        max_ms: 0,
    };
    let mut fleet = Fleet::spawn(&args.fleet.plan(target, args.subscribers, backoff)?).await?;
    let n = args.subscribers as usize;
    let connect_started = Instant::now();
    let deadline = connect_started + Duration::from_secs(args.connect_timeout_s);
    let all = fleet.wait_current(deadline, 0, "connecting").await;
    let connect_s = secs(connect_started);
    tokio::time::sleep(Duration::from_secs(args.hold_s)).await;
    fleet.drain();
    let held = fleet.ledger.current(0);
    let after = procstat::sample(pid).context("the relay exited while holding subscribers")?;
    let reasons = fleet.ledger.down_reasons(3);
    let ledger = fleet.stop().await;
    stack.shutdown().await;

    let mut failures = Vec::new();
    if !all {
        failures.push(format!(
            "{} of {n} subscribers got the initial state in {}s; reasons: {reasons:?}",
            ledger.with_state(),
            args.connect_timeout_s
        ));
    }
    let grown_kib = after.rss_kib.saturating_sub(before.rss_kib);
    let per_sub_kib = if held > 0 {
        grown_kib as f64 / held as f64
    } else {
        0.0
    };
    let rows = vec![
        Row::goal(
            "idle subscribers held by one relay",
            count(held as u64),
            format!("≥ {}", count(u64::from(args.goal_subscribers))),
            held >= args.goal_subscribers as usize,
        ),
        Row::goal(
            "relay RSS per subscriber",
            format!("{per_sub_kib:.1} KiB"),
            format!("≤ {:.0} KiB", args.goal_kib),
            held > 0 && per_sub_kib <= args.goal_kib,
        ),
        Row::info(
            "relay RSS before → after",
            format!(
                "{:.1} MiB → {:.1} MiB",
                before.rss_kib as f64 / 1024.0,
                after.rss_kib as f64 / 1024.0
            ),
        ),
        Row::info(
            "relay peak RSS (VmHWM)",
            format!("{:.1} MiB", after.hwm_kib as f64 / 1024.0),
        ),
        Row::info("connect + initial state (all)", format!("{connect_s:.1} s")),
    ];
    let details = json!({
        "subscribers_requested": n,
        "subscribers_held": held,
        "relay_rss_before_kib": before.rss_kib,
        "relay_rss_after_kib": after.rss_kib,
        "relay_hwm_kib": after.hwm_kib,
        "rss_per_subscriber_kib": per_sub_kib,
        "connect_s": connect_s,
        "hold_s": args.hold_s,
        "flags": args.stack.flags,
    });
    Ok(Report {
        scenario: "capacity".into(),
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
