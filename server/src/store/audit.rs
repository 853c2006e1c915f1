//! Audit log queries. Entries are appended by every write (see `changes::audit`) and never
//! changed: nothing in this crate updates or deletes them, and database triggers refuse to.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::projects::paginate;
use super::{Page, Store, StoreError, page_limit};
use crate::db::args;

/// One audit entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Entry id (increasing in commit order per writer).
    pub id: i64,
    /// When the change was committed.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// Who made it: the API token's name (`system` for the server itself).
    pub actor: String,
    /// What was done, e.g. `flag.config.update`.
    pub action: String,
    /// The kind of resource: `project`, `environment`, `flag`, `segment`, `token`, `sdk_key`,
    /// `relay_key`.
    pub resource: String,
    /// The project, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The environment, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The resource's key (or id, for tokens and keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The request the change was made in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The resource before the change (absent for creations).
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// The resource after the change (absent for deletions).
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
}

/// Filters for the audit log; all optional, combined with AND.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries about this project.
    pub project: Option<String>,
    /// Only entries about this flag (needs `project`).
    pub flag: Option<String>,
    /// Only entries about this kind of resource.
    pub resource: Option<String>,
    /// Only entries by this actor (token name).
    pub actor: Option<String>,
    /// Only this action, e.g. `flag.kill`.
    pub action: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    pub from: Option<OffsetDateTime>,
    /// Only entries before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    pub to: Option<OffsetDateTime>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Page size (1–500, default 50).
    pub limit: Option<u32>,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    occurred_at: OffsetDateTime,
    actor: String,
    action: String,
    resource: String,
    project_key: Option<String>,
    environment_key: Option<String>,
    resource_key: Option<String>,
    request_id: Option<String>,
    before: Option<Json<Value>>,
    after: Option<Json<Value>>,
}

impl Store {
    /// Audit entries matching `q`, newest first.
    pub async fn query_audit(&self, q: &AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        let limit = page_limit(q.limit);
        let before_id = match &q.cursor {
            Some(c) => c.parse::<i64>().map_err(|_| {
                StoreError::invalid("cursor", "cursor", "not a cursor from this API")
            })?,
            None => i64::MAX,
        };
        if q.flag.is_some() && q.project.is_none() {
            return Err(StoreError::invalid(
                "flag",
                "required",
                "filtering by flag needs the project too",
            ));
        }
        let resource = if q.flag.is_some() {
            Some("flag".to_owned())
        } else {
            q.resource.clone()
        };
        let mut pc = self.db.acquire().await?;
        let rows: Vec<AuditRow> = pc
            .conn()
            .fetch_all(
                "SELECT id, occurred_at, actor, action, resource, project_key, environment_key,
                        resource_key, request_id, before, after
                 FROM audit_log
                 WHERE id < $1
                   AND ($2 IS NULL OR project_key = $2)
                   AND ($3 IS NULL OR resource_key = $3)
                   AND ($4 IS NULL OR resource = $4)
                   AND ($5 IS NULL OR actor = $5)
                   AND ($6 IS NULL OR action = $6)
                   AND ($7 IS NULL OR occurred_at >= $7)
                   AND ($8 IS NULL OR occurred_at < $8)
                 ORDER BY id DESC LIMIT $9",
                args![
                    before_id,
                    q.project.clone(),
                    q.flag.clone(),
                    resource,
                    q.actor.clone(),
                    q.action.clone(),
                    q.from,
                    q.to,
                    limit + 1
                ],
            )
            .await?;
        let mut items: Vec<AuditEntry> = rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                occurred_at: r.occurred_at,
                actor: r.actor,
                action: r.action,
                resource: r.resource,
                project: r.project_key,
                environment: r.environment_key,
                key: r.resource_key,
                request_id: r.request_id,
                before: r.before.map(|j| j.0),
                after: r.after.map(|j| j.0),
            })
            .collect();
        Ok(paginate(&mut items, limit, |e| e.id.to_string()))
    }
}
