//! `/api/v1/projects/{project}/environments`: environments, their snapshot and change log.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use vexil_schema::EnvironmentSnapshot;

use super::query::{PageQuery, opaque, parameter_error};
use super::{Created, Tagged};
use crate::app::AppState;
use crate::auth::Role;
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, StrictJson, StrictQuery};
use crate::store::{Change, CreateEnvironment, EnvironmentView, Page, UpdateEnvironment};

/// Creates an environment; every flag of the project gets a configuration in it (copied,
/// with the segments, from `copy_from` if given).
#[utoipa::path(post, path = "/api/v1/projects/{project}/environments", tag = "environments",
    params(("project" = String, Path, description = "Project key")),
    request_body = CreateEnvironment,
    responses((status = 201, body = EnvironmentView), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_environment(
    State(app): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    StrictJson(body): StrictJson<CreateEnvironment>,
) -> Result<Created<EnvironmentView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let view = app.store.create_environment(&ctx, &project, body).await?;
    let location = format!("/api/v1/projects/{project}/environments/{}", view.key);
    Ok(Created::at(location, view))
}

/// Lists a project's environments.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments", tag = "environments",
    params(("project" = String, Path, description = "Project key"), PageQuery),
    responses((status = 200, body = Page<EnvironmentView>), (status = 404, body = Problem)))]
pub(crate) async fn list_environments(
    State(app): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<Json<Page<EnvironmentView>>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(opaque(
        app.store
            .list_environments(&project, q.cursor(), q.limit())
            .await?,
    )))
}

/// One environment.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}", tag = "environments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key")),
    responses((status = 200, body = EnvironmentView), (status = 404, body = Problem)))]
pub(crate) async fn get_environment(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
) -> Result<Json<EnvironmentView>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(
        app.store.get_environment(&project, &environment).await?,
    ))
}

/// Changes an environment's name or description.
#[utoipa::path(patch, path = "/api/v1/projects/{project}/environments/{environment}", tag = "environments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key")),
    request_body = UpdateEnvironment,
    responses((status = 200, body = EnvironmentView), (status = 404, body = Problem)))]
pub(crate) async fn update_environment(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
    StrictJson(body): StrictJson<UpdateEnvironment>,
) -> Result<Json<EnvironmentView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    Ok(Json(
        app.store
            .update_environment(&ctx, &project, &environment, body)
            .await?,
    ))
}

/// Deletes an environment with its configurations, segments and SDK keys. Admin only.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/environments/{environment}", tag = "environments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key")),
    responses((status = 204), (status = 404, body = Problem)))]
pub(crate) async fn delete_environment(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    app.store
        .delete_environment(&ctx, &project, &environment)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Everything an SDK evaluates in this environment: live flags and segments, with the
/// environment's data version (also the `ETag`).
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/snapshot", tag = "environments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key")),
    responses((status = 200, body = crate::openapi::EnvironmentSnapshotDoc),
              (status = 404, body = Problem)))]
pub(crate) async fn get_snapshot(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
) -> Result<Tagged<EnvironmentSnapshot>, ApiError> {
    caller.check(Role::Viewer)?;
    let snapshot = app
        .store
        .environment_snapshot(&project, &environment)
        .await?;
    Ok(Tagged {
        etag: snapshot.version,
        body: snapshot,
    })
}

/// Most changes one change-log request returns.
const MAX_CHANGES: i64 = 10_000;

/// Change-log query.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ChangesQuery {
    /// Only changes after this environment version (default 0: all).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// At most this many (1–10,000, default 1,000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
}

/// The changes committed to this environment after a version, oldest first.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/changes", tag = "environments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"), ChangesQuery),
    responses((status = 200, body = Vec<Change>), (status = 404, body = Problem)))]
pub(crate) async fn get_changes(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
    StrictQuery(q): StrictQuery<ChangesQuery>,
) -> Result<Json<Vec<Change>>, ApiError> {
    caller.check(Role::Viewer)?;
    if q.after.is_some_and(|a| a < 0) {
        return Err(parameter_error(
            "after",
            "invalid_parameter",
            "must be 0 or more".into(),
        ));
    }
    if q.limit.is_some_and(|l| !(1..=MAX_CHANGES).contains(&l)) {
        return Err(parameter_error(
            "limit",
            "limit_exceeded",
            format!("must be between 1 and {MAX_CHANGES}"),
        ));
    }
    Ok(Json(
        app.store
            .changes_since(
                &project,
                &environment,
                q.after.unwrap_or(0),
                q.limit.unwrap_or(1000),
            )
            .await?,
    ))
}
