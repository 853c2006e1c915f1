//! Checks of a whole environment snapshot: each flag and segment, unique keys, and the
//! reference graphs.

use std::collections::HashMap;

use super::config::check_config;
use super::definition::check_variations;
use super::index::EnvironmentIndex;
use super::path::Collector;
use super::references::check_snapshot_references;
use super::rules;
use super::segment::check_segment;
use crate::model::EnvironmentSnapshot;

pub(super) fn check_snapshot(c: &mut Collector, s: &EnvironmentSnapshot) {
    let env = EnvironmentIndex::from_snapshot(s);
    c.field("flags", |c| {
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(s.flags.len());
        for (i, flag) in s.flags.iter().enumerate() {
            c.index(i, |c| {
                if let Some(j) = seen.insert(flag.key.as_str(), i) {
                    c.error_at(
                        "key",
                        rules::DUPLICATE_KEY,
                        format!("flags[{j}] already has key {:?}", flag.key.as_str()),
                    );
                }
                check_variations(c, flag.kind, &flag.variations);
                check_config(c, &flag.key, flag.variations.len(), &flag.config, &env);
            });
        }
    });
    c.field("segments", |c| {
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(s.segments.len());
        for (i, seg) in s.segments.iter().enumerate() {
            c.index(i, |c| {
                if let Some(j) = seen.insert(seg.key.as_str(), i) {
                    c.error_at(
                        "key",
                        rules::DUPLICATE_KEY,
                        format!("segments[{j}] already has key {:?}", seg.key.as_str()),
                    );
                }
                check_segment(c, seg, &env);
            });
        }
    });
    check_snapshot_references(c, s, &env);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::validate_snapshot;
    use serde_json::json;

    #[test]
    fn a_valid_environment_passes() {
        let s: EnvironmentSnapshot = serde_json::from_value(json!({
            "version": 7,
            "flags": [
                {"key": "checkout", "kind": "string",
                 "variations": [{"value": "old"}, {"value": "new"}],
                 "on": true, "off_variation": 0,
                 "rules": [{"id": "beta", "clauses": [
                    {"attribute": "", "op": "segment_match", "values": ["beta"]}
                 ], "serve": {"variation": 1}}],
                 "fallthrough": {"rollout": {"variations": [
                    {"variation": 0, "weight": 90000}, {"variation": 1, "weight": 10000}]}},
                 "prerequisites": [{"key": "login", "variation": 0}]},
                {"key": "login", "kind": "boolean",
                 "variations": [{"value": true}, {"value": false}],
                 "off_variation": 1, "fallthrough": {"variation": 0}}
            ],
            "segments": [
                {"key": "beta", "included": ["u1"], "rules": [{"id": "staff", "clauses": [
                    {"attribute": "", "op": "segment_match", "values": ["staff"]}]}]},
                {"key": "staff", "rules": [{"id": "email", "clauses": [
                    {"attribute": "email", "op": "ends_with", "values": ["@example.com"]}]}]}
            ]
        }))
        .unwrap();
        assert_eq!(validate_snapshot(&s), Ok(()));
        assert_eq!(validate_snapshot(&EnvironmentSnapshot::default()), Ok(()));
    }

    #[test]
    fn errors_are_reported_under_flags_and_segments() {
        let s: EnvironmentSnapshot = serde_json::from_value(json!({
            "flags": [
                {"key": "a", "kind": "number", "variations": [{"value": 1}, {"value": "x"}],
                 "off_variation": 2, "fallthrough": {"variation": 0},
                 "prerequisites": [{"key": "ghost", "variation": 0}]},
                {"key": "a", "kind": "number", "variations": [{"value": 1}],
                 "off_variation": 0, "fallthrough": {"variation": 0}}
            ],
            "segments": [
                {"key": "s", "included": ["u", "u"]},
                {"key": "s", "rules": [{"id": "r", "clauses": [
                    {"attribute": "", "op": "segment_match", "values": ["nope"]}]}]}
            ]
        }))
        .unwrap();
        let err = validate_snapshot(&s).unwrap_err();
        let got: Vec<(&str, &str)> = err
            .errors
            .iter()
            .map(|e| (e.path.as_str(), e.rule))
            .collect();
        assert_eq!(
            got,
            vec![
                ("flags[0].variations[1].value", rules::VALUE_KIND),
                ("flags[0].off_variation", rules::VARIATION_INDEX),
                ("flags[0].prerequisites[0].key", rules::UNKNOWN_FLAG),
                ("flags[1].key", rules::DUPLICATE_KEY),
                ("segments[0].included[1]", rules::DUPLICATE_TARGET),
                ("segments[1].key", rules::DUPLICATE_KEY),
                (
                    "segments[1].rules[0].clauses[0].values[0]",
                    rules::UNKNOWN_SEGMENT
                ),
            ]
        );
    }
}
