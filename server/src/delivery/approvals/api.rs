//! `/api/v1/projects/{project}/environments/{environment}/approval-policy` (admin to set or
//! remove, viewer to read) and
//! `/api/v1/projects/{project}/flags/{flag}/environments/{environment}/change-requests`
//! (editor to open and apply, the policy's approver role to approve or reject, viewer to read
//! and comment). Mounted by [`crate::api`] (this file is its `approvals` module).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::Created;
use super::delivery::created_under;
use super::query::{Cursor, Limit, opaque};
use crate::app::AppState;
use crate::auth::Role;
use crate::delivery::approvals::requests::{
    ChangeRequest, ChangeRequestState, NewChangeRequest, NewReview, ReviewInput, ReviewKind,
};
use crate::delivery::approvals::{ApprovalPolicy, PolicyInput};
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, StrictJson, StrictQuery};
use crate::store::Page;

/// An environment's approval policy (404 when it has none).
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/approval-policy",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key")),
    responses((status = 200, body = ApprovalPolicy), (status = 404, body = Problem)))]
pub(crate) async fn get_approval_policy(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
) -> Result<Json<ApprovalPolicy>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(
        app.store
            .get_approval_policy(&project, &environment)
            .await?,
    ))
}

/// Sets the environment's approval policy: from then on, flag configuration writes there are
/// refused (409 `approval-required`) unless they apply an approved change request. Audited as
/// `approval_policy.update`.
#[utoipa::path(put, path = "/api/v1/projects/{project}/environments/{environment}/approval-policy",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key")),
    request_body = PolicyInput,
    responses((status = 200, body = ApprovalPolicy), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
pub(crate) async fn put_approval_policy(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
    StrictJson(body): StrictJson<PolicyInput>,
) -> Result<Json<ApprovalPolicy>, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    Ok(Json(
        app.store
            .put_approval_policy(&ctx, (&project, &environment), body, app.clock.now())
            .await?,
    ))
}

/// Removes the environment's approval policy. Audited as `approval_policy.delete`.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/environments/{environment}/approval-policy",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key")),
    responses((status = 204), (status = 404, body = Problem)))]
pub(crate) async fn delete_approval_policy(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    app.store
        .delete_approval_policy(&ctx, (&project, &environment), app.clock.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Filters and page parameters of the change-request list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ChangeRequestListQuery {
    /// Only requests in this state.
    #[param(inline)]
    state: Option<ChangeRequestState>,
    /// Cursor from the previous page's `next_cursor`, unchanged.
    #[param(value_type = Option<String>, pattern = "^([0-9a-f]{2})+$")]
    cursor: Option<Cursor>,
    /// Page size (1–500, default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<Limit>,
}

/// Opens a change request: a configuration patch with its base version and a description.
/// Audited as `change_request.create`.
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/change-requests",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key")),
    request_body = NewChangeRequest,
    responses((status = 201, body = ChangeRequest), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
pub(crate) async fn create_change_request(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment)): Path<(String, String, String)>,
    StrictJson(body): StrictJson<NewChangeRequest>,
) -> Result<Created<ChangeRequest>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let view = app
        .store
        .create_change_request(&ctx, (&project, &flag, &environment), body, app.clock.now())
        .await?;
    let id = view.id;
    Ok(created_under(
        (&project, &flag, &environment),
        "change-requests",
        id,
        view,
    ))
}

/// The flag's change requests in the environment, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/change-requests",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ChangeRequestListQuery),
    responses((status = 200, body = Page<ChangeRequest>), (status = 404, body = Problem)))]
pub(crate) async fn list_change_requests(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment)): Path<(String, String, String)>,
    StrictQuery(q): StrictQuery<ChangeRequestListQuery>,
) -> Result<Json<Page<ChangeRequest>>, ApiError> {
    caller.check(Role::Viewer)?;
    let page = app
        .store
        .list_change_requests(
            (&project, &flag, &environment),
            q.state,
            q.cursor.as_ref().map(|c| c.0.as_str()),
            q.limit.map(|l| l.0),
        )
        .await?;
    Ok(Json(opaque(page)))
}

/// One change request, with its reviews and the approvals that count.
#[utoipa::path(get, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/change-requests/{id}",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("id" = i64, Path, description = "Change request id")),
    responses((status = 200, body = ChangeRequest), (status = 404, body = Problem)))]
pub(crate) async fn get_change_request(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment, id)): Path<(String, String, String, i64)>,
) -> Result<Json<ChangeRequest>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(
        app.store
            .get_change_request((&project, &flag, &environment), id)
            .await?,
    ))
}

/// A review: approvals and rejections need the policy's approver role in the environment
/// (editor without a policy); a comment needs only to read.
async fn review(
    app: AppState,
    caller: Caller,
    (project, flag, environment, id): (String, String, String, i64),
    kind: ReviewKind,
    body: ReviewInput,
) -> Result<Json<ChangeRequest>, ApiError> {
    let needs = match kind {
        ReviewKind::Comment => Role::Viewer,
        ReviewKind::Approve | ReviewKind::Reject => {
            caller.check(Role::Viewer)?;
            app.store.approver_role(&project, &environment).await?
        }
    };
    caller.check(needs)?;
    let role = caller
        .0
        .actor
        .role_in(Some(&project), Some(&environment))
        .unwrap_or(needs);
    let ctx = caller.require(needs)?;
    Ok(Json(
        app.store
            .review_change_request(
                &ctx,
                (&project, &flag, &environment),
                id,
                NewReview {
                    kind,
                    role,
                    comment: body.comment,
                },
                app.clock.now(),
            )
            .await?,
    ))
}

/// Approves a change request (not its author; once per reviewer). It turns `approved` when
/// the policy's number of distinct approvals is reached. Audited as `change_request.approve`
/// (and `change_request.approved`).
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/change-requests/{id}/approve",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("id" = i64, Path, description = "Change request id")),
    request_body = ReviewInput,
    responses((status = 200, body = ChangeRequest), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub(crate) async fn approve_change_request(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String, i64)>,
    StrictJson(body): StrictJson<ReviewInput>,
) -> Result<Json<ChangeRequest>, ApiError> {
    review(app, caller, path, ReviewKind::Approve, body).await
}

/// Rejects a change request: it can no longer be approved or applied. Audited as
/// `change_request.reject`.
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/change-requests/{id}/reject",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("id" = i64, Path, description = "Change request id")),
    request_body = ReviewInput,
    responses((status = 200, body = ChangeRequest), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub(crate) async fn reject_change_request(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String, i64)>,
    StrictJson(body): StrictJson<ReviewInput>,
) -> Result<Json<ChangeRequest>, ApiError> {
    review(app, caller, path, ReviewKind::Reject, body).await
}

/// Comments on a change request (any state). Audited as `change_request.comment`.
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/change-requests/{id}/comment",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("id" = i64, Path, description = "Change request id")),
    request_body = ReviewInput,
    responses((status = 200, body = ChangeRequest), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
pub(crate) async fn comment_change_request(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String, i64)>,
    StrictJson(body): StrictJson<ReviewInput>,
) -> Result<Json<ChangeRequest>, ApiError> {
    review(app, caller, path, ReviewKind::Comment, body).await
}

/// Applies an approved change request through the ordinary configuration write (validation,
/// history, audit, streaming). `409` when it is not approved, lacks the approvals the policy
/// now requires, or a field it touches changed since its base version (`blockers` names
/// them). Audited as `change_request.apply`.
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/change-requests/{id}/apply",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("id" = i64, Path, description = "Change request id")),
    responses((status = 200, body = ChangeRequest), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn apply_change_request(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment, id)): Path<(String, String, String, i64)>,
) -> Result<Json<ChangeRequest>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    Ok(Json(
        app.store
            .apply_change_request(&ctx, (&project, &flag, &environment), id, app.clock.now())
            .await?,
    ))
}
