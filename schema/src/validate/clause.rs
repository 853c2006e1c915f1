//! Checks of rule clauses: attribute names, operand types per operator, and segment references.
//!
//! Operands are parsed with the same functions the evaluation engine uses
//! ([`crate::operand`]), so a clause passes exactly when evaluation understands it.

use std::collections::HashSet;

use serde_json::Value;

use super::definition::json_type;
use super::index::EnvironmentIndex;
use super::path::Collector;
use super::rules;
use crate::key::check_key;
use crate::limits::{
    MAX_ATTRIBUTE_LEN, MAX_CLAUSE_VALUE_LEN, MAX_CLAUSES_PER_RULE, MAX_DISTINCT_ATTRIBUTES,
    MAX_VALUES_PER_CLAUSE,
};
use crate::model::{Clause, Operator};
use crate::operand::{RegexError, compile_regex, parse_date_millis, parse_number, parse_semver};

/// Checks, at the current path, that `names` (clause attributes and `bucket_by` names of one
/// flag configuration or segment) hold at most [`MAX_DISTINCT_ATTRIBUTES`] distinct names.
pub(super) fn check_distinct_attributes<'a>(
    c: &mut Collector,
    names: impl Iterator<Item = &'a str>,
) {
    let distinct: HashSet<&str> = names.collect();
    c.max_count(
        distinct.len(),
        MAX_DISTINCT_ATTRIBUTES,
        "distinct attribute names in clauses and bucket_by",
    );
}

/// The attribute names `clauses` read (`segment_match` reads none).
pub(super) fn clause_attributes(clauses: &[Clause]) -> impl Iterator<Item = &str> {
    clauses
        .iter()
        .filter(|c| c.op != Operator::SegmentMatch)
        .map(|c| c.attribute.as_str())
}

/// Checks a rule's clauses at path `clauses`. `owner` is the key of the segment the rule
/// belongs to, if it is a segment rule: a reference to it is a cycle, reported by the graph
/// check rather than as an unknown segment.
pub(super) fn check_clauses(
    c: &mut Collector,
    clauses: &[Clause],
    env: &EnvironmentIndex,
    owner: Option<&str>,
) {
    c.field("clauses", |c| {
        if !c.max_count(clauses.len(), MAX_CLAUSES_PER_RULE, "clauses per rule") {
            return;
        }
        for (i, clause) in clauses.iter().enumerate() {
            c.index(i, |c| check_clause(c, clause, env, owner));
        }
    });
}

fn check_clause(c: &mut Collector, clause: &Clause, env: &EnvironmentIndex, owner: Option<&str>) {
    let op = clause.op;
    // `segment_match` ignores its attribute, so any value (usually empty) is fine.
    if op != Operator::SegmentMatch {
        c.field("attribute", |c| {
            if clause.attribute.is_empty() {
                c.error(
                    rules::REQUIRED,
                    format!(
                        "a clause with operator {} needs the name of the attribute it tests",
                        op_name(op)
                    ),
                );
            } else {
                c.max_len(&clause.attribute, MAX_ATTRIBUTE_LEN, "an attribute name");
            }
        });
    }
    c.field("values", |c| {
        if op == Operator::Exists {
            if !clause.values.is_empty() {
                c.error(
                    rules::VALUES_NOT_ALLOWED,
                    "operator exists tests only whether the attribute is present; remove the values",
                );
            }
            return;
        }
        if clause.values.is_empty() {
            c.error(
                rules::VALUES_REQUIRED,
                format!(
                    "operator {} needs at least one value to compare against",
                    op_name(op)
                ),
            );
            return;
        }
        if !c.max_count(clause.values.len(), MAX_VALUES_PER_CLAUSE, "values per clause") {
            return;
        }
        for (j, value) in clause.values.iter().enumerate() {
            c.index(j, |c| check_value(c, op, value, env, owner));
        }
    });
}

fn check_value(
    c: &mut Collector,
    op: Operator,
    value: &Value,
    env: &EnvironmentIndex,
    owner: Option<&str>,
) {
    if let Value::String(s) = value
        && !c.max_len(s, MAX_CLAUSE_VALUE_LEN, "a clause value")
    {
        return;
    }
    match op {
        Operator::In => {
            if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                wrong_type(c, op, "a string, number or boolean", value);
            }
        }
        Operator::StartsWith | Operator::EndsWith | Operator::Contains => {
            if !value.is_string() {
                wrong_type(c, op, "a string", value);
            }
        }
        Operator::Matches => match value.as_str() {
            None => wrong_type(c, op, "a regular expression string", value),
            Some(pattern) => match compile_regex(pattern) {
                Ok(_) => {}
                Err(e @ RegexError::TooLong(_)) => c.error(rules::LIMIT_EXCEEDED, e.to_string()),
                Err(RegexError::Invalid(e)) => c.error(
                    rules::REGEX_INVALID,
                    format!(
                        "{pattern:?} is not a valid regular expression: {}",
                        regex_reason(&e)
                    ),
                ),
            },
        },
        Operator::Lt | Operator::Lte | Operator::Gt | Operator::Gte => {
            if parse_number(value).is_none() {
                wrong_type(c, op, "a JSON number", value);
            }
        }
        Operator::Before | Operator::After => {
            if !matches!(value, Value::String(_) | Value::Number(_)) {
                wrong_type(
                    c,
                    op,
                    "an RFC 3339 date string or a number of epoch milliseconds",
                    value,
                );
            } else if parse_date_millis(value).is_none() {
                c.error(
                    rules::DATE_INVALID,
                    format!(
                        "{value} is not a date: use RFC 3339 (e.g. \"2026-01-31T12:00:00Z\") or epoch milliseconds"
                    ),
                );
            }
        }
        Operator::SemverEq | Operator::SemverLt | Operator::SemverGt => {
            match value.as_str() {
                None => wrong_type(c, op, "a semantic version string", value),
                Some(s) => {
                    if parse_semver(s).is_none() {
                        c.error(
                        rules::SEMVER_INVALID,
                        format!("{s:?} is not a semantic version such as \"1.4.2\" or \"2.0.0-beta.1\""),
                    );
                    }
                }
            }
        }
        Operator::SegmentMatch => match value.as_str() {
            None => wrong_type(c, op, "a segment key string", value),
            Some(key) => {
                if let Err(e) = check_key(key) {
                    c.error(
                        rules::KEY_FORMAT,
                        format!("{key:?} is not a segment key: it {e}"),
                    );
                } else if Some(key) != owner && env.segment(key).is_none() {
                    c.error(
                        rules::UNKNOWN_SEGMENT,
                        format!("no segment {key:?} exists in this environment"),
                    );
                }
            }
        },
        // Values of `exists` are rejected before this point.
        Operator::Exists => {}
    }
}

fn wrong_type(c: &mut Collector, op: Operator, expected: &str, value: &Value) {
    c.error(
        rules::OPERAND_TYPE,
        format!(
            "operator {} compares against {expected}, got {}",
            op_name(op),
            json_type(value)
        ),
    );
}

/// The gist of a regex error on one line. The `regex` crate renders syntax errors over several
/// lines (pattern, caret, then `error: <reason>`); keep the reason.
fn regex_reason(error: &str) -> String {
    match error.rsplit_once("error: ") {
        Some((_, reason)) => reason.trim().to_string(),
        None => error.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// The operator's wire name, for messages.
pub(super) fn op_name(op: Operator) -> &'static str {
    match op {
        Operator::In => "in",
        Operator::StartsWith => "starts_with",
        Operator::EndsWith => "ends_with",
        Operator::Contains => "contains",
        Operator::Matches => "matches",
        Operator::Lt => "lt",
        Operator::Lte => "lte",
        Operator::Gt => "gt",
        Operator::Gte => "gte",
        Operator::Before => "before",
        Operator::After => "after",
        Operator::SemverEq => "semver_eq",
        Operator::SemverLt => "semver_lt",
        Operator::SemverGt => "semver_gt",
        Operator::SegmentMatch => "segment_match",
        Operator::Exists => "exists",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EnvironmentSnapshot;
    use serde_json::json;

    fn env() -> EnvironmentIndex {
        let s: EnvironmentSnapshot =
            serde_json::from_value(json!({"segments": [{"key": "beta"}]})).unwrap();
        EnvironmentIndex::from_snapshot(&s)
    }

    fn check(clause: Value, owner: Option<&str>) -> Vec<(String, &'static str)> {
        let clause: Clause = serde_json::from_value(clause).unwrap();
        let mut c = Collector::new();
        check_clauses(&mut c, &[clause], &env(), owner);
        match c.finish(()) {
            Ok(()) => vec![],
            Err(e) => e.errors.into_iter().map(|e| (e.path, e.rule)).collect(),
        }
    }

    fn one(path: &str, rule: &'static str) -> Vec<(String, &'static str)> {
        vec![(path.to_string(), rule)]
    }

    #[test]
    fn regex_errors_read_on_one_line() {
        let clause: Clause = serde_json::from_value(
            json!({"attribute": "e", "op": "matches", "values": ["^[a-z+@x$", "\\w{1000}\\w{1000}"]}),
        )
        .unwrap();
        let mut c = Collector::new();
        check_clauses(&mut c, &[clause], &env(), None);
        let errs = c.finish(()).unwrap_err().errors;
        assert_eq!(
            errs[0].message,
            "\"^[a-z+@x$\" is not a valid regular expression: unclosed character class"
        );
        assert!(!errs[1].message.contains('\n'), "{}", errs[1].message);
        assert!(
            errs[1].message.contains("size limit"),
            "{}",
            errs[1].message
        );
    }

    #[test]
    fn operator_names_match_the_wire() {
        for op in Operator::ALL {
            assert_eq!(serde_json::to_value(op).unwrap(), json!(op_name(op)));
        }
    }

    #[test]
    fn valid_clauses_pass() {
        for clause in [
            json!({"attribute": "country", "op": "in", "values": ["FR", 33, true]}),
            json!({"attribute": "email", "op": "ends_with", "values": ["@example.com"]}),
            json!({"attribute": "email", "op": "matches", "values": ["^[a-z]+@example\\.com$"]}),
            json!({"attribute": "age", "op": "gte", "values": [18, 20.5]}),
            json!({"attribute": "created", "op": "before", "values": ["2026-01-31T12:00:00Z", 1700000000000_i64]}),
            json!({"attribute": "version", "op": "semver_lt", "values": ["v2", "1.4.2-beta.1"]}),
            json!({"attribute": "", "op": "segment_match", "values": ["beta"]}),
            json!({"attribute": "plan", "op": "exists"}),
        ] {
            assert_eq!(check(clause.clone(), None), vec![], "{clause}");
        }
    }

    #[test]
    fn attribute_required_except_for_segment_match() {
        assert_eq!(
            check(json!({"attribute": "", "op": "in", "values": ["a"]}), None),
            one("clauses[0].attribute", rules::REQUIRED)
        );
        assert_eq!(
            check(
                json!({"attribute": "a".repeat(MAX_ATTRIBUTE_LEN + 1), "op": "in", "values": ["a"]}),
                None
            ),
            one("clauses[0].attribute", rules::LIMIT_EXCEEDED)
        );
    }

    #[test]
    fn values_required_or_forbidden() {
        assert_eq!(
            check(json!({"attribute": "a", "op": "in", "values": []}), None),
            one("clauses[0].values", rules::VALUES_REQUIRED)
        );
        assert_eq!(
            check(
                json!({"attribute": "a", "op": "exists", "values": ["x"]}),
                None
            ),
            one("clauses[0].values", rules::VALUES_NOT_ALLOWED)
        );
    }

    #[test]
    fn operand_types() {
        for (op, bad) in [
            ("in", json!(null)),
            ("in", json!([1])),
            ("starts_with", json!(1)),
            ("contains", json!(true)),
            ("matches", json!(1)),
            ("lt", json!("5")),
            ("gte", json!(null)),
            ("before", json!(true)),
            ("semver_eq", json!(1)),
            ("segment_match", json!(1)),
        ] {
            assert_eq!(
                check(
                    json!({"attribute": "a", "op": op, "values": ["ok", bad]}),
                    None
                )
                .into_iter()
                .filter(|(p, _)| p == "clauses[0].values[1]")
                .collect::<Vec<_>>(),
                one("clauses[0].values[1]", rules::OPERAND_TYPE),
                "{op}"
            );
        }
    }

    #[test]
    fn unparseable_operands() {
        assert_eq!(
            check(
                json!({"attribute": "d", "op": "after", "values": ["yesterday"]}),
                None
            ),
            one("clauses[0].values[0]", rules::DATE_INVALID)
        );
        assert_eq!(
            check(
                json!({"attribute": "v", "op": "semver_gt", "values": ["banana"]}),
                None
            ),
            one("clauses[0].values[0]", rules::SEMVER_INVALID)
        );
        assert_eq!(
            check(
                json!({"attribute": "e", "op": "matches", "values": ["(unclosed"]}),
                None
            ),
            one("clauses[0].values[0]", rules::REGEX_INVALID)
        );
        assert_eq!(
            check(
                json!({"attribute": "e", "op": "matches", "values": ["\\w{1000}\\w{1000}"]}),
                None
            ),
            one("clauses[0].values[0]", rules::REGEX_INVALID)
        );
        assert_eq!(
            check(
                json!({"attribute": "e", "op": "matches",
                    "values": ["a".repeat(crate::operand::MAX_REGEX_PATTERN_LEN + 1)]}),
                None
            ),
            one("clauses[0].values[0]", rules::LIMIT_EXCEEDED)
        );
    }

    #[test]
    fn segment_references() {
        assert_eq!(
            check(
                json!({"attribute": "", "op": "segment_match", "values": ["gamma"]}),
                None
            ),
            one("clauses[0].values[0]", rules::UNKNOWN_SEGMENT)
        );
        assert_eq!(
            check(
                json!({"attribute": "", "op": "segment_match", "values": ["not a key"]}),
                None
            ),
            one("clauses[0].values[0]", rules::KEY_FORMAT)
        );
        // A segment naming itself is a cycle, reported by the graph check, not "unknown".
        assert_eq!(
            check(
                json!({"attribute": "", "op": "segment_match", "values": ["self"]}),
                Some("self")
            ),
            vec![]
        );
    }

    #[test]
    fn limits() {
        let many: Vec<_> = (0..=MAX_VALUES_PER_CLAUSE).map(|i| json!(i)).collect();
        assert_eq!(
            check(json!({"attribute": "a", "op": "in", "values": many}), None),
            one("clauses[0].values", rules::LIMIT_EXCEEDED)
        );
        assert_eq!(
            check(
                json!({"attribute": "a", "op": "in", "values": ["x".repeat(MAX_CLAUSE_VALUE_LEN + 1)]}),
                None
            ),
            one("clauses[0].values[0]", rules::LIMIT_EXCEEDED)
        );
        let clauses: Vec<Clause> = (0..=MAX_CLAUSES_PER_RULE)
            .map(|_| serde_json::from_value(json!({"attribute": "a", "op": "exists"})).unwrap())
            .collect();
        let mut c = Collector::new();
        check_clauses(&mut c, &clauses, &env(), None);
        let errs = c.finish(()).unwrap_err().errors;
        assert_eq!(
            (errs[0].path.as_str(), errs[0].rule),
            ("clauses", rules::LIMIT_EXCEEDED)
        );
    }
}
