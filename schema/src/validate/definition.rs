//! Checks of a flag definition: variations, tags, name and description.

use std::collections::HashMap;
use std::io;

use serde_json::Value;

use super::path::Collector;
use super::rules;
use crate::limits::{
    MAX_DESCRIPTION_LEN, MAX_NAME_LEN, MAX_TAG_LEN, MAX_TAGS, MAX_VARIATION_VALUE_BYTES,
    MAX_VARIATIONS,
};
use crate::model::{FlagDefinition, FlagKind, Variation};

pub(super) fn check_definition(c: &mut Collector, def: &FlagDefinition) {
    c.field("name", |c| {
        c.max_len(&def.name, MAX_NAME_LEN, "a flag name")
    });
    c.field("description", |c| {
        c.max_len(&def.description, MAX_DESCRIPTION_LEN, "a description")
    });
    check_variations(c, def.kind, &def.variations);
    c.field("tags", |c| check_tags(c, &def.tags));
}

/// Checks a flag's variations against its kind, at path `variations`. Shared with the snapshot
/// check, whose flags carry their variations too.
pub(super) fn check_variations(c: &mut Collector, kind: FlagKind, variations: &[Variation]) {
    c.field("variations", |c| {
        if variations.is_empty() {
            c.error(rules::REQUIRED, "a flag needs at least one variation");
            return;
        }
        if !c.max_count(variations.len(), MAX_VARIATIONS, "variations") {
            return;
        }
        if kind == FlagKind::Boolean && variations.len() != 2 {
            c.error(
                rules::BOOLEAN_VARIATIONS,
                format!(
                    "a boolean flag has exactly two variations, true and false; got {}",
                    variations.len()
                ),
            );
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, v) in variations.iter().enumerate() {
            c.index(i, |c| {
                c.field("value", |c| {
                    if !kind.accepts(&v.value) {
                        c.error(
                            rules::VALUE_KIND,
                            format!(
                                "a {} flag's variations must be {} values, got {}",
                                kind.as_str(),
                                kind.as_str(),
                                json_type(&v.value)
                            ),
                        );
                    }
                    let size = json_size(&v.value);
                    if size > MAX_VARIATION_VALUE_BYTES {
                        c.error(
                            rules::LIMIT_EXCEEDED,
                            format!(
                                "a variation value may be at most {MAX_VARIATION_VALUE_BYTES} bytes of JSON, got {size}"
                            ),
                        );
                    }
                    if let Some(j) = variations[..i]
                        .iter()
                        .position(|w| same_value(&w.value, &v.value))
                    {
                        c.error(
                            rules::DUPLICATE_VARIATION_VALUE,
                            format!("variations[{j}] already has this value; variation values must be distinct"),
                        );
                    }
                });
                if let Some(name) = &v.name {
                    c.field("name", |c| {
                        if name.is_empty() {
                            c.error(
                                rules::REQUIRED,
                                "a variation name, when given, must not be empty",
                            );
                        } else if c.max_len(name, MAX_NAME_LEN, "a variation name")
                            && let Some(j) = names.insert(name, i)
                        {
                            c.error(
                                rules::DUPLICATE_VARIATION_NAME,
                                format!(
                                    "variations[{j}] is already named {name:?}; variation names must be distinct"
                                ),
                            );
                        }
                    });
                }
                if let Some(d) = &v.description {
                    c.field("description", |c| {
                        c.max_len(d, MAX_DESCRIPTION_LEN, "a description")
                    });
                }
            });
        }
    });
}

fn check_tags(c: &mut Collector, tags: &[String]) {
    if !c.max_count(tags.len(), MAX_TAGS, "tags") {
        return;
    }
    for (i, tag) in tags.iter().enumerate() {
        c.index(i, |c| {
            if tag.is_empty()
                || !tag
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | ':' | '/' | '-'))
            {
                c.error(
                    rules::TAG_FORMAT,
                    format!(
                        "a tag is 1 to {MAX_TAG_LEN} letters, digits, '.', '_', ':', '/' or '-'; got {tag:?}"
                    ),
                );
            } else if c.max_len(tag, MAX_TAG_LEN, "a tag")
                && let Some(j) = tags[..i].iter().position(|t| t == tag)
            {
                c.error(
                    rules::DUPLICATE_TAG,
                    format!("tag {tag:?} is already listed at tags[{j}]"),
                );
            }
        });
    }
}

/// Whether two variation values are the same for a user: numbers compare by value (`1` and
/// `1.0` are the same), everything else structurally.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// The JSON type of a value, for messages.
pub(super) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Size of a value as compact JSON, without building the string.
fn json_size(v: &Value) -> usize {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serialising a `Value` into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(def: serde_json::Value) -> Vec<(String, &'static str)> {
        let def: FlagDefinition = serde_json::from_value(def).unwrap();
        let mut c = Collector::new();
        check_definition(&mut c, &def);
        match c.finish(()) {
            Ok(()) => vec![],
            Err(e) => e.errors.into_iter().map(|e| (e.path, e.rule)).collect(),
        }
    }

    fn err(path: &str, rule: &'static str) -> Vec<(String, &'static str)> {
        vec![(path.to_string(), rule)]
    }

    #[test]
    fn valid_definitions_pass() {
        assert!(
            check(json!({"key": "f", "kind": "boolean",
            "variations": [{"value": false}, {"value": true}]}))
            .is_empty()
        );
        assert!(
            check(json!({"key": "f", "kind": "string", "name": "Checkout",
            "variations": [{"value": "a", "name": "control"}, {"value": "b", "name": "treatment"}],
            "tags": ["team:checkout", "release/2026.1"]}))
            .is_empty()
        );
        assert!(
            check(json!({"key": "f", "kind": "json",
            "variations": [{"value": {"a": 1}}, {"value": [1]}, {"value": null}]}))
            .is_empty()
        );
        assert!(
            check(json!({"key": "f", "kind": "number", "variations": [{"value": 7}]})).is_empty()
        );
    }

    #[test]
    fn at_least_one_variation() {
        assert_eq!(
            check(json!({"key": "f", "kind": "string", "variations": []})),
            err("variations", rules::REQUIRED)
        );
    }

    #[test]
    fn boolean_flags_have_true_and_false() {
        assert_eq!(
            check(json!({"key": "f", "kind": "boolean", "variations": [{"value": true}]})),
            err("variations", rules::BOOLEAN_VARIATIONS)
        );
        assert_eq!(
            check(json!({"key": "f", "kind": "boolean",
                "variations": [{"value": true}, {"value": true}]})),
            err("variations[1].value", rules::DUPLICATE_VARIATION_VALUE)
        );
        let three = check(json!({"key": "f", "kind": "boolean",
            "variations": [{"value": true}, {"value": false}, {"value": true}]}));
        assert!(three.contains(&("variations".into(), rules::BOOLEAN_VARIATIONS)));
    }

    #[test]
    fn values_match_the_kind() {
        assert_eq!(
            check(json!({"key": "f", "kind": "number",
                "variations": [{"value": 1}, {"value": "2"}]})),
            err("variations[1].value", rules::VALUE_KIND)
        );
        assert_eq!(
            check(json!({"key": "f", "kind": "boolean",
                "variations": [{"value": true}, {"value": "false"}]})),
            err("variations[1].value", rules::VALUE_KIND)
        );
    }

    #[test]
    fn values_are_distinct_numbers_by_value() {
        assert_eq!(
            check(json!({"key": "f", "kind": "number",
                "variations": [{"value": 1}, {"value": 1.0}]})),
            err("variations[1].value", rules::DUPLICATE_VARIATION_VALUE)
        );
    }

    #[test]
    fn names_are_distinct_and_non_empty() {
        assert_eq!(
            check(json!({"key": "f", "kind": "string",
                "variations": [{"value": "a", "name": "x"}, {"value": "b", "name": "x"}]})),
            err("variations[1].name", rules::DUPLICATE_VARIATION_NAME)
        );
        assert_eq!(
            check(
                json!({"key": "f", "kind": "string", "variations": [{"value": "a", "name": ""}]})
            ),
            err("variations[0].name", rules::REQUIRED)
        );
    }

    #[test]
    fn limits() {
        let many: Vec<_> = (0..=MAX_VARIATIONS).map(|i| json!({"value": i})).collect();
        assert_eq!(
            check(json!({"key": "f", "kind": "number", "variations": many})),
            err("variations", rules::LIMIT_EXCEEDED)
        );
        let big = "x".repeat(MAX_VARIATION_VALUE_BYTES);
        assert_eq!(
            check(json!({"key": "f", "kind": "string", "variations": [{"value": big}]})),
            err("variations[0].value", rules::LIMIT_EXCEEDED)
        );
        assert_eq!(
            check(
                json!({"key": "f", "kind": "string", "name": "n".repeat(MAX_NAME_LEN + 1),
                "variations": [{"value": "a"}]})
            ),
            err("name", rules::LIMIT_EXCEEDED)
        );
        assert_eq!(
            check(
                json!({"key": "f", "kind": "string", "description": "d".repeat(MAX_DESCRIPTION_LEN + 1),
                "variations": [{"value": "a"}]})
            ),
            err("description", rules::LIMIT_EXCEEDED)
        );
        let tags: Vec<_> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert_eq!(
            check(
                json!({"key": "f", "kind": "string", "variations": [{"value": "a"}], "tags": tags})
            ),
            err("tags", rules::LIMIT_EXCEEDED)
        );
        assert_eq!(
            check(
                json!({"key": "f", "kind": "string", "variations": [{"value": "a"}],
                "tags": ["t".repeat(MAX_TAG_LEN + 1)]})
            ),
            err("tags[0]", rules::LIMIT_EXCEEDED)
        );
    }

    #[test]
    fn tags_are_well_formed_and_distinct() {
        assert_eq!(
            check(
                json!({"key": "f", "kind": "string", "variations": [{"value": "a"}],
                "tags": ["ok", "not ok"]})
            ),
            err("tags[1]", rules::TAG_FORMAT)
        );
        assert_eq!(
            check(
                json!({"key": "f", "kind": "string", "variations": [{"value": "a"}], "tags": [""]})
            ),
            err("tags[0]", rules::TAG_FORMAT)
        );
        assert_eq!(
            check(
                json!({"key": "f", "kind": "string", "variations": [{"value": "a"}],
                "tags": ["a", "b", "a"]})
            ),
            err("tags[2]", rules::DUPLICATE_TAG)
        );
    }

    #[test]
    fn json_size_counts_compact_bytes() {
        assert_eq!(json_size(&json!({"a": [1, "x"]})), r#"{"a":[1,"x"]}"#.len());
    }
}
