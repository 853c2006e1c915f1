//! Capacity of one `vexil-relay` process over real TCP (not a criterion bench).
//!
//! ```text
//! cargo bench -p vexil-relay --bench relay_capacity -- --connections 18000 --workers 3 --changes 10
//! ```
//!
//! The coordinator (this process) runs an origin (the library's relay stream over a hub
//! holding one environment of 50 flags, `put` ≈ 16 KB), starts the release `vexil-relay`
//! binary against it, and re-runs itself as `--workers` client processes (the per-process
//! file-descriptor limit is 20,000), each binding its own source address 127.0.0.x (past the
//! ~28k ephemeral ports per address pair) and opening its share of raw HTTP/1.1 SSE
//! connections to the relay's `/sdk/v1/stream`, reading each initial `put`.
//!
//! It reports the relay's resident memory (VmRSS from `/proc`) before and after the
//! subscribers connect, per subscriber; then publishes `--changes` changes at the origin one
//! at a time and records, per subscriber, the wall-clock time from the origin's publish to
//! the `patch` frame being read by the client (origin → relay → subscriber). All processes
//! share the machine's cores.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{Semaphore, mpsc};

const SDK_KEY: &str = "vxs_bench-sdk-key";
const RELAY_KEY: &str = "vxr_bench-relay-key";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn num(name: &str, default: usize) -> usize {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--worker") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return rt.block_on(worker_main());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(coordinator_main())
}

mod common;
use common as origin;
use common::{pct, rss_kib};

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Coordinator.

async fn coordinator_main() -> anyhow::Result<()> {
    use vexil_fanout::{AuthError, Hub, HubConfig, hash_sdk_key, relay_router};

    let connections = num("--connections", 10_000);
    let workers = num("--workers", 2).max(1);
    let changes = num("--changes", 10);

    // The origin.
    let hub = Hub::new(HubConfig::default());
    hub.set_environment_keys(&origin::env(), &[hash_sdk_key(SDK_KEY)]);
    hub.publish_snapshot(&origin::env(), &origin::snapshot())?;
    let scope: std::collections::BTreeSet<_> = [origin::env()].into_iter().collect();
    let auth = move |key: &str| {
        if key == RELAY_KEY {
            Ok(scope.clone())
        } else {
            Err(AuthError::Unauthorized)
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin_addr = listener.local_addr()?;
    tokio::spawn(vexil_fanout::serve_http1(
        listener,
        relay_router(hub.clone(), auth),
        std::future::pending(),
    ));

    // The relay process.
    let relay_bin = arg("--relay-bin").unwrap_or_else(|| env!("CARGO_BIN_EXE_vexil-relay").into());
    let mut relay = Command::new(&relay_bin)
        .args([
            "--upstream-url",
            &format!("http://{origin_addr}"),
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .env("VEXIL_RELAY_KEY", RELAY_KEY)
        .env(
            "RUST_LOG",
            "warn,vexil_relay::app=info,vexil_relay::upstream=info",
        )
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {relay_bin}"))?;
    let relay_pid = relay.id().context("relay pid")?;
    let mut logs = BufReader::new(relay.stdout.take().context("relay stdout")?).lines();
    let mut relay_addr: Option<SocketAddr> = None;
    while let Some(line) = logs.next_line().await? {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        match v["message"].as_str() {
            Some("vexil relay listening") => {
                relay_addr = v["addr"].as_str().and_then(|a| a.parse().ok());
            }
            Some(m) if m.starts_with("relay ready") => break,
            _ => {}
        }
    }
    let relay_addr = relay_addr.context("relay never said where it listens")?;
    // Keep draining its logs.
    tokio::spawn(async move { while let Ok(Some(_)) = logs.next_line().await {} });
    println!("relay {relay_bin} (pid {relay_pid}) on {relay_addr}, origin on {origin_addr}");

    // Warm up with one subscriber so lazily built state is in the baseline.
    let warm = connect(relay_addr, Ipv4Addr::LOCALHOST).await?;
    let rss0 = rss_kib(relay_pid);

    // Workers.
    let started = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, u128)>();
    let mut children: Vec<Child> = Vec::new();
    let mut ready = mpsc::unbounded_channel::<()>();
    for w in 0..workers {
        let share = connections / workers + usize::from(w < connections % workers);
        let source = Ipv4Addr::new(127, 0, 0, u8::try_from(2 + w).unwrap_or(250));
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "--worker",
                "--relay",
                &relay_addr.to_string(),
                "--connections",
                &share.to_string(),
                "--source",
                &source.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("worker stdout")?;
        tokio::spawn(read_worker(stdout, tx.clone(), ready.0.clone()));
        children.push(child);
    }
    for _ in 0..workers {
        tokio::time::timeout(Duration::from_secs(300), ready.1.recv())
            .await
            .context("workers did not connect in time")?
            .context("a worker failed")?;
    }
    let connect_time = started.elapsed();
    let rss1 = rss_kib(relay_pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss2 = rss_kib(relay_pid);
    let n = connections as f64;
    println!(
        "subscribers: {connections} over {workers} worker processes; connected with their put in {connect_time:.1?}"
    );
    println!(
        "relay RSS: {:.1} MiB idle -> {:.1} MiB with subscribers ({:.1} MiB 3 s later)",
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        rss2 as f64 / 1024.0
    );
    println!(
        "relay RSS per idle subscriber: {:.0} B ({:.2} KiB)",
        (rss2.saturating_sub(rss0) * 1024) as f64 / n,
        (rss2.saturating_sub(rss0)) as f64 / n
    );

    // Fan-out: origin publish → relay → every subscriber.
    let mut all = Vec::with_capacity(connections * changes);
    let mut per_change_p99 = Vec::new();
    for version in 2..2 + changes as u64 {
        let t0 = unix_nanos();
        hub.publish_change(&origin::env(), &origin::change(version))?;
        let mut lat = Vec::with_capacity(connections);
        while lat.len() < connections {
            let (v, at) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .context("subscribers did not all receive the change")?
                .context("workers gone")?;
            if v == version {
                lat.push(Duration::from_nanos(
                    u64::try_from(at.saturating_sub(t0)).unwrap_or(u64::MAX),
                ));
            }
        }
        lat.sort();
        per_change_p99.push(pct(&lat, 99.0));
        all.extend(lat);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    all.sort();
    println!(
        "change -> all {connections} subscribers ({changes} changes): p50 {:.1?}  p90 {:.1?}  p99 {:.1?}  max {:.1?}",
        pct(&all, 50.0),
        pct(&all, 90.0),
        pct(&all, 99.0),
        all.last().copied().unwrap_or_default(),
    );
    println!("per-change p99: {per_change_p99:.1?}");
    println!(
        "relay RSS after the changes: {:.1} MiB",
        rss_kib(relay_pid) as f64 / 1024.0
    );
    drop(warm);
    for mut c in children {
        let _ = c.kill().await;
    }
    let _ = relay.kill().await;
    Ok(())
}

async fn read_worker(
    stdout: ChildStdout,
    tx: mpsc::UnboundedSender<(u64, u128)>,
    ready: mpsc::UnboundedSender<()>,
) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut parts = line.split_whitespace();
        match parts.next() {
            Some("ready") => {
                let _ = ready.send(());
            }
            Some("r") => {
                let v = parts.next().and_then(|v| v.parse().ok());
                let at = parts.next().and_then(|v| v.parse().ok());
                if let (Some(v), Some(at)) = (v, at) {
                    let _ = tx.send((v, at));
                }
            }
            _ => eprintln!("worker: {line}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Worker: N subscribers from one source address; reports receipts on stdout.

async fn worker_main() -> anyhow::Result<()> {
    let relay: SocketAddr = arg("--relay").context("--relay")?.parse()?;
    let connections = num("--connections", 1000);
    let source: Ipv4Addr = arg("--source").context("--source")?.parse()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, u128)>();
    let permits = Arc::new(Semaphore::new(128));
    let mut handles = Vec::with_capacity(connections);
    for _ in 0..connections {
        let permit = Arc::clone(&permits).acquire_owned().await?;
        handles.push(tokio::spawn(async move {
            let r = connect(relay, source).await;
            drop(permit);
            r
        }));
    }
    for h in handles {
        let tcp = h.await??;
        spawn_reader(tcp, tx.clone());
    }
    let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
    out.write_all(b"ready\n").await?;
    out.flush().await?;
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 16];
    loop {
        tokio::select! {
            got = rx.recv() => {
                let Some((v, at)) = got else { break };
                out.write_all(format!("r {v} {at}\n").as_bytes()).await?;
                // Batch the lines of one change, then flush.
                while let Ok((v, at)) = rx.try_recv() {
                    out.write_all(format!("r {v} {at}\n").as_bytes()).await?;
                }
                out.flush().await?;
            }
            n = stdin.read(&mut sink) => {
                if matches!(n, Ok(0) | Err(_)) { break; }
            }
        }
    }
    Ok(())
}

/// Opens an SSE connection from `source` and reads through the initial `put`.
async fn connect(relay: SocketAddr, source: Ipv4Addr) -> anyhow::Result<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let mut tcp = socket.connect(relay).await?;
    common::open_stream(&mut tcp, &relay.to_string(), SDK_KEY).await?;
    Ok(tcp)
}

/// Reads the stream, reporting each `patch` id and when it arrived.
fn spawn_reader(mut tcp: tokio::net::TcpStream, tx: mpsc::UnboundedSender<(u64, u128)>) {
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let n = match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let at = unix_nanos();
            let text = String::from_utf8_lossy(&buf[..n]);
            for part in text.split("event: patch\nid: ").skip(1) {
                let id: String = part.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(v) = id.parse() {
                    let _ = tx.send((v, at));
                }
            }
        }
    });
}
