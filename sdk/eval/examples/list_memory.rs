//! Memory and compile time of a 1,000,000-key segment in a compiled snapshot (what an SDK
//! and a relay hold per environment), measured with a counting allocator.
//!
//! `cargo run --release -p vexil-eval --example list_memory`

use std::alloc::System;
use std::time::Instant;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use vexil_eval::CompiledSnapshot;
use vexil_schema::{EnvironmentSnapshot, KeyList, Segment, SegmentKey};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes still held: `stats_alloc` already counts a realloc's growth or shrink in
/// `bytes_allocated`/`bytes_deallocated`.
fn net(stats: stats_alloc::Stats) -> isize {
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize
}

fn main() {
    const KEYS: usize = 1_000_000;
    let region = Region::new(GLOBAL);
    let included: KeyList = (0..KEYS).map(|i| format!("account-{i:07}")).collect();
    let key_bytes: usize = included.key_bytes();
    let source = net(region.change());
    let snapshot = EnvironmentSnapshot {
        version: 1,
        flags: Vec::new(),
        segments: vec![Segment {
            key: SegmentKey::parse("enterprise").unwrap_or_else(|e| panic!("{e}")),
            name: String::new(),
            description: String::new(),
            included,
            excluded: KeyList::new(),
            rules: Vec::new(),
            salt: String::new(),
            version: 1,
        }],
    };
    let region = Region::new(GLOBAL);
    let started = Instant::now();
    let compiled = CompiledSnapshot::compile_owned(snapshot);
    let took = started.elapsed();
    // compile_owned frees the source list (the compiled snapshot keeps one copy of the keys).
    let held = source + net(region.change());
    let per_key = (held as f64 - key_bytes as f64) / KEYS as f64;
    println!(
        "{KEYS} keys ({key_bytes} bytes of keys): compile {took:?}; compiled snapshot holds {held} bytes, {per_key:.1} bytes per key beyond the key's bytes"
    );
    println!(
        "source KeyList for comparison: {source} bytes, {:.1} bytes per key beyond the key's bytes",
        (source as f64 - key_bytes as f64) / KEYS as f64
    );
    drop(compiled);
}
