//! `/api/v1/evaluate` and `/api/v1/evaluate/batch`: evaluate flags for one context, through
//! `vexil-eval`, against the environment's in-memory compiled snapshot (kept current by the
//! change feed).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use vexil_eval::CompiledSnapshot;
use vexil_fanout::evaluations::{EnvironmentCounts, EvaluationCounts};
use vexil_schema::stream::EnvironmentId;
use vexil_schema::{Context, Reason};

use crate::app::AppState;
use crate::auth::Role;
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, Resource, StrictJson};

/// What to evaluate.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EvaluateRequest {
    /// Project key.
    pub project: String,
    /// Environment key.
    pub environment: String,
    /// Flag key.
    pub flag: String,
    /// The evaluation context: `{"key": …, "kind": …, "attributes": {…}}`.
    #[schema(value_type = crate::openapi::ContextDoc)]
    pub context: Context,
}

/// The result of an evaluation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvaluateResponse {
    /// The flag key.
    pub flag: String,
    /// The value served; `null` on error.
    pub value: Value,
    /// The variation index served; absent on error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variation: Option<usize>,
    /// Why: `{"kind": "RULE_MATCH", "rule_index": 0, "rule_id": "beta"}`, `FALLTHROUGH`, `OFF`…
    #[schema(value_type = Object)]
    pub reason: Reason,
    /// Whether the context is part of an experiment.
    pub in_experiment: bool,
    /// The environment version evaluated.
    pub environment_version: u64,
}

/// Evaluates one flag for one context.
#[utoipa::path(post, path = "/api/v1/evaluate", tag = "evaluate",
    request_body = EvaluateRequest,
    responses((status = 200, body = EvaluateResponse), (status = 404, body = Problem)))]
pub(crate) async fn evaluate(
    State(app): State<AppState>,
    caller: Caller,
    StrictJson(req): StrictJson<EvaluateRequest>,
) -> Result<Json<EvaluateResponse>, ApiError> {
    caller.check_on(
        Role::Viewer,
        &Resource::named(&req.project, Some(&req.environment)),
    )?;
    let compiled = compiled(&app, &req.project, &req.environment).await?;
    let counts = evaluation_counts(&req.project, &req.environment);
    Ok(Json(evaluate_one(
        &compiled,
        req.flag,
        &req.context,
        counts.as_deref(),
    )))
}

/// The evaluation counts of `project/environment` (`None` for keys that cannot name one:
/// the lookup then fails with its own error).
fn evaluation_counts(project: &str, environment: &str) -> Option<Arc<EnvironmentCounts>> {
    let env = EnvironmentId::parse(&format!("{project}/{environment}")).ok()?;
    Some(EvaluationCounts::global().environment(&env))
}

fn evaluate_one(
    compiled: &CompiledSnapshot,
    flag: String,
    ctx: &Context,
    counts: Option<&EnvironmentCounts>,
) -> EvaluateResponse {
    let eval = compiled.evaluate(&flag, ctx);
    if let Some(counts) = counts {
        counts.record(
            &flag,
            compiled.flag(&flag).map(|f| f.variations.len()),
            &eval,
        );
    }
    EvaluateResponse {
        value: eval.value.cloned().unwrap_or(Value::Null),
        variation: eval.variation,
        reason: eval.to_reason(),
        in_experiment: eval.in_experiment,
        environment_version: compiled.version(),
        flag,
    }
}

/// The compiled snapshot of an environment: the feed's in-memory one, or (for an
/// environment this process has not loaded yet, e.g. created a moment ago through another
/// server) one compiled from the tables, which also reports a missing project or environment.
pub(crate) async fn compiled(
    app: &AppState,
    project: &str,
    environment: &str,
) -> Result<Arc<CompiledSnapshot>, ApiError> {
    if let Ok(env) = EnvironmentId::parse(&format!("{project}/{environment}"))
        && let Some(c) = app.feed.snapshot(&env)
    {
        return Ok(c);
    }
    let snapshot = app.store.environment_snapshot(project, environment).await?;
    Ok(Arc::new(CompiledSnapshot::compile(&snapshot)))
}

/// Most flags one batch may name.
const MAX_BATCH: usize = 1000;

/// What to evaluate in a batch.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EvaluateBatchRequest {
    /// Project key.
    pub project: String,
    /// Environment key.
    pub environment: String,
    /// The flags to evaluate (at most 1,000); every flag of the environment when absent.
    #[serde(default)]
    pub flags: Option<Vec<String>>,
    /// The evaluation context.
    #[schema(value_type = crate::openapi::ContextDoc)]
    pub context: Context,
}

/// The results of a batch, all from one environment version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvaluateBatchResponse {
    /// The environment version evaluated.
    pub environment_version: u64,
    /// One result per flag, in the order asked (sorted by key when every flag was asked).
    pub results: Vec<EvaluateResponse>,
}

/// Evaluates several flags (or all) for one context, against one environment version.
#[utoipa::path(post, path = "/api/v1/evaluate/batch", tag = "evaluate",
    request_body = EvaluateBatchRequest,
    responses((status = 200, body = EvaluateBatchResponse), (status = 400, body = Problem),
              (status = 404, body = Problem)))]
pub(crate) async fn evaluate_batch(
    State(app): State<AppState>,
    caller: Caller,
    StrictJson(req): StrictJson<EvaluateBatchRequest>,
) -> Result<Json<EvaluateBatchResponse>, ApiError> {
    caller.check_on(
        Role::Viewer,
        &Resource::named(&req.project, Some(&req.environment)),
    )?;
    if req.flags.as_ref().is_some_and(|f| f.len() > MAX_BATCH) {
        return Err(ApiError::from(crate::store::StoreError::invalid(
            "flags",
            "limit_exceeded",
            format!("at most {MAX_BATCH} flags per batch"),
        )));
    }
    let compiled = compiled(&app, &req.project, &req.environment).await?;
    let keys: Vec<String> = match req.flags {
        Some(flags) => flags,
        None => {
            let mut all: Vec<String> = compiled.flag_keys().map(str::to_owned).collect();
            all.sort_unstable();
            all
        }
    };
    let counts = evaluation_counts(&req.project, &req.environment);
    let results = keys
        .into_iter()
        .map(|k| evaluate_one(&compiled, k, &req.context, counts.as_deref()))
        .collect();
    Ok(Json(EvaluateBatchResponse {
        environment_version: compiled.version(),
        results,
    }))
}
