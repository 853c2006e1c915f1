//! The `/api/v1` routes, one module per resource, collected with their OpenAPI descriptions.
//!
//! Every route needs an API token (see [`crate::middleware::authenticate`]); reads need the
//! viewer role, writes to projects, environments, flags and segments the editor role, and
//! deleting a project or an environment, tokens and keys the admin role. `POST`s honour
//! `Idempotency-Key`. Query strings are strict ([`query`]); the OpenAPI document declares
//! every error each operation can answer with ([`crate::openapi::declare_errors`]).

mod admin;
// Approval policies and change requests: handlers beside their store.
#[path = "../delivery/approvals/api.rs"]
mod approvals;
mod audit;
// Progressive delivery (scheduled changes, webhooks): its handlers live beside its store.
#[path = "../delivery/api.rs"]
mod delivery;
mod environments;
mod evaluate;
#[path = "../experiments/api.rs"]
mod experiments;
mod explain;
mod flags;
// The fleet view and stale flags (issue 16): handlers beside their store.
use crate::fleet::api as fleet;
#[path = "../portable/api.rs"]
mod portable;
mod projects;
mod query;
mod segments;

use axum::Json;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::app::AppState;
use crate::auth::Role;
use crate::extract::{Caller, etag};
use crate::middleware;
use crate::openapi::ApiDoc;

pub use evaluate::{
    EvaluateBatchRequest, EvaluateBatchResponse, EvaluateRequest, EvaluateResponse,
};
pub use explain::{ExplainRequest, ExplainResponse};
// The console (crate::console) explains flags from the same compiled snapshot as the API.
pub(crate) use evaluate::compiled;

/// Builds the API router (with authentication and idempotency) and the Swagger UI router
/// serving `/api/v1/openapi.json` and `/api/v1/docs`. Every route refuses query parameters
/// its OpenAPI operation does not declare, so the document and the API cannot disagree on
/// them.
pub fn routes(state: AppState) -> (Router, Router) {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(projects::create_project, projects::list_projects))
        .routes(routes!(
            projects::get_project,
            projects::update_project,
            projects::delete_project
        ))
        .routes(routes!(
            environments::create_environment,
            environments::list_environments
        ))
        .routes(routes!(
            environments::get_environment,
            environments::update_environment,
            environments::delete_environment
        ))
        .routes(routes!(environments::get_snapshot))
        .routes(routes!(environments::get_changes))
        .routes(routes!(flags::create_flag, flags::list_flags))
        .routes(routes!(
            flags::get_flag,
            flags::update_flag,
            flags::delete_flag
        ))
        .routes(routes!(flags::archive_flag))
        .routes(routes!(flags::unarchive_flag))
        .routes(routes!(flags::kill_flag))
        .routes(routes!(
            flags::get_config,
            flags::put_config,
            flags::patch_config
        ))
        .routes(routes!(flags::edit_targets))
        .routes(routes!(flags::list_versions))
        .routes(routes!(flags::get_version))
        .routes(routes!(flags::rollback))
        .routes(routes!(segments::create_segment, segments::list_segments))
        .routes(routes!(
            segments::get_segment,
            segments::put_segment,
            segments::delete_segment
        ))
        .routes(routes!(segments::edit_segment_keys))
        .routes(routes!(segments::sync_segment_list))
        .routes(routes!(audit::query_audit))
        .routes(routes!(admin::create_token, admin::list_tokens))
        .routes(routes!(admin::revoke_token))
        .routes(routes!(admin::create_sdk_key, admin::list_sdk_keys))
        .routes(routes!(admin::rotate_sdk_key))
        .routes(routes!(admin::revoke_sdk_key))
        .routes(routes!(admin::create_client_key, admin::list_client_keys))
        .routes(routes!(admin::revoke_client_key))
        .routes(routes!(admin::create_relay_key, admin::list_relay_keys))
        .routes(routes!(admin::rotate_relay_key))
        .routes(routes!(admin::revoke_relay_key))
        .routes(routes!(evaluate::evaluate))
        .routes(routes!(evaluate::evaluate_batch))
        .routes(routes!(explain::explain))
        .routes(routes!(whoami))
        .routes(routes!(
            experiments::create_metric,
            experiments::list_metrics
        ))
        .routes(routes!(
            experiments::get_metric,
            experiments::put_metric,
            experiments::delete_metric
        ))
        .routes(routes!(
            experiments::create_experiment,
            experiments::list_experiments
        ))
        .routes(routes!(
            experiments::get_experiment,
            experiments::put_experiment,
            experiments::delete_experiment
        ))
        .routes(routes!(experiments::start_experiment))
        .routes(routes!(experiments::stop_experiment))
        .routes(routes!(experiments::get_results))
        // --- progressive delivery (server/src/delivery) ---
        .routes(routes!(
            delivery::create_scheduled_change,
            delivery::list_scheduled_changes
        ))
        .routes(routes!(delivery::get_scheduled_change))
        .routes(routes!(delivery::cancel_scheduled_change))
        .routes(routes!(delivery::create_webhook, delivery::list_webhooks))
        .routes(routes!(
            delivery::get_webhook,
            delivery::update_webhook,
            delivery::delete_webhook
        ))
        .routes(routes!(delivery::list_webhook_deliveries))
        .routes(routes!(
            delivery::create_release_plan,
            delivery::list_release_plans
        ))
        .routes(routes!(delivery::get_release_plan))
        .routes(routes!(delivery::advance_release_plan))
        .routes(routes!(delivery::pause_release_plan))
        .routes(routes!(delivery::resume_release_plan))
        .routes(routes!(delivery::abort_release_plan))
        // --- end progressive delivery ---
        // --- approvals and change requests (server/src/delivery/approvals) ---
        .routes(routes!(
            approvals::get_approval_policy,
            approvals::put_approval_policy,
            approvals::delete_approval_policy
        ))
        .routes(routes!(
            approvals::create_change_request,
            approvals::list_change_requests
        ))
        .routes(routes!(approvals::get_change_request))
        .routes(routes!(approvals::approve_change_request))
        .routes(routes!(approvals::reject_change_request))
        .routes(routes!(approvals::comment_change_request))
        .routes(routes!(approvals::apply_change_request))
        // --- end approvals ---
        // --- fleet view and stale flags (issue 16) ---
        .routes(routes!(fleet::get_fleet))
        .routes(routes!(fleet::get_flag_usage))
        .routes(routes!(fleet::get_stale_flags))
        // --- end fleet ---
        // --- flags as code (issue 17) ---
        .routes(routes!(portable::export_project))
        .routes(routes!(portable::import_project))
        // --- end flags as code ---
        .split_for_parts();
    let mut openapi = openapi;
    crate::openapi::declare_errors(&mut openapi);
    let known = query::KnownParameters::of(&openapi);
    let api = router
        .route_layer(from_fn_with_state(known, query::reject_unknown_parameters))
        .layer(from_fn_with_state(state.clone(), middleware::idempotency))
        .layer(from_fn_with_state(state.clone(), middleware::authenticate))
        .with_state(state);
    let swagger = SwaggerUi::new("/api/v1/docs")
        .url("/api/v1/openapi.json", openapi)
        .into();
    (api, swagger)
}

/// A `201 Created` response with `Location` and optionally `ETag`.
pub(crate) struct Created<T> {
    pub location: String,
    pub etag: Option<u64>,
    pub body: T,
}

impl<T: Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        let mut res = (StatusCode::CREATED, Json(self.body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&self.location) {
            res.headers_mut().insert(header::LOCATION, v);
        }
        if let Some(v) = self.etag.and_then(|e| HeaderValue::from_str(&etag(e)).ok()) {
            res.headers_mut().insert(header::ETAG, v);
        }
        res
    }
}

impl<T> Created<T> {
    /// A `201 Created` at `location` without an `ETag`.
    pub(crate) fn at(location: String, body: T) -> Self {
        Self {
            location,
            etag: None,
            body,
        }
    }
}

impl<T: Versioned> Created<T> {
    /// A `201 Created` at `location`, tagged with the body's own version.
    pub(crate) fn tagged(location: String, body: T) -> Self {
        Self {
            location,
            etag: Some(body.etag()),
            body,
        }
    }
}

/// A `200 OK` JSON response with an `ETag`.
pub(crate) struct Tagged<T> {
    pub etag: u64,
    pub body: T,
}

/// A response body that carries its own version, which is its `ETag`.
pub(crate) trait Versioned {
    /// The version to send as the `ETag`.
    fn etag(&self) -> u64;
}

impl<T: Versioned> Tagged<T> {
    /// `body`, tagged with its own version.
    pub(crate) fn of(body: T) -> Self {
        Self {
            etag: body.etag(),
            body,
        }
    }
}

impl<T: Serialize> IntoResponse for Tagged<T> {
    fn into_response(self) -> Response {
        let mut res = Json(self.body).into_response();
        if let Ok(v) = HeaderValue::from_str(&etag(self.etag)) {
            res.headers_mut().insert(header::ETAG, v);
        }
        res
    }
}

/// Who the caller is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct WhoAmI {
    /// Token name.
    name: String,
    /// Role.
    role: Role,
    /// Token id.
    token_id: Option<i64>,
    /// Where the role applies, for a scoped token; absent: everywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes: Option<Vec<crate::auth::Grant>>,
}

/// The caller's identity and role.
#[utoipa::path(get, path = "/api/v1/me", tag = "tokens",
    responses((status = 200, body = WhoAmI), (status = 401, body = crate::error::Problem)))]
pub(crate) async fn whoami(caller: Caller) -> Json<WhoAmI> {
    let a = caller.0.actor;
    Json(WhoAmI {
        name: a.name,
        role: a.role,
        token_id: a.token_id,
        scopes: a.scope.grants().map(<[_]>::to_vec),
    })
}
