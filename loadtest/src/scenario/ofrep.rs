//! `ofrep`: OpenFeature remote evaluation (`POST /ofrep/v1/evaluate/flags/{key}`) as fast as
//! C keep-alive HTTP/1.1 connections can send it, against the relay and the control plane.
//! A hand-written client (one request in flight per connection, raw sockets, latencies in an
//! HDR histogram) so the client costs as little of the shared cores as possible. Requests
//! during the warm-up are not counted. Connections rotate over several SDK keys, since
//! each key is rate limited on its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::procstat;
use crate::report::{Machine, Report, Row, count, ms};
use crate::scenario::{command_line, secs, unix_now};
use crate::sse::ResponseHead;
use crate::stats::{Percentiles, Recorder};
use crate::system::{Stack, StackOptions};

/// Arguments of `ofrep`.
#[derive(Debug, Clone, clap::Args)]
pub struct OfrepArgs {
    /// Keep-alive connections (one request in flight each).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Measured time per target.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Unmeasured time first, per target.
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,
    /// SDK keys the connections rotate over.
    #[arg(long, default_value_t = 16)]
    pub sdk_keys: usize,
    /// Which services to load: `relay`, `server`, or both.
    #[arg(long, value_delimiter = ',', default_value = "relay,server")]
    pub targets: Vec<String>,
    /// Goal: requests per second.
    #[arg(long, default_value_t = 60_000.0)]
    pub goal_rps: f64,
    /// Goal: p99 latency, milliseconds.
    #[arg(long, default_value_t = 2.0)]
    pub goal_p99_ms: f64,
    /// The system under test.
    #[command(flatten)]
    pub stack: StackOptions,
}

/// The outcome against one service.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// `relay` or `server`.
    pub target: String,
    /// Whether the endpoint exists there (a 404 on the first request: not).
    pub available: bool,
    /// Successful (200) requests in the measured window.
    pub ok: u64,
    /// Other answers by status code.
    pub refused: BTreeMap<u16, u64>,
    /// Connection or protocol failures.
    pub io_errors: u64,
    /// Requests per second (200 only).
    pub rps: f64,
    /// Latency of successful requests.
    pub latency: Percentiles,
    /// CPU time the serving process spent per 1,000 successful requests (warm-up included
    /// on both sides), milliseconds: what a request costs it however busy the machine is.
    pub cpu_ms_per_1000: Option<f64>,
    /// Requests per second one fully used core would serve at that cost.
    pub rps_per_core: Option<f64>,
}

/// Runs the scenario.
pub async fn run(args: &OfrepArgs) -> anyhow::Result<Report> {
    let start = Instant::now();
    let mut stack = Stack::start(&args.stack, args.sdk_keys).await?;
    let flag = stack
        .flags
        .first()
        .cloned()
        .context("the environment has no flag")?;
    let mut results = Vec::new();
    for target in &args.targets {
        let (addr, pid) = match target.as_str() {
            "relay" => (
                stack.start_relay(args.stack.relay_bin.as_deref()).await?,
                stack.relay_pid(),
            ),
            "server" => (stack.server_addr, stack.server_pid()),
            other => anyhow::bail!("unknown target {other:?}: use relay and/or server"),
        };
        results.push(load(target, addr, pid, &flag, &stack.sdk_keys, args).await?);
    }
    stack.shutdown().await;

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for r in &results {
        if !r.available {
            rows.push(Row::info(
                format!("{}: OFREP", r.target),
                "404 on the first request: endpoint missing",
            ));
            continue;
        }
        let refused: u64 = r.refused.values().sum();
        rows.push(Row::goal(
            format!("{}: requests/s", r.target),
            count(r.rps as u64),
            format!("≥ {}", count(args.goal_rps as u64)),
            r.rps >= args.goal_rps,
        ));
        rows.push(Row::info(
            format!("{}: latency p50 / p95", r.target),
            format!("{} / {}", ms(r.latency.p50_ms), ms(r.latency.p95_ms)),
        ));
        rows.push(Row::goal(
            format!("{}: latency p99", r.target),
            ms(r.latency.p99_ms),
            format!("≤ {}", ms(args.goal_p99_ms)),
            r.latency.p99_ms <= args.goal_p99_ms,
        ));
        if let (Some(cpu), Some(per_core)) = (r.cpu_ms_per_1000, r.rps_per_core) {
            rows.push(Row::info(
                format!("{}: CPU per 1,000 requests (→ per core)", r.target),
                format!("{} (→ {}/s)", ms(cpu), count(per_core as u64)),
            ));
        }
        rows.push(Row::info(
            format!("{}: non-200 / I/O errors", r.target),
            format!("{refused} {:?} / {}", r.refused, r.io_errors),
        ));
        if r.ok == 0 {
            failures.push(format!(
                "{}: no successful evaluation (answers: {:?}, I/O errors {})",
                r.target, r.refused, r.io_errors
            ));
        }
    }
    let details = json!({
        "connections": args.connections,
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "sdk_keys": args.sdk_keys,
        "flag": flag,
        "results": results,
    });
    Ok(Report {
        scenario: "ofrep".into(),
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

/// Per-connection tallies.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    /// Successful requests including the warm-up.
    all_ok: u64,
    refused: BTreeMap<u16, u64>,
    io_errors: u64,
    latency: Recorder,
    not_found: bool,
}

async fn load(
    target: &str,
    addr: SocketAddr,
    pid: Option<u32>,
    flag: &str,
    keys: &[String],
    args: &OfrepArgs,
) -> anyhow::Result<TargetResult> {
    // One probe first: a missing endpoint is reported, not hammered.
    let probe = request(addr, flag, &keys[0], 0);
    let mut probe_tally = Tally::default();
    let mut conn = Conn::connect(addr).await?;
    conn.exchange(&probe, &mut probe_tally, false).await;
    if probe_tally.not_found {
        return Ok(TargetResult {
            target: target.into(),
            available: false,
            ok: 0,
            refused: probe_tally.refused,
            io_errors: 0,
            rps: 0.0,
            latency: Recorder::new().percentiles(),
            cpu_ms_per_1000: None,
            rps_per_core: None,
        });
    }
    let cpu_before = pid.and_then(procstat::sample);
    let begin = Instant::now();
    let measure_from = begin + Duration::from_secs(args.warmup_s);
    let end = measure_from + Duration::from_secs(args.duration_s);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..args.connections.max(1) {
        let req = request(addr, flag, &keys[c % keys.len()], c);
        tasks.spawn(async move {
            let mut tally = Tally::default();
            let mut conn: Option<Conn> = None;
            while Instant::now() < end {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Conn::connect(addr).await {
                        Ok(c) => conn.insert(c),
                        Err(_) => {
                            tally.io_errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let measured = Instant::now() >= measure_from;
                if !c.exchange(&req, &mut tally, measured).await {
                    conn = None;
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(t) = tasks.join_next().await {
        let t = t.context("a load connection panicked")?;
        total.ok += t.ok;
        total.all_ok += t.all_ok;
        total.io_errors += t.io_errors;
        for (k, v) in t.refused {
            *total.refused.entry(k).or_default() += v;
        }
        total.latency.merge(&t.latency);
    }
    let cpu_ms = match (cpu_before, pid.and_then(procstat::sample)) {
        (Some(a), Some(b)) => Some(procstat::ticks_to_ms(
            b.cpu_ticks.saturating_sub(a.cpu_ticks),
        )),
        _ => None,
    };
    let cpu_ms_per_1000 = cpu_ms
        .filter(|_| total.all_ok > 0)
        .map(|ms| ms * 1000.0 / total.all_ok as f64);
    Ok(TargetResult {
        cpu_ms_per_1000,
        rps_per_core: cpu_ms_per_1000
            .filter(|c| *c > 0.0)
            .map(|c| 1_000_000.0 / c),
        target: target.into(),
        available: true,
        ok: total.ok,
        refused: total.refused,
        io_errors: total.io_errors,
        rps: total.ok as f64 / args.duration_s.max(1) as f64,
        latency: total.latency.percentiles(),
    })
}

/// The request bytes: a context with a targeting key per connection and the attributes
/// the flags' rule reads.
fn request(addr: SocketAddr, flag: &str, key: &str, conn: usize) -> Vec<u8> {
    let body = json!({"context": {
        "targetingKey": format!("user-{conn}"),
        "email": format!("user-{conn}@example.com"),
        "country": "DE",
        "plan": "enterprise",
    }})
    .to_string();
    format!(
        "POST /ofrep/v1/evaluate/flags/{flag} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A keep-alive connection with its read buffer.
struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
    filled: usize,
}

impl Conn {
    async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Self {
            tcp,
            buf: vec![0; 8192],
            filled: 0,
        })
    }

    /// Sends one request and reads its answer; false if the connection must be replaced.
    async fn exchange(&mut self, req: &[u8], tally: &mut Tally, measured: bool) -> bool {
        let t0 = Instant::now();
        if self.tcp.write_all(req).await.is_err() {
            tally.io_errors += u64::from(measured);
            return false;
        }
        let (head, head_len) = loop {
            match ResponseHead::parse(&self.buf[..self.filled]) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(_) => {
                    tally.io_errors += u64::from(measured);
                    return false;
                }
            }
            if self.filled == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match self.tcp.read(&mut self.buf[self.filled..]).await {
                Ok(0) | Err(_) => {
                    tally.io_errors += u64::from(measured);
                    return false;
                }
                Ok(n) => self.filled += n,
            }
        };
        let Some(body_len) = head.content_length else {
            // Every answer here has a length; anything else cannot be framed on keep-alive.
            tally.io_errors += u64::from(measured);
            return false;
        };
        let total = head_len + body_len;
        while self.filled < total {
            if total > self.buf.len() {
                self.buf.resize(total, 0);
            }
            match self.tcp.read(&mut self.buf[self.filled..]).await {
                Ok(0) | Err(_) => {
                    tally.io_errors += u64::from(measured);
                    return false;
                }
                Ok(n) => self.filled += n,
            }
        }
        let elapsed = t0.elapsed();
        self.buf.copy_within(total..self.filled, 0);
        self.filled -= total;
        if head.status == 404 {
            tally.not_found = true;
        }
        tally.all_ok += u64::from(head.status == 200);
        if measured {
            if head.status == 200 {
                tally.ok += 1;
                tally.latency.record(elapsed);
            } else {
                *tally.refused.entry(head.status).or_default() += 1;
            }
        }
        true
    }
}
