//! Reading the targeting form back into a configuration: the operators' names, values as
//! typed, serves with their rollout percentages, and the re-application of an edit on a
//! version changed meanwhile. Pure: no I/O.

use std::collections::BTreeMap;

use serde_json::Value;
use vexil_schema::{
    Clause, FlagConfig, FlagKey, Operator, Prerequisite, Rollout, Rule, Serve, Target,
    WeightedVariation,
};

use super::super::flags::variation_label;
use crate::store::FlagView;

/// Rollout weights are in thousandths of a percent.
pub(super) const SCALE: f64 = 1000.0;

/// A sentence for what a serve does: a variation, or a split with percentages.
pub fn serve_text(view: &FlagView, serve: &Serve) -> String {
    match serve {
        Serve::Variation(v) => format!("serves {}", variation_label(view, *v)),
        Serve::Rollout(r) => {
            let parts: Vec<String> = r
                .variations
                .iter()
                .map(|w| {
                    format!(
                        "{}% {}",
                        f64::from(w.weight) / SCALE,
                        variation_label(view, w.variation)
                    )
                })
                .collect();
            format!("splits {}", parts.join(" / "))
        }
    }
}

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

pub(super) fn op_label(op: Operator) -> &'static str {
    match op {
        Operator::In => "is one of",
        Operator::StartsWith => "starts with",
        Operator::EndsWith => "ends with",
        Operator::Contains => "contains",
        Operator::Matches => "matches regex",
        Operator::Lt => "<",
        Operator::Lte => "≤",
        Operator::Gt => ">",
        Operator::Gte => "≥",
        Operator::Before => "is before (date)",
        Operator::After => "is after (date)",
        Operator::SemverEq => "semver =",
        Operator::SemverLt => "semver <",
        Operator::SemverGt => "semver >",
        Operator::SegmentMatch => "is in segment",
        Operator::Exists => "exists",
    }
}

pub(super) fn parse_op(s: &str) -> Option<Operator> {
    Operator::ALL.into_iter().find(|o| op_name(*o) == s)
}

/// A clause value as typed: numbers and booleans for the numeric operators and `in`, a
/// quoted string stays a string, anything else is a string.
pub(super) fn parse_value(op: Operator, line: &str) -> Value {
    let numeric = matches!(
        op,
        Operator::In
            | Operator::Lt
            | Operator::Lte
            | Operator::Gt
            | Operator::Gte
            | Operator::Before
            | Operator::After
    );
    if line.starts_with('"') {
        if let Ok(v @ Value::String(_)) = serde_json::from_str::<Value>(line) {
            return v;
        }
    } else if numeric
        && let Ok(v @ (Value::Number(_) | Value::Bool(_))) = serde_json::from_str::<Value>(line)
    {
        return v;
    }
    Value::String(line.to_owned())
}

/// A clause value as shown in its textarea (inverse of [`parse_value`]).
pub(super) fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let looks_typed = serde_json::from_str::<Value>(s)
                .is_ok_and(|v| v.is_number() || v.is_boolean())
                || s.starts_with('"');
            if looks_typed {
                v.to_string()
            } else {
                s.clone()
            }
        }
        other => other.to_string(),
    }
}

/// The submitted form, as its pairs (names are JSON-like paths).
pub(super) struct Fields(pub(super) BTreeMap<String, Vec<String>>);

impl Fields {
    pub(super) fn new(pairs: Vec<(String, String)>) -> Self {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in pairs {
            m.entry(k).or_default().push(v);
        }
        Self(m)
    }
    pub(super) fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(|v| v.first()).map(String::as_str)
    }
    pub(super) fn all(&self, k: &str) -> &[String] {
        self.0.get(k).map(Vec::as_slice).unwrap_or(&[])
    }
    /// The indexes `i` for which a field `{prefix}[i]…` exists, in order.
    pub(super) fn indexes(&self, prefix: &str) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .0
            .keys()
            .filter_map(|k| k.strip_prefix(prefix)?.strip_prefix('['))
            .filter_map(|rest| rest.split(']').next()?.parse().ok())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Errors found while reading the form (before the store validates): `(path, message)`.
pub(super) type Errors = Vec<(String, String)>;

pub(super) fn parse_serve(
    f: &Fields,
    prefix: &str,
    variations: usize,
    errors: &mut Errors,
) -> Serve {
    let choice = f.get(&format!("{prefix}.serve")).unwrap_or("v:0");
    if let Some(v) = choice.strip_prefix("v:") {
        return Serve::Variation(v.parse().unwrap_or(0));
    }
    let mut weights = Vec::new();
    for i in 0..variations {
        let name = format!("{prefix}.rollout.{i}");
        let raw = f.get(&name).unwrap_or("0").trim();
        let pct = if raw.is_empty() {
            Ok(0.0)
        } else {
            raw.parse::<f64>()
        };
        match pct {
            Ok(p) if (0.0..=100.0).contains(&p) => weights.push(WeightedVariation {
                variation: i,
                weight: (p * SCALE).round() as u32,
            }),
            _ => errors.push((
                format!("{prefix}.rollout.variations[{i}]"),
                format!("'{raw}' is not a percentage between 0 and 100"),
            )),
        }
    }
    let bucket_by = f
        .get(&format!("{prefix}.bucket_by"))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Serve::Rollout(Rollout {
        variations: weights,
        bucket_by,
        experiment: f.get(&format!("{prefix}.experiment")).is_some(),
    })
}

pub(super) fn split_keys(s: &str) -> Vec<String> {
    s.split(['\n', ','])
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Reads the whole configuration from the form.
pub(super) fn parse_config(f: &Fields, variations: usize) -> (FlagConfig, Errors) {
    let mut errors = Errors::new();
    let targets = f
        .indexes("targets")
        .into_iter()
        .map(|k| Target {
            variation: f
                .get(&format!("targets[{k}].variation"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            values: split_keys(f.get(&format!("targets[{k}].values")).unwrap_or("")),
        })
        .filter(|t| !t.values.is_empty())
        .collect();
    let mut rules = Vec::new();
    for i in f.indexes("rules") {
        let p = format!("rules[{i}]");
        let mut clauses = Vec::new();
        for j in f.indexes(&format!("{p}.clauses")) {
            let c = format!("{p}.clauses[{j}]");
            let op_raw = f.get(&format!("{c}.op")).unwrap_or("in");
            let op = parse_op(op_raw).unwrap_or_else(|| {
                errors.push((format!("{c}.op"), format!("unknown operator '{op_raw}'")));
                Operator::In
            });
            let values: Vec<Value> = if op == Operator::SegmentMatch {
                f.all(&format!("{c}.segments"))
                    .iter()
                    .map(|s| Value::String(s.clone()))
                    .collect()
            } else if op == Operator::Exists {
                Vec::new()
            } else {
                f.get(&format!("{c}.values"))
                    .unwrap_or("")
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| parse_value(op, l))
                    .collect()
            };
            clauses.push(Clause {
                attribute: f
                    .get(&format!("{c}.attribute"))
                    .unwrap_or("")
                    .trim()
                    .to_owned(),
                op,
                values,
                negate: f.get(&format!("{c}.negate")).is_some(),
            });
        }
        rules.push(Rule {
            id: f
                .get(&format!("{p}.id"))
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(new_rule_id),
            description: f
                .get(&format!("{p}.description"))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            clauses,
            serve: parse_serve(f, &p, variations, &mut errors),
        });
    }
    let mut prerequisites = Vec::new();
    for k in f.indexes("prerequisites") {
        let key = f
            .get(&format!("prerequisites[{k}].key"))
            .unwrap_or("")
            .trim();
        if key.is_empty() {
            continue;
        }
        match FlagKey::parse(key) {
            Ok(key) => prerequisites.push(Prerequisite {
                key,
                variation: f
                    .get(&format!("prerequisites[{k}].variation"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0),
            }),
            Err(e) => errors.push((format!("prerequisites[{k}].key"), e.to_string())),
        }
    }
    let config = FlagConfig {
        on: f.get("on").is_some(),
        off_variation: f
            .get("off_variation")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        targets,
        rules,
        fallthrough: parse_serve(f, "fallthrough", variations, &mut errors),
        prerequisites,
        // Empty: the store keeps the current salt.
        salt: String::new(),
        version: 0,
    };
    (config, errors)
}

pub(super) fn new_rule_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("rule-{}", &id[..8])
}

/// The editable part of a configuration, as compared in the diff (without salt and
/// version, which the editor does not change).
pub(crate) fn comparable(c: &FlagConfig) -> String {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("salt");
        m.remove("version");
    }
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// `mine` re-applied on `current`: each field `mine` changed against `base` takes its value,
/// every other field keeps the current one.
pub(super) fn reapply(base: &FlagConfig, mine: &FlagConfig, current: &FlagConfig) -> FlagConfig {
    fn pick<T: Clone + PartialEq>(base: &T, mine: &T, current: &T) -> T {
        if mine != base {
            mine.clone()
        } else {
            current.clone()
        }
    }
    FlagConfig {
        on: pick(&base.on, &mine.on, &current.on),
        off_variation: pick(
            &base.off_variation,
            &mine.off_variation,
            &current.off_variation,
        ),
        targets: pick(&base.targets, &mine.targets, &current.targets),
        rules: pick(&base.rules, &mine.rules, &current.rules),
        fallthrough: pick(&base.fallthrough, &mine.fallthrough, &current.fallthrough),
        prerequisites: pick(
            &base.prerequisites,
            &mine.prerequisites,
            &current.prerequisites,
        ),
        salt: String::new(),
        version: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        Fields::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn the_form_reads_back_into_a_configuration() {
        let f = fields(&[
            ("on", "on"),
            ("off_variation", "1"),
            ("targets[0].variation", "0"),
            ("targets[0].values", "alice, bob\ncarol"),
            ("rules[0].id", "r1"),
            ("rules[0].clauses[0].attribute", "plan"),
            ("rules[0].clauses[0].op", "in"),
            ("rules[0].clauses[0].values", "pro\n42\n\"7\""),
            ("rules[0].clauses[1].attribute", ""),
            ("rules[0].clauses[1].op", "segment_match"),
            ("rules[0].clauses[1].segments", "beta"),
            ("rules[0].clauses[1].segments", "staff"),
            ("rules[0].serve", "rollout"),
            ("rules[0].rollout.0", "12.5"),
            ("rules[0].rollout.1", "87.5"),
            ("fallthrough.serve", "v:1"),
            ("prerequisites[0].key", "base-flag"),
            ("prerequisites[0].variation", "0"),
            ("prerequisites[1].key", ""),
        ]);
        let (c, errors) = parse_config(&f, 2);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(c.on);
        assert_eq!(c.off_variation, 1);
        assert_eq!(c.targets[0].values, vec!["alice", "bob", "carol"]);
        let r = &c.rules[0];
        assert_eq!(r.id, "r1");
        assert_eq!(
            r.clauses[0].values,
            vec![Value::from("pro"), Value::from(42), Value::from("7")]
        );
        assert_eq!(r.clauses[1].op, Operator::SegmentMatch);
        assert_eq!(
            r.clauses[1].values,
            vec![Value::from("beta"), Value::from("staff")]
        );
        let Serve::Rollout(ro) = &r.serve else {
            panic!("a rollout")
        };
        assert_eq!(
            ro.variations.iter().map(|w| w.weight).collect::<Vec<_>>(),
            vec![12_500, 87_500]
        );
        assert_eq!(c.fallthrough, Serve::Variation(1));
        assert_eq!(c.prerequisites.len(), 1);
    }

    #[test]
    fn unreadable_fields_are_errors_on_their_path() {
        let f = fields(&[
            ("rules[0].clauses[0].op", "bogus"),
            ("fallthrough.serve", "rollout"),
            ("fallthrough.rollout.0", "abc"),
        ]);
        let (_, errors) = parse_config(&f, 2);
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "rules[0].clauses[0].op",
                "fallthrough.rollout.variations[0]"
            ]
        );
    }

    #[test]
    fn reapplying_keeps_the_other_change() {
        let base = FlagConfig::serving(1);
        let mut mine = base.clone();
        mine.on = true;
        let mut current = base.clone();
        current.off_variation = 0;
        let merged = reapply(&base, &mine, &current);
        assert!(merged.on);
        assert_eq!(merged.off_variation, 0);
    }

    #[test]
    fn values_round_trip_through_the_textarea() {
        for v in [
            Value::from("pro"),
            Value::from(3),
            Value::from("3"),
            Value::from(true),
        ] {
            assert_eq!(parse_value(Operator::In, &show_value(&v)), v, "{v}");
        }
    }
}
