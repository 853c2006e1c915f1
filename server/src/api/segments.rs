//! `/api/v1/projects/{project}/environments/{environment}/segments`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use vexil_schema::Segment;

use super::query::{PageQuery, opaque};
use super::{Created, Tagged, Versioned};
use crate::app::AppState;
use crate::auth::Role;
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, IfMatch, StrictJson, StrictQuery};
use crate::openapi::SegmentDoc;
use crate::store::{Page, SegmentSummary, SegmentView};

/// Creates a segment. An empty `salt` gets a random one.
#[utoipa::path(post, path = "/api/v1/projects/{project}/environments/{environment}/segments", tag = "segments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key")),
    request_body = SegmentDoc,
    responses((status = 201, body = SegmentView), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn create_segment(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
    StrictJson(body): StrictJson<Segment>,
) -> Result<Created<SegmentView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let view = app
        .store
        .create_segment(&ctx, &project, &environment, body)
        .await?;
    let location = format!(
        "/api/v1/projects/{project}/environments/{environment}/segments/{}",
        view.segment.key
    );
    Ok(Created::tagged(location, view))
}

/// Lists an environment's segments (key lists counted, not shown).
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/segments", tag = "segments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"), PageQuery),
    responses((status = 200, body = Page<SegmentSummary>), (status = 404, body = Problem)))]
pub(crate) async fn list_segments(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment)): Path<(String, String)>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<Json<Page<SegmentSummary>>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(opaque(
        app.store
            .list_segments(&project, &environment, q.cursor(), q.limit())
            .await?,
    )))
}

/// One segment with its key lists. `ETag`: the segment version.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/{environment}/segments/{segment}", tag = "segments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           ("segment" = String, Path, description = "Segment key")),
    responses((status = 200, body = SegmentView), (status = 404, body = Problem)))]
pub(crate) async fn get_segment(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment, segment)): Path<(String, String, String)>,
) -> Result<Tagged<SegmentView>, ApiError> {
    caller.check(Role::Viewer)?;
    let view = app
        .store
        .get_segment(&project, &environment, &segment)
        .await?;
    Ok(Tagged::of(view))
}

/// Replaces a segment (the key cannot change). Honours `If-Match` with the segment version.
#[utoipa::path(put, path = "/api/v1/projects/{project}/environments/{environment}/segments/{segment}", tag = "segments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           ("segment" = String, Path, description = "Segment key"),
           ("If-Match" = Option<String>, Header, description = "Segment version, e.g. \"3\"")),
    request_body = SegmentDoc,
    responses((status = 200, body = SegmentView), (status = 404, body = Problem),
              (status = 412, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn put_segment(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment, segment)): Path<(String, String, String)>,
    IfMatch(if_match): IfMatch,
    StrictJson(body): StrictJson<Segment>,
) -> Result<Tagged<SegmentView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let view = app
        .store
        .put_segment(&ctx, &project, &environment, &segment, body, if_match)
        .await?;
    Ok(Tagged::of(view))
}

/// Deletes a segment. 409 while flags or segments match it (listed in `blockers`).
#[utoipa::path(delete, path = "/api/v1/projects/{project}/environments/{environment}/segments/{segment}", tag = "segments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           ("segment" = String, Path, description = "Segment key")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn delete_segment(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment, segment)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    app.store
        .delete_segment(&ctx, &project, &environment, &segment)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

impl Versioned for SegmentView {
    /// The segment version.
    fn etag(&self) -> u64 {
        self.segment.version
    }
}
