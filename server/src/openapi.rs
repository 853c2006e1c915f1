//! The OpenAPI document's frame (info, security, tags) and documentation schemas for the
//! model types, which live in `vexil-schema` without framework dependencies and so cannot
//! derive `ToSchema` themselves. These mirror the wire format; `vexil-schema` is the truth.

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, Response, Type};
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
        (name = "experiments", description = "Metrics, experiments and their results"),
        (name = "delivery", description = "Scheduled changes and webhooks"),
        (name = "fleet", description = "The fleet view (SDK streams, convergence), flag usage and stale flags"),
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

/// Declares on every operation the errors it can answer with, each as
/// `application/problem+json` with the `Problem` schema. The handlers declare their own
/// specific errors (404, 409, 412, 422 for a rule they check); what every operation shares
/// is added here from what the operation is, so no handler can forget one:
///
/// - all: 401 (no or bad token), 422 (an unknown or invalid query parameter), 429 (too many
///   failed authentications), 503 (database unreachable);
/// - all but the viewer-level reads (and evaluation): 403;
/// - a path with parameters (and evaluation, whose body names them): 404;
/// - `POST`, `PUT`, `PATCH`: 400 (a body that is not JSON, a malformed `If-Match` or
///   `Idempotency-Key`); with a body: 413, 415, 422; `POST`: 409 (the first request with
///   the idempotency key is still running); with an `If-Match` parameter: 412.
pub fn declare_errors(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            ("get", &mut item.get),
            ("post", &mut item.post),
            ("put", &mut item.put),
            ("patch", &mut item.patch),
            ("delete", &mut item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op.as_mut() else { continue };
            for status in shared_errors(method, path, op) {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| RefOr::T(Response::new(describe(status))));
            }
            for (status, response) in op.responses.responses.iter_mut() {
                if status.as_str() >= "400"
                    && let RefOr::T(response) = response
                {
                    as_problem(status, response);
                }
            }
        }
    }
}

/// The error statuses `op` shares with operations like it (see [`declare_errors`]).
fn shared_errors(method: &str, path: &str, op: &Operation) -> Vec<u16> {
    let mut out = vec![401, 422, 429, 503];
    let admin_only = ["/tokens", "/relay-keys", "/sdk-keys", "/webhooks"]
        .iter()
        .any(|p| path.contains(p));
    let evaluation = path.starts_with("/api/v1/evaluate") || path.ends_with("/explain");
    let viewer_level = (method == "get" && !admin_only) || evaluation;
    if !viewer_level {
        out.push(403);
    }
    if path.contains('{') || evaluation {
        out.push(404);
    }
    if matches!(method, "post" | "put" | "patch") {
        out.push(400);
    }
    if op.request_body.is_some() {
        out.extend([413, 415]);
    }
    if method == "post" {
        out.push(409);
    }
    let if_match = op.parameters.iter().flatten().any(|p| match p {
        RefOr::T(p) => p.parameter_in == ParameterIn::Header && p.name == "If-Match",
        RefOr::Ref(_) => false,
    });
    if if_match {
        out.push(412);
    }
    out
}

/// A short description of an error status.
fn describe(status: u16) -> &'static str {
    match status {
        400 => "Malformed request: the body is not JSON, or a header is not in its syntax",
        401 => "No API token, or one that is unknown or revoked",
        403 => "The token's role does not allow this",
        404 => "No such resource",
        409 => "Conflicts with the current state",
        412 => "If-Match names a version that is no longer current",
        413 => "The body is larger than the server accepts",
        415 => "The body is not application/json",
        422 => "The request breaks a rule; `errors` names each field or parameter",
        429 => "Too many failed authentications from this client; retry after Retry-After seconds",
        503 => "The database cannot be reached; retry shortly",
        _ => "Error",
    }
}

/// Makes an error response's body `application/problem+json` with the `Problem` schema,
/// with `Retry-After` where the client is told to wait.
fn as_problem(status: &str, response: &mut Response) {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build();
    response.content.clear();
    response
        .content
        .insert(crate::error::PROBLEM_JSON.to_owned(), RefOr::T(content));
    if matches!(status, "429" | "503") {
        response.headers.insert(
            "Retry-After".to_owned(),
            RefOr::T(
                HeaderBuilder::new()
                    .schema(Some(RefOr::T(
                        utoipa::openapi::ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .build()
                            .into(),
                    )))
                    .description(Some("Seconds to wait before retrying"))
                    .build(),
            ),
        );
    }
}

/// One value a flag can serve.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct VariationDoc {
    /// The value (of the flag's kind; at most 64 KiB as compact JSON).
    value: Value,
    /// Optional short name.
    #[schema(max_length = 256)]
    name: Option<String>,
    /// Optional description.
    #[schema(max_length = 4096)]
    description: Option<String>,
}

/// `boolean`, `string`, `number` or `json`.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum FlagKindDoc {
    /// `true`/`false`.
    Boolean,
    /// Strings.
    String,
    /// Numbers.
    Number,
    /// Any JSON.
    Json,
}

/// A flag definition, shared by every environment of its project.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct FlagDefinitionDoc {
    /// Key, unique within the project.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,256}$")]
    key: String,
    /// Name.
    #[schema(required = false, max_length = 256)]
    name: String,
    /// Description.
    #[schema(required = false, max_length = 4096)]
    description: String,
    /// The kind of value served.
    kind: FlagKindDoc,
    /// Ordered variations; configurations refer to them by index.
    #[schema(min_items = 1, max_items = 100)]
    variations: Vec<VariationDoc>,
    /// Tags: each 1 to 64 letters, digits, `.`, `_`, `:`, `/` or `-`, no repeats.
    #[schema(required = false, max_items = 50)]
    tags: Vec<String>,
    /// Whether it is a temporary (release) flag.
    #[schema(required = false)]
    temporary: bool,
    /// Whether client-side keys (browsers, mobile apps) may evaluate it (default false).
    #[schema(required = false)]
    client_side: bool,
}

/// Context keys served one variation.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct TargetDoc {
    /// Variation index.
    variation: usize,
    /// Context keys (at most 100,000 over every target of a configuration).
    values: Vec<String>,
}

/// One slice of a rollout.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct WeightedVariationDoc {
    /// Variation index.
    variation: usize,
    /// Weight in thousandths of a percent; a rollout's weights sum to 100000.
    #[schema(maximum = 100000)]
    weight: u32,
}

/// A weighted split.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct RolloutDoc {
    /// Slices.
    variations: Vec<WeightedVariationDoc>,
    /// Attribute hashed for bucketing (default: the context key).
    #[schema(max_length = 256)]
    bucket_by: Option<String>,
    /// Whether exposures count for an experiment.
    #[schema(required = false)]
    experiment: bool,
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

/// A clause operator.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum OperatorDoc {
    /// Equals one of the values.
    In,
    /// Starts with one of the values.
    StartsWith,
    /// Ends with one of the values.
    EndsWith,
    /// Contains one of the values.
    Contains,
    /// Matches one of the regular expressions.
    Matches,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Date before.
    Before,
    /// Date after.
    After,
    /// Semantic version equal.
    SemverEq,
    /// Semantic version lower.
    SemverLt,
    /// Semantic version greater.
    SemverGt,
    /// In one of the named segments.
    SegmentMatch,
    /// The attribute is present.
    Exists,
}

/// One condition on a context attribute.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ClauseDoc {
    /// Attribute (`key` and `kind` are the targeting key and kind).
    #[schema(max_length = 256)]
    attribute: String,
    /// The operator.
    op: OperatorDoc,
    /// Values; the clause matches if any matches.
    #[schema(required = false, max_items = 10000)]
    values: Vec<Value>,
    /// Inverts the result.
    #[schema(required = false)]
    negate: bool,
}

/// A targeting rule: all clauses must match.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct RuleDoc {
    /// Stable id, reported in reasons.
    #[schema(min_length = 1, max_length = 256)]
    id: String,
    /// Description.
    #[schema(max_length = 4096)]
    description: Option<String>,
    /// Clauses (AND).
    #[schema(max_items = 100)]
    clauses: Vec<ClauseDoc>,
    /// What a match is served.
    serve: ServeDoc,
}

/// A prerequisite flag and the variation it must serve.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct PrerequisiteDoc {
    /// Flag key.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,256}$")]
    key: String,
    /// Variation index.
    variation: usize,
}

/// A flag's configuration in one environment.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct FlagConfigDoc {
    /// Whether targeting is on.
    #[schema(required = false)]
    on: bool,
    /// Variation served while off.
    off_variation: usize,
    /// Individual targets.
    #[schema(required = false)]
    targets: Vec<TargetDoc>,
    /// Rules; the first match wins.
    #[schema(required = false, max_items = 1000)]
    rules: Vec<RuleDoc>,
    /// What contexts matching nothing get.
    fallthrough: ServeDoc,
    /// Prerequisites.
    #[schema(required = false, max_items = 100)]
    prerequisites: Vec<PrerequisiteDoc>,
    /// Bucketing salt (empty on write: keep the current one).
    #[schema(required = false)]
    salt: String,
    /// Version (assigned by the server).
    #[schema(required = false)]
    version: u64,
}

/// A segment rule.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct SegmentRuleDoc {
    /// Stable id.
    #[schema(min_length = 1, max_length = 256)]
    id: String,
    /// Clauses (AND).
    #[schema(max_items = 100)]
    clauses: Vec<ClauseDoc>,
    /// Share of matching contexts included, in thousandths of a percent.
    #[schema(maximum = 100000)]
    weight: Option<u32>,
    /// Attribute hashed for `weight`.
    #[schema(max_length = 256)]
    bucket_by: Option<String>,
}

/// A segment of one environment.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct SegmentDoc {
    /// Key, unique within the environment.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,256}$")]
    key: String,
    /// Name.
    #[schema(required = false, max_length = 256)]
    name: String,
    /// Description.
    #[schema(required = false, max_length = 4096)]
    description: String,
    /// Context keys always in.
    #[schema(required = false, max_items = 100000)]
    included: Vec<String>,
    /// Context keys never in unless included.
    #[schema(required = false, max_items = 100000)]
    excluded: Vec<String>,
    /// Rules (OR).
    #[schema(required = false, max_items = 1000)]
    rules: Vec<SegmentRuleDoc>,
    /// Salt (empty on write: keep or generate).
    #[schema(required = false)]
    salt: String,
    /// Version (assigned by the server).
    #[schema(required = false)]
    version: u64,
}

/// An evaluation context.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ContextDoc {
    /// Targeting key (absent or null: anonymous).
    key: Option<String>,
    /// Kind, e.g. `user`.
    kind: Option<String>,
    /// Attributes.
    #[schema(required = false)]
    attributes: BTreeMap<String, Value>,
}

/// Everything an SDK evaluates in one environment, at one version.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct EnvironmentSnapshotDoc {
    /// The environment's data version.
    #[schema(required = false)]
    version: u64,
    /// Live flags: each a definition's `key`, `kind` and `variations` with its
    /// configuration's fields.
    #[schema(required = false, value_type = Vec<Object>)]
    flags: Vec<Value>,
    /// Segments.
    #[schema(required = false)]
    segments: Vec<SegmentDoc>,
}
