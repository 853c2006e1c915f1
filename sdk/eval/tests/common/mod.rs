//! Helpers shared by the generated-flag property tests.

use serde_json::{Value, json};

/// Flag `f` (string kind) whose rule `i` has the clauses `rules[i]` (JSON) and serves
/// variation `i + 1` (`"v{i+1}"`); the fallthrough serves variation 0.
pub fn flag_with_rules(rules: &[Vec<Value>]) -> Value {
    let variations: Vec<Value> = (0..=rules.len())
        .map(|i| json!({"value": format!("v{i}")}))
        .collect();
    let rules: Vec<Value> = rules
        .iter()
        .enumerate()
        .map(|(i, clauses)| {
            json!({"id": format!("r{i}"), "clauses": clauses, "serve": {"variation": i + 1}})
        })
        .collect();
    json!({"key": "f", "kind": "string", "variations": variations, "on": true,
           "off_variation": 0, "rules": rules, "fallthrough": {"variation": 0}})
}
