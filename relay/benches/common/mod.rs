//! What the relay benches share: the benchmark environment (50 flags with a targeting rule
//! each, `put` ≈ 16 KB), its changes, and small measurement helpers.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use serde_json::json;
use vexil_schema::stream::{Change, EnvironmentId, Patch, PatchItem};
use vexil_schema::{
    Clause, EnvironmentSnapshot, Flag, FlagConfig, FlagKey, FlagKind, Operator, Rule, Serve,
    Variation,
};

/// The benchmark environment.
pub fn env() -> EnvironmentId {
    EnvironmentId::parse("bench/prod").unwrap()
}

/// A realistic flag: two variations, one targeting rule.
pub fn flag(i: usize, serve: usize) -> Flag {
    let mut config = FlagConfig::serving(serve);
    config.on = true;
    config.rules = vec![Rule {
        id: format!("rule-{i}"),
        description: None,
        clauses: vec![Clause {
            attribute: "email".into(),
            op: Operator::EndsWith,
            values: vec![json!("@example.com")],
            negate: false,
        }],
        serve: Serve::Variation(0),
    }];
    Flag {
        key: FlagKey::parse(format!("flag-{i:03}")).unwrap(),
        kind: FlagKind::Boolean,
        variations: vec![Variation::new(json!(true)), Variation::new(json!(false))],
        client_side: false,
        config,
    }
}

/// Its state at version 1: 50 flags serving `false`.
pub fn snapshot() -> EnvironmentSnapshot {
    EnvironmentSnapshot {
        version: 1,
        flags: (0..50).map(|i| flag(i, 1)).collect(),
        segments: vec![],
    }
}

/// The change to `version`: `flag-007` flips between its two variations.
pub fn change(version: u64) -> Change {
    Change::Patch(Patch {
        version,
        item: PatchItem::Flag(flag(7, (version % 2) as usize)),
    })
}

/// Resident memory of process `pid` in KiB (0 if unreadable).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The `p`-th percentile of sorted durations (nearest rank; zero when empty).
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Sends `GET /sdk/v1/stream` on `tcp` (to `host`, with SDK key `key`) and reads through the
/// initial `put`.
pub async fn open_stream(tcp: &mut TcpStream, host: &str, key: &str) -> anyhow::Result<()> {
    let req =
        format!("GET /sdk/v1/stream HTTP/1.1\r\nhost: {host}\r\nauthorization: {key}\r\n\r\n");
    tcp.write_all(req.as_bytes()).await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = tcp.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "closed during the initial put");
        seen.extend_from_slice(&buf[..n]);
        if seen.windows(4).any(|w| w == b"]}\n\n") {
            anyhow::ensure!(
                seen.starts_with(b"HTTP/1.1 200"),
                "bad answer: {}",
                String::from_utf8_lossy(&seen[..seen.len().min(200)])
            );
            return Ok(());
        }
    }
}
