//! `/api/v1/projects/{project}/export` and `/import`: flags as code over HTTP (see
//! [`crate::portable`]).

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::app::AppState;
use crate::auth::Role;
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, StrictJson, StrictQuery};
use crate::portable::{ImportReport, ProjectDocument};
use crate::store::StoreError;

/// Exports a project as a document: environments, segments, flag definitions and every
/// configuration, with salts, sorted by key, without versions (see the operations guide).
#[utoipa::path(get, path = "/api/v1/projects/{project}/export", tag = "projects",
    params(("project" = String, Path, description = "Project key")),
    responses((status = 200, body = ProjectDocument), (status = 404, body = Problem)))]
pub(crate) async fn export_project(
    State(app): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
) -> Result<Json<ProjectDocument>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(app.store.export_project(&project).await?))
}

/// Options of an import.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ImportQuery {
    /// Only report what would change (default `false`).
    #[serde(default)]
    dry_run: Option<bool>,
}

/// Imports a project document: creates and updates the project, its environments,
/// segments, flags and configurations to match it, through the same checks, audit and
/// distribution as every other write. Idempotent; salts are kept as given; nothing is
/// deleted. With `dry_run=true`, only reports what would change.
#[utoipa::path(post, path = "/api/v1/projects/{project}/import", tag = "projects",
    params(("project" = String, Path, description = "Project key (the document's)"), ImportQuery),
    request_body = ProjectDocument,
    responses((status = 200, body = ImportReport), (status = 422, body = Problem)))]
pub(crate) async fn import_project(
    State(app): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    StrictQuery(q): StrictQuery<ImportQuery>,
    StrictJson(doc): StrictJson<ProjectDocument>,
) -> Result<Json<ImportReport>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    if doc.project.key != project {
        return Err(StoreError::invalid(
            "project.key",
            "path_mismatch",
            format!(
                "the document is for project '{}', not '{project}'",
                doc.project.key
            ),
        )
        .into());
    }
    let dry_run = q.dry_run.unwrap_or(false);
    Ok(Json(app.store.import_project(&ctx, &doc, dry_run).await?))
}
