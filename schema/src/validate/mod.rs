//! Validation of flag definitions, flag configurations, segments and whole environments.
//!
//! Deserialisation checks shapes and keys; this module checks everything else: indexes in
//! range, rollout weights, operand types, size limits, references to flags and segments that
//! exist, and the absence of cycles. Every check runs and every error is reported (up to
//! [`crate::limits::MAX_REPORTED_ERRORS`]), each as a [`FieldError`] naming the path of the
//! offending field and a stable [rule code](rules).
//!
//! The functions take a document and return it wrapped in [`Valid`], which only this module
//! can build: code holding a `Valid<FlagConfig>` knows it passed.
//!
//! Layout: [`rules`] lists the rule codes; `definition`, `config`, `clause` and `segment` check
//! one kind of document each; [`EnvironmentIndex`] summarises an environment for the
//! cross-document checks in `references` (cycles, chain depth, expansion), built on the
//! algorithms in `graph`; `snapshot` checks a whole environment; `path` collects errors with
//! their field paths; [`corpus`] loads the shared invalid-payload test data.
//!
//! ```
//! use vexil_schema::validate::{validate_config, validate_definition, EnvironmentIndex};
//! use vexil_schema::{FlagConfig, FlagDefinition};
//!
//! let def: FlagDefinition = serde_json::from_str(
//!     r#"{"key": "new-checkout", "kind": "boolean",
//!         "variations": [{"value": true}, {"value": false}]}"#,
//! )?;
//! let def = validate_definition(def)?;
//!
//! let cfg: FlagConfig = serde_json::from_str(
//!     r#"{"on": true, "off_variation": 1, "fallthrough": {"variation": 5}}"#,
//! )?;
//! let err = validate_config(&def, cfg, &EnvironmentIndex::new()).unwrap_err();
//! assert_eq!(err.errors[0].path, "fallthrough.variation");
//! assert_eq!(err.errors[0].rule, "variation_index");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod clause;
mod config;
pub mod corpus;
mod definition;
mod graph;
mod index;
mod path;
mod references;
pub mod rules;
mod segment;
mod snapshot;

use std::fmt;
use std::ops::Deref;

use serde::{Serialize, Serializer};

use crate::model::{EnvironmentSnapshot, FlagConfig, FlagDefinition, Segment};

pub use index::{EnvironmentIndex, IndexedFlag, IndexedSegment};

/// One broken rule: where, which rule, and a sentence for a human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Path of the offending field relative to the validated document, e.g.
    /// `rules[0].clauses[1].values[0]`, `fallthrough.rollout.variations`, or `""` for the
    /// document as a whole.
    pub path: String,
    /// Stable snake_case rule code, one of [`rules::ALL`].
    pub rule: &'static str,
    /// One sentence explaining the problem, naming the expected value or the cycle found.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{} ({})", self.message, self.rule)
        } else {
            write!(f, "{}: {} ({})", self.path, self.message, self.rule)
        }
    }
}

/// Every error found in one document (never empty when returned by this module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationErrors {
    /// The errors, in document order.
    pub errors: Vec<FieldError>,
}

impl ValidationErrors {
    /// Prefixes every path with `prefix` (e.g. `config` turns `rules[0].id` into
    /// `config.rules[0].id`), for callers that embed the document in a larger one.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        if prefix.is_empty() {
            return self;
        }
        for e in &mut self.errors {
            e.path = if e.path.is_empty() {
                prefix.to_owned()
            } else if e.path.starts_with('[') {
                format!("{prefix}{}", e.path)
            } else {
                format!("{prefix}.{}", e.path)
            };
        }
        self
    }

    /// Whether some error breaks `rule` at `path`.
    pub fn contains(&self, path: &str, rule: &str) -> bool {
        self.errors.iter().any(|e| e.path == path && e.rule == rule)
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.as_slice() {
            [] => f.write_str("invalid document"),
            [one] => write!(f, "invalid document: {one}"),
            [first, rest @ ..] => write!(
                f,
                "invalid document: {first}; and {} more error{}",
                rest.len(),
                if rest.len() == 1 { "" } else { "s" }
            ),
        }
    }
}

impl std::error::Error for ValidationErrors {}

/// A document that passed validation. Only this module builds one.
#[derive(Debug, Clone, PartialEq)]
pub struct Valid<T>(T);

impl<T> Valid<T> {
    /// The validated document.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Valid<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> AsRef<T> for Valid<T> {
    fn as_ref(&self) -> &T {
        &self.0
    }
}

/// Serialises as the inner document.
impl<T: Serialize> Serialize for Valid<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Validates a flag definition on its own: variations (count, kind, duplicates, names, size),
/// tags, name and description.
///
/// Boolean flags must have exactly two variations, `true` and `false`, in either order.
pub fn validate_definition(def: FlagDefinition) -> Result<Valid<FlagDefinition>, ValidationErrors> {
    let mut c = path::Collector::new();
    definition::check_definition(&mut c, &def);
    c.finish(def).map(Valid)
}

/// Validates a flag's configuration in one environment, against its definition and the rest of
/// the environment.
///
/// `env` describes the environment the configuration is written into. If it still holds an
/// older configuration of this flag, that entry is ignored: the new configuration replaces it
/// when looking for prerequisite cycles.
pub fn validate_config(
    def: &FlagDefinition,
    cfg: FlagConfig,
    env: &EnvironmentIndex,
) -> Result<Valid<FlagConfig>, ValidationErrors> {
    let mut c = path::Collector::new();
    config::check_config(&mut c, &def.key, def.variations.len(), &cfg, env);
    references::check_flag_references(&mut c, &def.key, &cfg, env);
    c.finish(cfg).map(Valid)
}

/// Validates a segment against the rest of its environment.
///
/// `env` describes the environment the segment is written into. If it still holds an older
/// version of this segment, that entry is ignored: the new version replaces it when looking
/// for `segment_match` cycles.
pub fn validate_segment(
    seg: Segment,
    env: &EnvironmentIndex,
) -> Result<Valid<Segment>, ValidationErrors> {
    let mut c = path::Collector::new();
    segment::check_segment(&mut c, &seg, env);
    references::check_segment_references(&mut c, &seg, env);
    c.finish(seg).map(Valid)
}

/// Validates a whole environment: every flag and segment on its own, unique keys, every
/// reference resolving within the snapshot, and no prerequisite or segment cycles.
///
/// Paths start at the snapshot: `flags[3].rules[0].serve.variation`, `segments[1].included[7]`.
pub fn validate_snapshot(s: &EnvironmentSnapshot) -> Result<(), ValidationErrors> {
    let mut c = path::Collector::new();
    snapshot::check_snapshot(&mut c, s);
    c.finish(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors() -> ValidationErrors {
        ValidationErrors {
            errors: vec![
                FieldError {
                    path: "rules[0].id".into(),
                    rule: rules::REQUIRED,
                    message: "a rule needs an id".into(),
                },
                FieldError {
                    path: "[2]".into(),
                    rule: rules::REQUIRED,
                    message: "m".into(),
                },
                FieldError {
                    path: String::new(),
                    rule: rules::TOO_MANY_ERRORS,
                    message: "m".into(),
                },
            ],
        }
    }

    #[test]
    fn prefixing_paths() {
        let e = errors().with_prefix("config");
        let paths: Vec<&str> = e.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["config.rules[0].id", "config[2]", "config"]);
        assert_eq!(errors().with_prefix(""), errors());
    }

    #[test]
    fn display_and_json_forms() {
        assert_eq!(
            errors().to_string(),
            "invalid document: rules[0].id: a rule needs an id (required); and 2 more errors"
        );
        assert_eq!(
            serde_json::to_value(&errors().errors[0]).unwrap(),
            serde_json::json!({"path": "rules[0].id", "rule": "required", "message": "a rule needs an id"})
        );
    }

    #[test]
    fn rule_codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in rules::ALL {
            assert!(seen.insert(code), "{code} listed twice");
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
        }
    }

    #[test]
    fn valid_wraps_and_serialises_transparently() {
        let def: FlagDefinition = serde_json::from_value(serde_json::json!({
            "key": "f", "kind": "string", "variations": [{"value": "a"}]
        }))
        .unwrap();
        let valid = validate_definition(def.clone()).unwrap();
        assert_eq!(valid.key, "f");
        assert_eq!(
            serde_json::to_value(&valid).unwrap(),
            serde_json::to_value(&def).unwrap()
        );
        assert_eq!(valid.into_inner(), def);
    }
}
