//! `/api/v1/projects/{project}/environments/{environment}/segments`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;
use vexil_schema::Segment;
use vexil_schema::delta::ListDelta;
use vexil_schema::limits::MAX_EDIT_KEYS;

use super::query::{PageQuery, opaque};
use super::{Created, Tagged, Versioned};
use crate::app::AppState;
use crate::auth::Role;
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, IfMatch, StrictJson, StrictQuery};
use crate::openapi::SegmentDoc;
use crate::store::{Page, SegmentKeysEdited, SegmentList, SegmentSummary, SegmentView, StoreError};

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

/// Keys to add to and remove from one list.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListEdit {
    /// Keys to append (those absent), in order.
    #[serde(default)]
    add: Vec<String>,
    /// Keys to take out (absent ones are ignored).
    #[serde(default)]
    remove: Vec<String>,
}

impl From<ListEdit> for ListDelta {
    fn from(e: ListEdit) -> Self {
        ListDelta {
            add: e.add,
            remove: e.remove,
        }
    }
}

/// An edit of a segment's key lists: `{"included": {"add": [...], "remove": [...]},
/// "excluded": {...}}`, at most 100,000 keys in all.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SegmentKeysEdit {
    /// Edit of `included`.
    #[serde(default)]
    included: ListEdit,
    /// Edit of `excluded`.
    #[serde(default)]
    excluded: ListEdit,
}

/// Adds and removes keys of a segment's `included`/`excluded` lists without sending them
/// (at most 100,000 keys per request). Idempotent: adding a present key or removing an
/// absent one changes nothing (and an edit that changes nothing makes no version). Removed
/// keys leave, the others keep their order, added keys are appended. Honours `If-Match`.
/// Subscribers receive the keys actually added and removed as a `delta` event.
///
/// The answer is the segment with its lists; with `Prefer: return=minimal` (RFC 7240) it is
/// the segment's counts and version instead (`Preference-Applied: return=minimal`), which
/// keeps a one-key edit of a large list cheap for the server and the caller.
#[utoipa::path(post, path = "/api/v1/projects/{project}/environments/{environment}/segments/{segment}/keys", tag = "segments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           ("segment" = String, Path, description = "Segment key"),
           ("If-Match" = Option<String>, Header, description = "Segment version, e.g. \"3\""),
           ("Prefer" = Option<String>, Header, description = "`return=minimal`: answer with the counts, not the lists")),
    request_body = SegmentKeysEdit,
    responses((status = 200, description = "The segment (with `Prefer: return=minimal`: `SegmentKeysEdited`)", body = SegmentView),
              (status = 404, body = Problem),
              (status = 412, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn edit_segment_keys(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment, segment)): Path<(String, String, String)>,
    IfMatch(if_match): IfMatch,
    headers: HeaderMap,
    StrictJson(body): StrictJson<SegmentKeysEdit>,
) -> Result<Response, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let total = body.included.add.len()
        + body.included.remove.len()
        + body.excluded.add.len()
        + body.excluded.remove.len();
    if total > MAX_EDIT_KEYS {
        return Err(StoreError::invalid(
            "",
            "limit_exceeded",
            format!("an edit names at most {MAX_EDIT_KEYS} keys; this one names {total}"),
        )
        .into());
    }
    let at = (project.as_str(), environment.as_str(), segment.as_str());
    let (included, excluded) = (body.included.into(), body.excluded.into());
    if prefers_minimal(&headers) {
        let edited = app
            .store
            .edit_segment_keys_summary(&ctx, at, included, excluded, if_match)
            .await?;
        let mut res = Tagged::of(edited).into_response();
        res.headers_mut().insert(
            HeaderName::from_static("preference-applied"),
            HeaderValue::from_static("return=minimal"),
        );
        return Ok(res);
    }
    let view = app
        .store
        .edit_segment_keys(&ctx, at, included, excluded, if_match)
        .await?;
    Ok(Tagged::of(view).into_response())
}

/// Whether the request asks for `return=minimal` (RFC 7240 `Prefer`, any of its values).
fn prefers_minimal(headers: &HeaderMap) -> bool {
    headers
        .get_all(HeaderName::from_static("prefer"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| {
            p.split(';')
                .next()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("return=minimal"))
        })
}

/// Replaces a segment's `included` or `excluded` list with a newline-delimited upload (one
/// context key per line; blank lines and a trailing `\r` are ignored), for lists managed
/// elsewhere (a CRM, a warehouse). The server computes the delta: keys missing from the
/// upload are removed, new ones appended in upload order, the others keep their place; an
/// upload equal to the list changes nothing. Subscribers receive only the delta. Honours
/// `If-Match`; without it the delta is computed from, and applied to, the same version.
#[utoipa::path(put, path = "/api/v1/projects/{project}/environments/{environment}/segments/{segment}/keys/{list}", tag = "segments",
    params(("project" = String, Path, description = "Project key"),
           ("environment" = String, Path, description = "Environment key"),
           ("segment" = String, Path, description = "Segment key"),
           ("list" = String, Path, description = "`included` or `excluded`"),
           ("If-Match" = Option<String>, Header, description = "Segment version, e.g. \"3\"")),
    request_body(content = String, content_type = "text/plain", description = "One key per line"),
    responses((status = 200, body = SegmentView), (status = 404, body = Problem),
              (status = 412, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn sync_segment_list(
    State(app): State<AppState>,
    caller: Caller,
    Path((project, environment, segment, list)): Path<(String, String, String, String)>,
    IfMatch(if_match): IfMatch,
    body: String,
) -> Result<Tagged<SegmentView>, ApiError> {
    let ctx = caller.require(Role::Editor)?;
    let list = match list.as_str() {
        "included" => SegmentList::Included,
        "excluded" => SegmentList::Excluded,
        _ => return Err(ApiError::NotFound(format!("segment list '{list}'"))),
    };
    let keys = crate::store::segment_key_list(&body)?;
    let view = app
        .store
        .sync_segment_list(
            &ctx,
            (project.as_str(), environment.as_str(), segment.as_str()),
            list,
            keys,
            if_match,
        )
        .await?;
    Ok(Tagged::of(view))
}

impl Versioned for SegmentKeysEdited {
    /// The segment version.
    fn etag(&self) -> u64 {
        u64::try_from(self.segment.version).unwrap_or(0)
    }
}

impl Versioned for SegmentView {
    /// The segment version.
    fn etag(&self) -> u64 {
        self.segment.version
    }
}
