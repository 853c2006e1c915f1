//! `/api/v1/audit`: the audit log, read-only.

use axum::Json;
use axum::extract::{Query, State};

use crate::app::AppState;
use crate::auth::Role;
use crate::error::{ApiError, Problem};
use crate::extract::Caller;
use crate::store::{AuditEntry, AuditQuery, Page};

/// Audit entries, newest first, filtered by project, flag, resource, actor, action and time
/// range. There is no way to change or delete an entry.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 400, body = Problem)))]
pub(crate) async fn query_audit(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    caller.check(Role::Viewer)?;
    Ok(Json(app.store.query_audit(&q).await?))
}
