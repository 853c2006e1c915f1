//! String clauses against a naive reference: flags with many `in`, `starts_with`,
//! `ends_with` and `contains` clauses on the same few attributes (the shape that makes the
//! engine share one per-attribute memo between clauses), evaluated for string, array,
//! number, null and missing values, with and without negation. The reference applies the
//! documented semantics clause by clause with the standard library's string functions.

mod common;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Value, json};
use vexil_eval::CompiledSnapshot;
use vexil_schema::{Context, EnvironmentSnapshot};

const OPS: [&str; 4] = ["in", "starts_with", "ends_with", "contains"];
const ATTRS: [&str; 2] = ["a", "b"];

/// Short strings over a small alphabet, so that operands and values collide often; long
/// enough (up to 20 bytes) to cover every branch of the integer comparisons.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ab]{0,3}",
        "[abé]{0,10}",
        "a{6,20}",
        Just("user@example.com".to_owned())
    ]
}

#[derive(Debug, Clone)]
struct TestClause {
    attr: &'static str,
    op: &'static str,
    values: Vec<String>,
    negate: bool,
}

fn clause() -> impl Strategy<Value = TestClause> {
    (
        prop::sample::select(&ATTRS[..]),
        prop::sample::select(&OPS[..]),
        prop::collection::vec(text(), 0..5),
        any::<bool>(),
    )
        .prop_map(|(attr, op, values, negate)| TestClause {
            attr,
            op,
            values,
            negate,
        })
}

fn attribute_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        4 => text().prop_map(|s| Some(Value::from(s))),
        1 => prop::collection::vec(text(), 0..3).prop_map(|v| Some(json!(v))),
        1 => Just(Some(json!(7))),
        1 => Just(Some(Value::Null)),
        1 => Just(None),
    ]
}

/// The documented semantics of one clause, written plainly.
fn reference_clause(c: &TestClause, value: Option<&Value>) -> bool {
    let test = |s: &str| {
        c.values.iter().any(|v| match c.op {
            "in" => s == v,
            "starts_with" => s.starts_with(v.as_str()),
            "ends_with" => s.ends_with(v.as_str()),
            _ => s.contains(v.as_str()),
        })
    };
    let hit = match value {
        // Missing or null: no match, whatever the negation.
        None | Some(Value::Null) => return false,
        Some(Value::String(s)) => test(s),
        Some(Value::Array(items)) => items.iter().any(|i| i.as_str().is_some_and(test)),
        Some(_) => false,
    };
    // An empty operand list gives `hit == false`: negated, any present value matches.
    hit != c.negate
}

fn reference(rules: &[Vec<TestClause>], ctx: &serde_json::Map<String, Value>) -> usize {
    rules
        .iter()
        .position(|clauses| clauses.iter().all(|c| reference_clause(c, ctx.get(c.attr))))
        .map_or(0, |i| i + 1)
}

fn snapshot(rules: &[Vec<TestClause>]) -> EnvironmentSnapshot {
    let rules: Vec<Vec<Value>> = rules
        .iter()
        .map(|clauses| {
            clauses
                .iter()
                .map(|c| {
                    json!({"attribute": c.attr, "op": c.op, "values": c.values,
                           "negate": c.negate})
                })
                .collect()
        })
        .collect();
    let Ok(snapshot) = serde_json::from_value(json!({
        "version": 1,
        "flags": [common::flag_with_rules(&rules)]
    })) else {
        panic!("the generated snapshot must parse")
    };
    snapshot
}

proptest! {
    #![proptest_config(Config {
        cases: 2000,
        rng_seed: RngSeed::Fixed(0x57c1_a05e),
        failure_persistence: None,
        ..Config::default()
    })]

    /// Every rule, clause and value shape gives the reference's variation, and `explain`
    /// (which traces clause by clause) agrees with `evaluate`.
    #[test]
    fn string_clauses_agree_with_the_reference(
        rules in prop::collection::vec(prop::collection::vec(clause(), 1..4), 1..12),
        a in attribute_value(),
        b in attribute_value(),
    ) {
        let compiled = CompiledSnapshot::compile(&snapshot(&rules));
        prop_assert!(compiled.malformation("f").is_none());
        let mut attributes = serde_json::Map::new();
        let mut builder = Context::builder("k");
        for (name, value) in [("a", a), ("b", b)] {
            if let Some(v) = value {
                attributes.insert(name.to_owned(), v.clone());
                builder = builder.set(name, v);
            }
        }
        let ctx = builder.build();
        let expected = reference(&rules, &attributes);
        let eval = compiled.evaluate("f", &ctx);
        prop_assert_eq!(eval.variation, Some(expected));
        let explained = compiled.explain("f", &ctx);
        prop_assert_eq!(explained.variation, Some(expected));
    }
}
