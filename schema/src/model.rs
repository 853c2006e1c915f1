//! The flag data model, as stored, sent over the wire and evaluated.
//!
//! A project holds environments and flag *definitions* ([`FlagDefinition`]: key, kind,
//! variations, tags). Each environment holds each flag's *configuration* ([`FlagConfig`]:
//! on/off, targets, rules, fallthrough, prerequisites, salt, version) and its own segments.
//! What an SDK receives for one environment is an [`EnvironmentSnapshot`]: every [`Flag`]
//! (definition essentials plus that environment's configuration) and every [`Segment`].
//!
//! These types are lenient about unknown fields so that an SDK keeps working against a newer
//! server; the control plane rejects unknown fields on input itself. Cross-field rules
//! (indexes in range, weights summing to 100,000, references existing, no cycles) are checked
//! by [`crate::validate`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::KeyList;
use crate::key::{EnvironmentKey, FlagKey, ProjectKey, SegmentKey};

/// Rollout weights are in thousandths of a percent: all weights of a rollout sum to this.
pub const WEIGHT_SCALE: u32 = 100_000;

/// A project: the unit that owns flag definitions and environments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// Unique key.
    pub key: ProjectKey,
    /// Human-readable name.
    pub name: String,
    /// Free-form description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// An environment of a project (e.g. production, staging, development).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// Key, unique within the project.
    pub key: EnvironmentKey,
    /// Human-readable name.
    pub name: String,
    /// Free-form description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// The type of value a flag serves. Every variation's value must be of this kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// `true` or `false`.
    Boolean,
    /// A JSON string.
    String,
    /// A JSON number (integer or float).
    Number,
    /// Any JSON value.
    Json,
}

impl FlagKind {
    /// Whether `value` is a valid value for a flag of this kind.
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            FlagKind::Boolean => value.is_boolean(),
            FlagKind::String => value.is_string(),
            FlagKind::Number => value.is_number(),
            FlagKind::Json => true,
        }
    }

    /// The lower-case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            FlagKind::Boolean => "boolean",
            FlagKind::String => "string",
            FlagKind::Number => "number",
            FlagKind::Json => "json",
        }
    }
}

/// One value a flag can serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variation {
    /// The value served.
    pub value: Value,
    /// Optional short name (e.g. "control", "treatment").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Optional description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Variation {
    /// A variation with a value and no name or description.
    pub fn new(value: Value) -> Self {
        Self {
            value,
            name: None,
            description: None,
        }
    }
}

/// A flag's definition, shared by all environments of its project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagDefinition {
    /// Key, unique within the project.
    pub key: FlagKey,
    /// Human-readable name.
    #[serde(default)]
    pub name: String,
    /// Free-form description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The kind of value every variation holds.
    pub kind: FlagKind,
    /// The ordered variations; configurations refer to them by index.
    pub variations: Vec<Variation>,
    /// Free-form tags for filtering.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Whether the flag is meant to be removed once rolled out (a release flag), as opposed to
    /// a permanent operational or entitlement flag.
    #[serde(default)]
    pub temporary: bool,
    /// Whether client-side keys (browsers, mobile apps) may evaluate the flag. Off by
    /// default, so internal flags never reach browsers.
    #[serde(default, skip_serializing_if = "is_false")]
    pub client_side: bool,
}

/// For `skip_serializing_if`: leaves `false` out of the JSON.
fn is_false(b: &bool) -> bool {
    !*b
}

/// A flag's configuration in one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagConfig {
    /// Whether targeting is on. When off, every context gets `off_variation`.
    #[serde(default)]
    pub on: bool,
    /// Variation index served while the flag is off or a prerequisite fails.
    pub off_variation: usize,
    /// Individual targets: context keys that get a given variation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    /// Ordered rules; the first that matches decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// What contexts that match no target and no rule get.
    pub fallthrough: Serve,
    /// Flags that must be on and serve a given variation before this flag's targeting applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<Prerequisite>,
    /// Salt mixed into the bucketing hash; changing it reshuffles every rollout of the flag.
    #[serde(default)]
    pub salt: String,
    /// Version of this configuration, bumped on every change.
    #[serde(default)]
    pub version: u64,
}

impl FlagConfig {
    /// A configuration that is off and serves `variation` to everyone whichever way it is
    /// switched. A convenient starting point for a new flag in an environment.
    pub fn serving(variation: usize) -> Self {
        Self {
            on: false,
            off_variation: variation,
            targets: Vec::new(),
            rules: Vec::new(),
            fallthrough: Serve::Variation(variation),
            prerequisites: Vec::new(),
            salt: String::new(),
            version: 0,
        }
    }
}

/// A flag as one environment serves it: the definition's essentials plus the environment's
/// configuration. This is the unit of a snapshot and of a stream `patch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    /// Key, unique within the project.
    pub key: FlagKey,
    /// The kind of value every variation holds.
    pub kind: FlagKind,
    /// The ordered variations.
    pub variations: Vec<Variation>,
    /// Whether client-side keys may evaluate the flag (from the definition); omitted when
    /// false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub client_side: bool,
    /// The environment's configuration, flattened into the same JSON object.
    #[serde(flatten)]
    pub config: FlagConfig,
}

impl Flag {
    /// Combines a definition with one environment's configuration.
    pub fn new(definition: &FlagDefinition, config: FlagConfig) -> Self {
        Self {
            key: definition.key.clone(),
            kind: definition.kind,
            variations: definition.variations.clone(),
            client_side: definition.client_side,
            config,
        }
    }
}

/// Context keys that are served one variation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Variation index served.
    pub variation: usize,
    /// Context keys (the targeting key) that get it.
    pub values: Vec<String>,
}

/// What a rule or the fallthrough serves: one variation, or a weighted rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Serve {
    /// Serve this variation index: `{"variation": 1}`.
    Variation(usize),
    /// Split contexts between variations by weight: `{"rollout": {...}}`.
    Rollout(Rollout),
}

/// A weighted split of contexts between variations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Variations and their weights, in thousandths of a percent, summing to
    /// [`WEIGHT_SCALE`].
    pub variations: Vec<WeightedVariation>,
    /// Attribute whose value is hashed to pick the bucket (e.g. `orgId`, so a whole team gets
    /// the same variation). Default: the context key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_by: Option<String>,
    /// Whether this rollout is an experiment whose exposures are counted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub experiment: bool,
}

/// One slice of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightedVariation {
    /// Variation index served to this slice.
    pub variation: usize,
    /// Share of contexts, in thousandths of a percent (0..=100,000).
    pub weight: u32,
}

/// A targeting rule: all clauses must match (AND); across rules the first match wins (OR).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Stable identifier, reported in the evaluation reason.
    pub id: String,
    /// Optional description for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Clauses, all of which must match.
    pub clauses: Vec<Clause>,
    /// What a matching context is served.
    pub serve: Serve,
}

/// One condition on a context attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clause {
    /// The attribute tested. `key` is the context's targeting key and `kind` its kind; every
    /// other name is looked up in the context's attributes.
    pub attribute: String,
    /// The comparison.
    pub op: Operator,
    /// Values compared against; the clause matches if any value matches.
    #[serde(default)]
    pub values: Vec<Value>,
    /// Inverts the result. A clause on a missing attribute never matches, negated or not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub negate: bool,
}

/// Clause operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    /// Equal to any value (strings, numbers, booleans).
    In,
    /// String starts with any value.
    StartsWith,
    /// String ends with any value.
    EndsWith,
    /// String contains any value.
    Contains,
    /// String matches any regular expression value (size-limited).
    Matches,
    /// Number is less than any value.
    Lt,
    /// Number is less than or equal to any value.
    Lte,
    /// Number is greater than any value.
    Gt,
    /// Number is greater than or equal to any value.
    Gte,
    /// Date (RFC 3339 string or epoch milliseconds) is before any value.
    Before,
    /// Date (RFC 3339 string or epoch milliseconds) is after any value.
    After,
    /// Semantic version equals any value.
    SemverEq,
    /// Semantic version is less than any value.
    SemverLt,
    /// Semantic version is greater than any value.
    SemverGt,
    /// The context is in any of the segments named by the values. `attribute` is ignored.
    SegmentMatch,
    /// The attribute is present and not null. `values` is ignored.
    Exists,
}

impl Operator {
    /// Every operator, in declaration order.
    pub const ALL: [Operator; 16] = [
        Operator::In,
        Operator::StartsWith,
        Operator::EndsWith,
        Operator::Contains,
        Operator::Matches,
        Operator::Lt,
        Operator::Lte,
        Operator::Gt,
        Operator::Gte,
        Operator::Before,
        Operator::After,
        Operator::SemverEq,
        Operator::SemverLt,
        Operator::SemverGt,
        Operator::SegmentMatch,
        Operator::Exists,
    ];
}

/// A flag that must be on and serve `variation` before the dependent flag's targeting applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prerequisite {
    /// The prerequisite flag's key (same project and environment).
    pub key: FlagKey,
    /// The variation index it must serve.
    pub variation: usize,
}

/// A reusable set of contexts in one environment.
///
/// A context is in the segment if its key is in `included`; otherwise not if its key is in
/// `excluded`; otherwise if any rule matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Key, unique within the environment.
    pub key: SegmentKey,
    /// Human-readable name.
    #[serde(default)]
    pub name: String,
    /// Free-form description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Context keys always in the segment.
    #[serde(default, skip_serializing_if = "KeyList::is_empty")]
    pub included: KeyList,
    /// Context keys never in the segment (unless also included).
    #[serde(default, skip_serializing_if = "KeyList::is_empty")]
    pub excluded: KeyList,
    /// Rules; a context matching any of them is in the segment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<SegmentRule>,
    /// Salt for the rules' percentage buckets.
    #[serde(default)]
    pub salt: String,
    /// Version, bumped on every change.
    #[serde(default)]
    pub version: u64,
}

/// A segment rule: all clauses must match, and then optionally only a percentage of contexts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRule {
    /// Stable identifier.
    pub id: String,
    /// Clauses, all of which must match.
    pub clauses: Vec<Clause>,
    /// If set, only this share of matching contexts (thousandths of a percent) is included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Attribute hashed for `weight`. Default: the context key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_by: Option<String>,
}

/// Everything an SDK needs to evaluate one environment's flags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentSnapshot {
    /// The environment version this snapshot reflects: every committed change bumps it.
    #[serde(default)]
    pub version: u64,
    /// Every flag of the environment.
    #[serde(default)]
    pub flags: Vec<Flag>,
    /// Every segment of the environment.
    #[serde(default)]
    pub segments: Vec<Segment>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flag_round_trips_flat() {
        let j = json!({
            "key": "new-checkout",
            "kind": "boolean",
            "variations": [{"value": true}, {"value": false}],
            "on": true,
            "off_variation": 1,
            "rules": [{
                "id": "beta",
                "clauses": [{"attribute": "email", "op": "ends_with", "values": ["@example.com"]}],
                "serve": {"variation": 0}
            }],
            "fallthrough": {"rollout": {"variations": [
                {"variation": 0, "weight": 25000}, {"variation": 1, "weight": 75000}
            ]}},
            "salt": "s1",
            "version": 3
        });
        let f: Flag = serde_json::from_value(j.clone()).unwrap();
        assert!(f.config.on);
        assert_eq!(f.config.rules[0].clauses[0].op, Operator::EndsWith);
        assert!(matches!(f.config.fallthrough, Serve::Rollout(ref r) if r.variations.len() == 2));
        assert_eq!(serde_json::to_value(&f).unwrap(), j);
    }

    #[test]
    fn unknown_fields_are_tolerated_for_forward_compatibility() {
        let f: Flag = serde_json::from_value(json!({
            "key": "f", "kind": "string", "variations": [{"value": "a"}],
            "off_variation": 0, "fallthrough": {"variation": 0}, "future_field": 1
        }))
        .unwrap();
        assert!(!f.config.on);
    }

    #[test]
    fn kind_accepts_matching_values() {
        assert!(FlagKind::Boolean.accepts(&json!(true)));
        assert!(!FlagKind::Boolean.accepts(&json!("true")));
        assert!(FlagKind::Number.accepts(&json!(1.5)));
        assert!(!FlagKind::String.accepts(&json!(1)));
        assert!(FlagKind::Json.accepts(&json!({"a": [1]})));
    }
}
