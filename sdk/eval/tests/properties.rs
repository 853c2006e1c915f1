//! Property tests: determinism, bucketing distribution and stability, robustness against
//! arbitrary (possibly malformed) flags, and incremental updates agreeing with full
//! compilation.

use std::collections::HashSet;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Value, json};
use vexil_eval::{CompiledSnapshot, EvalReason, bucket};
use vexil_schema::model::{
    Clause, Flag, FlagConfig, FlagKind, Operator, Prerequisite, Rollout, Rule, Segment,
    SegmentRule, Serve, Target, Variation, WeightedVariation,
};
use vexil_schema::{Context, EnvironmentSnapshot, FlagKey, SegmentKey};

/// Fixed seed: distribution bounds are statistical, and a CI run must not flake.
fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x5eed_f1a6),
        failure_persistence: None,
        ..Config::default()
    }
}

const FLAG_KEYS: [&str; 5] = ["f0", "f1", "f2", "f3", "f4"];
const SEGMENT_KEYS: [&str; 3] = ["s0", "s1", "s2"];
const ATTRS: [&str; 5] = ["key", "kind", "a", "b", "c"];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i64..5).prop_map(Value::from),
        prop_oneof![Just(0.5), Just(-1.25), Just(1e300), Just(3.0)].prop_map(Value::from),
        prop_oneof![
            Just("x"),
            Just(""),
            Just("abc"),
            Just("1.2.3"),
            Just("v2"),
            Just("2026-01-01T00:00:00Z"),
            Just("^a.*"),
            Just("("),
            Just("s0"),
            Just("f1"),
            Just("é")
        ]
        .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => scalar(),
        1 => prop::collection::vec(scalar(), 0..3).prop_map(Value::Array),
        1 => Just(json!({"k": 1})),
    ]
}

/// Operands that suit `op` (so most generated flags are valid and their clauses can match).
fn operands(op: Operator) -> BoxedStrategy<Vec<Value>> {
    let pool: Vec<Value> = match op {
        Operator::In => vec![
            json!("x"),
            json!("abc"),
            json!(1),
            json!(3.0),
            json!(true),
            json!("v2"),
        ],
        Operator::StartsWith | Operator::EndsWith | Operator::Contains => {
            vec![
                json!("a"),
                json!("c"),
                json!(""),
                json!("é"),
                json!("x"),
                json!("2026"),
            ]
        }
        Operator::Matches => vec![json!("^a"), json!("c$"), json!("(?i)X"), json!("b+")],
        Operator::Lt | Operator::Lte | Operator::Gt | Operator::Gte => {
            vec![json!(0), json!(1), json!(-1.25), json!(3.0)]
        }
        Operator::Before | Operator::After => vec![
            json!("2026-01-01T00:00:00Z"),
            json!(0),
            json!(1_767_225_600_000_i64),
        ],
        Operator::SemverEq | Operator::SemverLt | Operator::SemverGt => {
            vec![json!("1.2.3"), json!("v2"), json!("1.2.3-rc.1")]
        }
        Operator::SegmentMatch => vec![json!("s0"), json!("s1"), json!("s2"), json!("nope")],
        _ => vec![],
    };
    if pool.is_empty() {
        Just(Vec::new()).boxed()
    } else {
        prop::collection::vec(prop::sample::select(pool), 1..4).boxed()
    }
}

/// Mostly in range (the flags have 2 or 3 variations), sometimes not.
fn index() -> impl Strategy<Value = usize> {
    prop_oneof![19 => 0usize..2, 1 => 0usize..6]
}

fn clause() -> impl Strategy<Value = Clause> {
    (
        prop::sample::select(&ATTRS[..]),
        prop::sample::select(&Operator::ALL[..]),
        any::<bool>(),
    )
        .prop_flat_map(|(attribute, op, negate)| {
            (
                Just(attribute),
                Just(op),
                prop_oneof![19 => operands(op), 1 => prop::collection::vec(json_value(), 0..4)],
                Just(negate),
            )
        })
        .prop_map(|(attribute, op, values, negate)| Clause {
            attribute: attribute.to_owned(),
            op,
            values,
            negate,
        })
}

fn serve() -> impl Strategy<Value = Serve> {
    let weights = prop_oneof![
        // Valid: three slices cut at two points.
        9 => (0u32..=100_000, 0u32..=100_000).prop_map(|(a, b)| {
            let (lo, hi) = (a.min(b), a.max(b));
            vec![lo, hi - lo, 100_000 - hi]
        }),
        1 => prop::collection::vec(prop_oneof![Just(0u32), Just(50_000), 0u32..100_001], 0..3),
    ];
    prop_oneof![
        index().prop_map(Serve::Variation),
        (
            weights,
            prop::collection::vec(index(), 4),
            prop::option::of(prop::sample::select(&ATTRS[..])),
            any::<bool>(),
        )
            .prop_map(|(weights, variations, bucket_by, experiment)| {
                Serve::Rollout(Rollout {
                    variations: weights
                        .into_iter()
                        .zip(variations)
                        .map(|(weight, variation)| WeightedVariation { variation, weight })
                        .collect(),
                    bucket_by: bucket_by.map(str::to_owned),
                    experiment,
                })
            }),
    ]
}

/// A kind and 2–3 variation values, of that kind except now and then.
fn kind_and_values() -> impl Strategy<Value = (FlagKind, Vec<Value>)> {
    let values = |kind: FlagKind| -> BoxedStrategy<Value> {
        match kind {
            FlagKind::Boolean => any::<bool>().prop_map(Value::Bool).boxed(),
            FlagKind::String => prop_oneof![Just("a"), Just("b"), Just("")]
                .prop_map(Value::from)
                .boxed(),
            FlagKind::Number => (-3i64..3).prop_map(Value::from).boxed(),
            FlagKind::Json => json_value().boxed(),
        }
    };
    prop::sample::select(
        &[
            FlagKind::Boolean,
            FlagKind::String,
            FlagKind::Number,
            FlagKind::Json,
        ][..],
    )
    .prop_flat_map(move |kind| {
        (
            Just(kind),
            prop_oneof![
                19 => prop::collection::vec(values(kind), 2..4),
                1 => prop::collection::vec(json_value(), 0..3),
            ],
        )
    })
}

fn flag() -> impl Strategy<Value = Flag> {
    (
        prop::sample::select(&FLAG_KEYS[..]),
        kind_and_values(),
        prop_oneof![4 => Just(true), 1 => Just(false)],
        index(),
        prop::collection::vec(
            (
                index(),
                prop::collection::vec(prop_oneof![Just("u1"), Just("u2")], 0..3),
            ),
            0..2,
        ),
        prop::collection::vec((prop::collection::vec(clause(), 0..3), serve()), 0..3),
        serve(),
        prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::collection::vec((prop::sample::select(&FLAG_KEYS[..]), 0usize..3), 1..3),
        ],
        prop_oneof![Just(""), Just("salt")],
    )
        .prop_map(
            |(key, (kind, values), on, off, targets, rules, fallthrough, prereqs, salt)| Flag {
                key: FlagKey::parse(key).unwrap(),
                kind,
                variations: values.into_iter().map(Variation::new).collect(),
                client_side: false,
                config: FlagConfig {
                    on,
                    off_variation: off,
                    targets: targets
                        .into_iter()
                        .map(|(variation, keys)| Target {
                            variation,
                            values: keys.into_iter().map(str::to_owned).collect(),
                        })
                        .collect(),
                    rules: rules
                        .into_iter()
                        .enumerate()
                        .map(|(i, (clauses, serve))| Rule {
                            id: format!("r{i}"),
                            description: None,
                            clauses,
                            serve,
                        })
                        .collect(),
                    fallthrough,
                    prerequisites: prereqs
                        .into_iter()
                        .map(|(k, variation)| Prerequisite {
                            key: FlagKey::parse(k).unwrap(),
                            variation,
                        })
                        .collect(),
                    salt: salt.to_owned(),
                    version: 1,
                },
            },
        )
}

fn segment() -> impl Strategy<Value = Segment> {
    (
        prop::sample::select(&SEGMENT_KEYS[..]),
        prop::collection::vec(prop_oneof![Just("u1"), Just("u2")], 0..2),
        prop::collection::vec(prop_oneof![Just("u1"), Just("u3")], 0..2),
        prop::collection::vec(
            (
                prop::collection::vec(clause(), 0..3),
                prop::option::of(prop_oneof![Just(0u32), Just(50_000), 0u32..200_000]),
            ),
            0..3,
        ),
    )
        .prop_map(|(key, included, excluded, rules)| Segment {
            key: SegmentKey::parse(key).unwrap(),
            name: String::new(),
            description: String::new(),
            included: included.into_iter().map(str::to_owned).collect(),
            excluded: excluded.into_iter().map(str::to_owned).collect(),
            rules: rules
                .into_iter()
                .enumerate()
                .map(|(i, (clauses, weight))| SegmentRule {
                    id: format!("sr{i}"),
                    clauses,
                    weight,
                    bucket_by: None,
                })
                .collect(),
            salt: String::new(),
            version: 1,
        })
}

fn snapshot() -> impl Strategy<Value = EnvironmentSnapshot> {
    (
        prop::collection::vec(flag(), 2..8),
        prop::collection::vec(segment(), 0..4),
    )
        .prop_map(|(flags, segments)| EnvironmentSnapshot {
            version: 1,
            flags,
            segments,
        })
}

fn context() -> impl Strategy<Value = Context> {
    (
        prop::option::of(prop_oneof![Just("u1"), Just("u2"), Just("u3"), Just("")]),
        prop::option::of(prop_oneof![Just("user"), Just("org")]),
        prop::collection::vec((prop::sample::select(&ATTRS[2..]), json_value()), 0..4),
    )
        .prop_map(|(key, kind, attrs)| {
            let mut c = Context::anonymous();
            c.set_key(key.map(str::to_owned));
            c.set_kind(kind.map(str::to_owned));
            for (name, value) in attrs {
                c.set(name, value);
            }
            c
        })
}

/// Everything observable about one evaluation, owned.
fn outcome(
    s: &CompiledSnapshot,
    key: &str,
    ctx: &Context,
) -> (
    Option<Value>,
    Option<usize>,
    vexil_schema::Reason,
    bool,
    bool,
) {
    let e = s.evaluate(key, ctx);
    (
        e.value.cloned(),
        e.variation,
        e.to_reason(),
        e.in_experiment,
        e.split,
    )
}

proptest! {
    #![proptest_config(config(256))]

    /// Arbitrary, mostly malformed input never panics, and results are well-formed.
    #[test]
    fn arbitrary_flags_never_panic(snap in snapshot(), ctxs in prop::collection::vec(context(), 1..4)) {
        let compiled = CompiledSnapshot::compile(&snap);
        for key in FLAG_KEYS.iter().copied().chain(["missing"]) {
            for ctx in &ctxs {
                let e = compiled.evaluate(key, ctx);
                match e.reason {
                    EvalReason::Error { .. } => {
                        prop_assert!(e.value.is_none() && e.variation.is_none() && !e.in_experiment);
                    }
                    _ => {
                        let flag = compiled.flag(key).expect("served flags exist");
                        let v = e.variation.expect("a served variation");
                        prop_assert!(v < flag.variations.len());
                        prop_assert_eq!(e.value, Some(&flag.variations[v].value));
                        prop_assert!(!e.in_experiment || e.split);
                    }
                }
                let x = compiled.explain(key, ctx);
                prop_assert_eq!(&x.reason, &e.to_reason());
                prop_assert!(serde_json::to_string(&x).is_ok());
            }
        }
        prop_assert!(compiled.malformed_flags().count() <= compiled.len());
    }

    /// The same flag and context give the same result across calls and across freshly
    /// compiled snapshots.
    #[test]
    fn evaluation_is_deterministic(snap in snapshot(), ctx in context()) {
        let a = CompiledSnapshot::compile(&snap);
        let b = CompiledSnapshot::compile(&snap);
        let c = CompiledSnapshot::compile(&a.to_snapshot());
        for key in FLAG_KEYS {
            let first = outcome(&a, key, &ctx);
            for _ in 0..1000 {
                prop_assert_eq!(&outcome(&a, key, &ctx), &first);
            }
            prop_assert_eq!(&outcome(&b, key, &ctx), &first);
            prop_assert_eq!(&outcome(&c, key, &ctx), &first);
        }
    }

    /// Incremental updates give the same results as compiling the updated snapshot whole.
    #[test]
    fn incremental_updates_match_full_compilation(
        snap in snapshot(),
        new_flags in prop::collection::vec(flag(), 0..16),
        new_segments in prop::collection::vec(segment(), 0..2),
        removed_flag in prop::sample::select(&FLAG_KEYS[..]),
        removed_segment in prop::sample::select(&SEGMENT_KEYS[..]),
        ctxs in prop::collection::vec(context(), 1..4),
    ) {
        let mut inc = CompiledSnapshot::compile(&snap);
        for f in new_flags {
            inc = inc.with_flag(f, 2);
        }
        for s in new_segments {
            inc = inc.with_segment(s, 3);
        }
        inc = inc.without_flag(removed_flag, 4).without_segment(removed_segment, 5);
        prop_assert_eq!(inc.version(), 5);
        let full = CompiledSnapshot::compile(&inc.to_snapshot());
        prop_assert!(inc.flag(removed_flag).is_none());
        for key in FLAG_KEYS {
            for ctx in &ctxs {
                prop_assert_eq!(outcome(&inc, key, ctx), outcome(&full, key, ctx));
            }
        }
    }
}

fn rollout_flag(salt: &str, weight_in: u32) -> Flag {
    serde_json::from_value(json!({
        "key": "rollout", "kind": "boolean",
        "variations": [{"value": true}, {"value": false}],
        "on": true, "off_variation": 1, "salt": salt,
        "fallthrough": {"rollout": {"variations": [
            {"variation": 0, "weight": weight_in},
            {"variation": 1, "weight": 100_000 - weight_in}
        ]}}
    }))
    .unwrap()
}

fn served_in(s: &CompiledSnapshot, key: &str) -> bool {
    s.evaluate("rollout", &Context::new(key)).variation == Some(0)
}

proptest! {
    #![proptest_config(config(4))]

    /// A w% rollout over 100,000 random keys lands within ±0.5 points of w.
    #[test]
    fn rollouts_hit_their_percentage(salt in "[a-z0-9]{0,12}", keys in prop::collection::vec("[a-zA-Z0-9_.@-]{1,24}", 100_000)) {
        for percent in [1u32, 5, 25, 50] {
            let s = CompiledSnapshot::compile(&EnvironmentSnapshot {
                version: 1,
                flags: vec![rollout_flag(&salt, percent * 1000)],
                segments: vec![],
            });
            let unique: HashSet<&String> = keys.iter().collect();
            let hits = unique.iter().filter(|k| served_in(&s, k)).count();
            let share = 100.0 * hits as f64 / unique.len() as f64;
            prop_assert!((share - f64::from(percent)).abs() <= 0.5, "{percent}%: got {share:.3}%");
        }
    }

    /// Ramping 5 → 25 → 50 → 100 % never takes a context that was in back out; changing the
    /// salt reshuffles who is in.
    #[test]
    fn ramps_are_monotonic_and_salts_reshuffle(salt in "[a-z]{1,8}", keys in prop::collection::vec("[a-z0-9-]{1,16}", 10_000)) {
        let stages: Vec<CompiledSnapshot> = [5u32, 25, 50, 100]
            .iter()
            .map(|p| CompiledSnapshot::compile(&EnvironmentSnapshot {
                version: 1, flags: vec![rollout_flag(&salt, p * 1000)], segments: vec![],
            }))
            .collect();
        for key in &keys {
            let mut was_in = false;
            for stage in &stages {
                let now_in = served_in(stage, key);
                prop_assert!(now_in || !was_in, "{key} left the rollout while ramping up");
                was_in = now_in;
            }
            prop_assert!(was_in, "100% must include everyone");
        }

        let other = format!("{salt}-2");
        let a = &stages[2];
        let b = CompiledSnapshot::compile(&EnvironmentSnapshot {
            version: 1, flags: vec![rollout_flag(&other, 50_000)], segments: vec![],
        });
        let unique: HashSet<&String> = keys.iter().collect();
        let both = unique.iter().filter(|k| served_in(a, k) && served_in(&b, k)).count();
        // Independent 50% splits overlap on about 25% of contexts, not 50%.
        let share = both as f64 / unique.len() as f64;
        prop_assert!((0.20..0.30).contains(&share), "overlap {share:.3}");
    }
}

#[test]
fn bucketing_is_stable_across_releases() {
    // The same vectors as the unit tests and the Python reference: a change here breaks
    // every running rollout.
    assert_eq!(bucket("salt", "user-1"), 48_166);
    assert_eq!(bucket("new-checkout", "alice"), 42_414);
}

proptest! {
    #![proptest_config(config(512))]

    /// Validation and evaluation agree: a flag the engine finds malformed makes the snapshot
    /// invalid (equivalently, a valid snapshot has no malformed flag). Random snapshots are
    /// rarely valid, so this mostly shows every malformation the engine finds is one
    /// validation rejects; `tests/validation.rs` checks valid fixture flags evaluate.
    #[test]
    fn validation_and_evaluation_agree(snap in snapshot()) {
        let valid = vexil_schema::validate_snapshot(&snap);
        let compiled = CompiledSnapshot::compile(&snap);
        let malformed: Vec<(&str, String)> = compiled
            .malformed_flags()
            .map(|(k, m)| (k, m.to_string()))
            .collect();
        if valid.is_ok() {
            prop_assert!(malformed.is_empty(), "valid snapshot, engine says {malformed:?}");
        }
        if !malformed.is_empty() {
            prop_assert!(valid.is_err(), "engine says {malformed:?}, validator accepts");
        }
    }
}
