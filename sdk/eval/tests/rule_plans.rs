//! Rule plans against clause-by-clause evaluation.
//!
//! `evaluate` answers the cheap clauses of a rule as bits computed once per attribute (see
//! the engine's `clause::plan`); `explain` tests every clause on its own, in order. Both
//! must give the same variation and reason for any flag and context. The generated flags
//! mix every operator a plan takes (`in` over strings, numbers and booleans, `starts_with`
//! and `ends_with` with operands short and long, sharing their first or last 8 bytes,
//! number ranges, `semver_*`, `exists`, empty operand lists) with those it leaves to the
//! rule (`contains`, `matches`, `before`/`after`, `segment_match`, the key), with and
//! without negation, on up to 20 attributes (past the 16 the engine caches) and, in some
//! cases, more than the 64 clauses a plan holds. Contexts give those attributes strings,
//! numbers, booleans, arrays, objects, null, or nothing.

mod common;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Value, json};
use vexil_eval::CompiledSnapshot;
use vexil_schema::{Context, EnvironmentSnapshot};

/// Strings that collide as values and operands: short, 8 bytes and longer, sharing a prefix
/// or a suffix of 8 bytes, and versions.
const WORDS: [&str; 16] = [
    "",
    "a",
    "ab",
    "DE",
    "enterprise",
    "@acme-corp.com",
    "jane@acme-corp.com",
    "@other-corp.com",
    "x@other-corp.com",
    "prefix-shared-1",
    "prefix-shared-2",
    "prefix-",
    "1.2.3",
    "2.0.0-rc.1",
    "v10.0",
    "é-ü",
];

fn word() -> impl Strategy<Value = Value> {
    prop::sample::select(&WORDS[..]).prop_map(Value::from)
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..4).prop_map(Value::from),
        Just(json!(2.5)),
        Just(json!(-0.0))
    ]
}

fn version() -> impl Strategy<Value = Value> {
    prop::sample::select(&["0.9.0", "1.2.3", "1.2.3-beta", "2.0.0", "10.0.0"][..])
        .prop_map(Value::from)
}

fn date() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("2026-01-01T00:00:00Z")),
        Just(json!(1_700_000_000_000i64))
    ]
}

/// One clause as JSON: an operator with operands of the type it needs.
fn clause(attributes: usize) -> impl Strategy<Value = Value> {
    let ops = prop_oneof![
        (
            "in",
            prop::collection::vec(
                prop_oneof![word(), number(), any::<bool>().prop_map(Value::from)],
                0..4
            )
        ),
        ("starts_with", prop::collection::vec(word(), 0..4)),
        ("ends_with", prop::collection::vec(word(), 0..4)),
        ("contains", prop::collection::vec(word(), 0..3)),
        (
            "matches",
            prop::collection::vec(Just(json!("^[a-j]+@")), 0..2)
        ),
        ("lt", prop::collection::vec(number(), 0..3)),
        ("lte", prop::collection::vec(number(), 0..3)),
        ("gt", prop::collection::vec(number(), 0..3)),
        ("gte", prop::collection::vec(number(), 0..3)),
        ("semver_eq", prop::collection::vec(version(), 0..3)),
        ("semver_lt", prop::collection::vec(version(), 0..3)),
        ("semver_gt", prop::collection::vec(version(), 0..3)),
        ("before", prop::collection::vec(date(), 0..2)),
        ("after", prop::collection::vec(date(), 0..2)),
        ("exists", Just(Vec::new())),
        ("segment_match", Just(vec![json!("s")])),
    ];
    let attribute = prop_oneof![
        8 => (0..attributes).prop_map(|i| format!("attr{i}")),
        1 => Just("key".to_owned()),
    ];
    (ops, attribute, any::<bool>()).prop_map(|((op, values), attribute, negate)| {
        json!({"attribute": attribute, "op": op, "values": values, "negate": negate})
    })
}

fn attribute_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        4 => word().prop_map(Some),
        2 => number().prop_map(Some),
        2 => version().prop_map(Some),
        1 => date().prop_map(Some),
        1 => any::<bool>().prop_map(|b| Some(Value::from(b))),
        1 => prop::collection::vec(prop_oneof![word(), number()], 0..3).prop_map(|v| Some(json!(v))),
        1 => Just(Some(json!({"k": 1}))),
        1 => Just(Some(Value::Null)),
        2 => Just(None),
    ]
}

fn snapshot(rules: &[Vec<Value>]) -> EnvironmentSnapshot {
    let segment_rules = json!([{"id": "s0", "clauses": [
        {"attribute": "attr0", "op": "in", "values": ["a", "ab", 1]},
        {"attribute": "attr1", "op": "exists", "values": [], "negate": true}
    ]}]);
    let parsed = serde_json::from_value(json!({
        "version": 1,
        "flags": [common::flag_with_rules(rules)],
        "segments": [{"key": "s", "included": ["k0"], "rules": segment_rules}]
    }));
    match parsed {
        Ok(snapshot) => snapshot,
        Err(e) => panic!("the generated snapshot must parse: {e}"),
    }
}

fn check(rules: &[Vec<Value>], values: &[Option<Value>], key: &str) -> Result<(), TestCaseError> {
    let compiled = CompiledSnapshot::compile(&snapshot(rules));
    prop_assert!(
        compiled.malformation("f").is_none(),
        "{:?}",
        compiled.malformation("f")
    );
    let mut builder = Context::builder(key);
    for (i, value) in values.iter().enumerate() {
        if let Some(v) = value {
            builder = builder.set(format!("attr{i}"), v.clone());
        }
    }
    let ctx = builder.build();
    let eval = compiled.evaluate("f", &ctx);
    let explained = compiled.explain("f", &ctx);
    prop_assert_eq!(eval.variation, explained.variation);
    prop_assert_eq!(eval.to_reason(), explained.reason);
    Ok(())
}

proptest! {
    #![proptest_config(Config {
        cases: 1500,
        rng_seed: RngSeed::Fixed(0x9a7e_5eed),
        failure_persistence: None,
        ..Config::default()
    })]

    /// A few attributes, many clauses on each: the shape plans are for.
    #[test]
    fn plans_agree_with_clause_by_clause_on_few_attributes(
        rules in prop::collection::vec(prop::collection::vec(clause(3), 1..6), 1..12),
        values in prop::collection::vec(attribute_value(), 3),
        key in prop::sample::select(&["k0", "k1"][..]),
    ) {
        check(&rules, &values, key)?;
    }

    /// Up to 20 attributes (some past the engine's cache) and up to 240 clauses (past the
    /// 64 a plan holds).
    #[test]
    fn plans_agree_with_clause_by_clause_on_many_attributes(
        rules in prop::collection::vec(prop::collection::vec(clause(20), 1..8), 1..30),
        values in prop::collection::vec(attribute_value(), 20),
        key in prop::sample::select(&["k0", "k1"][..]),
    ) {
        check(&rules, &values, key)?;
    }
}
