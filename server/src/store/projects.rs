//! Projects: the unit that owns environments and flag definitions.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use vexil_schema::Project;

use super::changes::{AuditRecord, audit};
use super::{OrGone, Page, Store, StoreError, WriteContext, encode, page_limit, unique_or};
use crate::db::{Conn, args, now};

/// A project as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ProjectView {
    /// Unique key.
    pub key: String,
    /// Human-readable name.
    pub name: String,
    /// Free-form description.
    pub description: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its name or description last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A change to a project's name or description.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct UpdateProject {
    /// New name.
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    #[schema(nullable = false)]
    pub name: Option<String>,
    /// New description.
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    #[schema(nullable = false)]
    pub description: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct ProjectRow {
    pub id: i64,
}

const MAX_NAME: usize = 256;
const MAX_DESCRIPTION: usize = 4096;

pub(crate) fn check_text(name: &str, description: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() {
        return Err(StoreError::invalid("name", "required", "must not be empty"));
    }
    if name.chars().count() > MAX_NAME {
        return Err(StoreError::invalid(
            "name",
            "limit_exceeded",
            format!("may be at most {MAX_NAME} characters"),
        ));
    }
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(StoreError::invalid(
            "description",
            "limit_exceeded",
            format!("may be at most {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(())
}

/// Finds a project's id by key.
pub(crate) async fn project_row(conn: &mut Conn<'_>, key: &str) -> Result<ProjectRow, StoreError> {
    conn.fetch_optional("SELECT id FROM projects WHERE key = $1", args![key])
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("project '{key}'")))
}

/// Locks a project's row for the rest of the transaction (PostgreSQL; SQLite serialises
/// writers already). Taken by the writes that add a flag or an environment, so that each sees
/// the other: a flag created while an environment is being created still gets a
/// configuration in it.
pub(crate) async fn lock_project(conn: &mut Conn<'_>, project_id: i64) -> Result<(), StoreError> {
    if let Conn::Pg(_) = conn {
        let _: Option<(i64,)> = conn
            .fetch_optional(
                "SELECT id FROM projects WHERE id = $1 FOR UPDATE",
                args![project_id],
            )
            .await?;
    }
    Ok(())
}

/// A project as the API shows it, by key.
async fn project_view(conn: &mut Conn<'_>, key: &str) -> Result<ProjectView, StoreError> {
    conn.fetch_optional(
        "SELECT key, name, description, created_at, updated_at FROM projects WHERE key = $1",
        args![key],
    )
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("project '{key}'")))
}

impl Store {
    /// Creates a project.
    pub async fn create_project(
        &self,
        ctx: &WriteContext,
        project: Project,
    ) -> Result<ProjectView, StoreError> {
        check_text(&project.name, &project.description)?;
        let mut tx = self.db.begin().await?;
        let mut c = tx.conn();
        let t = now();
        let view: ProjectView = c
            .fetch_one(
                "INSERT INTO projects (key, name, description, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $4)
                 RETURNING key, name, description, created_at, updated_at",
                args![
                    project.key.as_str(),
                    project.name.as_str(),
                    project.description.as_str(),
                    t
                ],
            )
            .await
            .map_err(|e| unique_or(e, || format!("project '{}'", project.key)))?;
        let rec = AuditRecord::new("project.create", "project", &view.key)
            .scoped(Some(&view.key), None)
            .after(encode(&view));
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// Lists projects by key, a page at a time.
    pub async fn list_projects(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<ProjectView>, StoreError> {
        let limit = page_limit(limit);
        let mut pc = self.db.acquire().await?;
        let mut items: Vec<ProjectView> = pc
            .conn()
            .fetch_all(
                "SELECT key, name, description, created_at, updated_at FROM projects
                 WHERE key > $1 ORDER BY key LIMIT $2",
                args![cursor.unwrap_or(""), limit + 1],
            )
            .await?;
        Ok(paginate(&mut items, limit, |p| p.key.clone()))
    }

    /// One project.
    pub async fn get_project(&self, key: &str) -> Result<ProjectView, StoreError> {
        let mut pc = self.db.acquire().await?;
        project_view(&mut pc.conn(), key).await
    }

    /// Changes a project's name or description.
    pub async fn update_project(
        &self,
        ctx: &WriteContext,
        key: &str,
        update: UpdateProject,
    ) -> Result<ProjectView, StoreError> {
        let mut tx = self.db.begin().await?;
        let mut c = tx.conn();
        let before = project_view(&mut c, key).await?;
        let name = update.name.unwrap_or_else(|| before.name.clone());
        let description = update
            .description
            .unwrap_or_else(|| before.description.clone());
        check_text(&name, &description)?;
        if name == before.name && description == before.description {
            // Nothing changes: no write, no audit entry.
            return Ok(before);
        }
        let t = now();
        let after: ProjectView = c
            .fetch_one(
                "UPDATE projects SET name = $2, description = $3, updated_at = $4 WHERE key = $1
                 RETURNING key, name, description, created_at, updated_at",
                args![key, name, description, t],
            )
            .await
            .or_gone(|| format!("project '{key}'"))?;
        let rec = AuditRecord::new("project.update", "project", key)
            .scoped(Some(key), None)
            .before(encode(&before))
            .after(encode(&after));
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Deletes a project with its environments, flags, segments and keys. The audit log keeps
    /// its entries.
    pub async fn delete_project(&self, ctx: &WriteContext, key: &str) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        let mut c = tx.conn();
        let before = project_view(&mut c, key).await?;
        let row = project_row(&mut c, key).await?;
        // SDK keys belong to one environment of the project: they go with it. Relay keys name
        // environments across projects; their scope shrinks with the cascade.
        c.execute(
            "DELETE FROM access_keys WHERE kind = 'sdk' AND id IN
                 (SELECT k.key_id FROM access_key_environments k
                  JOIN environments e ON e.id = k.environment_id WHERE e.project_id = $1)",
            args![row.id],
        )
        .await?;
        c.execute("DELETE FROM projects WHERE id = $1", args![row.id])
            .await?;
        let t = now();
        let rec = AuditRecord::new("project.delete", "project", key)
            .scoped(Some(key), None)
            .before(encode(&before));
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Cuts a page fetched with `limit + 1` rows down to `limit`, deriving the next cursor.
pub(crate) fn paginate<T>(
    items: &mut Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
) -> Page<T>
where
    T: Clone,
{
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(&cursor_of)
    } else {
        None
    };
    Page {
        items: std::mem::take(items),
        next_cursor,
    }
}
