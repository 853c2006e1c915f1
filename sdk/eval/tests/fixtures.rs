//! Runs every shared evaluation fixture (`schema/testdata/eval/*.json`) through the engine,
//! both on a snapshot compiled at once and on one built flag by flag with `with_flag` /
//! `with_segment`, and checks `explain` agrees with `evaluate`.

use serde_json::Value;
use vexil_eval::CompiledSnapshot;
use vexil_schema::EnvironmentSnapshot;
use vexil_schema::fixture::{FixtureFile, load_eval_fixtures};

fn incremental(snapshot: &EnvironmentSnapshot) -> CompiledSnapshot {
    let mut compiled = CompiledSnapshot::compile(&EnvironmentSnapshot::default());
    // Flags first, so prerequisites and segment references are resolved late: linking must
    // not depend on insertion order.
    for f in &snapshot.flags {
        compiled = compiled.with_flag(f.clone(), snapshot.version);
    }
    for s in &snapshot.segments {
        compiled = compiled.with_segment(s.clone(), snapshot.version);
    }
    compiled
}

fn run(file: &FixtureFile, compiled: &CompiledSnapshot, how: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for case in &file.cases {
        let eval = compiled.evaluate(&case.flag, &case.context);
        let value = eval.value.cloned().unwrap_or(Value::Null);
        let got = (value, eval.variation, eval.to_reason(), eval.in_experiment);
        let want = (
            case.expected.value.clone(),
            case.expected.variation,
            case.expected.reason.clone(),
            case.expected.in_experiment,
        );
        if got != want {
            failures.push(format!(
                "[{how}] {} / {}: got {got:?}, want {want:?}\n  explain: {}",
                file.name,
                case.name,
                serde_json::to_string(&compiled.explain(&case.flag, &case.context))
                    .unwrap_or_default()
            ));
            continue;
        }
        let explained = compiled.explain(&case.flag, &case.context);
        if explained.reason != got.2
            || explained.variation != got.1
            || explained.in_experiment != got.3
            || explained.value.clone().unwrap_or(Value::Null) != got.0
        {
            failures.push(format!(
                "[{how}] {} / {}: explain disagrees: {explained:?}",
                file.name, case.name
            ));
        }
    }
    failures
}

#[test]
fn every_fixture_passes() {
    let files = load_eval_fixtures().expect("fixtures load");
    let cases: usize = files.iter().map(|f| f.cases.len()).sum();
    assert!(cases >= 150, "only {cases} fixture cases");
    let mut failures = Vec::new();
    for file in &files {
        failures.extend(run(
            file,
            &CompiledSnapshot::compile(&file.snapshot),
            "compile",
        ));
        failures.extend(run(file, &incremental(&file.snapshot), "incremental"));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases * 2,
        failures.join("\n")
    );
}

#[test]
fn fixture_snapshots_round_trip() {
    for file in load_eval_fixtures().expect("fixtures load") {
        let compiled = CompiledSnapshot::compile(&file.snapshot);
        let back = compiled.to_snapshot();
        // Duplicate keys collapse to the last definition; everything else is kept as is.
        assert_eq!(back.segments, file.snapshot.segments, "{}", file.name);
        assert_eq!(compiled.len(), back.flags.len());
        for f in &back.flags {
            let last = file.snapshot.flags.iter().rev().find(|g| g.key == f.key);
            assert_eq!(Some(f), last, "{}", file.name);
        }
    }
}

#[test]
fn bench_fixtures_evaluate_as_expected() {
    let benches = vexil_schema::fixture::load_bench_fixtures().expect("bench fixtures load");
    assert_eq!(benches.len(), 3);
    for b in benches {
        let compiled = CompiledSnapshot::compile(&b.snapshot);
        let eval = compiled.evaluate(&b.flag, &b.context);
        assert_eq!(
            eval.value.cloned().unwrap_or(Value::Null),
            b.expected.value,
            "{}",
            b.name
        );
        assert_eq!(eval.variation, b.expected.variation, "{}", b.name);
        assert_eq!(eval.to_reason(), b.expected.reason, "{}", b.name);
        assert_eq!(eval.in_experiment, b.expected.in_experiment, "{}", b.name);
    }
}

/// The fixtures' snapshots built from an empty one by [`CompiledSnapshot::apply`], one
/// `patch` per flag and segment at successive versions, with a flag and a segment patched in
/// and deleted again on the way: the path every stream client takes.
fn applied(snapshot: &EnvironmentSnapshot) -> CompiledSnapshot {
    use vexil_schema::stream::{Change, Delete, ItemRef, Patch, PatchItem};
    use vexil_schema::{FlagKey, Segment, SegmentKey};

    let mut items: Vec<PatchItem> = Vec::new();
    let doomed: Segment = serde_json::from_value(serde_json::json!({"key": "zz-doomed"})).unwrap();
    items.push(PatchItem::Segment(doomed));
    items.extend(snapshot.flags.iter().cloned().map(PatchItem::Flag));
    if let Some(first) = snapshot.flags.first() {
        let mut doomed = first.clone();
        doomed.key = FlagKey::parse("zz-doomed").unwrap();
        items.push(PatchItem::Flag(doomed));
    }
    items.extend(snapshot.segments.iter().cloned().map(PatchItem::Segment));
    let mut compiled = CompiledSnapshot::default();
    let next = |change: &dyn Fn(u64) -> Change, compiled: &mut CompiledSnapshot| {
        *compiled = compiled
            .apply(&change(compiled.version() + 1))
            .expect("in order");
    };
    for item in items {
        next(
            &|version| {
                Change::Patch(Patch {
                    version,
                    item: item.clone(),
                })
            },
            &mut compiled,
        );
    }
    for item in [
        ItemRef::Flag(FlagKey::parse("zz-doomed").unwrap()),
        ItemRef::Segment(SegmentKey::parse("zz-doomed").unwrap()),
    ] {
        next(
            &|version| {
                Change::Delete(Delete {
                    version,
                    item: item.clone(),
                })
            },
            &mut compiled,
        );
    }
    assert!(compiled.flag("zz-doomed").is_none() && compiled.segment("zz-doomed").is_none());
    compiled
}

#[test]
fn every_fixture_passes_on_snapshots_built_by_applying_changes() {
    let mut failures = Vec::new();
    for file in load_eval_fixtures().expect("fixtures load") {
        failures.extend(run(&file, &applied(&file.snapshot), "applied"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
