//! `/api/v1/projects/{project}/flags/{flag}/environments/{environment}/scheduled-changes`,
//! `…/release-plans` and `/api/v1/projects/{project}/webhooks`: scheduled changes and release
//! plans (editor to write, viewer to read) and webhook subscriptions with their delivery logs (admin: their URLs and secrets are
//! credentials). Mounted by [`crate::api`] (this file is its `delivery` module).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::query::{Cursor, Limit, PageQuery, opaque};
use super::{Created, Tagged, Versioned};
use crate::app::AppState;
use crate::auth::Role;
use crate::delivery::plans::{NewReleasePlan, PlanAction, ReleasePlan};
use crate::delivery::schedule::{NewScheduledChange, ScheduleState, ScheduledChange};
use crate::delivery::webhooks::{
    CreatedWebhook, NewWebhook, Webhook, WebhookDelivery, WebhookPatch,
};
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, IfMatch, StrictJson, StrictQuery};
use crate::store::Page;

impl Versioned for Webhook {
    fn etag(&self) -> u64 {
        crate::store::to_u64(self.version)
    }
}

/// The `201 Created` answer of a resource `id` created in `collection` under a flag path
/// (`…/flags/{flag}/environments/{environment}/{collection}/{id}`).
pub(super) fn created_under<T>(
    (project, flag, environment): (&str, &str, &str),
    collection: &str,
    id: i64,
    view: T,
) -> Created<T> {
    let location = format!(
        "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/{collection}/{id}"
    );
    Created::at(location, view)
}

/// Filters and page parameters of the scheduled-change list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ScheduleListQuery {
    /// Only changes in this state.
    #[param(inline)]
    state: Option<ScheduleState>,
    /// Cursor from the previous page's `next_cursor`, unchanged.
    #[param(value_type = Option<String>, pattern = "^([0-9a-f]{2})+$")]
    cursor: Option<Cursor>,
    /// Page size (1–500, default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<Limit>,
}

/// Schedules a configuration patch or a kill of the flag. Audited as `schedule.create`; when
/// it runs, the configuration change is audited like any other with the schedule as actor,
/// then `schedule.executed` or `schedule.failed`.
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/scheduled-changes",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key")),
    request_body = NewScheduledChange,
    responses((status = 201, body = ScheduledChange), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
pub(crate) async fn create_scheduled_change(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment)): Path<(String, String, String)>,
    StrictJson(body): StrictJson<NewScheduledChange>,
) -> Result<Created<ScheduledChange>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    // Under an approval policy, changes go through change requests (a kill may be exempt).
    app.store
        .refuse_under_policy((&project, &flag, &environment), body.kill)
        .await?;
    let view = app
        .store
        .create_scheduled_change(&ctx, (&project, &flag, &environment), body, app.clock.now())
        .await?;
    let id = view.id;
    Ok(created_under(
        (&project, &flag, &environment),
        "scheduled-changes",
        id,
        view,
    ))
}

/// The flag's scheduled changes in the environment, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/scheduled-changes",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ScheduleListQuery),
    responses((status = 200, body = Page<ScheduledChange>), (status = 404, body = Problem)))]
pub(crate) async fn list_scheduled_changes(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment)): Path<(String, String, String)>,
    StrictQuery(q): StrictQuery<ScheduleListQuery>,
) -> Result<Json<Page<ScheduledChange>>, ApiError> {
    caller.check(Role::Viewer)?;
    let page = app
        .store
        .list_scheduled_changes(
            (&project, &flag, &environment),
            q.state,
            q.cursor.as_ref().map(|c| c.0.as_str()),
            q.limit.map(|l| l.0),
        )
        .await?;
    Ok(Json(opaque(page)))
}

/// One scheduled change.
#[utoipa::path(get, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/scheduled-changes/{id}",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("id" = i64, Path, description = "Scheduled change id")),
    responses((status = 200, body = ScheduledChange), (status = 404, body = Problem)))]
pub(crate) async fn get_scheduled_change(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment, id)): Path<(String, String, String, i64)>,
) -> Result<Json<ScheduledChange>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(
        app.store
            .get_scheduled_change((&project, &flag, &environment), id)
            .await?,
    ))
}

/// Cancels a pending scheduled change (409 once it has run, failed or been cancelled).
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/scheduled-changes/{id}/cancel",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("id" = i64, Path, description = "Scheduled change id")),
    responses((status = 200, body = ScheduledChange), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub(crate) async fn cancel_scheduled_change(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment, id)): Path<(String, String, String, i64)>,
) -> Result<Json<ScheduledChange>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    Ok(Json(
        app.store
            .cancel_scheduled_change(&ctx, (&project, &flag, &environment), id, app.clock.now())
            .await?,
    ))
}

/// Subscribes a URL to a project's events. The response carries the signing secret, shown
/// only here.
#[utoipa::path(post, path = "/api/v1/projects/{project}/webhooks", tag = "delivery",
    params(("project" = String, Path, description = "Project key")),
    request_body = NewWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
pub(crate) async fn create_webhook(
    State(app): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    StrictJson(body): StrictJson<NewWebhook>,
) -> Result<Created<CreatedWebhook>, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    let created = app
        .store
        .create_webhook(&ctx, &project, body, app.clock.now())
        .await?;
    let location = format!("/api/v1/projects/{project}/webhooks/{}", created.webhook.id);
    let etag = created.webhook.etag();
    Ok(Created {
        location,
        etag: Some(etag),
        body: created,
    })
}

/// A project's webhook subscriptions.
#[utoipa::path(get, path = "/api/v1/projects/{project}/webhooks", tag = "delivery",
    params(("project" = String, Path, description = "Project key"), PageQuery),
    responses((status = 200, body = Page<Webhook>), (status = 404, body = Problem)))]
pub(crate) async fn list_webhooks(
    State(app): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<Json<Page<Webhook>>, ApiError> {
    caller.check(Role::Admin)?;
    Ok(Json(opaque(
        app.store
            .list_webhooks(&project, q.cursor(), q.limit())
            .await?,
    )))
}

/// One webhook subscription. `ETag`: its version.
#[utoipa::path(get, path = "/api/v1/projects/{project}/webhooks/{id}", tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("id" = i64, Path, description = "Subscription id")),
    responses((status = 200, body = Webhook), (status = 404, body = Problem)))]
pub(crate) async fn get_webhook(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, id)): Path<(String, i64)>,
) -> Result<Tagged<Webhook>, ApiError> {
    caller.check(Role::Admin)?;
    Ok(Tagged::of(app.store.get_webhook(&project, id).await?))
}

/// Changes a subscription; `enabled: true` re-enables one that was disabled after failing.
#[utoipa::path(patch, path = "/api/v1/projects/{project}/webhooks/{id}", tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("id" = i64, Path, description = "Subscription id"),
           ("If-Match" = Option<String>, Header, description = "Subscription version, e.g. \"3\"")),
    request_body = WebhookPatch,
    responses((status = 200, body = Webhook), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 412, body = Problem),
              (status = 422, body = Problem)))]
pub(crate) async fn update_webhook(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, id)): Path<(String, i64)>,
    IfMatch(if_match): IfMatch,
    StrictJson(body): StrictJson<WebhookPatch>,
) -> Result<Tagged<Webhook>, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    Ok(Tagged::of(
        app.store
            .update_webhook(&ctx, &project, id, body, if_match, app.clock.now())
            .await?,
    ))
}

/// Deletes a subscription and its delivery log.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/webhooks/{id}", tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("id" = i64, Path, description = "Subscription id")),
    responses((status = 204), (status = 404, body = Problem)))]
pub(crate) async fn delete_webhook(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, id)): Path<(String, i64)>,
) -> Result<StatusCode, ApiError> {
    let ctx = caller.require(Role::Admin)?;
    app.store
        .delete_webhook(&ctx, &project, id, app.clock.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A subscription's delivery log, newest first: each event's state, attempts and last
/// response.
#[utoipa::path(get, path = "/api/v1/projects/{project}/webhooks/{id}/deliveries", tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("id" = i64, Path, description = "Subscription id"), PageQuery),
    responses((status = 200, body = Page<WebhookDelivery>), (status = 404, body = Problem)))]
pub(crate) async fn list_webhook_deliveries(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, id)): Path<(String, i64)>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<Json<Page<WebhookDelivery>>, ApiError> {
    caller.check(Role::Admin)?;
    Ok(Json(opaque(
        app.store
            .list_webhook_deliveries(&project, id, q.cursor(), q.limit())
            .await?,
    )))
}

/// Starts a release plan on the flag and applies its first step at once. `409` while another
/// plan on the flag is running or paused.
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/release-plans",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key")),
    request_body = NewReleasePlan,
    responses((status = 201, body = ReleasePlan), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_release_plan(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment)): Path<(String, String, String)>,
    StrictJson(body): StrictJson<NewReleasePlan>,
) -> Result<Created<ReleasePlan>, ApiError> {
    // Under an approval policy, each step is proposed as a change request and the plan waits
    // for its approval (state `waiting_for_approval`).
    let ctx = caller.require(Role::Editor)?;
    let view = app
        .store
        .create_release_plan(&ctx, (&project, &flag, &environment), body, app.clock.now())
        .await?;
    let id = view.id;
    Ok(created_under(
        (&project, &flag, &environment),
        "release-plans",
        id,
        view,
    ))
}

/// The flag's release plans in the environment, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/release-plans",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           PageQuery),
    responses((status = 200, body = Page<ReleasePlan>), (status = 404, body = Problem)))]
pub(crate) async fn list_release_plans(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment)): Path<(String, String, String)>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<Json<Page<ReleasePlan>>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(opaque(
        app.store
            .list_release_plans((&project, &flag, &environment), q.cursor(), q.limit())
            .await?,
    )))
}

/// One release plan.
#[utoipa::path(get, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/release-plans/{id}",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("id" = i64, Path, description = "Plan id")),
    responses((status = 200, body = ReleasePlan), (status = 404, body = Problem)))]
pub(crate) async fn get_release_plan(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, flag, environment, id)): Path<(String, String, String, i64)>,
) -> Result<Json<ReleasePlan>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(
        app.store
            .get_release_plan((&project, &flag, &environment), id)
            .await?,
    ))
}

async fn act(
    app: AppState,
    caller: Caller,
    (project, flag, environment, id): (String, String, String, i64),
    action: PlanAction,
) -> Result<Json<ReleasePlan>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    Ok(Json(
        app.store
            .act_on_release_plan(
                &ctx,
                (&project, &flag, &environment),
                id,
                action,
                app.clock.now(),
            )
            .await?,
    ))
}

/// Applies the next step now, without waiting for the hold (running plans).
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/release-plans/{id}/advance",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("id" = i64, Path, description = "Plan id")),
    responses((status = 200, body = ReleasePlan), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub(crate) async fn advance_release_plan(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String, i64)>,
) -> Result<Json<ReleasePlan>, ApiError> {
    act(app, caller, path, PlanAction::Advance).await
}

/// Holds a running plan at its current step.
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/release-plans/{id}/pause",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("id" = i64, Path, description = "Plan id")),
    responses((status = 200, body = ReleasePlan), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub(crate) async fn pause_release_plan(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String, i64)>,
) -> Result<Json<ReleasePlan>, ApiError> {
    act(app, caller, path, PlanAction::Pause).await
}

/// Continues a paused plan with the rest of its current hold.
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/release-plans/{id}/resume",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("id" = i64, Path, description = "Plan id")),
    responses((status = 200, body = ReleasePlan), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub(crate) async fn resume_release_plan(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String, i64)>,
) -> Result<Json<ReleasePlan>, ApiError> {
    act(app, caller, path, PlanAction::Resume).await
}

/// Stops a running or paused plan and restores the fallthrough from before it.
#[utoipa::path(post, path = "/api/v1/projects/{project}/flags/{flag}/environments/{environment}/release-plans/{id}/abort",
    tag = "delivery",
    params(("project" = String, Path, description = "Project key"),
           ("flag" = String, Path, description = "Flag key"),
           ("environment" = String, Path, description = "Environment key"),
           ("id" = i64, Path, description = "Plan id")),
    responses((status = 200, body = ReleasePlan), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub(crate) async fn abort_release_plan(
    State(app): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String, i64)>,
) -> Result<Json<ReleasePlan>, ApiError> {
    act(app, caller, path, PlanAction::Abort).await
}
