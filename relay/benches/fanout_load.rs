//! Fan-out load measurement over real TCP connections (not a criterion bench).
//!
//! `cargo bench -p vexil-relay --bench fanout_load -- --connections 10000 --changes 20`
//!
//! The binary re-runs itself as a server child process (hub + `axum::serve`), so that the
//! server's memory is measured alone. The parent opens N raw HTTP/1.1 SSE connections, reads
//! each one's initial `put`, then reports the child's heap and RSS growth per subscriber.
//! Then it asks the child to publish changes one at a time and records, for each connection,
//! the time from the request to publish until the `patch` frame has arrived at the client.
//! Client and server share the machine's cores, so latencies include client-side scheduling.
//!
//! Raise the open-file limit first (`ulimit -n 20000`): each side holds N sockets.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const KEY: &str = "bench-sdk-key";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let server = std::env::args().any(|a| a == "--server");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if server {
        rt.block_on(server_main())
    } else {
        rt.block_on(client_main(
            arg("--connections", 1_000),
            arg("--changes", 10),
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Server child: a hub serving one environment; commands on stdin, answers on stdout.

mod common;
use common as server;
use common::{pct, rss_kib};

fn heap_in_use() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 + s.bytes_reallocated as i64 - s.bytes_deallocated as i64
}

async fn server_main() -> anyhow::Result<()> {
    use vexil_fanout::{Hub, HubConfig, SdkKeyTable, hash_sdk_key, sdk_router};

    let hub = Hub::new(HubConfig::default());
    let keys = SdkKeyTable::new();
    keys.set_environment_keys(&server::env(), &[hash_sdk_key(KEY)]);
    hub.publish_snapshot(&server::env(), &server::snapshot())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = sdk_router(hub.clone(), keys);
    if std::env::args().any(|a| a == "--http1") {
        tokio::spawn(vexil_fanout::serve_http1(
            listener,
            app,
            std::future::pending(),
        ));
    } else {
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    let mut out = tokio::io::stdout();
    out.write_all(format!("port {port}\n").as_bytes()).await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut version = 1;
    while let Some(line) = lines.next_line().await? {
        let reply = match line.trim() {
            "publish" => {
                version += 1;
                hub.publish_change(&server::env(), &server::change(version))?;
                format!("ok {version}\n")
            }
            "stats" => format!(
                "heap {} subscribers {}\n",
                heap_in_use(),
                hub.subscriber_count(&server::env())
            ),
            _ => break,
        };
        out.write_all(reply.as_bytes()).await?;
        out.flush().await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Client parent.

struct Child {
    proc: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    async fn ask(&mut self, cmd: &str) -> anyhow::Result<String> {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        self.stdout
            .next_line()
            .await?
            .ok_or_else(|| anyhow::anyhow!("server exited"))
    }

    async fn stats(&mut self) -> anyhow::Result<(i64, usize)> {
        let line = self.ask("stats").await?;
        let parts: Vec<&str> = line.split_whitespace().collect();
        Ok((parts[1].parse()?, parts[3].parse()?))
    }
}

async fn client_main(connections: usize, changes: usize) -> anyhow::Result<()> {
    let mut proc = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--server")
        .args(std::env::args().filter(|a| a == "--http1"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdin = proc
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    let stdout = proc
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut child = Child {
        proc,
        stdin,
        stdout: BufReader::new(stdout).lines(),
    };
    let pid = child.proc.id().unwrap_or(0);
    let first = child.stdout.next_line().await?.unwrap_or_default();
    let port: u16 = first
        .strip_prefix("port ")
        .ok_or_else(|| anyhow::anyhow!("unexpected {first:?}"))?
        .parse()?;

    // Warm up: one connection, so lazily initialised runtime state is in the baseline.
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let warm = connect(port).await?;
    spawn_reader(warm, tx.clone());
    let (heap0, _) = child.stats().await?;
    let rss0 = rss_kib(pid);

    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(256));
    let mut handles = Vec::with_capacity(connections);
    for _ in 0..connections {
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let tx = tx.clone();
        handles.push(tokio::spawn(async move {
            let r = connect(port).await;
            drop(permit);
            r.map(|s| spawn_reader(s, tx))
        }));
    }
    for h in handles {
        h.await??;
    }
    let connect_time = started.elapsed();
    let (heap1, subs) = child.stats().await?;
    let rss1 = rss_kib(pid);
    let n = connections as f64;
    println!("connections: {connections} (server reports {subs} subscribers, incl. 1 warm-up)");
    println!("connect + initial put: {connect_time:?} total");
    println!(
        "server heap per subscriber: {:.0} B   (heap {:.1} MiB -> {:.1} MiB)",
        (heap1 - heap0) as f64 / n,
        heap0 as f64 / 1048576.0,
        heap1 as f64 / 1048576.0
    );
    println!(
        "server RSS per subscriber:  {:.0} B   (RSS {:.1} MiB -> {:.1} MiB)",
        (rss1.saturating_sub(rss0) * 1024) as f64 / n,
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0
    );

    let expected = connections + 1;
    let mut all = Vec::with_capacity(expected * changes);
    let mut worst_p99 = Duration::ZERO;
    for _ in 0..changes {
        let t0 = Instant::now();
        let reply = child.ask("publish").await?;
        let version: u64 = reply.trim_start_matches("ok ").parse()?;
        let mut lat = Vec::with_capacity(expected);
        while lat.len() < expected {
            let (v, at) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await?
                .ok_or_else(|| anyhow::anyhow!("readers gone"))?;
            anyhow::ensure!(v == version, "got version {v}, expected {version}");
            lat.push(at.duration_since(t0));
        }
        lat.sort();
        worst_p99 = worst_p99.max(pct(&lat, 99.0));
        all.extend(lat);
    }
    all.sort();
    println!(
        "change -> every subscriber ({changes} changes x {expected}): p50 {:?}  p90 {:?}  p99 {:?}  max {:?}  (worst per-change p99 {:?})",
        pct(&all, 50.0),
        pct(&all, 90.0),
        pct(&all, 99.0),
        all.last().copied().unwrap_or_default(),
        worst_p99
    );
    let _ = child.ask("quit").await;
    Ok(())
}

/// Opens an SSE connection and reads through the initial `put`.
async fn connect(port: u16) -> anyhow::Result<TcpStream> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    common::open_stream(&mut tcp, "127.0.0.1", KEY).await?;
    Ok(tcp)
}

/// Reads the stream, reporting each `patch` id and when it arrived.
fn spawn_reader(mut tcp: TcpStream, tx: mpsc::UnboundedSender<(u64, Instant)>) {
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            let n = match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let at = Instant::now();
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
