//! `propagation`: N subscribers on a relay; K flag changes (or, with `--delta`, one-key
//! edits of a large segment) written through the control plane's API one at a time; per
//! subscriber and change, the delay from the write to the change's arrival.
//!
//! The origin of each delay is the moment the write request is sent: the commit happens
//! between that and the API's answer, so the figure is an upper bound of commit → receipt
//! (it includes the write's own latency, reported beside it). Subscribers in other
//! processes timestamp with the same wall clock.
//!
//! With `--relays N`, N relay processes share one port (`SO_REUSEPORT`) and the kernel
//! spreads the subscribers over them. The report gives the relays' CPU per change per
//! subscriber next to the kernel's floor measured in the same run ([`crate::floor`]): the
//! same change frame (read back from the relay) written with plain `write(2)` calls to as
//! many idle loopback sockets as the descriptor limit allows.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::fleet::Fleet;
use crate::floor::{self, Floor};
use crate::procstat;
use crate::report::{Machine, Report, Row, count, ms};
use crate::scenario::segment_edit::SegmentEdits;
use crate::scenario::{FleetOptions, command_line, secs, stack_with_relays, unix_now};
use crate::stats::Recorder;
use crate::subscriber::{Backoff, now_ns};
use crate::system::StackOptions;

/// Arguments of `propagation`.
#[derive(Debug, Clone, clap::Args)]
pub struct PropagationArgs {
    /// SSE subscribers on the relay.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: u32,
    /// Flag changes written, one at a time.
    #[arg(long, default_value_t = 10)]
    pub changes: u32,
    /// Pause between one change reaching every subscriber and the next write.
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
    /// Time allowed for every subscriber to connect and receive the initial state.
    #[arg(long, default_value_t = 180)]
    pub connect_timeout_s: u64,
    /// Time allowed for one change to reach every subscriber before moving on.
    #[arg(long, default_value_t = 30)]
    pub receive_timeout_s: u64,
    /// The p99 goal, milliseconds.
    #[arg(long, default_value_t = 100.0)]
    pub goal_p99_ms: f64,
    /// Relay processes sharing one port (`VEXIL_REUSE_PORT`); subscribers are spread over
    /// them by the kernel. Each holds its share of the streams' file descriptors.
    #[arg(long, default_value_t = 1)]
    pub relays: u32,
    /// Goal: the relays' CPU per change per subscriber over the `write(2)` floor.
    #[arg(long, default_value_t = 1.3)]
    pub goal_floor_ratio: f64,
    /// Rounds of the `write(2)` floor measurement (each writes the frame once per socket).
    #[arg(long, default_value_t = 20)]
    pub floor_rounds: u32,
    /// Subscribe to the per-context evaluated stream (`/client/v1/stream`, a client-side key,
    /// every flag client-side, a context the flags' rule matches) instead of the SDK stream:
    /// the relay evaluates every flag for every connection on each change.
    #[arg(long)]
    pub client_stream: bool,
    /// Write one-key edits of a large segment (one key added, one removed, through
    /// `POST …/segments/{key}/keys`) instead of flag flips: subscribers receive `delta`
    /// events.
    #[arg(long, conflicts_with = "client_stream")]
    pub delta: bool,
    /// Create a segment of this many keys before subscribers connect (default with
    /// `--delta`: 100,000), and report the relay's resident memory per key of it. Without
    /// `--delta` the changes are still flag flips: the baseline in the same environment.
    #[arg(long, conflicts_with = "client_stream")]
    pub segment_keys: Option<u32>,
    /// The system under test.
    #[command(flatten)]
    pub stack: StackOptions,
    /// How subscribers are spread over processes and addresses.
    #[command(flatten)]
    pub fleet: FleetOptions,
}

/// One write and when it happened.
struct Write {
    version: u64,
    sent_ns: u64,
    acked_ns: u64,
}

/// Runs the scenario.
pub async fn run(args: &PropagationArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        !args.delta || args.segment_keys != Some(0),
        "--delta needs a segment to edit: --segment-keys must be at least 1"
    );
    let start = Instant::now();
    let limits = args.fleet.preflight(args.subscribers, args.relays)?;
    let (stack, mut target) = stack_with_relays(&args.stack, args.relays as usize).await?;
    if args.client_stream {
        for flag in &stack.flags {
            stack
                .api
                .make_bool_flag_client_side(&stack.project, flag)
                .await?;
        }
        target.sdk_key = stack
            .api
            .create_client_key(&stack.project, &stack.environment, "loadtest-client")
            .await?;
        // {"targetingKey":"lt","email":"lt@example.com"}: the flags' rule matches while on,
        // so each toggle changes this context's value.
        target.path =
            "/client/v1/stream?context=eyJ0YXJnZXRpbmdLZXkiOiJsdCIsImVtYWlsIjoibHRAZXhhbXBsZS5jb20ifQ"
                .into();
    }
    let segment_keys = args
        .segment_keys
        .or(args.delta.then_some(100_000))
        .filter(|n| *n > 0);
    let segment = match segment_keys {
        Some(keys) => Some(
            SegmentEdits::create(
                &stack.api,
                &stack.project,
                &stack.environment,
                keys,
                stack.relay_pid(),
            )
            .await?,
        ),
        None => None,
    };
    let edits = segment.as_ref().filter(|_| args.delta);
    let backoff = Backoff {
        reconnect: true,
        initial_ms: 1_000,
        max_ms: 30_000,
    };
    let mut fleet = Fleet::spawn(&args.fleet.plan(target, args.subscribers, backoff)?).await?;
    let n = args.subscribers as usize;
    let mut failures = Vec::new();

    let connect_started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(args.connect_timeout_s);
    let v0 = stack
        .api
        .environment_version(&stack.project, &stack.environment)
        .await?;
    let connected = fleet.wait_current(deadline, v0, "connecting").await;
    let connect_s = secs(connect_started);
    // Every subscriber has the initial state: the relay holds the segment.
    let relay_memory = segment
        .as_ref()
        .and_then(|e| e.relay_bytes_per_key(stack.relay_pid()));
    if !connected {
        let have = fleet.ledger.current(v0);
        failures.push(format!(
            "only {have} of {n} subscribers connected with the initial state in {}s; reasons: \
             {:?}; relay accept errors: {:?}",
            args.connect_timeout_s,
            fleet.ledger.down_reasons(3),
            stack.relay_accept_errors()
        ));
    }
    // How the kernel spread the streams: descriptors each relay holds.
    let relay_pids = stack.relay_pids();
    let spread: Vec<usize> = relay_pids.iter().map(|p| open_descriptors(*p)).collect();
    eprintln!("  connected in {connect_s:.1} s; relay descriptors open: {spread:?}");

    // CPU time of the relay and of the subscriber workers over the change phase: what one
    // change costs each side, however busy the machine is.
    let worker_pids = fleet.pids();
    let cpu_ticks = |pids: &[u32]| -> u64 {
        pids.iter()
            .filter_map(|p| procstat::sample(*p))
            .map(|s| s.cpu_ticks)
            .sum()
    };
    let relay_ticks_before = cpu_ticks(&relay_pids);
    let worker_ticks_before = cpu_ticks(&worker_pids);

    let mut writes = Vec::with_capacity(args.changes as usize);
    if connected {
        for i in 0..args.changes {
            let flags = stack.flags.len().max(1) as u32;
            // Each flag starts on; the first pass switches them off, the next on again.
            let on = (i / flags) % 2 == 1;
            let sent_ns = now_ns();
            let version = match edits {
                Some(e) => e.write(i).await?,
                None => stack.toggle(i as usize, on).await?,
            };
            let acked_ns = now_ns();
            writes.push(Write {
                version,
                sent_ns,
                acked_ns,
            });
            let deadline = Instant::now() + Duration::from_secs(args.receive_timeout_s);
            if !fleet
                .wait_current(
                    deadline,
                    version,
                    &format!("change {} of {}", i + 1, args.changes),
                )
                .await
            {
                let have = fleet.ledger.current(version);
                failures.push(format!(
                    "version {version} reached {have} of {n} subscribers in {}s",
                    args.receive_timeout_s
                ));
            }
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
    }
    let relay_ms = procstat::ticks_to_ms(cpu_ticks(&relay_pids).saturating_sub(relay_ticks_before));
    let worker_ms =
        procstat::ticks_to_ms(cpu_ticks(&worker_pids).saturating_sub(worker_ticks_before));
    let changes_done = writes.len().max(1) as f64;
    // The last change's frame as the relay wrote it, for the floor.
    let frame = match writes.last() {
        Some(w) if !args.client_stream => {
            capture_change_frame(stack.relay_addr, &stack.sdk_keys[0], w.version - 1).await
        }
        _ => None,
    };
    let ledger = fleet.stop().await;
    let relay_tail = stack.relay_log_tail();
    let accept_errors = stack.relay_accept_errors();
    let trace_rows = stack.trace_rows();
    stack.shutdown().await;
    // The floor, with the subscribers' descriptors released: two per socket in this process.
    let floor: Option<Floor> = match frame {
        Some(frame) => {
            let sockets = n.min(
                usize::try_from(limits.nofile_soft.saturating_sub(512) / 2).unwrap_or(usize::MAX),
            );
            let rounds = args.floor_rounds;
            eprintln!("  measuring the write(2) floor: {sockets} sockets × {rounds} rounds");
            match tokio::task::spawn_blocking(move || floor::measure(&frame, sockets, rounds))
                .await?
            {
                Ok(f) => Some(f),
                Err(e) => {
                    failures.push(format!("the write(2) floor could not be measured: {e}"));
                    None
                }
            }
        }
        None => None,
    };
    let relay_us_per_sub = relay_ms * 1_000.0 / changes_done / n.max(1) as f64;

    let mut delays = Recorder::new();
    let mut write_latency = Recorder::new();
    let mut missing_receipts = 0u64;
    for w in &writes {
        write_latency.record(Duration::from_nanos(w.acked_ns.saturating_sub(w.sent_ns)));
        for s in 0..n {
            match ledger.reached_at(s, w.version) {
                Some(at) => delays.record(Duration::from_nanos(at.saturating_sub(w.sent_ns))),
                None => missing_receipts += 1,
            }
        }
    }
    let last = writes.last().map_or(v0, |w| w.version);
    let missed = ledger
        .subs
        .iter()
        .filter(|s| s.gaps > 0 || s.version.is_none_or(|v| v < last))
        .count();
    let reconnects: u32 = ledger.subs.iter().map(|s| s.downs).sum();
    let resyncs: u32 = ledger.subs.iter().map(|s| s.puts.saturating_sub(1)).sum();
    // Every change bumps the version by one: K writes after v0 end at v0 + K.
    let expected_last = v0 + u64::from(args.changes);
    if connected && last != expected_last {
        failures.push(format!(
            "writes ended at version {last}, expected {expected_last}: another writer?"
        ));
    }
    if missed > 0 {
        failures.push(format!(
            "{missed} subscribers missed a version; relay log tail:\n{relay_tail}"
        ));
    }

    let p = delays.percentiles();
    let wl = write_latency.percentiles();
    let mut rows = vec![
        Row::info("subscribers", count(n as u64)),
        Row::info(
            "stream",
            if args.client_stream {
                "/client/v1/stream (evaluated per context)"
            } else {
                "/sdk/v1/stream"
            },
        ),
        Row::info(
            "change written",
            match (edits, &segment) {
                (Some(e), _) => format!(
                    "one-key edit of a {}-key segment (delta)",
                    count(u64::from(e.keys))
                ),
                (None, Some(s)) => format!(
                    "flag flip (patch), beside a {}-key segment",
                    count(u64::from(s.keys))
                ),
                (None, None) => "flag flip (patch)".to_owned(),
            },
        ),
        Row::info("connect + initial state (all)", format!("{connect_s:.1} s")),
        Row::info("changes written", count(writes.len() as u64)),
        Row::info("write → receipt p50", ms(p.p50_ms)),
        Row::info("write → receipt p95", ms(p.p95_ms)),
        Row::goal(
            "write → receipt p99",
            ms(p.p99_ms),
            format!("≤ {}", ms(args.goal_p99_ms)),
            p.p99_ms <= args.goal_p99_ms,
        ),
        Row::info("write → receipt max", ms(p.max_ms)),
        Row::info(
            "API write latency p50 / p99",
            format!("{} / {}", ms(wl.p50_ms), ms(wl.p99_ms)),
        ),
        Row::goal(
            "subscribers that missed a version",
            count(missed as u64),
            "0",
            missed == 0,
        ),
        Row::info(
            "reconnections / resync puts",
            format!("{reconnects} / {resyncs}"),
        ),
        Row::info(
            "relay processes (descriptors open each)",
            format!("{} ({spread:?})", args.relays),
        ),
        Row::info(
            "CPU per change: relays / subscriber workers",
            format!(
                "{} / {}",
                ms(relay_ms / changes_done),
                ms(worker_ms / changes_done)
            ),
        ),
    ];
    if let Some((grown, per_key)) = relay_memory {
        // Read once every subscriber has the segment: the growth includes their connections
        // (about 2 KiB each), so run with `--subscribers 1` for the memory per key.
        rows.push(Row::info(
            format!("relay resident memory grown since the segment's creation ({n} subscribers)"),
            format!(
                "{:.1} MB: {per_key:.1} bytes per key beyond the key's bytes",
                grown as f64 / 1e6
            ),
        ));
    }
    if let Some(f) = &floor {
        let ratio = relay_us_per_sub / f.cpu_us_per_write.max(f64::MIN_POSITIVE);
        rows.push(Row::info(
            "relay CPU per change per subscriber",
            format!("{relay_us_per_sub:.2} µs"),
        ));
        rows.push(Row::info(
            format!(
                "write(2) floor per subscriber ({} B frame, {} sockets)",
                f.frame_bytes,
                count(f.sockets as u64)
            ),
            format!("{:.2} µs", f.cpu_us_per_write),
        ));
        rows.push(Row::goal(
            "relay ÷ floor",
            format!("{ratio:.2}×"),
            format!("≤ {:.1}×", args.goal_floor_ratio),
            ratio <= args.goal_floor_ratio,
        ));
    }
    if !accept_errors.is_empty() {
        rows.push(Row::info(
            "relay accept errors",
            format!("{accept_errors:?}"),
        ));
    }
    let details = json!({
        "subscribers": n,
        "client_stream": args.client_stream,
        "delta": args.delta,
        "segment": segment.as_ref().map(|e| json!({
            "keys": e.keys,
            "key_bytes": e.key_bytes,
            "relay_rss_grown_bytes": relay_memory.map(|m| m.0),
            "relay_bytes_per_key_beyond_key": relay_memory.map(|m| m.1),
        })),
        "changes": writes.len(),
        "initial_version": v0,
        "final_version": last,
        "connect_s": connect_s,
        "write_to_receipt_ms": p,
        "api_write_ms": wl,
        "receipts_missing": missing_receipts,
        "subscribers_missed_version": missed,
        "reconnections": reconnects,
        "resync_puts": resyncs,
        "relay_cpu_ms_per_change": relay_ms / changes_done,
        "workers_cpu_ms_per_change": worker_ms / changes_done,
        "relays": args.relays,
        "relay_descriptors": spread,
        "relay_accept_errors": accept_errors,
        "relay_cpu_us_per_change_per_subscriber": relay_us_per_sub,
        "write_floor": floor,
        "relay_over_floor": floor.map(|f| relay_us_per_sub / f.cpu_us_per_write.max(f64::MIN_POSITIVE)),
        "per_worker": args.fleet.per_worker,
        "per_address": args.fleet.per_address,
        "source_addresses": (args.subscribers.saturating_sub(1) / args.fleet.per_address.max(1)) + 1,
        "workers": (args.subscribers.saturating_sub(1) / args.fleet.per_worker.max(1)) + 1,
    });
    rows.extend(trace_rows);
    Ok(Report {
        scenario: "propagation".into(),
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

/// File descriptors `pid` has open (its streams, with a few of its own).
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Reads the change frame after `since` back from the relay: an SDK stream resumed at
/// `Last-Event-ID: since` replays it first, byte for byte as subscribers got it (the lean
/// path writes frames unframed, the response delimited by closing). `None` if it cannot.
async fn capture_change_frame(
    relay: Option<std::net::SocketAddr>,
    sdk_key: &str,
    since: u64,
) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = relay?;
    let read = async {
        let mut tcp = tokio::net::TcpStream::connect(relay).await.ok()?;
        let req = format!(
            "GET /sdk/v1/stream HTTP/1.1\r\nhost: {relay}\r\nauthorization: {sdk_key}\r\n\
             last-event-id: {since}\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::with_capacity(16 * 1024);
        loop {
            if tcp.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
            let Ok(Some((head, head_len))) = crate::sse::ResponseHead::parse(&buf) else {
                continue;
            };
            if head.status != 200 || head.chunked {
                return None;
            }
            // Frames end with a blank line; comments (keep-alives) start with ':'.
            let mut at = head_len;
            while let Some(end) = buf[at..].windows(2).position(|w| w == b"\n\n") {
                let frame = &buf[at..at + end + 2];
                if !frame.starts_with(b":") {
                    return Some(frame.to_vec());
                }
                at += end + 2;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()
        .flatten()
}
