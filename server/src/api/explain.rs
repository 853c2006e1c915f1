//! `POST /api/v1/projects/{project}/environments/{environment}/flags/{flag}/explain`: why a
//! context gets what it gets: each prerequisite, target, rule and clause checked, in order,
//! and the bucketing of the rollout served (the engine's `Explanation`).

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use vexil_eval::Explanation;
use vexil_schema::Context;

use super::evaluate::compiled;
use crate::app::AppState;
use crate::auth::Role;
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, StrictJson};

/// The context to explain a flag for.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ExplainRequest {
    /// The evaluation context: `{"key": …, "kind": …, "attributes": {…}}`.
    #[schema(value_type = crate::openapi::ContextDoc)]
    pub context: Context,
}

/// An explanation, with the environment version it was computed on.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExplainResponse {
    /// The environment version evaluated.
    pub environment_version: u64,
    /// `flag_key`, `value`, `variation`, `reason`, `in_experiment`, `split`, and the checks:
    /// `prerequisites`, `rules` (each with its clauses), `bucket`; `malformed` when the flag
    /// cannot be evaluated.
    #[schema(value_type = Object)]
    pub explanation: Explanation,
}

/// Explains one flag's evaluation for one context, step by step.
#[utoipa::path(post, path = "/api/v1/projects/{project}/environments/{environment}/flags/{flag}/explain",
    tag = "evaluate",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           ("flag" = String, Path, description = "Flag key")),
    request_body = ExplainRequest,
    responses((status = 200, body = ExplainResponse), (status = 404, body = Problem)))]
pub(crate) async fn explain(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment, flag)): Path<(String, String, String)>,
    StrictJson(req): StrictJson<ExplainRequest>,
) -> Result<Json<ExplainResponse>, ApiError> {
    caller.check(Role::Viewer)?;
    let compiled = compiled(&app, &project, &environment).await?;
    if compiled.flag(&flag).is_none() && compiled.malformation(&flag).is_none() {
        return Err(ApiError::from(crate::store::StoreError::NotFound(format!(
            "flag '{flag}' in {project}/{environment}"
        ))));
    }
    Ok(Json(ExplainResponse {
        environment_version: compiled.version(),
        explanation: compiled.explain(&flag, &req.context),
    }))
}
