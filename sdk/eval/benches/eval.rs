//! Evaluation speed on the three shared benchmark flags (`schema/testdata/bench/`).
//!
//! `cargo bench -p vexil-eval`. Figures go to `docs/benchmarks.md`; nothing here asserts a
//! time. Each benchmark first checks that it measures the intended path (the expected
//! variation and reason), so an engine change cannot silently make it measure an error.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use vexil_eval::CompiledSnapshot;
use vexil_schema::EnvironmentSnapshot;
use vexil_schema::fixture::load_bench_fixtures;

fn evaluate(c: &mut Criterion) {
    let fixtures = match load_bench_fixtures() {
        Ok(f) => f,
        Err(e) => panic!("benchmark fixtures: {e}"),
    };
    let mut group = c.benchmark_group("evaluate");
    for fixture in &fixtures {
        let compiled = CompiledSnapshot::compile(&fixture.snapshot);
        let eval = compiled.evaluate(&fixture.flag, &fixture.context);
        assert_eq!(
            eval.to_reason(),
            fixture.expected.reason,
            "{}",
            fixture.name
        );
        assert_eq!(
            eval.variation, fixture.expected.variation,
            "{}",
            fixture.name
        );
        group.bench_function(fixture.name.as_str(), |b| {
            b.iter(|| compiled.evaluate(black_box(&fixture.flag), black_box(&fixture.context)))
        });
    }
    group.finish();

    // Context: what a miss and the owned wire conversion cost.
    let compiled = CompiledSnapshot::compile(&fixtures[0].snapshot);
    let ctx = &fixtures[0].context;
    c.bench_function("evaluate/flag-not-found", |b| {
        b.iter(|| compiled.evaluate(black_box("no-such-flag"), black_box(ctx)))
    });
}

fn compile(c: &mut Criterion) {
    let fixtures = match load_bench_fixtures() {
        Ok(f) => f,
        Err(e) => panic!("benchmark fixtures: {e}"),
    };
    let mut group = c.benchmark_group("compile");
    for fixture in &fixtures {
        group.bench_function(fixture.name.as_str(), |b| {
            b.iter(|| CompiledSnapshot::compile(black_box(&fixture.snapshot)))
        });
    }
    group.finish();
}

/// A patch to one flag among 10,000 (each with a regex rule, a segment reference and a
/// rollout) against compiling the whole snapshot again.
fn update(c: &mut Criterion) {
    let flags: Vec<serde_json::Value> = (0..10_000)
        .map(|i| {
            serde_json::json!({
                "key": format!("flag-{i}"), "kind": "boolean",
                "variations": [{"value": true}, {"value": false}],
                "on": true, "off_variation": 1,
                "rules": [{"id": "r", "clauses": [
                    {"attribute": "email", "op": "matches", "values": [format!("^user-{i}@[a-z]+\\.com$")]},
                    {"attribute": "", "op": "segment_match", "values": [format!("segment-{}", i % 100)]}
                ], "serve": {"variation": 0}}],
                "fallthrough": {"rollout": {"variations": [
                    {"variation": 0, "weight": 50_000}, {"variation": 1, "weight": 50_000}]}}
            })
        })
        .collect();
    let segments: Vec<serde_json::Value> = (0..100)
        .map(|i| serde_json::json!({"key": format!("segment-{i}"), "included": [format!("user-{i}")]}))
        .collect();
    let snapshot: EnvironmentSnapshot = match serde_json::from_value(
        serde_json::json!({"version": 1, "flags": flags, "segments": segments}),
    ) {
        Ok(s) => s,
        Err(e) => panic!("update benchmark snapshot: {e}"),
    };
    let compiled = CompiledSnapshot::compile(&snapshot);
    let mut patched = snapshot.flags[5_000].clone();
    patched.config.on = false;
    let mut group = c.benchmark_group("update-10k-flags");
    group.sample_size(10);
    group.bench_function("with_flag", |b| {
        b.iter(|| compiled.with_flag(black_box(patched.clone()), 2))
    });
    group.bench_function("compile", |b| {
        b.iter(|| CompiledSnapshot::compile(black_box(&snapshot)))
    });
    group.finish();
}

criterion_group!(benches, evaluate, compile, update);
criterion_main!(benches);
