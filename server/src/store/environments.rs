//! Environments of a project. Creating one gives every flag of the project a configuration in
//! it, either fresh (off, serving the default variation) or copied from another environment
//! together with that environment's segments.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::types::Json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use vexil_schema::{EnvironmentKey, Flag, FlagConfig, FlagDefinition};

use super::changes::{AuditRecord, Entity, HistoryRecord, Op, audit, history, record_changes};
use super::projects::{check_text, lock_project, paginate, project_row};
use super::{
    Page, Store, StoreError, WriteContext, decode, encode, new_salt, page_limit, unique_or,
};
use crate::db::{Conn, args, now};

/// An environment as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct EnvironmentView {
    /// Key, unique within the project.
    pub key: String,
    /// Human-readable name.
    pub name: String,
    /// Free-form description.
    pub description: String,
    /// Data version: bumped by every committed change to the environment's flags or segments.
    pub version: i64,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its name or description last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Browser origins allowed to use the environment's client-side keys (`"*"`: any;
    /// empty: no browser).
    #[sqlx(json)]
    pub allowed_origins: Vec<String>,
}

/// A request to create an environment.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateEnvironment {
    /// Key, unique within the project.
    #[schema(value_type = String, pattern = "^[A-Za-z0-9._-]{1,256}$")]
    pub key: EnvironmentKey,
    /// Human-readable name.
    pub name: String,
    /// Free-form description.
    #[serde(default)]
    pub description: String,
    /// Copy every flag configuration and segment from this environment of the same project.
    #[serde(default)]
    pub copy_from: Option<String>,
}

/// A change to an environment's name or description.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct UpdateEnvironment {
    /// New name.
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    #[schema(nullable = false)]
    pub name: Option<String>,
    /// New description.
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    #[schema(nullable = false)]
    pub description: Option<String>,
    /// New list of allowed browser origins (`https://app.example.com`, or `"*"`).
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    #[schema(nullable = false)]
    pub allowed_origins: Option<Vec<String>>,
}

/// Most origins one environment may allow.
const MAX_ORIGINS: usize = 100;

/// Checks a list of allowed origins: `"*"`, or `scheme://host[:port]` with no path.
fn check_origins(origins: &[String]) -> Result<(), StoreError> {
    if origins.len() > MAX_ORIGINS {
        return Err(StoreError::invalid(
            "allowed_origins",
            "too_many",
            format!("at most {MAX_ORIGINS} origins"),
        ));
    }
    for (i, o) in origins.iter().enumerate() {
        let valid = o == "*"
            || o.split_once("://").is_some_and(|(scheme, host)| {
                !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                    && !host.is_empty()
                    && host.len() <= 255
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
            });
        if !valid {
            return Err(StoreError::invalid(
                format!("allowed_origins[{i}]"),
                "invalid_origin",
                "must be \"*\" or an origin such as https://app.example.com (no path)",
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct EnvironmentRow {
    pub id: i64,
    pub key: String,
}

#[derive(sqlx::FromRow)]
struct FlagDefRow {
    id: i64,
    definition: Json<Value>,
    archived: bool,
}

#[derive(sqlx::FromRow)]
struct ConfigRow {
    flag_id: i64,
    config: Json<Value>,
}

/// Finds an environment of a project.
pub(crate) async fn environment_row(
    conn: &mut Conn<'_>,
    project_id: i64,
    key: &str,
) -> Result<EnvironmentRow, StoreError> {
    conn.fetch_optional(
        "SELECT id, key FROM environments WHERE project_id = $1 AND key = $2",
        args![project_id, key],
    )
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("environment '{key}'")))
}

/// Every environment of a project, in id order (the order writers lock them in).
pub(crate) async fn environment_rows(
    conn: &mut Conn<'_>,
    project_id: i64,
) -> Result<Vec<EnvironmentRow>, StoreError> {
    Ok(conn
        .fetch_all(
            "SELECT id, key FROM environments WHERE project_id = $1 ORDER BY id",
            args![project_id],
        )
        .await?)
}

/// The variation a new flag serves while off and by default: `false` for a boolean flag,
/// otherwise the first.
pub(crate) fn default_variation(def: &FlagDefinition) -> usize {
    def.variations
        .iter()
        .position(|v| v.value == Value::Bool(false))
        .filter(|_| def.kind == vexil_schema::FlagKind::Boolean)
        .unwrap_or(0)
}

/// The configuration a flag starts with in an environment.
pub(crate) fn initial_config(def: &FlagDefinition) -> FlagConfig {
    let mut cfg = FlagConfig::serving(default_variation(def));
    cfg.salt = new_salt();
    cfg.version = 1;
    cfg
}

async fn fetch_view(conn: &mut Conn<'_>, id: i64) -> Result<EnvironmentView, StoreError> {
    Ok(conn
        .fetch_one(
            "SELECT key, name, description, version, created_at, updated_at, allowed_origins FROM environments
             WHERE id = $1",
            args![id],
        )
        .await?)
}

impl Store {
    /// Creates an environment, giving every flag of the project a configuration in it.
    pub async fn create_environment(
        &self,
        ctx: &WriteContext,
        project: &str,
        req: CreateEnvironment,
    ) -> Result<EnvironmentView, StoreError> {
        check_text(&req.name, &req.description)?;
        let mut tx = self.db.begin().await?;
        let mut c = tx.conn();
        let p = project_row(&mut c, project).await?;
        lock_project(&mut c, p.id).await?;
        let source = match &req.copy_from {
            Some(k) => Some(copy_source(&mut c, p.id, project, k).await?),
            None => None,
        };
        let t = now();
        let (id,): (i64,) = c
            .fetch_one(
                "INSERT INTO environments (project_id, key, name, description, version, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, 0, $5, $5) RETURNING id",
                args![p.id, req.key.as_str(), req.name.as_str(), req.description.as_str(), t],
            )
            .await
            .map_err(|e| unique_or(e, || format!("environment '{}'", req.key)))?;

        let configs = insert_flag_configs(&mut c, p.id, id, source.as_ref(), t).await?;
        let mut changes: Vec<_> = configs
            .iter()
            .filter(|fc| !fc.archived)
            .map(|fc| {
                let flag = Flag::new(&fc.definition, fc.config.clone());
                let key = fc.definition.key.to_string();
                (Op::Put, Entity::Flag, key, Some(encode(&flag)))
            })
            .collect();
        let mut copied_keys = 0;
        if let Some(src) = &source {
            c.execute(
                "INSERT INTO segments (environment_id, key, name, body,
                                       included_count, excluded_count, version, created_at, updated_at)
                 SELECT $1, key, name, body, included_count, excluded_count, 1, $2, $2
                 FROM segments WHERE environment_id = $3",
                args![id, t, src.id],
            )
            .await?;
            copied_keys = super::segment_keys::copy_environment(&mut c, src.id, id).await?;
            for s in self.load_segments(&mut c, id).await? {
                let key = s.key.to_string();
                changes.push((Op::Put, Entity::Segment, key, Some(encode(&s))));
            }
        }
        if !changes.is_empty() {
            let version = record_changes(&mut c, id, changes, t).await?;
            for fc in &configs {
                let rec = HistoryRecord {
                    flag_id: fc.flag_id,
                    environment_id: id,
                    config: &fc.config,
                    environment_version: version,
                    action: "environment.create",
                };
                history(&mut c, ctx, rec, t).await?;
            }
        }
        let view = fetch_view(&mut c, id).await?;
        let mut after = encode(&view);
        if let (Some(obj), Some(src)) = (after.as_object_mut(), &source) {
            obj.insert("copied_from".into(), json!(src.key));
        }
        let rec = AuditRecord::new("environment.create", "environment", &view.key)
            .scoped(Some(project), Some(&view.key))
            .after(after);
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        self.refresh_key_statistics(usize::try_from(copied_keys).unwrap_or(usize::MAX));
        Ok(view)
    }

    /// Lists a project's environments by key.
    pub async fn list_environments(
        &self,
        project: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<EnvironmentView>, StoreError> {
        let limit = page_limit(limit);
        let mut pc = self.db.acquire().await?;
        let mut c = pc.conn();
        let p = project_row(&mut c, project).await?;
        let mut items: Vec<EnvironmentView> = c
            .fetch_all(
                "SELECT key, name, description, version, created_at, updated_at, allowed_origins FROM environments
                 WHERE project_id = $1 AND key > $2 ORDER BY key LIMIT $3",
                args![p.id, cursor.unwrap_or(""), limit + 1],
            )
            .await?;
        Ok(paginate(&mut items, limit, |e| e.key.clone()))
    }

    /// One environment.
    pub async fn get_environment(
        &self,
        project: &str,
        key: &str,
    ) -> Result<EnvironmentView, StoreError> {
        let mut pc = self.db.acquire().await?;
        let mut c = pc.conn();
        let p = project_row(&mut c, project).await?;
        let e = environment_row(&mut c, p.id, key).await?;
        fetch_view(&mut c, e.id).await
    }

    /// Changes an environment's name or description.
    pub async fn update_environment(
        &self,
        ctx: &WriteContext,
        project: &str,
        key: &str,
        update: UpdateEnvironment,
    ) -> Result<EnvironmentView, StoreError> {
        let mut tx = self.db.begin().await?;
        let mut c = tx.conn();
        let p = project_row(&mut c, project).await?;
        let e = environment_row(&mut c, p.id, key).await?;
        let before = fetch_view(&mut c, e.id).await?;
        let name = update.name.unwrap_or_else(|| before.name.clone());
        let description = update
            .description
            .unwrap_or_else(|| before.description.clone());
        check_text(&name, &description)?;
        let origins = update
            .allowed_origins
            .unwrap_or_else(|| before.allowed_origins.clone());
        check_origins(&origins)?;
        if name == before.name
            && description == before.description
            && origins == before.allowed_origins
        {
            // Nothing changes: no write, no audit entry.
            return Ok(before);
        }
        let t = now();
        c.execute(
            "UPDATE environments SET name = $2, description = $3, updated_at = $4 WHERE id = $1",
            args![e.id, name, description, t],
        )
        .await?;
        if origins != before.allowed_origins {
            c.execute(
                "UPDATE environments SET allowed_origins = $2, origins_changes = origins_changes + 1
                 WHERE id = $1",
                args![e.id, Value::from(origins)],
            )
            .await?;
        }
        let after = fetch_view(&mut c, e.id).await?;
        let rec = AuditRecord::new("environment.update", "environment", key)
            .scoped(Some(project), Some(key))
            .before(encode(&before))
            .after(encode(&after));
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Deletes an environment with its configurations, segments and SDK keys.
    pub async fn delete_environment(
        &self,
        ctx: &WriteContext,
        project: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        let mut c = tx.conn();
        let p = project_row(&mut c, project).await?;
        lock_project(&mut c, p.id).await?;
        let e = environment_row(&mut c, p.id, key).await?;
        c.lock_environment(e.id).await?;
        let before = fetch_view(&mut c, e.id).await?;
        // SDK keys belong to exactly this environment: they go with it. Relay keys only lose
        // it from their scope (by cascade).
        c.execute(
            "DELETE FROM access_keys WHERE kind = 'sdk' AND id IN
                 (SELECT key_id FROM access_key_environments WHERE environment_id = $1)",
            args![e.id],
        )
        .await?;
        c.execute("DELETE FROM environments WHERE id = $1", args![e.id])
            .await?;
        let rec = AuditRecord::new("environment.delete", "environment", key)
            .scoped(Some(project), Some(key))
            .before(encode(&before));
        audit(&mut c, ctx, rec, now()).await?;
        tx.commit().await?;
        self.forget_index(e.id);
        Ok(())
    }
}

/// A flag's first configuration in a new environment.
struct NewConfig {
    flag_id: i64,
    archived: bool,
    definition: FlagDefinition,
    config: FlagConfig,
}

/// The environment a new one copies from (`copy_from`), locked so that its configurations
/// cannot change while they are copied.
async fn copy_source(
    c: &mut Conn<'_>,
    project_id: i64,
    project: &str,
    key: &str,
) -> Result<EnvironmentRow, StoreError> {
    let row = environment_row(c, project_id, key)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => StoreError::invalid(
                "copy_from",
                "unknown_environment",
                format!("environment '{key}' does not exist in project '{project}'"),
            ),
            e => e,
        })?;
    c.lock_environment(row.id).await?;
    Ok(row)
}

/// Gives every flag of the project a configuration in the new environment `id`: a copy of
/// `source`'s (at version 1), or the initial one (off).
async fn insert_flag_configs(
    c: &mut Conn<'_>,
    project_id: i64,
    id: i64,
    source: Option<&EnvironmentRow>,
    t: OffsetDateTime,
) -> Result<Vec<NewConfig>, StoreError> {
    let flags: Vec<FlagDefRow> = c
        .fetch_all(
            "SELECT id, definition, archived FROM flags WHERE project_id = $1 ORDER BY id",
            args![project_id],
        )
        .await?;
    let copied: Vec<ConfigRow> = match source {
        Some(src) => {
            c.fetch_all(
                "SELECT flag_id, config FROM flag_configs WHERE environment_id = $1",
                args![src.id],
            )
            .await?
        }
        None => Vec::new(),
    };
    let mut copied: std::collections::HashMap<i64, Value> = copied
        .into_iter()
        .map(|r| (r.flag_id, r.config.0))
        .collect();
    let mut configs = Vec::with_capacity(flags.len());
    for f in flags {
        let definition: FlagDefinition = decode("flag definition", f.definition.0)?;
        let config = match copied.remove(&f.id) {
            Some(v) => {
                let mut cfg: FlagConfig = decode("flag configuration", v)?;
                cfg.version = 1;
                cfg
            }
            None => initial_config(&definition),
        };
        c.execute(
            "INSERT INTO flag_configs (flag_id, environment_id, config, version, updated_at)
             VALUES ($1, $2, $3, 1, $4)",
            args![f.id, id, encode(&config), t],
        )
        .await?;
        configs.push(NewConfig {
            flag_id: f.id,
            archived: f.archived,
            definition,
            config,
        });
    }
    Ok(configs)
}
