//! `ofrep`: OpenFeature remote evaluation as fast as C keep-alive HTTP/1.1 connections can
//! send it, against the relay and the control plane, and optionally Unleash Edge beside them:
//!
//! - `single`: `POST /ofrep/v1/evaluate/flags/{key}` (Edge: `POST /api/frontend/features/{name}`);
//! - `bulk`: `POST /ofrep/v1/evaluate/flags`, every flag (Edge: `POST /api/frontend`, its
//!   evaluated frontend endpoint).
//!
//! A hand-written client (one request in flight per connection, raw sockets, latencies in an
//! HDR histogram) so the client costs as little of the shared cores as possible. Requests
//! during the warm-up are not counted. Connections rotate over several SDK keys and one
//! context each (half of them match the flags' rule).
//!
//! Honest figures: only successful (2xx) answers count as throughput. Any other answer, or a
//! connection error, at any time makes the run invalid (exit non-zero) and the report says
//! how many of which: a rate limit answering 429 quickly is not evaluation throughput. The
//! started server and relays get `VEXIL_OFREP_RATE_LIMIT` explicitly (`--ofrep-rate-limit`,
//! default 0: off). With Edge, both services must first answer the same values for the same
//! contexts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::edge::{Edge, EdgeOptions, unleash_context};
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
    /// Measured time per target and endpoint.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Unmeasured time first, per target and endpoint.
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,
    /// SDK keys the connections rotate over.
    #[arg(long, default_value_t = 16)]
    pub sdk_keys: usize,
    /// Which services to load: `relay`, `server`, `edge` (Unleash Edge, `--edge-bin`).
    #[arg(long, value_delimiter = ',', default_value = "relay,server")]
    pub targets: Vec<String>,
    /// Which evaluations: `single` (one flag) and/or `bulk` (every flag).
    #[arg(long, value_delimiter = ',', default_value = "single,bulk")]
    pub endpoints: Vec<String>,
    /// Goal: requests per second.
    #[arg(long, default_value_t = 60_000.0)]
    pub goal_rps: f64,
    /// Goal: p99 latency, milliseconds.
    #[arg(long, default_value_t = 2.0)]
    pub goal_p99_ms: f64,
    /// Goal: the relay's successful requests per second over Edge's (same endpoint kind),
    /// at an equal or lower p99.
    #[arg(long, default_value_t = 2.0)]
    pub goal_edge_ratio: f64,
    /// The system under test.
    #[command(flatten)]
    pub stack: StackOptions,
    /// Unleash Edge, for `--targets edge`.
    #[command(flatten)]
    pub edge: EdgeOptions,
}

/// The outcome against one service and endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// `relay`, `server` or `edge`.
    pub target: String,
    /// `single` or `bulk`.
    pub endpoint: String,
    /// Whether the endpoint exists there (a 404 on the first request: not).
    pub available: bool,
    /// Successful (2xx) requests in the measured window.
    pub ok: u64,
    /// Other answers by status code, warm-up included.
    pub refused: BTreeMap<u16, u64>,
    /// Connection or protocol failures, warm-up included.
    pub io_errors: u64,
    /// Successful requests per second.
    pub rps: f64,
    /// Latency of successful requests.
    pub latency: Percentiles,
    /// Mean response body size, bytes.
    pub body_bytes: u64,
    /// CPU time the serving process spent per 1,000 successful requests (warm-up included
    /// on both sides), milliseconds: what a request costs it however busy the machine is.
    pub cpu_ms_per_1000: Option<f64>,
    /// Requests per second one fully used core would serve at that cost.
    pub rps_per_core: Option<f64>,
}

/// Why a result makes the run invalid (empty: valid). Only 2xx answers are evaluations; any
/// other answer or a broken connection means the figure measured something else.
pub fn invalid_reasons(r: &TargetResult) -> Vec<String> {
    let mut reasons = Vec::new();
    let what = format!("{} {}", r.target, r.endpoint);
    if !r.available {
        return vec![format!(
            "{what}: 404 on the first request: endpoint missing"
        )];
    }
    let refused: u64 = r.refused.values().sum();
    if refused > 0 {
        let hint = if r.refused.contains_key(&429) {
            " (429: a rate limit answered, not the evaluator; see --ofrep-rate-limit)"
        } else {
            ""
        };
        reasons.push(format!(
            "{what}: {} non-2xx answers {:?} beside {} successful{hint}",
            count(refused),
            r.refused,
            count(r.ok)
        ));
    }
    if r.io_errors > 0 {
        reasons.push(format!(
            "{what}: {} connection or protocol errors",
            count(r.io_errors)
        ));
    }
    if r.ok == 0 {
        reasons.push(format!("{what}: no successful evaluation"));
    }
    reasons
}

/// Runs the scenario.
pub async fn run(args: &OfrepArgs) -> anyhow::Result<Report> {
    let start = Instant::now();
    for e in &args.endpoints {
        anyhow::ensure!(
            e == "single" || e == "bulk",
            "unknown endpoint {e:?}: use single and/or bulk"
        );
    }
    let mut stack = Stack::start(&args.stack, args.sdk_keys).await?;
    let flag = stack
        .flags
        .first()
        .cloned()
        .context("the environment has no flag")?;
    let mut failures = Vec::new();
    let mut edge = None;
    let mut agreement = Value::Null;
    if args.targets.iter().any(|t| t == "edge") {
        let e = Edge::start(&args.edge, stack.dir(), &stack.flags).await?;
        let relay = match stack.relay_addr {
            Some(a) => a,
            None => stack.start_relay(args.stack.relay_bin.as_deref()).await?,
        };
        match check_agreement(relay, &stack.sdk_keys[0], e.addr, &e.token, &stack.flags).await {
            Ok(report) => agreement = report,
            Err(why) => failures.push(format!("relay and Edge disagree: {why:#}")),
        }
        edge = Some(e);
    }
    let mut results = Vec::new();
    if failures.is_empty() {
        for target in &args.targets {
            let (addr, pid, token) = match target.as_str() {
                "relay" => {
                    // Started once, for the agreement check or here.
                    let addr = match stack.relay_addr.filter(|_| stack.relay_pid().is_some()) {
                        Some(a) => a,
                        None => stack.start_relay(args.stack.relay_bin.as_deref()).await?,
                    };
                    (addr, stack.relay_pid(), None)
                }
                "server" => (stack.server_addr, stack.server_pid(), None),
                "edge" => {
                    let e = edge.as_ref().context("Edge not started")?;
                    (e.addr, e.pid(), Some(e.token.clone()))
                }
                other => anyhow::bail!("unknown target {other:?}: use relay, server and/or edge"),
            };
            for endpoint in &args.endpoints {
                let requests: Vec<Vec<u8>> = (0..args.connections.max(1))
                    .map(|c| match &token {
                        Some(t) => edge_request(addr, endpoint, &flag, t, c),
                        None => ofrep_request(
                            addr,
                            endpoint,
                            &flag,
                            &stack.sdk_keys[c % stack.sdk_keys.len()],
                            c,
                        ),
                    })
                    .collect();
                let r = load(target, endpoint, addr, pid, requests, args).await?;
                results.push(r);
            }
        }
    }
    let edge_tail = edge.as_ref().map(Edge::log_tail);
    if let Some(e) = edge {
        e.stop().await;
    }
    let trace_rows = stack.trace_rows();
    stack.shutdown().await;

    let mut rows = Vec::new();
    for r in &results {
        let reasons = invalid_reasons(r);
        let what = format!("{} {}", r.target, r.endpoint);
        if r.available {
            rows.push(Row::goal(
                format!("{what}: successful requests/s"),
                count(r.rps as u64),
                format!("≥ {}", count(args.goal_rps as u64)),
                r.rps >= args.goal_rps,
            ));
            rows.push(Row::info(
                format!("{what}: latency p50 / p95"),
                format!("{} / {}", ms(r.latency.p50_ms), ms(r.latency.p95_ms)),
            ));
            rows.push(Row::goal(
                format!("{what}: latency p99"),
                ms(r.latency.p99_ms),
                format!("≤ {}", ms(args.goal_p99_ms)),
                r.latency.p99_ms <= args.goal_p99_ms,
            ));
            if let (Some(cpu), Some(per_core)) = (r.cpu_ms_per_1000, r.rps_per_core) {
                rows.push(Row::info(
                    format!("{what}: CPU per 1,000 requests (→ per core)"),
                    format!("{} (→ {}/s)", ms(cpu), count(per_core as u64)),
                ));
            }
            rows.push(Row::info(
                format!("{what}: non-2xx / I/O errors"),
                format!("{:?} / {}", r.refused, r.io_errors),
            ));
        }
        failures.extend(reasons);
    }
    let mut ratios = Vec::new();
    for endpoint in &args.endpoints {
        let find = |t: &str| {
            results
                .iter()
                .find(|r| r.target == t && &r.endpoint == endpoint && r.ok > 0)
        };
        if let (Some(relay), Some(edge)) = (find("relay"), find("edge")) {
            let ratio = relay.rps / edge.rps.max(f64::MIN_POSITIVE);
            let p99_ok = relay.latency.p99_ms <= edge.latency.p99_ms;
            rows.push(Row::goal(
                format!("relay ÷ Edge {endpoint}: requests/s (p99 relay / Edge)"),
                format!(
                    "{ratio:.2}× ({} / {})",
                    ms(relay.latency.p99_ms),
                    ms(edge.latency.p99_ms)
                ),
                format!("≥ {:.1}× at ≤ p99", args.goal_edge_ratio),
                ratio >= args.goal_edge_ratio && p99_ok,
            ));
            ratios.push(json!({
                "endpoint": endpoint,
                "relay_over_edge_rps": ratio,
                "relay_rps": relay.rps,
                "edge_rps": edge.rps,
                "relay_p99_ms": relay.latency.p99_ms,
                "edge_p99_ms": edge.latency.p99_ms,
            }));
        }
    }
    if !failures.is_empty()
        && let Some(tail) = edge_tail
    {
        failures.push(format!("Edge log tail:\n{tail}"));
    }
    let details = json!({
        "connections": args.connections,
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "sdk_keys": args.sdk_keys,
        "ofrep_rate_limit": args.stack.ofrep_rate_limit,
        "flags": args.stack.flags,
        "flag": flag,
        "results": results,
        "edge_agreement": agreement,
        "relay_over_edge": ratios,
    });
    rows.extend(trace_rows);
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

/// The context of connection `conn`: its own targeting key; even connections match the
/// flags' rule (`@example.com`), odd ones do not.
fn context(conn: usize) -> Value {
    let domain = if conn.is_multiple_of(2) {
        "example.com"
    } else {
        "example.org"
    };
    json!({
        "targetingKey": format!("user-{conn}"),
        "email": format!("user-{conn}@{domain}"),
        "country": "DE",
        "plan": "enterprise",
    })
}

/// An OFREP request of connection `conn`.
fn ofrep_request(addr: SocketAddr, endpoint: &str, flag: &str, key: &str, conn: usize) -> Vec<u8> {
    let body = json!({ "context": context(conn) }).to_string();
    let path = match endpoint {
        "bulk" => "/ofrep/v1/evaluate/flags".to_owned(),
        _ => format!("/ofrep/v1/evaluate/flags/{flag}"),
    };
    http_post(addr, &path, key, &body)
}

/// The same evaluation on Unleash Edge's frontend API.
fn edge_request(addr: SocketAddr, endpoint: &str, flag: &str, token: &str, conn: usize) -> Vec<u8> {
    let body = unleash_context(&context(conn)).to_string();
    let path = match endpoint {
        "bulk" => "/api/frontend".to_owned(),
        _ => format!("/api/frontend/features/{flag}"),
    };
    http_post(addr, &path, token, &body)
}

fn http_post(addr: SocketAddr, path: &str, authorization: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: {authorization}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Asks the relay and Edge for the same contexts (one matching the rule, one not): every
/// flag's value from OFREP bulk must equal "listed as enabled" by Edge's frontend API, and
/// single-flag answers must agree too. Returns what was compared.
async fn check_agreement(
    relay: SocketAddr,
    sdk_key: &str,
    edge: SocketAddr,
    token: &str,
    flags: &[String],
) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut compared = Vec::new();
    for conn in [0usize, 1] {
        let ctx = context(conn);
        let vexil: Value = client
            .post(format!("http://{relay}/ofrep/v1/evaluate/flags"))
            .header("authorization", format!("Bearer {sdk_key}"))
            .json(&json!({ "context": ctx }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut vexil_on = BTreeSet::new();
        for item in vexil["flags"]
            .as_array()
            .context("OFREP bulk without flags")?
        {
            let key = item["key"].as_str().context("OFREP item without key")?;
            match item["value"].as_bool() {
                Some(true) => {
                    vexil_on.insert(key.to_owned());
                }
                Some(false) => {}
                None => anyhow::bail!("OFREP answered {item} for {key}"),
            }
        }
        let unleash: Value = client
            .post(format!("http://{edge}/api/frontend"))
            .header("authorization", token)
            .json(&unleash_context(&ctx))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let edge_on: BTreeSet<String> = unleash["toggles"]
            .as_array()
            .context("Edge frontend answer without toggles")?
            .iter()
            .filter(|t| t["enabled"] == true)
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect();
        anyhow::ensure!(
            vexil_on == edge_on,
            "context {ctx}: OFREP bulk has {} flags true, Edge {} enabled (differ: {:?})",
            vexil_on.len(),
            edge_on.len(),
            vexil_on
                .symmetric_difference(&edge_on)
                .take(5)
                .collect::<Vec<_>>()
        );
        let flag = flags.first().context("no flag")?;
        let one: Value = client
            .post(format!("http://{relay}/ofrep/v1/evaluate/flags/{flag}"))
            .header("authorization", format!("Bearer {sdk_key}"))
            .json(&json!({ "context": ctx }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let edge_one: Value = client
            .post(format!("http://{edge}/api/frontend/features/{flag}"))
            .header("authorization", token)
            .json(&unleash_context(&ctx))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::ensure!(
            one["value"] == edge_one["enabled"],
            "context {ctx}, flag {flag}: OFREP {} vs Edge {}",
            one["value"],
            edge_one["enabled"]
        );
        compared
            .push(json!({"context": ctx, "flags_true": vexil_on.len(), "single": one["value"]}));
    }
    Ok(json!({"agree": true, "contexts": compared, "flags": flags.len()}))
}

/// Per-connection tallies.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    /// Successful requests including the warm-up.
    all_ok: u64,
    body_bytes: u64,
    refused: BTreeMap<u16, u64>,
    /// Sum of `refused`.
    refused_total: u64,
    io_errors: u64,
    latency: Recorder,
    not_found: bool,
}

/// Counters every connection adds to, read by the progress line.
#[derive(Debug, Default)]
struct Live {
    ok: AtomicU64,
    refused: AtomicU64,
    io_errors: AtomicU64,
}

async fn load(
    target: &str,
    endpoint: &str,
    addr: SocketAddr,
    pid: Option<u32>,
    requests: Vec<Vec<u8>>,
    args: &OfrepArgs,
) -> anyhow::Result<TargetResult> {
    let what = format!("{target} {endpoint}");
    // One probe first: a missing endpoint is reported, not hammered.
    let mut probe_tally = Tally::default();
    let mut conn = Conn::connect(addr).await?;
    conn.exchange(&requests[0], &mut probe_tally, false).await;
    if probe_tally.not_found {
        return Ok(TargetResult {
            target: target.into(),
            endpoint: endpoint.into(),
            available: false,
            ok: 0,
            refused: probe_tally.refused,
            io_errors: 0,
            rps: 0.0,
            latency: Recorder::new().percentiles(),
            body_bytes: 0,
            cpu_ms_per_1000: None,
            rps_per_core: None,
        });
    }
    eprintln!(
        "  {what}: {} connections, {} s warm-up + {} s measured",
        requests.len(),
        args.warmup_s,
        args.duration_s
    );
    let cpu_before = pid.and_then(procstat::sample);
    let begin = Instant::now();
    let measure_from = begin + Duration::from_secs(args.warmup_s);
    let end = measure_from + Duration::from_secs(args.duration_s);
    let live = Arc::new(Live::default());
    let mut tasks = tokio::task::JoinSet::new();
    for req in requests {
        let live = Arc::clone(&live);
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
                            live.io_errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let measured = Instant::now() >= measure_from;
                let (ok, refused, io) = (tally.all_ok, tally.refused_total, tally.io_errors);
                if !c.exchange(&req, &mut tally, measured).await {
                    conn = None;
                }
                live.ok.fetch_add(tally.all_ok - ok, Ordering::Relaxed);
                live.refused
                    .fetch_add(tally.refused_total - refused, Ordering::Relaxed);
                live.io_errors
                    .fetch_add(tally.io_errors - io, Ordering::Relaxed);
            }
            tally
        });
    }
    // Progress while the connections run.
    let progress = {
        let live = Arc::clone(&live);
        let what = what.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::fleet::PROGRESS_EVERY);
            tick.tick().await;
            let mut last = 0;
            loop {
                tick.tick().await;
                let ok = live.ok.load(Ordering::Relaxed);
                eprintln!(
                    "  [{:>6.1} s] {what}: {} successful ({}/s){}{}",
                    begin.elapsed().as_secs_f64(),
                    count(ok),
                    count((ok - last) / crate::fleet::PROGRESS_EVERY.as_secs().max(1)),
                    match live.refused.load(Ordering::Relaxed) {
                        0 => String::new(),
                        n => format!(", {} NON-2XX ANSWERS (the run is invalid)", count(n)),
                    },
                    match live.io_errors.load(Ordering::Relaxed) {
                        0 => String::new(),
                        n => format!(", {n} I/O errors"),
                    }
                );
                last = ok;
            }
        })
    };
    let mut total = Tally::default();
    while let Some(t) = tasks.join_next().await {
        let t = t.context("a load connection panicked")?;
        total.ok += t.ok;
        total.all_ok += t.all_ok;
        total.body_bytes += t.body_bytes;
        total.io_errors += t.io_errors;
        for (k, v) in t.refused {
            *total.refused.entry(k).or_default() += v;
        }
        total.latency.merge(&t.latency);
    }
    progress.abort();
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
        endpoint: endpoint.into(),
        available: true,
        ok: total.ok,
        refused: total.refused,
        io_errors: total.io_errors,
        rps: total.ok as f64 / args.duration_s.max(1) as f64,
        latency: total.latency.percentiles(),
        body_bytes: total.body_bytes / total.all_ok.max(1),
    })
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
    /// Non-2xx answers and connection errors are counted whether measured or not: they make
    /// the run invalid.
    async fn exchange(&mut self, req: &[u8], tally: &mut Tally, measured: bool) -> bool {
        let t0 = Instant::now();
        if self.tcp.write_all(req).await.is_err() {
            tally.io_errors += 1;
            return false;
        }
        let (head, head_len) = loop {
            match ResponseHead::parse(&self.buf[..self.filled]) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(_) => {
                    tally.io_errors += 1;
                    return false;
                }
            }
            if self.filled == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match self.tcp.read(&mut self.buf[self.filled..]).await {
                Ok(0) | Err(_) => {
                    tally.io_errors += 1;
                    return false;
                }
                Ok(n) => self.filled += n,
            }
        };
        let Some(body_len) = head.content_length else {
            // Every answer here has a length; anything else cannot be framed on keep-alive.
            tally.io_errors += 1;
            return false;
        };
        let total = head_len + body_len;
        while self.filled < total {
            if total > self.buf.len() {
                self.buf.resize(total, 0);
            }
            match self.tcp.read(&mut self.buf[self.filled..]).await {
                Ok(0) | Err(_) => {
                    tally.io_errors += 1;
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
        if (200..300).contains(&head.status) {
            tally.all_ok += 1;
            tally.body_bytes += body_len as u64;
            if measured {
                tally.ok += 1;
                tally.latency.record(elapsed);
            }
        } else {
            *tally.refused.entry(head.status).or_default() += 1;
            tally.refused_total += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(ok: u64, refused: &[(u16, u64)], io_errors: u64) -> TargetResult {
        TargetResult {
            target: "relay".into(),
            endpoint: "bulk".into(),
            available: true,
            ok,
            refused: refused.iter().copied().collect(),
            io_errors,
            rps: ok as f64,
            latency: Recorder::new().percentiles(),
            body_bytes: 0,
            cpu_ms_per_1000: None,
            rps_per_core: None,
        }
    }

    #[test]
    fn only_a_run_of_successful_answers_is_valid() {
        assert!(invalid_reasons(&result(1_000, &[], 0)).is_empty());

        let limited = invalid_reasons(&result(160_039, &[(429, 1_200_017)], 0));
        assert_eq!(limited.len(), 1, "{limited:?}");
        assert!(limited[0].contains("1,200,017 non-2xx"), "{}", limited[0]);
        assert!(limited[0].contains("rate limit"), "{}", limited[0]);

        let broken = invalid_reasons(&result(10, &[(503, 1)], 2));
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(!broken[0].contains("rate limit"));
        assert!(broken[1].contains("2 connection or protocol errors"));

        let nothing = invalid_reasons(&result(0, &[], 0));
        assert_eq!(
            nothing,
            vec!["relay bulk: no successful evaluation".to_owned()]
        );

        let mut missing = result(0, &[(404, 1)], 0);
        missing.available = false;
        assert!(invalid_reasons(&missing)[0].contains("endpoint missing"));
    }

    #[test]
    fn requests_are_complete_http_posts() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let r = String::from_utf8(ofrep_request(addr, "bulk", "f", "k", 1)).unwrap();
        assert!(
            r.starts_with("POST /ofrep/v1/evaluate/flags HTTP/1.1\r\n"),
            "{r}"
        );
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(
            body.contains("@example.org"),
            "odd connections do not match"
        );
        let e = String::from_utf8(edge_request(addr, "single", "f", "t", 0)).unwrap();
        assert!(
            e.starts_with("POST /api/frontend/features/f HTTP/1.1\r\n"),
            "{e}"
        );
        assert!(e.contains("\"userId\":\"user-0\""), "{e}");
    }
}
