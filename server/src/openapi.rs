//! The OpenAPI document's frame (info, security, tags) and documentation schemas for the
//! model types, which live in `vexil-schema` without framework dependencies and so cannot
//! derive `ToSchema` themselves. These mirror the wire format; `vexil-schema` is the truth.

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The API document; paths are added from the handlers by `utoipa-axum`.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Vexil control plane API",
        description = "Manage projects, environments, flags, segments, tokens and keys. Errors are RFC 9457 problem details (application/problem+json). See docs/api.md.",
    ),
    modifiers(&BearerToken),
    security(("token" = [])),
    tags(
        (name = "projects", description = "Projects"),
        (name = "environments", description = "Environments, snapshots and change logs"),
        (name = "flags", description = "Flag definitions, configurations, history and the kill switch"),
        (name = "segments", description = "Segments"),
        (name = "audit", description = "The audit log"),
        (name = "tokens", description = "API tokens (admin)"),
        (name = "keys", description = "SDK and relay keys (admin)"),
        (name = "evaluate", description = "Evaluation"),
    )
)]
pub struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token: `vxa_…`"))
                    .build(),
            ),
        );
    }
}

/// One value a flag can serve.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct VariationDoc {
    /// The value (of the flag's kind).
    value: Value,
    /// Optional short name.
    name: Option<String>,
    /// Optional description.
    description: Option<String>,
}

/// A flag definition, shared by every environment of its project.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct FlagDefinitionDoc {
    /// Key, unique within the project (`[A-Za-z0-9._-]{1,256}`).
    key: String,
    /// Name.
    name: Option<String>,
    /// Description.
    description: Option<String>,
    /// `boolean`, `string`, `number` or `json`.
    kind: String,
    /// Ordered variations; configurations refer to them by index.
    variations: Vec<VariationDoc>,
    /// Tags.
    tags: Option<Vec<String>>,
    /// Whether it is a temporary (release) flag.
    temporary: Option<bool>,
}

/// Context keys served one variation.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct TargetDoc {
    /// Variation index.
    variation: usize,
    /// Context keys.
    values: Vec<String>,
}

/// One slice of a rollout.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct WeightedVariationDoc {
    /// Variation index.
    variation: usize,
    /// Weight in thousandths of a percent; a rollout's weights sum to 100000.
    weight: u32,
}

/// A weighted split.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct RolloutDoc {
    /// Slices.
    variations: Vec<WeightedVariationDoc>,
    /// Attribute hashed for bucketing (default: the context key).
    bucket_by: Option<String>,
    /// Whether exposures count for an experiment.
    experiment: Option<bool>,
}

/// What is served: `{"variation": 1}` or `{"rollout": {...}}`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub enum ServeDoc {
    /// One variation.
    #[schema(rename = "variation")]
    Variation(usize),
    /// A weighted rollout.
    #[schema(rename = "rollout")]
    Rollout(RolloutDoc),
}

/// One condition on a context attribute.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ClauseDoc {
    /// Attribute (`key` and `kind` are the targeting key and kind).
    attribute: String,
    /// `in`, `starts_with`, `ends_with`, `contains`, `matches`, `lt`, `lte`, `gt`, `gte`,
    /// `before`, `after`, `semver_eq`, `semver_lt`, `semver_gt`, `segment_match`, `exists`.
    op: String,
    /// Values; the clause matches if any matches.
    values: Option<Vec<Value>>,
    /// Inverts the result.
    negate: Option<bool>,
}

/// A targeting rule: all clauses must match.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct RuleDoc {
    /// Stable id, reported in reasons.
    id: String,
    /// Description.
    description: Option<String>,
    /// Clauses (AND).
    clauses: Vec<ClauseDoc>,
    /// What a match is served.
    serve: ServeDoc,
}

/// A prerequisite flag and the variation it must serve.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct PrerequisiteDoc {
    /// Flag key.
    key: String,
    /// Variation index.
    variation: usize,
}

/// A flag's configuration in one environment.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct FlagConfigDoc {
    /// Whether targeting is on.
    on: Option<bool>,
    /// Variation served while off.
    off_variation: usize,
    /// Individual targets.
    targets: Option<Vec<TargetDoc>>,
    /// Rules; the first match wins.
    rules: Option<Vec<RuleDoc>>,
    /// What contexts matching nothing get.
    fallthrough: ServeDoc,
    /// Prerequisites.
    prerequisites: Option<Vec<PrerequisiteDoc>>,
    /// Bucketing salt (empty on write: keep the current one).
    salt: Option<String>,
    /// Version (assigned by the server).
    version: Option<u64>,
}

/// A segment rule.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct SegmentRuleDoc {
    /// Stable id.
    id: String,
    /// Clauses (AND).
    clauses: Vec<ClauseDoc>,
    /// Share of matching contexts included, in thousandths of a percent.
    weight: Option<u32>,
    /// Attribute hashed for `weight`.
    bucket_by: Option<String>,
}

/// A segment of one environment.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct SegmentDoc {
    /// Key, unique within the environment.
    key: String,
    /// Name.
    name: Option<String>,
    /// Description.
    description: Option<String>,
    /// Context keys always in (up to 100,000).
    included: Option<Vec<String>>,
    /// Context keys never in unless included (up to 100,000).
    excluded: Option<Vec<String>>,
    /// Rules (OR).
    rules: Option<Vec<SegmentRuleDoc>>,
    /// Salt (empty on write: keep or generate).
    salt: Option<String>,
    /// Version (assigned by the server).
    version: Option<u64>,
}

/// An evaluation context.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ContextDoc {
    /// Targeting key (absent: anonymous).
    key: Option<String>,
    /// Kind, e.g. `user`.
    kind: Option<String>,
    /// Attributes.
    attributes: Option<BTreeMap<String, Value>>,
}
