//! The SDK's speed: evaluation through the client API on the three shared benchmark flags
//! (`schema/testdata/bench/`), beside the engine's own figure in the same run; what applying
//! one change costs with 10,000 flags held; and the time from `build()` to the first
//! evaluation against a local hub serving 10,000 flags over SSE.
//!
//! `cargo bench -p vexil-sdk`. Figures go to `docs/benchmarks.md` ("SDK"); nothing here
//! asserts a time. Each evaluation benchmark first checks it measures the intended path.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

mod support;
use support::{KEY, local_hub, many_flags};
use vexil_eval::CompiledSnapshot;
use vexil_schema::fixture::load_bench_fixtures;
use vexil_schema::stream::{SdkEvent, event};
use vexil_schema::{EnvironmentSnapshot, Flag, Segment};
use vexil_sdk::{
    Applied, BoxFuture, Client, Context, DataOrigin, DataSource, EventSink, EventsConfig,
    PollingConfig, Shutdown, TestData, Updates,
};

fn evaluate(c: &mut Criterion) {
    let fixtures = match load_bench_fixtures() {
        Ok(f) => f,
        Err(e) => panic!("benchmark fixtures: {e}"),
    };
    let mut group = c.benchmark_group("client");
    for fixture in &fixtures {
        let td = TestData::new();
        td.load(fixture.snapshot.clone());
        let client = match Client::builder("bench").data_source(td).build() {
            Ok(c) => c,
            Err(e) => panic!("client: {e}"),
        };
        let (flag, ctx) = (fixture.flag.as_str(), &fixture.context);
        let d = client.json_variation_detail(flag, ctx, serde_json::Value::Null);
        assert_eq!(d.reason, fixture.expected.reason, "{}", fixture.name);
        assert_eq!(d.variation, fixture.expected.variation, "{}", fixture.name);

        // The same with events on, to an in-memory sink flushed only at the end: each call
        // counts for the summary; the experiment's exposure is recorded once (warm-up), then
        // deduplicated.
        let td_events = TestData::new();
        td_events.load(fixture.snapshot.clone());
        let with_events = match Client::builder("bench")
            .data_source(td_events)
            .events(EventsConfig::default().flush_interval(Duration::from_secs(3600)))
            .event_sink(EventSink::new())
            .build()
        {
            Ok(c) => c,
            Err(e) => panic!("client: {e}"),
        };
        let compiled = CompiledSnapshot::compile(&fixture.snapshot);
        group.bench_function(format!("{}/engine", fixture.name), |b| {
            b.iter(|| compiled.evaluate(black_box(flag), black_box(ctx)))
        });
        if fixture.expected.value.is_boolean() {
            group.bench_function(format!("{}/bool_variation", fixture.name), |b| {
                b.iter(|| client.bool_variation(black_box(flag), black_box(ctx), false))
            });
            group.bench_function(format!("{}/bool_variation+events", fixture.name), |b| {
                b.iter(|| with_events.bool_variation(black_box(flag), black_box(ctx), false))
            });
        } else {
            group.bench_function(format!("{}/string_variation", fixture.name), |b| {
                b.iter(|| client.string_variation(black_box(flag), black_box(ctx), ""))
            });
            group.bench_function(format!("{}/string_variation+events", fixture.name), |b| {
                b.iter(|| with_events.string_variation(black_box(flag), black_box(ctx), ""))
            });
        }
        group.bench_function(format!("{}/json_variation_detail", fixture.name), |b| {
            b.iter(|| {
                client.json_variation_detail(
                    black_box(flag),
                    black_box(ctx),
                    serde_json::Value::Null,
                )
            })
        });
    }
    group.finish();
}

fn update(c: &mut Criterion) {
    let snapshot = many_flags(10_000, 1);
    let td = TestData::new();
    td.load(snapshot.clone());
    let client = match Client::builder("bench").data_source(td.clone()).build() {
        Ok(c) => c,
        Err(e) => panic!("client: {e}"),
    };
    let mut flag = snapshot.flags[5_000].clone();
    let mut on = false;
    // One patch: recompile one flag, relink, diff for listeners, swap.
    c.bench_function("client/apply-patch-10k-flags", |b| {
        b.iter(|| {
            on = !on;
            flag.config.on = on;
            td.update_flag(black_box(flag.clone()))
        })
    });
    black_box(client.version());
}

/// A source that hands its [`Updates`] to the benchmark, so that events go through the
/// client's whole apply path (version check, engine apply, change detection for listeners,
/// snapshot swap, last-known-good notification) exactly as the streaming source's do.
struct Handoff(std::sync::mpsc::Sender<Updates>);

impl DataSource for Handoff {
    fn origin(&self) -> DataOrigin {
        DataOrigin::Upstream
    }

    fn start(self: Box<Self>, updates: Updates, _shutdown: Shutdown) -> BoxFuture {
        let _ = self.0.send(updates);
        Box::pin(std::future::pending())
    }
}

/// A one-key `delta` (one key added, one removed) to a 1,000,000-key segment that a flag
/// matches on, through the client's apply path; the `delta` event's JSON decoding measured
/// beside it.
fn apply_delta(c: &mut Criterion) {
    const KEYS: usize = 1_000_000;
    let segment: Segment = match serde_json::from_value(serde_json::json!({
        "key": "enterprise",
        "included": (0..KEYS).map(|i| format!("account-{i:07}")).collect::<Vec<_>>(),
    })) {
        Ok(s) => s,
        Err(e) => panic!("segment: {e}"),
    };
    let member: Flag = match serde_json::from_value(serde_json::json!({
        "key": "member", "kind": "boolean", "variations": [{"value": true}, {"value": false}],
        "on": true, "off_variation": 1, "fallthrough": {"variation": 1},
        "rules": [{"id": "r", "clauses": [{"attribute": "", "op": "segment_match",
                   "values": ["enterprise"]}], "serve": {"variation": 0}}]
    })) {
        Ok(f) => f,
        Err(e) => panic!("flag: {e}"),
    };
    let snapshot = EnvironmentSnapshot {
        version: 1,
        flags: vec![member],
        segments: vec![segment],
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let client = match Client::builder("bench").data_source(Handoff(tx)).build() {
        Ok(c) => c,
        Err(e) => panic!("client: {e}"),
    };
    let updates = match rx.recv() {
        Ok(u) => u,
        Err(e) => panic!("source: {e}"),
    };
    updates.init_owned(snapshot);
    let mut version = 1;
    // Alternately removes and re-adds the same key, so the segment keeps its size.
    let delta = |version: u64| -> String {
        let (add, remove) = if version.is_multiple_of(2) {
            ("newcomer", "account-0000007")
        } else {
            ("account-0000007", "newcomer")
        };
        format!(
            r#"{{"version":{version},"segment":{{"key":"enterprise","version":{version},"included":{{"add":["{add}"],"remove":["{remove}"]}}}}}}"#
        )
    };
    let decode = |json: &str| -> SdkEvent {
        match SdkEvent::decode(event::DELTA, json) {
            Ok(e) => e,
            Err(e) => panic!("delta: {e}"),
        }
    };
    // It measures the intended path: the edit took effect and listeners' detection ran.
    version += 1;
    let applied = updates.apply(decode(&delta(version)));
    assert_eq!(
        applied,
        Applied::Updated {
            version,
            changed: 1
        }
    );
    assert!(client.bool_variation("member", &Context::new("newcomer"), false));
    assert!(!client.bool_variation("member", &Context::new("account-0000007"), true));
    let mut group = c.benchmark_group("segment-1m");
    group.bench_function("client-apply-one-key-delta", |b| {
        b.iter_batched(
            || {
                version += 1;
                decode(&delta(version))
            },
            |event| updates.apply(black_box(event)),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("decode-one-key-delta", |b| {
        let json = delta(version + 1);
        b.iter(|| decode(black_box(&json)))
    });
    group.finish();
    black_box(client.version());
}

/// The parts of start-up that do not depend on the network: decoding the `put` and
/// compiling it (freeing the results is left out of the timing, as at start-up).
fn init_parts(c: &mut Criterion) {
    let snapshot = many_flags(10_000, 1);
    let json = match serde_json::to_string(&snapshot) {
        Ok(j) => j,
        Err(e) => panic!("{e}"),
    };
    let mut group = c.benchmark_group("init-10k-flags");
    group.sample_size(20);
    // Through the schema's types; the SDK decodes a `put` with a faster mirror of them
    // (src/wire.rs), whose effect shows in the end-to-end figures.
    group.bench_function("decode-put-schema", |b| {
        b.iter_with_large_drop(|| vexil_schema::stream::SdkEvent::decode("put", black_box(&json)))
    });
    group.bench_function("compile", |b| {
        b.iter_with_large_drop(|| CompiledSnapshot::compile(black_box(&snapshot)))
    });
    // Part of `compile`: it copies every flag before compiling it.
    group.bench_function("clone-snapshot", |b| {
        b.iter(|| black_box(&snapshot).clone())
    });
    group.finish();
    println!("put size for 10,000 flags: {} bytes", json.len());
}

fn init(c: &mut Criterion) {
    let hub = local_hub();
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let file = dir.path().join("flags.json");
    let json = match serde_json::to_vec(&many_flags(10_000, 1)) {
        Ok(j) => j,
        Err(e) => panic!("{e}"),
    };
    if let Err(e) = std::fs::write(&file, json) {
        panic!("{e}");
    }
    let user = Context::builder("user-1")
        .set("email", "someone@example.com")
        .set("country", "FR")
        .build();
    let mut group = c.benchmark_group("init-10k-flags");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(20));
    for name in ["streaming", "polling", "file"] {
        group.bench_function(format!("{name}/build-to-first-evaluation"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let builder = Client::builder(KEY).base_url(&hub.url);
                    let builder = match name {
                        "polling" => builder.polling(PollingConfig::default()),
                        "file" => builder.file(&file),
                        _ => builder,
                    };
                    let client = match builder.build() {
                        Ok(c) => c,
                        Err(e) => panic!("client: {e}"),
                    };
                    if let Err(e) = client.wait_for_initialization_blocking(Duration::from_secs(30))
                    {
                        panic!("init: {e}");
                    }
                    assert!(client.bool_variation("flag-09999", &user, false));
                    total += start.elapsed();
                    // Closing is not part of start-up.
                    drop(client);
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, evaluate, update, apply_delta, init_parts, init);
criterion_main!(benches);
