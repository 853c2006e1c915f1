//! `/api/v1/audit`: the audit log, read-only.

use axum::Json;
use axum::extract::State;

use super::query::{checked_cursor, checked_limit, opaque};
use crate::app::AppState;
use crate::auth::Role;
use crate::error::{ApiError, Problem};
use crate::extract::{Caller, StrictQuery};
use crate::store::{AuditEntry, AuditQuery, Page};

/// Audit entries, newest first, filtered by project, flag, resource, actor, action and time
/// range. There is no way to change or delete an entry.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 422, body = Problem)))]
pub(crate) async fn query_audit(
    State(app): State<AppState>,
    caller: Caller,
    StrictQuery(mut q): StrictQuery<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    caller.check(Role::Viewer)?;
    q.limit = checked_limit(q.limit)?;
    q.cursor = checked_cursor(q.cursor)?;
    Ok(Json(opaque(app.store.query_audit(&q).await?)))
}
