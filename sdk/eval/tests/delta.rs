//! `delta` changes: the shared fixtures (`schema/testdata/delta/*.json`), and a property test
//! that a snapshot edited by random sequences of deltas equals one compiled whole from lists
//! edited by an independent, naive model of the canonical list rules.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Value, json};
use vexil_eval::{ApplyError, CompiledSnapshot};
use vexil_schema::delta::{ListDelta, SegmentDelta, TargetDelta, TargetsDelta};
use vexil_schema::stream::{Change, Delta, DeltaItem, ItemRef};
use vexil_schema::{Context, EnvironmentSnapshot, Flag, Segment, SegmentKey};

/// A flag serving `true` to members of segment `key`, `false` to others.
fn member_flag(segment: &str) -> Flag {
    serde_json::from_value(json!({
        "key": "member", "kind": "boolean",
        "variations": [{"value": true}, {"value": false}],
        "on": true, "off_variation": 1, "fallthrough": {"variation": 1},
        "rules": [{"id": "r", "clauses": [{"attribute": "", "op": "segment_match",
                   "values": [segment]}], "serve": {"variation": 0}}]
    }))
    .unwrap()
}

fn is_member(s: &CompiledSnapshot, key: &str) -> bool {
    s.evaluate("member", &Context::new(key)).variation == Some(0)
}

fn fixture_files() -> Vec<Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schema/testdata/delta");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {dir}");
    files
        .iter()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect()
}

#[test]
fn shared_fixtures() {
    let mut ran = 0;
    for file in fixture_files() {
        for case in file["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let item: DeltaItem = serde_json::from_value(case["delta"].clone()).unwrap();
            let delta = Change::Delta(Delta { version: 2, item });
            if let Some(seg) = case["before"].get("segment") {
                let seg: Segment = serde_json::from_value(seg.clone()).unwrap();
                let key = seg.key.to_string();
                let before = CompiledSnapshot::compile(&EnvironmentSnapshot {
                    version: 1,
                    flags: vec![member_flag(&key)],
                    segments: vec![seg],
                });
                let after = before.apply(&delta).unwrap();
                let want: Segment =
                    serde_json::from_value(case["after"]["segment"].clone()).unwrap();
                assert_eq!(after.segment(&key), Some(want.clone()), "{name}");
                assert_eq!(after.version(), 2);
                assert_eq!(after.to_snapshot().segments, vec![want], "{name}");
                for (k, member) in case["members"].as_object().unwrap() {
                    assert_eq!(
                        is_member(&after, k),
                        member.as_bool().unwrap(),
                        "{name}: {k}"
                    );
                }
            } else {
                let flag: Flag = serde_json::from_value(case["before"]["flag"].clone()).unwrap();
                let key = flag.key.to_string();
                let before = CompiledSnapshot::compile(&EnvironmentSnapshot {
                    version: 1,
                    flags: vec![flag],
                    segments: vec![],
                });
                let after = before.apply(&delta).unwrap();
                let want: Flag = serde_json::from_value(case["after"]["flag"].clone()).unwrap();
                assert_eq!(after.flag(&key), Some(&want), "{name}");
                for (k, served) in case["served"].as_object().unwrap() {
                    let got = after.evaluate(&key, &Context::new(k.as_str())).variation;
                    assert_eq!(got, served.as_u64().map(|v| v as usize), "{name}: {k}");
                }
            }
            ran += 1;
        }
    }
    assert!(ran >= 6);
}

#[test]
fn a_delta_to_an_absent_item_is_refused() {
    let s = CompiledSnapshot::compile(&EnvironmentSnapshot {
        version: 3,
        ..Default::default()
    });
    let key = SegmentKey::parse("gone").unwrap();
    let delta = Change::Delta(Delta {
        version: 4,
        item: DeltaItem::Segment(SegmentDelta {
            key: key.clone(),
            version: 2,
            included: ListDelta {
                add: vec!["a".into()],
                remove: vec![],
            },
            excluded: ListDelta::default(),
        }),
    });
    let err = s.apply(&delta).unwrap_err();
    assert_eq!(
        err,
        ApplyError::Missing {
            version: 4,
            item: ItemRef::Segment(key)
        }
    );
    assert!(err.needs_resync());
}

/// The canonical rules written the slow, obvious way: the model the engine is checked by.
fn naive(list: &[String], add: &[String], remove: &[String]) -> Vec<String> {
    let mut out: Vec<String> = list
        .iter()
        .filter(|k| !remove.contains(k))
        .cloned()
        .collect();
    for k in add {
        if !out.contains(k) {
            out.push(k.clone());
        }
    }
    out
}

const KEYS: [&str; 12] = [
    "u0",
    "u1",
    "u2",
    "u3",
    "u4",
    "u5",
    "user-with-a-long-key-0000000001",
    "user-with-a-long-key-0000000002",
    "",
    "é",
    "u10",
    "u11",
];

fn keys() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::sample::select(&KEYS[..]).prop_map(str::to_owned),
        0..6,
    )
}

#[derive(Debug, Clone)]
enum Edit {
    Segment {
        included: (Vec<String>, Vec<String>),
        excluded: (Vec<String>, Vec<String>),
    },
    Targets(Vec<(usize, Vec<String>, Vec<String>)>),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        ((keys(), keys()), (keys(), keys()))
            .prop_map(|(included, excluded)| Edit::Segment { included, excluded }),
        prop::collection::vec((0usize..3, keys(), keys()), 0..4).prop_map(Edit::Targets),
    ]
}

fn targets_flag() -> Flag {
    serde_json::from_value(json!({
        "key": "targeted", "kind": "string",
        "variations": [{"value": "a"}, {"value": "b"}, {"value": "c"}],
        "on": true, "off_variation": 0, "fallthrough": {"variation": 0},
        "targets": [{"variation": 1, "values": ["u1", "u2"]}]
    }))
    .unwrap()
}

fn seg() -> Segment {
    serde_json::from_value(
        json!({"key": "s", "included": ["u0", "u3"], "excluded": ["u4"],
        "rules": [{"id": "half", "clauses": [], "weight": 50000}]}),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(Config {
        cases: 300,
        rng_seed: RngSeed::Fixed(0xde17a),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn delta_apply_equals_a_full_rebuild(edits in prop::collection::vec(edit(), 1..12)) {
        let mut model = EnvironmentSnapshot {
            version: 1,
            flags: vec![member_flag("s"), targets_flag()],
            segments: vec![seg()],
        };
        let mut compiled = CompiledSnapshot::compile(&model);
        for (i, e) in edits.into_iter().enumerate() {
            let version = 2 + i as u64;
            let item = match e {
                Edit::Segment { included, excluded } => {
                    let s = &mut model.segments[0];
                    s.included = naive(&s.included.to_vec(), &included.0, &included.1).into();
                    s.excluded = naive(&s.excluded.to_vec(), &excluded.0, &excluded.1).into();
                    s.version = version;
                    DeltaItem::Segment(SegmentDelta {
                        key: s.key.clone(),
                        version,
                        included: ListDelta { add: included.0, remove: included.1 },
                        excluded: ListDelta { add: excluded.0, remove: excluded.1 },
                    })
                }
                Edit::Targets(edits) => {
                    let f = &mut model.flags[1];
                    for (variation, add, remove) in &edits {
                        let targets = &mut f.config.targets;
                        match targets.iter().position(|t| t.variation == *variation) {
                            Some(p) => {
                                targets[p].values = naive(&targets[p].values, add, remove);
                                if targets[p].values.is_empty() {
                                    targets.remove(p);
                                }
                            }
                            None => {
                                let values = naive(&[], add, &[]);
                                if !values.is_empty() {
                                    targets.push(vexil_schema::Target { variation: *variation, values });
                                }
                            }
                        }
                    }
                    f.config.version = version;
                    DeltaItem::FlagTargets(TargetsDelta {
                        key: f.key.clone(),
                        version,
                        targets: edits
                            .into_iter()
                            .map(|(variation, add, remove)| TargetDelta {
                                variation,
                                keys: ListDelta { add, remove },
                            })
                            .collect(),
                    })
                }
            };
            compiled = compiled.apply(&Change::Delta(Delta { version, item })).unwrap();
            model.version = version;
        }
        let full = CompiledSnapshot::compile(&model);
        prop_assert_eq!(compiled.to_snapshot(), model);
        for k in KEYS {
            let ctx = Context::new(k);
            prop_assert_eq!(compiled.evaluate("member", &ctx), full.evaluate("member", &ctx));
            prop_assert_eq!(compiled.evaluate("targeted", &ctx), full.evaluate("targeted", &ctx));
        }
    }
}
