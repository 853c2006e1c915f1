//! `/api/v1/projects`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use vexil_schema::{Project, ProjectKey};

use super::Created;
use super::query::{PageQuery, opaque};
use crate::app::AppState;
use crate::auth::Role;
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, StrictJson, StrictQuery};
use crate::store::{Page, ProjectView, UpdateProject};

/// A request to create a project.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub(crate) struct CreateProject {
    /// Unique key.
    #[schema(value_type = String, pattern = "^[A-Za-z0-9._-]{1,256}$")]
    key: ProjectKey,
    /// Human-readable name.
    name: String,
    /// Free-form description.
    #[serde(default)]
    description: String,
}

/// Creates a project.
#[utoipa::path(post, path = "/api/v1/projects", tag = "projects",
    request_body = CreateProject,
    responses((status = 201, body = ProjectView), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_project(
    State(app): State<AppState>,
    caller: Caller,
    StrictJson(body): StrictJson<CreateProject>,
) -> Result<Created<ProjectView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let project = Project {
        key: body.key,
        name: body.name,
        description: body.description,
    };
    let view = app.store.create_project(&ctx, project).await?;
    Ok(Created::at(format!("/api/v1/projects/{}", view.key), view))
}

/// Lists projects by key.
#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", params(PageQuery),
    responses((status = 200, body = Page<ProjectView>)))]
pub(crate) async fn list_projects(
    State(app): State<AppState>,
    caller: Caller,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<Json<Page<ProjectView>>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(opaque(
        app.store.list_projects(q.cursor(), q.limit()).await?,
    )))
}

/// One project.
#[utoipa::path(get, path = "/api/v1/projects/{project}", tag = "projects",
    params(("project" = String, Path, description = "Project key")),
    responses((status = 200, body = ProjectView), (status = 404, body = Problem)))]
pub(crate) async fn get_project(
    State(app): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
) -> Result<Json<ProjectView>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(app.store.get_project(&project).await?))
}

/// Changes a project's name or description.
#[utoipa::path(patch, path = "/api/v1/projects/{project}", tag = "projects",
    params(("project" = String, Path, description = "Project key")),
    request_body = UpdateProject,
    responses((status = 200, body = ProjectView), (status = 404, body = Problem)))]
pub(crate) async fn update_project(
    State(app): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    StrictJson(body): StrictJson<UpdateProject>,
) -> Result<Json<ProjectView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    Ok(Json(app.store.update_project(&ctx, &project, body).await?))
}

/// Deletes a project with everything in it (the audit log keeps its entries). Admin only:
/// it takes every environment, flag, segment and SDK key of the project with it.
#[utoipa::path(delete, path = "/api/v1/projects/{project}", tag = "projects",
    params(("project" = String, Path, description = "Project key")),
    responses((status = 204), (status = 404, body = Problem)))]
pub(crate) async fn delete_project(
    State(app): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
) -> Result<StatusCode, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    app.store.delete_project(&ctx, &project).await?;
    Ok(StatusCode::NO_CONTENT)
}
