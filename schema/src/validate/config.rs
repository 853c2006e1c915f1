//! Checks of a flag configuration: variation indexes, targets, rules, rollouts and
//! prerequisites (existence and variation range; cycles and depth are in `graph`).

use std::collections::HashMap;

use super::clause::{check_clauses, check_distinct_attributes, clause_attributes};
use super::index::EnvironmentIndex;
use super::path::Collector;
use super::rules;
use crate::key::FlagKey;
use crate::limits::{
    MAX_ATTRIBUTE_LEN, MAX_CONTEXT_KEY_LEN, MAX_DESCRIPTION_LEN, MAX_PREREQUISITES,
    MAX_RULE_ID_LEN, MAX_RULES, MAX_SALT_LEN, MAX_TARGET_KEYS,
};
use crate::model::{FlagConfig, Prerequisite, Rollout, Rule, Serve, Target, WEIGHT_SCALE};

/// Checks `cfg`, the configuration of flag `key` with `variations` variations.
pub(super) fn check_config(
    c: &mut Collector,
    key: &FlagKey,
    variations: usize,
    cfg: &FlagConfig,
    env: &EnvironmentIndex,
) {
    c.field("off_variation", |c| {
        check_index(c, cfg.off_variation, variations)
    });
    c.field("targets", |c| check_targets(c, &cfg.targets, variations));
    c.field("rules", |c| {
        check_rules(c, &cfg.rules, variations, env);
        let names = cfg
            .rules
            .iter()
            .flat_map(|r| clause_attributes(&r.clauses).chain(serve_bucket_by(&r.serve)))
            .chain(serve_bucket_by(&cfg.fallthrough));
        check_distinct_attributes(c, names);
    });
    c.field("fallthrough", |c| {
        check_serve(c, &cfg.fallthrough, variations)
    });
    c.field("prerequisites", |c| {
        check_prerequisites(c, key, &cfg.prerequisites, env)
    });
    c.field("salt", |c| c.max_len(&cfg.salt, MAX_SALT_LEN, "a salt"));
}

/// Checks that `index` names one of `count` variations, at the current path.
pub(super) fn check_index(c: &mut Collector, index: usize, count: usize) {
    if index >= count {
        let expected = match count {
            0 => "the flag has no variations".to_string(),
            1 => "the only valid index is 0".to_string(),
            n => format!("valid indexes are 0 to {}", n - 1),
        };
        c.error(
            rules::VARIATION_INDEX,
            format!("variation index {index} is out of range: {expected}"),
        );
    }
}

fn check_targets(c: &mut Collector, targets: &[Target], variations: usize) {
    let total: usize = targets.iter().map(|t| t.values.len()).sum();
    if !c.max_count(
        total,
        MAX_TARGET_KEYS,
        "individually targeted context keys per flag",
    ) {
        return;
    }
    // Context key -> (target index, variation) of its first listing.
    let mut seen: HashMap<&str, (usize, usize)> = HashMap::with_capacity(total);
    let mut variations_seen: HashMap<usize, usize> = HashMap::new();
    for (i, target) in targets.iter().enumerate() {
        c.index(i, |c| {
            c.field("variation", |c| {
                check_index(c, target.variation, variations);
                if let Some(j) = variations_seen.insert(target.variation, i) {
                    c.error(
                        rules::DUPLICATE_TARGET_VARIATION,
                        format!(
                            "targets[{j}] already serves variation {}; list all its context keys there",
                            target.variation
                        ),
                    );
                }
            });
            c.field("values", |c| {
                for (k, key) in target.values.iter().enumerate() {
                    c.index(k, |c| {
                        if !check_context_key(c, key) {
                            return;
                        }
                        if let Some((j, v)) = seen.insert(key, (i, target.variation)) {
                            let msg = if j == i {
                                format!("context key {key:?} is listed twice in this target")
                            } else if v == target.variation {
                                format!("context key {key:?} is already listed in targets[{j}]")
                            } else {
                                format!(
                                    "context key {key:?} is already targeted with variation {v} in targets[{j}]; a key can be served only one variation"
                                )
                            };
                            c.error(rules::DUPLICATE_TARGET, msg);
                        }
                    });
                }
            });
        });
    }
}

/// Checks a context key in a target or segment list: non-empty and not too long.
pub(super) fn check_context_key(c: &mut Collector, key: &str) -> bool {
    if key.is_empty() {
        c.error(rules::REQUIRED, "a context key must not be empty");
        return false;
    }
    c.max_len(key, MAX_CONTEXT_KEY_LEN, "a context key")
}

fn check_rules(c: &mut Collector, rules_: &[Rule], variations: usize, env: &EnvironmentIndex) {
    if !c.max_count(rules_.len(), MAX_RULES, "rules") {
        return;
    }
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(rules_.len());
    for (i, rule) in rules_.iter().enumerate() {
        c.index(i, |c| {
            c.field("id", |c| check_rule_id(c, &rule.id, i, &mut ids));
            if let Some(d) = &rule.description {
                c.field("description", |c| {
                    c.max_len(d, MAX_DESCRIPTION_LEN, "a description")
                });
            }
            check_clauses(c, &rule.clauses, env, None);
            c.field("serve", |c| check_serve(c, &rule.serve, variations));
        });
    }
}

/// The `bucket_by` attribute a serve hashes, if it names one.
fn serve_bucket_by(serve: &Serve) -> Option<&str> {
    match serve {
        Serve::Rollout(r) => r.bucket_by.as_deref(),
        Serve::Variation(_) => None,
    }
}

/// Checks a rule id (flag or segment rule) at the current path: non-empty, bounded, unique.
pub(super) fn check_rule_id<'a>(
    c: &mut Collector,
    id: &'a str,
    index: usize,
    ids: &mut HashMap<&'a str, usize>,
) {
    if id.is_empty() {
        c.error(
            rules::REQUIRED,
            "a rule needs an id, reported in evaluation reasons",
        );
    } else if c.max_len(id, MAX_RULE_ID_LEN, "a rule id")
        && let Some(j) = ids.insert(id, index)
    {
        c.error(
            rules::DUPLICATE_RULE_ID,
            format!("rules[{j}] already has id {id:?}; rule ids must be unique"),
        );
    }
}

fn check_serve(c: &mut Collector, serve: &Serve, variations: usize) {
    match serve {
        Serve::Variation(v) => c.field("variation", |c| check_index(c, *v, variations)),
        Serve::Rollout(r) => c.field("rollout", |c| check_rollout(c, r, variations)),
    }
}

fn check_rollout(c: &mut Collector, rollout: &Rollout, variations: usize) {
    c.field("variations", |c| {
        let mut sum: u64 = 0;
        let mut seen: HashMap<usize, usize> = HashMap::with_capacity(rollout.variations.len());
        for (i, wv) in rollout.variations.iter().enumerate() {
            sum += u64::from(wv.weight);
            c.index(i, |c| {
                c.field("variation", |c| {
                    check_index(c, wv.variation, variations);
                    if let Some(j) = seen.insert(wv.variation, i) {
                        c.error(
                            rules::DUPLICATE_ROLLOUT_VARIATION,
                            format!(
                                "variation {} already has a slice at variations[{j}]; give it one weight",
                                wv.variation
                            ),
                        );
                    }
                });
                c.field("weight", |c| check_weight(c, wv.weight));
            });
        }
        if sum != u64::from(WEIGHT_SCALE) {
            c.error(
                rules::WEIGHTS_SUM,
                format!(
                    "rollout weights must sum to exactly {WEIGHT_SCALE} (100%, in thousandths of a percent), got {sum}"
                ),
            );
        }
    });
    if let Some(b) = &rollout.bucket_by {
        c.field("bucket_by", |c| check_bucket_by(c, b));
    }
}

/// Checks a weight in thousandths of a percent at the current path.
pub(super) fn check_weight(c: &mut Collector, weight: u32) {
    if weight > WEIGHT_SCALE {
        c.error(
            rules::WEIGHT_RANGE,
            format!(
                "a weight is in thousandths of a percent, from 0 to {WEIGHT_SCALE}; got {weight}"
            ),
        );
    }
}

/// Checks a `bucket_by` attribute name at the current path.
pub(super) fn check_bucket_by(c: &mut Collector, attribute: &str) {
    if attribute.is_empty() {
        c.error(
            rules::REQUIRED,
            "bucket_by, when given, names the attribute to hash; omit it to use the context key",
        );
    } else {
        c.max_len(attribute, MAX_ATTRIBUTE_LEN, "an attribute name");
    }
}

fn check_prerequisites(
    c: &mut Collector,
    key: &FlagKey,
    prerequisites: &[Prerequisite],
    env: &EnvironmentIndex,
) {
    if !c.max_count(prerequisites.len(), MAX_PREREQUISITES, "prerequisites") {
        return;
    }
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(prerequisites.len());
    for (i, p) in prerequisites.iter().enumerate() {
        c.index(i, |c| {
            if p.key == *key {
                c.error_at(
                    "key",
                    rules::PREREQUISITE_CYCLE,
                    format!("a flag cannot be its own prerequisite ({key} -> {key})"),
                );
                return;
            }
            if let Some(j) = seen.insert(&p.key, i) {
                c.error_at(
                    "key",
                    rules::DUPLICATE_PREREQUISITE,
                    format!(
                        "flag {:?} is already a prerequisite at prerequisites[{j}]",
                        p.key.as_str()
                    ),
                );
                return;
            }
            match env.flag(&p.key) {
                None => c.error_at(
                    "key",
                    rules::UNKNOWN_FLAG,
                    format!("no flag {:?} exists in this environment", p.key.as_str()),
                ),
                Some(f) => c.field("variation", |c| {
                    if p.variation >= f.variation_count {
                        c.error(
                            rules::VARIATION_INDEX,
                            format!(
                                "prerequisite flag {:?} has {} variation{}; index {} is out of range",
                                p.key.as_str(),
                                f.variation_count,
                                if f.variation_count == 1 { "" } else { "s" },
                                p.variation
                            ),
                        );
                    }
                }),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EnvironmentSnapshot;
    use serde_json::{Value, json};

    fn env() -> EnvironmentIndex {
        let s: EnvironmentSnapshot = serde_json::from_value(json!({
            "flags": [{"key": "login-v2", "kind": "boolean",
                "variations": [{"value": true}, {"value": false}],
                "off_variation": 1, "fallthrough": {"variation": 0}}],
            "segments": [{"key": "beta"}]
        }))
        .unwrap();
        EnvironmentIndex::from_snapshot(&s)
    }

    /// Checks a config of flag `checkout` with 3 variations.
    fn check(cfg: Value) -> Vec<(String, &'static str)> {
        let cfg: FlagConfig = serde_json::from_value(cfg).unwrap();
        let mut c = Collector::new();
        check_config(
            &mut c,
            &FlagKey::parse("checkout").unwrap(),
            3,
            &cfg,
            &env(),
        );
        match c.finish(()) {
            Ok(()) => vec![],
            Err(e) => e.errors.into_iter().map(|e| (e.path, e.rule)).collect(),
        }
    }

    fn one(path: &str, rule: &'static str) -> Vec<(String, &'static str)> {
        vec![(path.to_string(), rule)]
    }

    fn base() -> Value {
        json!({"on": true, "off_variation": 0, "fallthrough": {"variation": 1}})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut b = base();
        b[field] = value;
        b
    }

    #[test]
    fn a_full_valid_config_passes() {
        let cfg = json!({
            "on": true, "off_variation": 0, "salt": "abc", "version": 4,
            "targets": [{"variation": 2, "values": ["u1", "u2"]}, {"variation": 1, "values": ["u3"]}],
            "rules": [
                {"id": "r1", "description": "beta users",
                 "clauses": [{"attribute": "", "op": "segment_match", "values": ["beta"]}],
                 "serve": {"rollout": {"variations": [
                    {"variation": 1, "weight": 50000}, {"variation": 2, "weight": 50000}
                 ], "bucket_by": "orgId", "experiment": true}}},
                {"id": "r2", "clauses": [], "serve": {"variation": 2}}
            ],
            "fallthrough": {"rollout": {"variations": [
                {"variation": 0, "weight": 100000}, {"variation": 1, "weight": 0}
            ]}},
            "prerequisites": [{"key": "login-v2", "variation": 0}]
        });
        assert_eq!(check(cfg), vec![]);
    }

    #[test]
    fn variation_indexes() {
        assert_eq!(
            check(with("off_variation", json!(3))),
            one("off_variation", rules::VARIATION_INDEX)
        );
        assert_eq!(
            check(with("fallthrough", json!({"variation": 9}))),
            one("fallthrough.variation", rules::VARIATION_INDEX)
        );
        assert_eq!(
            check(with("targets", json!([{"variation": 3, "values": ["u"]}]))),
            one("targets[0].variation", rules::VARIATION_INDEX)
        );
        assert_eq!(
            check(with(
                "rules",
                json!([{"id": "r", "clauses": [], "serve": {"variation": 5}}])
            )),
            one("rules[0].serve.variation", rules::VARIATION_INDEX)
        );
        assert_eq!(
            check(with(
                "fallthrough",
                json!({"rollout": {"variations": [
                    {"variation": 0, "weight": 50000}, {"variation": 7, "weight": 50000}
                ]}})
            )),
            one(
                "fallthrough.rollout.variations[1].variation",
                rules::VARIATION_INDEX
            )
        );
    }

    #[test]
    fn rollout_weights() {
        assert_eq!(
            check(with(
                "fallthrough",
                json!({"rollout": {"variations": [
                    {"variation": 0, "weight": 50000}, {"variation": 1, "weight": 40000}
                ]}})
            )),
            one("fallthrough.rollout.variations", rules::WEIGHTS_SUM)
        );
        assert_eq!(
            check(with("fallthrough", json!({"rollout": {"variations": []}}))),
            one("fallthrough.rollout.variations", rules::WEIGHTS_SUM)
        );
        let over = check(with(
            "fallthrough",
            json!({"rollout": {"variations": [
                {"variation": 0, "weight": 150000}, {"variation": 1, "weight": 0}
            ]}}),
        ));
        assert!(over.contains(&(
            "fallthrough.rollout.variations[0].weight".into(),
            rules::WEIGHT_RANGE
        )));
        assert!(over.contains(&("fallthrough.rollout.variations".into(), rules::WEIGHTS_SUM)));
        // Weights near u32::MAX must not overflow the sum.
        let huge = check(with(
            "fallthrough",
            json!({"rollout": {"variations": [
                {"variation": 0, "weight": u32::MAX}, {"variation": 1, "weight": u32::MAX}
            ]}}),
        ));
        assert_eq!(huge.len(), 3);
    }

    #[test]
    fn rollout_variation_once() {
        assert_eq!(
            check(with(
                "fallthrough",
                json!({"rollout": {"variations": [
                    {"variation": 1, "weight": 50000}, {"variation": 1, "weight": 50000}
                ]}})
            )),
            one(
                "fallthrough.rollout.variations[1].variation",
                rules::DUPLICATE_ROLLOUT_VARIATION
            )
        );
    }

    #[test]
    fn bucket_by_not_empty() {
        assert_eq!(
            check(with(
                "fallthrough",
                json!({"rollout": {"variations": [{"variation": 1, "weight": 100000}], "bucket_by": ""}})
            )),
            one("fallthrough.rollout.bucket_by", rules::REQUIRED)
        );
    }

    #[test]
    fn targets() {
        assert_eq!(
            check(with(
                "targets",
                json!([{"variation": 0, "values": ["u1"]}, {"variation": 1, "values": ["u2", "u1"]}])
            )),
            one("targets[1].values[1]", rules::DUPLICATE_TARGET)
        );
        assert_eq!(
            check(with(
                "targets",
                json!([{"variation": 0, "values": ["u1", "u1"]}])
            )),
            one("targets[0].values[1]", rules::DUPLICATE_TARGET)
        );
        assert_eq!(
            check(with(
                "targets",
                json!([{"variation": 0, "values": ["a"]}, {"variation": 0, "values": ["b"]}])
            )),
            one("targets[1].variation", rules::DUPLICATE_TARGET_VARIATION)
        );
        assert_eq!(
            check(with("targets", json!([{"variation": 0, "values": [""]}]))),
            one("targets[0].values[0]", rules::REQUIRED)
        );
        assert_eq!(
            check(with(
                "targets",
                json!([{"variation": 0, "values": ["k".repeat(MAX_CONTEXT_KEY_LEN + 1)]}])
            )),
            one("targets[0].values[0]", rules::LIMIT_EXCEEDED)
        );
    }

    #[test]
    fn target_key_limit_is_over_all_variations() {
        let half: Vec<String> = (0..MAX_TARGET_KEYS / 2).map(|i| format!("a{i}")).collect();
        let other: Vec<String> = (0..MAX_TARGET_KEYS / 2).map(|i| format!("b{i}")).collect();
        assert_eq!(
            check(with(
                "targets",
                json!([{"variation": 0, "values": half}, {"variation": 1, "values": other}])
            )),
            vec![]
        );
        let over: Vec<String> = (0..=MAX_TARGET_KEYS / 2).map(|i| format!("b{i}")).collect();
        assert_eq!(
            check(with(
                "targets",
                json!([{"variation": 0, "values": half}, {"variation": 1, "values": over}])
            )),
            one("targets", rules::LIMIT_EXCEEDED)
        );
    }

    #[test]
    fn rule_ids() {
        assert_eq!(
            check(with(
                "rules",
                json!([{"id": "", "clauses": [], "serve": {"variation": 0}}])
            )),
            one("rules[0].id", rules::REQUIRED)
        );
        assert_eq!(
            check(with(
                "rules",
                json!([{"id": "a", "clauses": [], "serve": {"variation": 0}},
                       {"id": "a", "clauses": [], "serve": {"variation": 1}}])
            )),
            one("rules[1].id", rules::DUPLICATE_RULE_ID)
        );
    }

    #[test]
    fn rule_count_limit() {
        let many: Vec<Value> = (0..=MAX_RULES)
            .map(|i| json!({"id": format!("r{i}"), "clauses": [], "serve": {"variation": 0}}))
            .collect();
        assert_eq!(
            check(with("rules", json!(many))),
            one("rules", rules::LIMIT_EXCEEDED)
        );
    }

    #[test]
    fn clause_errors_carry_the_rule_path() {
        assert_eq!(
            check(with(
                "rules",
                json!([{"id": "r", "clauses": [
                    {"attribute": "age", "op": "lt", "values": [1]},
                    {"attribute": "age", "op": "lt", "values": ["x"]}
                ], "serve": {"variation": 0}}])
            )),
            one("rules[0].clauses[1].values[0]", rules::OPERAND_TYPE)
        );
    }

    #[test]
    fn prerequisites() {
        assert_eq!(
            check(with(
                "prerequisites",
                json!([{"key": "nope", "variation": 0}])
            )),
            one("prerequisites[0].key", rules::UNKNOWN_FLAG)
        );
        assert_eq!(
            check(with(
                "prerequisites",
                json!([{"key": "login-v2", "variation": 2}])
            )),
            one("prerequisites[0].variation", rules::VARIATION_INDEX)
        );
        assert_eq!(
            check(with(
                "prerequisites",
                json!([{"key": "checkout", "variation": 0}])
            )),
            one("prerequisites[0].key", rules::PREREQUISITE_CYCLE)
        );
        assert_eq!(
            check(with(
                "prerequisites",
                json!([{"key": "login-v2", "variation": 0}, {"key": "login-v2", "variation": 1}])
            )),
            one("prerequisites[1].key", rules::DUPLICATE_PREREQUISITE)
        );
        let many: Vec<Value> = (0..=MAX_PREREQUISITES)
            .map(|i| json!({"key": format!("f{i}"), "variation": 0}))
            .collect();
        assert_eq!(
            check(with("prerequisites", json!(many))),
            one("prerequisites", rules::LIMIT_EXCEEDED)
        );
    }

    #[test]
    fn distinct_attribute_limit() {
        let rules = |n: usize| -> Value {
            let clauses: Vec<Value> = (0..n)
                .map(|i| json!({"attribute": format!("a{}", i % 100), "op": "exists"}))
                .collect();
            let rules: Vec<Value> = clauses
                .chunks(100)
                .enumerate()
                .map(|(i, c)| json!({"id": format!("r{i}"), "clauses": c, "serve": {"variation": 0}}))
                .collect();
            json!(rules)
        };
        // Repeats count once.
        assert_eq!(check(with("rules", rules(5_000))), vec![]);
        let mut many: Vec<Value> = (0..=crate::limits::MAX_DISTINCT_ATTRIBUTES / 100)
            .map(|r| {
                let clauses: Vec<Value> = (0..100)
                    .map(|i| json!({"attribute": format!("r{r}-a{i}"), "op": "exists"}))
                    .collect();
                json!({"id": format!("r{r}"), "clauses": clauses, "serve": {"variation": 0}})
            })
            .collect();
        assert_eq!(
            check(with("rules", json!(many))),
            one("rules", rules::LIMIT_EXCEEDED)
        );
        // bucket_by names count too.
        many.truncate(crate::limits::MAX_DISTINCT_ATTRIBUTES / 100);
        assert_eq!(check(with("rules", json!(many.clone()))), vec![]);
        let mut cfg = with("rules", json!(many));
        cfg["fallthrough"] = json!({"rollout": {"variations": [{"variation": 0, "weight": 100000}],
            "bucket_by": "orgId"}});
        assert_eq!(check(cfg), one("rules", rules::LIMIT_EXCEEDED));
    }

    #[test]
    fn salt_limit() {
        assert_eq!(
            check(with("salt", json!("s".repeat(MAX_SALT_LEN + 1)))),
            one("salt", rules::LIMIT_EXCEEDED)
        );
    }
}
