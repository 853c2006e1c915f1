//! Large segment lists: applying a one-key `delta` to a 1,000,000-key segment, and compiling
//! such a segment. `cargo bench -p vexil-eval --bench lists`. Figures go to
//! `docs/benchmarks.md`; nothing here asserts a time.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use vexil_eval::CompiledSnapshot;
use vexil_schema::delta::{ListDelta, SegmentDelta};
use vexil_schema::stream::{Change, Delta, DeltaItem};
use vexil_schema::{Context, EnvironmentSnapshot, KeyList, Segment, SegmentKey};

const KEYS: usize = 1_000_000;

fn snapshot() -> EnvironmentSnapshot {
    let segment = Segment {
        key: SegmentKey::parse("enterprise").unwrap_or_else(|e| panic!("{e}")),
        name: String::new(),
        description: String::new(),
        included: (0..KEYS).map(|i| format!("account-{i:07}")).collect(),
        excluded: KeyList::new(),
        rules: Vec::new(),
        salt: String::new(),
        version: 1,
    };
    let flag = serde_json::from_value(serde_json::json!({
        "key": "member", "kind": "boolean", "variations": [{"value": true}, {"value": false}],
        "on": true, "off_variation": 1, "fallthrough": {"variation": 1},
        "rules": [{"id": "r", "clauses": [{"attribute": "", "op": "segment_match",
                   "values": ["enterprise"]}], "serve": {"variation": 0}}]
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    EnvironmentSnapshot {
        version: 1,
        flags: vec![flag],
        segments: vec![segment],
    }
}

fn one_key(version: u64, add: &str, remove: &str) -> Change {
    Change::Delta(Delta {
        version,
        item: DeltaItem::Segment(SegmentDelta {
            key: SegmentKey::parse("enterprise").unwrap_or_else(|e| panic!("{e}")),
            version,
            included: ListDelta {
                add: vec![add.to_owned()],
                remove: vec![remove.to_owned()],
            },
            excluded: ListDelta::default(),
        }),
    })
}

fn lists(c: &mut Criterion) {
    let snap = snapshot();
    let compiled = CompiledSnapshot::compile(&snap);
    let next = compiled
        .apply(&one_key(2, "newcomer", "account-0000007"))
        .unwrap_or_else(|e| panic!("{e}"));
    // It measures the intended path: the edit took effect.
    assert_eq!(
        next.evaluate("member", &Context::new("newcomer")).variation,
        Some(0)
    );
    assert_eq!(
        next.evaluate("member", &Context::new("account-0000007"))
            .variation,
        Some(1)
    );
    let mut group = c.benchmark_group("segment-1m");
    group.bench_function("apply-one-key-delta", |b| {
        let change = one_key(2, "newcomer", "account-0000007");
        b.iter(|| compiled.apply(black_box(&change)))
    });
    group.bench_function("evaluate-member", |b| {
        let ctx = Context::new("account-0999999");
        b.iter(|| compiled.evaluate(black_box("member"), black_box(&ctx)))
    });
    group.sample_size(10);
    group.bench_function("compile", |b| {
        b.iter_batched(
            || snap.clone(),
            CompiledSnapshot::compile_owned,
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, lists);
criterion_main!(benches);
