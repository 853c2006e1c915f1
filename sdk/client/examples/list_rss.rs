//! The SDK's resident memory for a 1,000,000-key segment, measured (not calculated): the
//! process's resident set (`VmRSS`) with a client holding a small environment, then after a
//! `put` carrying the segment has been decoded from its JSON (as the stream delivers it) and
//! applied, with the JSON text freed. Linux only.
//!
//! `cargo run --release -p vexil-sdk --example list_rss [-- KEYS]`

use std::sync::mpsc;

use vexil_schema::stream::{SdkEvent, event};
use vexil_sdk::{BoxFuture, Client, Context, DataOrigin, DataSource, Shutdown, Updates};

/// A source that hands its [`Updates`] to `main`.
struct Handoff(mpsc::Sender<Updates>);

impl DataSource for Handoff {
    fn origin(&self) -> DataOrigin {
        DataOrigin::Upstream
    }

    fn start(self: Box<Self>, updates: Updates, _shutdown: Shutdown) -> BoxFuture {
        let _ = self.0.send(updates);
        Box::pin(std::future::pending())
    }
}

/// The resident set, bytes (`VmRSS` of `/proc/self/status`).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// The `put` event's JSON text, written directly (as a stream delivers it: one buffer, no
/// per-key allocation in this harness either, which the allocator would keep and the decoder
/// would reuse, hiding what decoding itself costs).
fn put(version: u64, keys: usize) -> String {
    use std::fmt::Write;
    let mut included = String::with_capacity(keys * 18 + 2);
    for i in 0..keys {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(included, "{sep}\"account-{i:07}\"");
    }
    format!(
        r#"{{"version":{version},"flags":[{{"key":"member","kind":"boolean","variations":[{{"value":true}},{{"value":false}}],"on":true,"off_variation":1,"fallthrough":{{"variation":1}},"rules":[{{"id":"r","clauses":[{{"attribute":"","op":"segment_match","values":["enterprise"]}}],"serve":{{"variation":0}}}}]}}],"segments":[{{"key":"enterprise","included":[{included}]}}]}}"#
    )
}

fn main() -> anyhow::Result<()> {
    let keys: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let (tx, rx) = mpsc::channel();
    let client = Client::builder("example")
        .data_source(Handoff(tx))
        .build()?;
    let updates = rx.recv()?;
    let decode = |json: &str| SdkEvent::decode(event::PUT, json);
    // The same environment with an empty segment: everything but the keys.
    updates.apply(decode(&put(1, 0))?);
    let before = rss();
    let json = put(2, keys);
    let event = decode(&json)?;
    drop(json);
    updates.apply(event);
    let after = rss();
    let key_bytes = (0..keys)
        .map(|i| format!("account-{i:07}").len())
        .sum::<usize>() as u64;
    anyhow::ensure!(
        client.bool_variation("member", &Context::new("account-0000001"), false),
        "the segment is not in effect"
    );
    let grown = after.saturating_sub(before);
    println!(
        "{keys} keys ({key_bytes} bytes of keys): resident set {:.1} MB → {:.1} MB, grown {:.1} MB: {:.1} bytes per key beyond the key's bytes",
        before as f64 / 1e6,
        after as f64 / 1e6,
        grown as f64 / 1e6,
        (grown as f64 - key_bytes as f64) / keys.max(1) as f64
    );
    client.close();
    Ok(())
}
