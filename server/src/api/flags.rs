//! `/api/v1/projects/{project}/flags`: definitions, per-environment configurations, history,
//! rollback, archiving and the kill switch.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use vexil_schema::{FlagConfig, FlagDefinition};

use super::query::{FlagListQuery, PageQuery, opaque};
use super::{Created, Tagged, Versioned};
use crate::app::AppState;
use crate::auth::Role;
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, IfMatch, StrictJson, StrictQuery};
use crate::openapi::{FlagConfigDoc, FlagDefinitionDoc};
use crate::store::{
    ConfigPatch, FlagConfigView, FlagSummary, FlagVersion, FlagView, KillResult, Page,
};

/// Creates a flag; it gets a configuration in every environment of the project: off,
/// serving its default variation (`false` for booleans, else the first), with a fresh salt.
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags", tag = "flags",
    params(("project" = String, Path, description = "Project key")),
    request_body = FlagDefinitionDoc,
    responses((status = 201, body = FlagView), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_flag(
    State(app): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    StrictJson(body): StrictJson<FlagDefinition>,
) -> Result<Created<FlagView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let view = app.store.create_flag(&ctx, &project, body).await?;
    let location = format!("/api/v1/projects/{project}/flags/{}", view.definition.key);
    Ok(Created::tagged(location, view))
}

/// Lists flags by key, filtered by tag (`tag`), text in key or name (`q`), archived state
/// (`archived`) and lifetime (`temporary`); every filter runs in the database. With
/// `stale=true&environment=…`, only the flags that environment's stale-flag report lists.
#[utoipa::path(get, path = "/api/v1/projects/{project}/flags", tag = "flags",
    params(("project" = String, Path, description = "Project key"), FlagListQuery),
    responses((status = 200, body = Page<FlagSummary>), (status = 404, body = Problem)))]
pub(crate) async fn list_flags(
    State(app): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    StrictQuery(q): StrictQuery<FlagListQuery>,
) -> Result<Json<Page<FlagSummary>>, ApiError> {
    caller.check(Role::Viewer)?;
    let stale = q.stale.unwrap_or(false).then(|| q.environment.clone());
    let filter = q.into();
    match stale {
        None => Ok(Json(opaque(app.store.list_flags(&project, &filter).await?))),
        Some(environment) => {
            let environment = environment.ok_or_else(|| {
                super::query::parameter_error(
                    "environment",
                    "required",
                    "stale=true needs the environment whose report to read".into(),
                )
            })?;
            let page =
                crate::fleet::api::stale_flag_page(&app, &project, &environment, filter).await?;
            Ok(Json(opaque(page)))
        }
    }
}

/// A flag: definition and configuration in every environment. `ETag`: the definition version.
#[utoipa::path(get, path = "/api/v1/projects/{project}/flags/{flag}", tag = "flags",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key")),
    responses((status = 200, body = FlagView), (status = 404, body = Problem)))]
pub(crate) async fn get_flag(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag)): Path<(String, String)>,
) -> Result<Tagged<FlagView>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Tagged::of(app.store.get_flag(&project, &flag).await?))
}

/// Replaces a flag's definition (the key cannot change). Every configuration must stay
/// valid against it. Honours `If-Match` with the definition version.
#[utoipa::path(put, path = "/api/v1/projects/{project}/flags/{flag}", tag = "flags",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("If-Match" = Option<String>, Header, description = "Definition version, e.g. \"3\"")),
    request_body = FlagDefinitionDoc,
    responses((status = 200, body = FlagView), (status = 404, body = Problem),
              (status = 412, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn update_flag(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag)): Path<(String, String)>,
    IfMatch(if_match): IfMatch,
    StrictJson(body): StrictJson<FlagDefinition>,
) -> Result<Tagged<FlagView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let view = app
        .store
        .update_definition(&ctx, &project, &flag, body, if_match)
        .await?;
    Ok(Tagged::of(view))
}

/// Deletes a flag. 409 while another flag names it as a prerequisite (listed in
/// `blockers`).
#[utoipa::path(delete, path = "/api/v1/projects/{project}/flags/{flag}", tag = "flags",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn delete_flag(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    app.store.delete_flag(&ctx, &project, &flag).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Archives a flag: SDKs stop receiving it and its configurations are frozen. 409 while
/// live flags require it.
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/archive", tag = "flags",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key")),
    responses((status = 200, body = FlagView), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn archive_flag(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag)): Path<(String, String)>,
) -> Result<Json<FlagView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    Ok(Json(
        app.store.set_archived(&ctx, &project, &flag, true).await?,
    ))
}

/// Unarchives a flag. 422 if a configuration no longer validates (e.g. a prerequisite was
/// deleted meanwhile).
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/unarchive", tag = "flags",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key")),
    responses((status = 200, body = FlagView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn unarchive_flag(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag)): Path<(String, String)>,
) -> Result<Json<FlagView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    Ok(Json(
        app.store.set_archived(&ctx, &project, &flag, false).await?,
    ))
}

/// Kill switch: turns the flag off in every environment of its project in one transaction.
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/kill", tag = "flags",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key")),
    responses((status = 200, body = KillResult), (status = 404, body = Problem)))]
pub(crate) async fn kill_flag(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag)): Path<(String, String)>,
) -> Result<Json<KillResult>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    Ok(Json(app.store.kill_flag(&ctx, &project, &flag).await?))
}

/// A flag's configuration in one environment. `ETag`: the configuration version.
#[utoipa::path(get, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}", tag = "flags",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key")),
    responses((status = 200, body = FlagConfigDoc), (status = 404, body = Problem)))]
pub(crate) async fn get_config(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment)): Path<(String, String, String)>,
) -> Result<Tagged<FlagConfig>, ApiError> {
    caller.check(Role::Viewer)?;
    let cfg = app.store.get_config(&project, &flag, &environment).await?;
    Ok(Tagged::of(cfg))
}

/// Replaces a flag's configuration in one environment. `version` is assigned by the server;
/// an empty `salt` keeps the current one. Honours `If-Match` with the configuration version.
#[utoipa::path(put, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}", tag = "flags",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("If-Match" = Option<String>, Header, description = "Configuration version, e.g. \"3\"")),
    request_body = FlagConfigDoc,
    responses((status = 200, body = FlagConfigView), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn put_config(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment)): Path<(String, String, String)>,
    IfMatch(if_match): IfMatch,
    StrictJson(body): StrictJson<FlagConfig>,
) -> Result<Tagged<FlagConfigView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let view = app
        .store
        .put_config(&ctx, &project, &flag, &environment, body, if_match)
        .await?;
    Ok(Tagged::of(view))
}

/// Changes the named fields of a flag's configuration in one environment (e.g.
/// `{"on": true}`). Honours `If-Match` with the configuration version.
#[utoipa::path(patch, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}", tag = "flags",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("If-Match" = Option<String>, Header, description = "Configuration version, e.g. \"3\"")),
    request_body = ConfigPatch,
    responses((status = 200, body = FlagConfigView), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn patch_config(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment)): Path<(String, String, String)>,
    IfMatch(if_match): IfMatch,
    StrictJson(body): StrictJson<ConfigPatch>,
) -> Result<Tagged<FlagConfigView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let view = app
        .store
        .patch_config(&ctx, &project, &flag, &environment, body, if_match)
        .await?;
    Ok(Tagged::of(view))
}

/// The versions of a flag's configuration in one environment, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/versions", tag = "flags",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"), PageQuery),
    responses((status = 200, body = Page<FlagVersion>), (status = 404, body = Problem)))]
pub(crate) async fn list_versions(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment)): Path<(String, String, String)>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<Json<Page<FlagVersion>>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(opaque(
        app.store
            .list_versions(&project, &flag, &environment, q.cursor(), q.limit())
            .await?,
    )))
}

/// One version of a flag's configuration in one environment.
#[utoipa::path(get, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/versions/{version}", tag = "flags",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("version" = u64, Path, description = "Configuration version")),
    responses((status = 200, body = FlagVersion), (status = 404, body = Problem)))]
pub(crate) async fn get_version(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment, version)): Path<(String, String, String, u64)>,
) -> Result<Json<FlagVersion>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(
        app.store
            .get_version(&project, &flag, &environment, version)
            .await?,
    ))
}

impl Versioned for FlagView {
    /// The definition version.
    fn etag(&self) -> u64 {
        self.version.unsigned_abs()
    }
}

impl Versioned for FlagConfig {
    /// The configuration version.
    fn etag(&self) -> u64 {
        self.version
    }
}

impl Versioned for FlagConfigView {
    /// The configuration version.
    fn etag(&self) -> u64 {
        self.config.version
    }
}

/// A rollback request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub(crate) struct RollbackRequest {
    /// The configuration version to restore.
    version: u64,
}

/// Restores an earlier version of a flag's configuration as a new version (audited like any
/// change). 422 if it no longer validates against the current definition.
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/rollback", tag = "flags",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("If-Match" = Option<String>, Header, description = "Current configuration version")),
    request_body = RollbackRequest,
    responses((status = 200, body = FlagConfigView), (status = 404, body = Problem),
              (status = 412, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn rollback(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment)): Path<(String, String, String)>,
    IfMatch(if_match): IfMatch,
    StrictJson(body): StrictJson<RollbackRequest>,
) -> Result<Tagged<FlagConfigView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let view = app
        .store
        .rollback_config(&ctx, &project, &flag, &environment, body.version, if_match)
        .await?;
    Ok(Tagged::of(view))
}

/// Keys to add to and remove from the target of one variation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TargetEdit {
    /// The variation whose target list is edited.
    variation: usize,
    /// Keys to append (those absent), in order.
    #[serde(default)]
    add: Vec<String>,
    /// Keys to take out (absent ones are ignored).
    #[serde(default)]
    remove: Vec<String>,
}

/// An edit of a flag's individual targets: `{"targets": [{"variation": 0, "add": [...],
/// "remove": [...]}]}`, at most 100,000 keys in all.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TargetsEdit {
    /// Edits, applied in order.
    targets: Vec<TargetEdit>,
}

/// Adds and removes individually targeted context keys of a flag in one environment without
/// sending the whole configuration (at most 100,000 keys per request). Per variation:
/// removed keys leave, the others keep their order, added keys are appended; a variation
/// without a target gets one, a target left empty is dropped. Idempotent; honours
/// `If-Match` with the configuration version. Subscribers receive the keys actually added
/// and removed as a `delta` event.
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/targets", tag = "flags",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("If-Match" = Option<String>, Header, description = "Configuration version, e.g. \"3\"")),
    request_body = TargetsEdit,
    responses((status = 200, body = FlagConfigView), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn edit_targets(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment)): Path<(String, String, String)>,
    IfMatch(if_match): IfMatch,
    StrictJson(body): StrictJson<TargetsEdit>,
) -> Result<Tagged<FlagConfigView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let total: usize = body
        .targets
        .iter()
        .map(|t| t.add.len() + t.remove.len())
        .sum();
    if total > vexil_schema::limits::MAX_EDIT_KEYS {
        return Err(crate::store::StoreError::invalid(
            "targets",
            "limit_exceeded",
            format!(
                "an edit names at most {} keys; this one names {total}",
                vexil_schema::limits::MAX_EDIT_KEYS
            ),
        )
        .into());
    }
    let targets = body
        .targets
        .into_iter()
        .map(|t| vexil_schema::delta::TargetDelta {
            variation: t.variation,
            keys: vexil_schema::delta::ListDelta {
                add: t.add,
                remove: t.remove,
            },
        })
        .collect();
    let view = app
        .store
        .edit_flag_targets(&ctx, &project, &flag, &environment, targets, if_match)
        .await?;
    Ok(Tagged::of(view))
}
