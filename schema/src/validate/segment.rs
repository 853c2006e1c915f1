//! Checks of a segment: its key lists, rules and clauses (cycles and depth are in `graph`).

use std::collections::{HashMap, HashSet};

use super::clause::{check_clauses, check_distinct_attributes, clause_attributes};
use super::config::{check_bucket_by, check_context_key, check_rule_id, check_weight};
use super::index::EnvironmentIndex;
use super::path::Collector;
use super::rules;
use crate::KeyList;
use crate::limits::{
    MAX_DESCRIPTION_LEN, MAX_NAME_LEN, MAX_SALT_LEN, MAX_SEGMENT_KEYS, MAX_SEGMENT_RULES,
};
use crate::model::Segment;

pub(super) fn check_segment(c: &mut Collector, seg: &Segment, env: &EnvironmentIndex) {
    c.field("name", |c| {
        c.max_len(&seg.name, MAX_NAME_LEN, "a segment name")
    });
    c.field("description", |c| {
        c.max_len(&seg.description, MAX_DESCRIPTION_LEN, "a description")
    });
    c.field("included", |c| check_keys(c, &seg.included, "included"));
    c.field("excluded", |c| check_keys(c, &seg.excluded, "excluded"));
    c.field("rules", |c| {
        if !c.max_count(seg.rules.len(), MAX_SEGMENT_RULES, "segment rules") {
            return;
        }
        let mut ids: HashMap<&str, usize> = HashMap::with_capacity(seg.rules.len());
        for (i, rule) in seg.rules.iter().enumerate() {
            c.index(i, |c| {
                c.field("id", |c| check_rule_id(c, &rule.id, i, &mut ids));
                check_clauses(c, &rule.clauses, env, Some(seg.key.as_str()));
                if let Some(w) = rule.weight {
                    c.field("weight", |c| check_weight(c, w));
                }
                if let Some(b) = &rule.bucket_by {
                    c.field("bucket_by", |c| check_bucket_by(c, b));
                }
            });
        }
        let names = seg
            .rules
            .iter()
            .flat_map(|r| clause_attributes(&r.clauses).chain(r.bucket_by.as_deref()));
        check_distinct_attributes(c, names);
    });
    c.field("salt", |c| c.max_len(&seg.salt, MAX_SALT_LEN, "a salt"));
}

/// Checks one of a segment's context-key lists: size, each key, no key twice.
fn check_keys(c: &mut Collector, keys: &KeyList, list: &str) {
    if !c.max_count(
        keys.len(),
        MAX_SEGMENT_KEYS,
        &format!("{list} context keys"),
    ) {
        return;
    }
    let mut seen: HashSet<&str> = HashSet::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        c.index(i, |c| {
            if check_context_key(c, key) && !seen.insert(key) {
                c.error(
                    rules::DUPLICATE_TARGET,
                    format!("context key {key:?} is listed twice in {list}"),
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EnvironmentSnapshot;
    use serde_json::{Value, json};

    fn check(seg: Value) -> Vec<(String, &'static str)> {
        let env: EnvironmentSnapshot =
            serde_json::from_value(json!({"segments": [{"key": "staff"}]})).unwrap();
        let seg: Segment = serde_json::from_value(seg).unwrap();
        let mut c = Collector::new();
        check_segment(&mut c, &seg, &EnvironmentIndex::from_snapshot(&env));
        match c.finish(()) {
            Ok(()) => vec![],
            Err(e) => e.errors.into_iter().map(|e| (e.path, e.rule)).collect(),
        }
    }

    fn one(path: &str, rule: &'static str) -> Vec<(String, &'static str)> {
        vec![(path.to_string(), rule)]
    }

    #[test]
    fn a_full_valid_segment_passes() {
        assert_eq!(
            check(json!({
                "key": "beta", "name": "Beta testers", "description": "opted in",
                "included": ["u1", "u2"], "excluded": ["u3", "u1"],
                "rules": [
                    {"id": "staff", "clauses": [{"attribute": "", "op": "segment_match", "values": ["staff"]}]},
                    {"id": "ten-percent", "clauses": [], "weight": 10000, "bucket_by": "orgId"}
                ],
                "salt": "s"
            })),
            vec![]
        );
    }

    #[test]
    fn key_lists() {
        assert_eq!(
            check(json!({"key": "b", "included": ["u1", "u2", "u1"]})),
            one("included[2]", rules::DUPLICATE_TARGET)
        );
        assert_eq!(
            check(json!({"key": "b", "excluded": [""]})),
            one("excluded[0]", rules::REQUIRED)
        );
    }

    #[test]
    fn rules() {
        assert_eq!(
            check(
                json!({"key": "b", "rules": [{"id": "r", "clauses": []}, {"id": "r", "clauses": []}]})
            ),
            one("rules[1].id", rules::DUPLICATE_RULE_ID)
        );
        assert_eq!(
            check(json!({"key": "b", "rules": [{"id": "r", "clauses": [], "weight": 100001}]})),
            one("rules[0].weight", rules::WEIGHT_RANGE)
        );
        assert_eq!(
            check(json!({"key": "b", "rules": [{"id": "r", "clauses": [], "bucket_by": ""}]})),
            one("rules[0].bucket_by", rules::REQUIRED)
        );
        assert_eq!(
            check(json!({"key": "b", "rules": [{"id": "r", "clauses": [
                {"attribute": "", "op": "segment_match", "values": ["ghost"]}]}]})),
            one("rules[0].clauses[0].values[0]", rules::UNKNOWN_SEGMENT)
        );
    }

    #[test]
    fn limits() {
        let keys: Vec<String> = (0..=MAX_SEGMENT_KEYS).map(|i| format!("u{i}")).collect();
        assert_eq!(
            check(json!({"key": "b", "excluded": keys})),
            one("excluded", rules::LIMIT_EXCEEDED)
        );
        let many: Vec<Value> = (0..=MAX_SEGMENT_RULES)
            .map(|i| json!({"id": format!("r{i}"), "clauses": []}))
            .collect();
        assert_eq!(
            check(json!({"key": "b", "rules": many})),
            one("rules", rules::LIMIT_EXCEEDED)
        );
        assert_eq!(
            check(json!({"key": "b", "name": "n".repeat(MAX_NAME_LEN + 1)})),
            one("name", rules::LIMIT_EXCEEDED)
        );
    }
}
