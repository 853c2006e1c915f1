//! Admin-only routes: API tokens (`/api/v1/tokens`), SDK keys
//! (`…/environments/{environment}/sdk-keys`) and relay keys (`/api/v1/relay-keys`).

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::ToSchema;

use super::Created;
use super::query::{PageQuery, opaque};
use crate::app::AppState;
use crate::auth::{Grant, Role};
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, StrictJson, StrictQuery};
use crate::store::{
    AccessKeyKind, AccessKeyView, CreatedAccessKey, CreatedToken, Page, RelayEnvironment, TokenView,
};

/// A request to create an API token.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub(crate) struct CreateToken {
    /// Unique name; recorded as the actor of every change made with the token.
    name: String,
    /// Role.
    role: Role,
    /// Limits the role to projects and environments (see the scoped roles in the API guide);
    /// absent: the role applies everywhere. No grant may exceed `role`.
    #[serde(default)]
    scopes: Option<Vec<Grant>>,
}

/// Creates an API token. Its secret is in the response, and only there.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn create_token(
    State(app): State<AppState>,
    caller: Caller,
    StrictJson(body): StrictJson<CreateToken>,
) -> Result<Created<CreatedToken>, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    let created = app
        .store
        .create_scoped_token(&ctx, &body.name, body.role, body.scopes)
        .await?;
    let location = format!("/api/v1/tokens/{}", created.token.id);
    Ok(Created::at(location, created))
}

/// Lists API tokens (never their secrets), revoked ones included, by id.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", params(PageQuery),
    responses((status = 200, body = Page<TokenView>)))]
pub(crate) async fn list_tokens(
    State(app): State<AppState>,
    caller: Caller,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<Json<Page<TokenView>>, ApiError> {
    caller.check(Role::Admin)?;
    Ok(Json(opaque(
        app.store.list_tokens(q.cursor(), q.limit()).await?,
    )))
}

/// Revokes an API token; it stops working at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = i64, Path, description = "Token id")),
    responses((status = 200, body = TokenView), (status = 404, body = Problem)))]
pub(crate) async fn revoke_token(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<TokenView>, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    Ok(Json(app.store.revoke_token(&ctx, id).await?))
}

/// A request to create an SDK key.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub(crate) struct CreateSdkKey {
    /// Name, e.g. the service using it.
    name: String,
}

/// A key rotation.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub(crate) struct Rotate {
    /// Seconds the previous secret keeps working (default 0: it stops at once; at most a week).
    #[serde(default)]
    grace_seconds: u32,
}

const MAX_GRACE: u32 = 7 * 24 * 3600;

fn grace(r: &Rotate) -> Result<u32, ApiError> {
    if r.grace_seconds > MAX_GRACE {
        return Err(ApiError::Unprocessable {
            detail: format!("grace_seconds: at most {MAX_GRACE}"),
            errors: vec![crate::error::FieldProblem {
                path: "grace_seconds".into(),
                rule: "limit_exceeded".into(),
                message: format!("at most {MAX_GRACE} seconds (a week)"),
            }],
        });
    }
    Ok(r.grace_seconds)
}

/// Checks that SDK key `id` belongs to the environment its route names (404 otherwise).
async fn sdk_key_in(
    app: &AppState,
    project: String,
    environment: String,
    id: i64,
) -> Result<(), ApiError> {
    let env = RelayEnvironment {
        project,
        environment,
    };
    app.store
        .access_key_in(AccessKeyKind::Sdk, id, &env)
        .await?;
    Ok(())
}

/// Creates an SDK key for this environment. Its secret is in the response, and only there.
#[utoipa::path(post, path = "/api/v1/projects/{project}/environments/{environment}/sdk-keys", tag = "keys",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key")),
    request_body = CreateSdkKey,
    responses((status = 201, body = CreatedAccessKey), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn create_sdk_key(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
    StrictJson(body): StrictJson<CreateSdkKey>,
) -> Result<Created<CreatedAccessKey>, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    // Resolve first so a missing project or environment is a 404, not a body error.
    app.store.get_environment(&project, &environment).await?;
    let env = RelayEnvironment {
        project: project.clone(),
        environment: environment.clone(),
    };
    let created = app
        .store
        .create_access_key(&ctx, AccessKeyKind::Sdk, &body.name, &[env])
        .await?;
    let location = format!(
        "/api/v1/projects/{project}/environments/{environment}/sdk-keys/{}",
        created.key.id
    );
    Ok(Created::at(location, created))
}

/// Lists this environment's SDK keys (masked), by id.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/sdk-keys", tag = "keys",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"), PageQuery),
    responses((status = 200, body = Page<AccessKeyView>), (status = 404, body = Problem)))]
pub(crate) async fn list_sdk_keys(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<Json<Page<AccessKeyView>>, ApiError> {
    caller.check(Role::Admin)?;
    let env = RelayEnvironment {
        project,
        environment,
    };
    Ok(Json(opaque(
        app.store
            .list_access_keys(AccessKeyKind::Sdk, Some(&env), q.cursor(), q.limit())
            .await?,
    )))
}

/// Issues a new secret for an SDK key, optionally keeping the old one valid for a while.
#[utoipa::path(post, path = "/api/v1/projects/{project}/environments/{environment}/sdk-keys/{id}/rotate", tag = "keys",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           ("id" = i64, Path, description = "Key id")),
    request_body = Rotate,
    responses((status = 200, body = CreatedAccessKey), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn rotate_sdk_key(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment, id)): Path<(String, String, i64)>,
    StrictJson(body): StrictJson<Rotate>,
) -> Result<Json<CreatedAccessKey>, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    let grace = grace(&body)?;
    sdk_key_in(&app, project, environment, id).await?;
    Ok(Json(
        app.store
            .rotate_access_key(&ctx, AccessKeyKind::Sdk, id, grace)
            .await?,
    ))
}

/// Revokes an SDK key.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/environments/{environment}/sdk-keys/{id}", tag = "keys",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           ("id" = i64, Path, description = "Key id")),
    responses((status = 200, body = AccessKeyView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn revoke_sdk_key(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment, id)): Path<(String, String, i64)>,
) -> Result<Json<AccessKeyView>, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    sdk_key_in(&app, project, environment, id).await?;
    Ok(Json(
        app.store
            .revoke_access_key(&ctx, AccessKeyKind::Sdk, id)
            .await?,
    ))
}

/// Creates a client-side key (`vxc_`, public: for browsers and mobile apps) for this environment. Its secret is in the response, and only there.
#[utoipa::path(post, path = "/api/v1/projects/{project}/environments/{environment}/client-keys", tag = "keys",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key")),
    request_body = CreateSdkKey,
    responses((status = 201, body = CreatedAccessKey), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn create_client_key(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
    StrictJson(body): StrictJson<CreateSdkKey>,
) -> Result<Created<CreatedAccessKey>, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    // Resolve first so a missing project or environment is a 404, not a body error.
    app.store.get_environment(&project, &environment).await?;
    let env = RelayEnvironment {
        project: project.clone(),
        environment: environment.clone(),
    };
    let created = app
        .store
        .create_access_key(&ctx, AccessKeyKind::Client, &body.name, &[env])
        .await?;
    let location = format!(
        "/api/v1/projects/{project}/environments/{environment}/client-keys/{}",
        created.key.id
    );
    Ok(Created::at(location, created))
}

/// Lists this environment's client-side keys (masked), by id.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/client-keys", tag = "keys",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"), PageQuery),
    responses((status = 200, body = Page<AccessKeyView>), (status = 404, body = Problem)))]
pub(crate) async fn list_client_keys(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<Json<Page<AccessKeyView>>, ApiError> {
    caller.check(Role::Admin)?;
    let env = RelayEnvironment {
        project,
        environment,
    };
    Ok(Json(opaque(
        app.store
            .list_access_keys(AccessKeyKind::Client, Some(&env), q.cursor(), q.limit())
            .await?,
    )))
}

/// Revokes a client-side key.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/environments/{environment}/client-keys/{id}", tag = "keys",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           ("id" = i64, Path, description = "Key id")),
    responses((status = 200, body = AccessKeyView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn revoke_client_key(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment, id)): Path<(String, String, i64)>,
) -> Result<Json<AccessKeyView>, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    client_key_in(&app, project, environment, id).await?;
    Ok(Json(
        app.store
            .revoke_access_key(&ctx, AccessKeyKind::Client, id)
            .await?,
    ))
}

/// Checks that client key `id` belongs to the environment its route names (404 otherwise).
async fn client_key_in(
    app: &AppState,
    project: String,
    environment: String,
    id: i64,
) -> Result<(), ApiError> {
    let env = RelayEnvironment {
        project,
        environment,
    };
    app.store
        .access_key_in(AccessKeyKind::Client, id, &env)
        .await?;
    Ok(())
}

/// A request to create a relay key.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub(crate) struct CreateRelayKey {
    /// Name, e.g. the relay's cluster.
    name: String,
    /// The environments the relay may serve.
    environments: Vec<RelayEnvironment>,
}

/// Creates a relay key for a set of environments. Its secret is in the response, and only
/// there.
#[utoipa::path(post, path = "/api/v1/relay-keys", tag = "keys", request_body = CreateRelayKey,
    responses((status = 201, body = CreatedAccessKey), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_relay_key(
    State(app): State<AppState>,
    caller: Caller,
    StrictJson(body): StrictJson<CreateRelayKey>,
) -> Result<Created<CreatedAccessKey>, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    let created = app
        .store
        .create_access_key(&ctx, AccessKeyKind::Relay, &body.name, &body.environments)
        .await?;
    let location = format!("/api/v1/relay-keys/{}", created.key.id);
    Ok(Created::at(location, created))
}

/// Lists relay keys (masked), by id.
#[utoipa::path(get, path = "/api/v1/relay-keys", tag = "keys", params(PageQuery),
    responses((status = 200, body = Page<AccessKeyView>)))]
pub(crate) async fn list_relay_keys(
    State(app): State<AppState>,
    caller: Caller,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<Json<Page<AccessKeyView>>, ApiError> {
    caller.check(Role::Admin)?;
    Ok(Json(opaque(
        app.store
            .list_access_keys(AccessKeyKind::Relay, None, q.cursor(), q.limit())
            .await?,
    )))
}

/// Issues a new secret for a relay key, optionally keeping the old one valid for a while.
#[utoipa::path(post, path = "/api/v1/relay-keys/{id}/rotate", tag = "keys",
    params(("id" = i64, Path, description = "Key id")),
    request_body = Rotate,
    responses((status = 200, body = CreatedAccessKey), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn rotate_relay_key(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    StrictJson(body): StrictJson<Rotate>,
) -> Result<Json<CreatedAccessKey>, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    let grace = grace(&body)?;
    Ok(Json(
        app.store
            .rotate_access_key(&ctx, AccessKeyKind::Relay, id, grace)
            .await?,
    ))
}

/// Revokes a relay key.
#[utoipa::path(delete, path = "/api/v1/relay-keys/{id}", tag = "keys",
    params(("id" = i64, Path, description = "Key id")),
    responses((status = 200, body = AccessKeyView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn revoke_relay_key(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<AccessKeyView>, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    Ok(Json(
        app.store
            .revoke_access_key(&ctx, AccessKeyKind::Relay, id)
            .await?,
    ))
}
