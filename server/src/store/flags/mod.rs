//! Flags: definitions (per project) and configurations (per environment), their history,
//! rollback, archiving, deletion and the kill switch.
//!
//! This module holds the types, the row helpers and the definition's lifecycle (create,
//! read, list, update, archive, delete); [`config`] the per-environment configuration
//! writes, the kill switch and the version history.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::types::Json;
use time::OffsetDateTime;
use tokio::sync::OwnedMutexGuard;
use utoipa::ToSchema;
use vexil_schema::validate::{EnvironmentIndex, validate_config, validate_definition};
use vexil_schema::{Flag, FlagConfig, FlagDefinition, Prerequisite, Rule, Serve, Target};

use super::changes::{AuditRecord, Entity, HistoryRecord, Op, audit, history, record_changes};
use super::environments::{EnvironmentRow, environment_row, environment_rows, initial_config};
use super::projects::{ProjectRow, lock_project, paginate, project_row};
use super::{Page, Store, StoreError, WriteContext, decode, encode, page_limit, to_u64, unique_or};
use crate::db::{Conn, Tx, args, now};

mod config;

/// A flag with its definition and its configuration in every environment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlagView {
    /// The definition, shared by every environment.
    #[schema(value_type = crate::openapi::FlagDefinitionDoc)]
    pub definition: FlagDefinition,
    /// Whether the flag is archived (hidden from SDKs, configurations frozen).
    pub archived: bool,
    /// Definition version; the `ETag` of the flag.
    pub version: i64,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its definition last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Configuration per environment key.
    #[schema(value_type = BTreeMap<String, crate::openapi::FlagConfigDoc>)]
    pub environments: BTreeMap<String, FlagConfig>,
}

/// A flag in a listing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlagSummary {
    /// Key.
    pub key: String,
    /// Name.
    pub name: String,
    /// Kind of value served.
    pub kind: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Whether it is a temporary (release) flag.
    pub temporary: bool,
    /// Whether it is archived.
    pub archived: bool,
    /// Definition version.
    pub version: i64,
    /// When its definition last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A flag's configuration in one environment, with where it belongs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlagConfigView {
    /// The configuration; its `version` is the `ETag`.
    #[schema(value_type = crate::openapi::FlagConfigDoc)]
    pub config: FlagConfig,
    /// The environment's data version after the change that produced this configuration.
    pub environment_version: i64,
}

/// A partial update of a flag's configuration: each field present replaces the current one.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ConfigPatch {
    /// Turn targeting on or off.
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    #[schema(nullable = false)]
    pub on: Option<bool>,
    /// Variation served while off.
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    #[schema(nullable = false)]
    pub off_variation: Option<usize>,
    /// Individual targets.
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    #[schema(value_type = Option<Vec<crate::openapi::TargetDoc>>, nullable = false)]
    pub targets: Option<Vec<Target>>,
    /// Rules.
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    #[schema(value_type = Option<Vec<crate::openapi::RuleDoc>>, nullable = false)]
    pub rules: Option<Vec<Rule>>,
    /// What contexts matching nothing get.
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    #[schema(value_type = Option<crate::openapi::ServeDoc>, nullable = false)]
    pub fallthrough: Option<Serve>,
    /// Prerequisites.
    #[serde(default, deserialize_with = "crate::extract::non_null")]
    #[schema(value_type = Option<Vec<crate::openapi::PrerequisiteDoc>>, nullable = false)]
    pub prerequisites: Option<Vec<Prerequisite>>,
}

/// Filters for listing flags (the API parses and checks them: `api::query`).
#[derive(Debug, Clone, Default)]
pub struct FlagFilter {
    /// Only flags carrying this tag.
    pub tag: Option<String>,
    /// Case-insensitive substring of the key or name.
    pub q: Option<String>,
    /// `true`: only archived flags; `false`: only live ones; absent: both.
    pub archived: Option<bool>,
    /// `true`: only temporary flags; `false`: only permanent ones; absent: both.
    pub temporary: Option<bool>,
    /// The key to start after.
    pub cursor: Option<String>,
    /// Page size (1–500, default 50).
    pub limit: Option<u32>,
}

/// One version of a flag's configuration in an environment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlagVersion {
    /// The configuration version.
    pub version: i64,
    /// The environment's data version it was committed as.
    pub environment_version: i64,
    /// Who made it.
    pub actor: String,
    /// What made it (`flag.create`, `flag.config.update`, `flag.kill`, `flag.rollback`, …).
    pub action: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The configuration as it was.
    #[schema(value_type = crate::openapi::FlagConfigDoc)]
    pub config: FlagConfig,
}

/// What the kill switch did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KillResult {
    /// Environments where the flag was on and is now off.
    pub turned_off: Vec<KilledEnvironment>,
    /// Environments where it was already off (nothing written).
    pub already_off: Vec<String>,
}

/// One environment the kill switch turned a flag off in.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KilledEnvironment {
    /// Environment key.
    pub environment: String,
    /// The new configuration version.
    pub version: u64,
    /// The environment's new data version.
    pub environment_version: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct FlagRow {
    pub id: i64,
    pub definition: Json<Value>,
    pub archived: bool,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct ConfigRow {
    config: Json<Value>,
    version: i64,
}

#[derive(sqlx::FromRow)]
struct EnvConfigRow {
    key: String,
    config: Json<Value>,
}

pub(crate) async fn flag_row(
    conn: &mut Conn<'_>,
    project_id: i64,
    key: &str,
) -> Result<FlagRow, StoreError> {
    conn.fetch_optional(
        "SELECT id, definition, archived, version, created_at, updated_at FROM flags
         WHERE project_id = $1 AND key = $2",
        args![project_id, key],
    )
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("flag '{key}'")))
}

async fn config_row(
    conn: &mut Conn<'_>,
    flag_id: i64,
    environment_id: i64,
) -> Result<(FlagConfig, i64), StoreError> {
    let row: ConfigRow = conn
        .fetch_optional(
            "SELECT config, version FROM flag_configs WHERE flag_id = $1 AND environment_id = $2",
            args![flag_id, environment_id],
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt("flag has no configuration in environment".into()))?;
    let mut cfg: FlagConfig = decode("flag configuration", row.config.0)?;
    cfg.version = to_u64(row.version);
    Ok((cfg, row.version))
}

/// Finds a flag and one environment of a project, checking project, environment and flag in
/// that order so that a 404 names the first part missing.
async fn config_rows(
    c: &mut Conn<'_>,
    project: &str,
    key: &str,
    environment: &str,
) -> Result<(EnvironmentRow, FlagRow), StoreError> {
    let p = project_row(c, project).await?;
    let e = environment_row(c, p.id, environment).await?;
    let f = flag_row(c, p.id, key).await?;
    Ok((e, f))
}

/// Finds a flag and takes its row lock for the rest of the transaction.
async fn locked_flag(
    c: &mut Conn<'_>,
    project: &str,
    key: &str,
) -> Result<(ProjectRow, FlagRow), StoreError> {
    let p = project_row(c, project).await?;
    let f = flag_row(c, p.id, key).await?;
    c.lock_flag(f.id).await?;
    Ok((p, f))
}

/// Takes the write lock of every environment, in order, returning their data versions.
async fn lock_environments(
    c: &mut Conn<'_>,
    envs: &[EnvironmentRow],
) -> Result<Vec<i64>, StoreError> {
    let mut versions = Vec::with_capacity(envs.len());
    for e in envs {
        versions.push(c.lock_environment(e.id).await?);
    }
    Ok(versions)
}

/// Refuses (409, naming them) to remove or hide flag `key` while `blockers` require it.
fn required_by_none(key: &str, blockers: Vec<String>) -> Result<(), StoreError> {
    if blockers.is_empty() {
        return Ok(());
    }
    Err(StoreError::Conflict {
        message: format!(
            "flag '{key}' is a prerequisite of other flags: remove those prerequisites first"
        ),
        blockers,
    })
}

/// Fails with every collected validation error, if there is any.
fn no_errors(errors: Vec<vexil_schema::validate::FieldError>) -> Result<(), StoreError> {
    if errors.is_empty() {
        return Ok(());
    }
    Err(StoreError::Invalid(
        vexil_schema::validate::ValidationErrors { errors },
    ))
}

fn check_if_match(expected: Option<u64>, current: i64) -> Result<(), StoreError> {
    match expected {
        Some(e) if e != to_u64(current) => Err(StoreError::PreconditionFailed {
            current: to_u64(current),
        }),
        _ => Ok(()),
    }
}

fn check_path_key(def: &FlagDefinition, key: &str) -> Result<(), StoreError> {
    if def.key != key {
        return Err(StoreError::invalid(
            "key",
            "key_mismatch",
            format!(
                "the body names flag '{}' but the path names '{key}'; keys cannot be changed",
                def.key
            ),
        ));
    }
    Ok(())
}

async fn replace_tags(
    conn: &mut Conn<'_>,
    flag_id: i64,
    tags: &[String],
) -> Result<(), StoreError> {
    conn.execute("DELETE FROM flag_tags WHERE flag_id = $1", args![flag_id])
        .await?;
    for tag in tags {
        conn.execute(
            "INSERT INTO flag_tags (flag_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            args![flag_id, tag.as_str()],
        )
        .await?;
    }
    Ok(())
}

impl Store {
    /// Starts a write to a flag of every environment of its project: checks that the flag
    /// exists, takes this process's locks on those environments, then begins the transaction.
    /// Keep the guards until the transaction ends.
    async fn begin_flag_write(
        &self,
        project: &str,
        key: &str,
    ) -> Result<(Vec<OwnedMutexGuard<()>>, Tx), StoreError> {
        let envs = {
            let mut pc = self.db.acquire().await?;
            let mut c = pc.conn();
            let p = project_row(&mut c, project).await?;
            flag_row(&mut c, p.id, key).await?;
            environment_rows(&mut c, p.id).await?
        };
        let local = self.local_locks(envs.iter().map(|e| e.id).collect()).await;
        Ok((local, self.db.begin().await?))
    }

    /// The flag and environment ids for a configuration path, in one query when all exist.
    async fn resolve_config(
        &self,
        project: &str,
        key: &str,
        environment: &str,
    ) -> Result<(i64, i64), StoreError> {
        let mut pc = self.db.acquire().await?;
        let mut c = pc.conn();
        let ids: Option<(i64, i64)> = c
            .fetch_optional(
                "SELECT f.id, e.id FROM projects p
                 JOIN environments e ON e.project_id = p.id
                 JOIN flags f ON f.project_id = p.id
                 WHERE p.key = $1 AND e.key = $2 AND f.key = $3",
                args![project, environment, key],
            )
            .await?;
        if let Some(ids) = ids {
            return Ok(ids);
        }
        // Say which part is missing.
        config_rows(&mut c, project, key, environment).await?;
        Err(StoreError::NotFound(format!("flag '{key}'")))
    }

    /// Creates a flag, with a configuration in every environment of its project (off,
    /// serving the default variation, a fresh salt).
    pub async fn create_flag(
        &self,
        ctx: &WriteContext,
        project: &str,
        definition: FlagDefinition,
    ) -> Result<FlagView, StoreError> {
        let def = validate_definition(definition)?.into_inner();
        let envs = {
            let mut pc = self.db.acquire().await?;
            let mut c = pc.conn();
            let p = project_row(&mut c, project).await?;
            environment_rows(&mut c, p.id).await?
        };
        let _local = self.local_locks(envs.iter().map(|e| e.id).collect()).await;
        let mut tx = self.db.begin().await?;
        let mut c = tx.conn();
        let p = project_row(&mut c, project).await?;
        lock_project(&mut c, p.id).await?;
        let envs = environment_rows(&mut c, p.id).await?;
        let versions = lock_environments(&mut c, &envs).await?;
        let t = now();
        let def_json = encode(&def);
        let (id,): (i64,) = c
            .fetch_one(
                "INSERT INTO flags (project_id, key, name, definition, archived, version, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, FALSE, 1, $5, $5) RETURNING id",
                args![p.id, def.key.as_str(), def.name.as_str(), def_json.clone(), t],
            )
            .await
            .map_err(|e| unique_or(e, || format!("flag '{}'", def.key)))?;
        replace_tags(&mut c, id, &def.tags).await?;
        let mut environments = BTreeMap::new();
        let mut advanced = Vec::with_capacity(envs.len());
        for (e, from) in envs.iter().zip(versions) {
            let cfg = initial_config(&def);
            c.execute(
                "INSERT INTO flag_configs (flag_id, environment_id, config, version, updated_at)
                 VALUES ($1, $2, $3, 1, $4)",
                args![id, e.id, encode(&cfg), t],
            )
            .await?;
            let flag = Flag::new(&def, cfg.clone());
            let to = record_changes(
                &mut c,
                e.id,
                vec![(
                    Op::Put,
                    Entity::Flag,
                    def.key.to_string(),
                    Some(encode(&flag)),
                )],
                t,
            )
            .await?;
            let rec = HistoryRecord {
                flag_id: id,
                environment_id: e.id,
                config: &cfg,
                environment_version: to,
                action: "flag.create",
            };
            history(&mut c, ctx, rec, t).await?;
            advanced.push((e.id, from, to, cfg.clone()));
            environments.insert(e.key.clone(), cfg);
        }
        let view = FlagView {
            definition: def,
            archived: false,
            version: 1,
            created_at: t,
            updated_at: t,
            environments,
        };
        let rec = AuditRecord::new("flag.create", "flag", view.definition.key.as_str())
            .scoped(Some(project), None)
            .after(encode(&view));
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        for (env_id, from, to, cfg) in advanced {
            self.advance_index(env_id, from, to, |ix| {
                ix.insert_flag_config(&view.definition, &cfg)
            });
        }
        Ok(view)
    }

    /// A flag with its configuration in every environment.
    pub async fn get_flag(&self, project: &str, key: &str) -> Result<FlagView, StoreError> {
        let mut pc = self.db.acquire().await?;
        let mut c = pc.conn();
        let p = project_row(&mut c, project).await?;
        let f = flag_row(&mut c, p.id, key).await?;
        flag_view(&mut c, f).await
    }

    /// Lists a project's flags by key, filtered by tag, text and archived state.
    pub async fn list_flags(
        &self,
        project: &str,
        filter: &FlagFilter,
    ) -> Result<Page<FlagSummary>, StoreError> {
        let limit = page_limit(filter.limit);
        let pattern = filter.q.as_deref().map(|q| {
            let escaped = q
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let mut pc = self.db.acquire().await?;
        let mut c = pc.conn();
        let p = project_row(&mut c, project).await?;
        // Every filter runs in SQL, walking the (project, key) index in key order, so a page
        // costs the same at 10,000 flags as at 10. `temporary` lives in the definition
        // document: read with each engine's JSON operator.
        macro_rules! list_sql {
            ($temporary:literal) => {
                concat!(
                    "SELECT id, definition, archived, version, created_at, updated_at FROM flags f
                     WHERE project_id = $1 AND key > $2
                       AND ($3 IS NULL OR EXISTS (SELECT 1 FROM flag_tags t WHERE t.flag_id = f.id AND t.tag = $3))
                       AND ($4 IS NULL OR LOWER(key) LIKE $4 ESCAPE '\\' OR LOWER(name) LIKE $4 ESCAPE '\\')
                       AND ($5 IS NULL OR archived = $5)
                       AND ($6 IS NULL OR ",
                    $temporary,
                    " = $6)
                     ORDER BY key LIMIT $7"
                )
            };
        }
        let sql = match &c {
            Conn::Pg(_) => list_sql!("COALESCE((definition->>'temporary')::boolean, FALSE)"),
            Conn::Lite(_) => list_sql!("COALESCE(json_extract(definition, '$.temporary'), 0)"),
        };
        let rows: Vec<FlagRow> = c
            .fetch_all(
                sql,
                args![
                    p.id,
                    filter.cursor.as_deref().unwrap_or(""),
                    filter.tag.clone(),
                    pattern,
                    crate::db::Arg::OptBool(filter.archived),
                    crate::db::Arg::OptBool(filter.temporary),
                    limit + 1
                ],
            )
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows {
            let def: FlagDefinition = decode("flag definition", r.definition.0)?;
            items.push(FlagSummary {
                key: def.key.to_string(),
                name: def.name,
                kind: def.kind.as_str().to_owned(),
                tags: def.tags,
                temporary: def.temporary,
                archived: r.archived,
                version: r.version,
                updated_at: r.updated_at,
            });
        }
        Ok(paginate(&mut items, limit, |f| f.key.clone()))
    }

    /// Replaces a flag's definition. Every environment's configuration must stay valid
    /// against it (variation indexes in range), and so must other flags' prerequisites on it.
    pub async fn update_definition(
        &self,
        ctx: &WriteContext,
        project: &str,
        key: &str,
        definition: FlagDefinition,
        if_match: Option<u64>,
    ) -> Result<FlagView, StoreError> {
        check_path_key(&definition, key)?;
        let def = validate_definition(definition)?.into_inner();
        let (_local, mut tx) = self.begin_flag_write(project, key).await?;
        let mut c = tx.conn();
        let (p, _) = locked_flag(&mut c, project, key).await?;
        let envs = environment_rows(&mut c, p.id).await?;
        let f = flag_row(&mut c, p.id, key).await?;
        check_if_match(if_match, f.version)?;
        let before: FlagDefinition = decode("flag definition", f.definition.0.clone())?;

        let mut errors = Vec::new();
        let mut staged = Vec::with_capacity(envs.len());
        for e in &envs {
            let from = c.lock_environment(e.id).await?;
            let mut ix = self.take_index(&mut c, e.id, from).await?;
            let (cfg, _) = config_row(&mut c, f.id, e.id).await?;
            if !f.archived {
                ix.insert_definition(&def);
            }
            let prefix = format!("environments.{}", e.key);
            if let Err(errs) = validate_config(&def, cfg.clone(), &ix) {
                errors.extend(errs.with_prefix(&prefix).errors);
            }
            for dependent in ix.flags_requiring(key) {
                let needs = ix
                    .flag(dependent)
                    .into_iter()
                    .flat_map(|d| d.prerequisites.iter())
                    .filter(|pr| pr.key == key)
                    .map(|pr| pr.variation)
                    .max()
                    .unwrap_or(0);
                if needs >= def.variations.len() {
                    errors.push(vexil_schema::validate::FieldError {
                        path: "variations".into(),
                        rule: vexil_schema::validate::rules::VARIATION_INDEX,
                        message: format!(
                            "flag '{dependent}' in environment '{}' requires variation {needs} of this flag",
                            e.key
                        ),
                    });
                }
            }
            staged.push((e, from, ix, cfg));
        }
        no_errors(errors)?;
        let t = now();
        let version = f.version + 1;
        c.execute(
            "UPDATE flags SET definition = $2, name = $3, version = $4, updated_at = $5 WHERE id = $1",
            args![f.id, encode(&def), def.name.as_str(), version, t],
        )
        .await?;
        replace_tags(&mut c, f.id, &def.tags).await?;
        let mut cache = Vec::new();
        let mut environments = BTreeMap::new();
        for (e, from, ix, cfg) in staged {
            // A running experiment on this flag starts a new iteration if its variations changed.
            crate::experiments::on_flag_config_written(&mut c, f.id, e.id, &def, &cfg, t).await?;
            if !f.archived {
                let flag = Flag::new(&def, cfg.clone());
                let to = record_changes(
                    &mut c,
                    e.id,
                    vec![(Op::Put, Entity::Flag, key.to_owned(), Some(encode(&flag)))],
                    t,
                )
                .await?;
                cache.push((e.id, to, ix));
            } else {
                cache.push((e.id, from, ix));
            }
            environments.insert(e.key.clone(), cfg);
        }
        let view = FlagView {
            definition: def,
            archived: f.archived,
            version,
            created_at: f.created_at,
            updated_at: t,
            environments,
        };
        let rec = AuditRecord::new("flag.update", "flag", key)
            .scoped(Some(project), None)
            .before(encode(&before))
            .after(encode(&view.definition));
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        for (env_id, v, ix) in cache {
            self.put_index(env_id, v, ix);
        }
        Ok(view)
    }

    /// Archives (hides from SDKs, freezes) or unarchives a flag. Archiving is refused while
    /// live flags require it; unarchiving is refused if its configurations no longer validate
    /// (e.g. a prerequisite was deleted meanwhile).
    pub async fn set_archived(
        &self,
        ctx: &WriteContext,
        project: &str,
        key: &str,
        archived: bool,
    ) -> Result<FlagView, StoreError> {
        let (_local, mut tx) = self.begin_flag_write(project, key).await?;
        let mut c = tx.conn();
        let (p, _) = locked_flag(&mut c, project, key).await?;
        let f = flag_row(&mut c, p.id, key).await?;
        let def: FlagDefinition = decode("flag definition", f.definition.0.clone())?;
        let envs = environment_rows(&mut c, p.id).await?;
        if f.archived == archived {
            drop(tx);
            return self.get_flag(project, key).await;
        }
        let mut blockers = Vec::new();
        let mut errors = Vec::new();
        let mut staged = Vec::new();
        for e in &envs {
            let from = c.lock_environment(e.id).await?;
            let mut ix = self.take_index(&mut c, e.id, from).await?;
            let (cfg, _) = config_row(&mut c, f.id, e.id).await?;
            if archived {
                for d in ix.flags_requiring(key) {
                    if d != key {
                        blockers.push(format!("flag '{d}' in environment '{}'", e.key));
                    }
                }
                ix.remove_flag(key);
            } else {
                match validate_config(&def, cfg.clone(), &ix) {
                    Ok(_) => ix.insert_flag_config(&def, &cfg),
                    Err(errs) => {
                        errors.extend(errs.with_prefix(&format!("environments.{}", e.key)).errors)
                    }
                }
            }
            staged.push((e, ix, cfg));
        }
        required_by_none(key, blockers)?;
        no_errors(errors)?;
        let t = now();
        c.execute(
            "UPDATE flags SET archived = $2, updated_at = $3 WHERE id = $1",
            args![f.id, archived, t],
        )
        .await?;
        let mut cache = Vec::new();
        for (e, ix, cfg) in staged {
            let change = if archived {
                (Op::Delete, Entity::Flag, key.to_owned(), None)
            } else {
                let flag = Flag::new(&def, cfg);
                (Op::Put, Entity::Flag, key.to_owned(), Some(encode(&flag)))
            };
            let to = record_changes(&mut c, e.id, vec![change], t).await?;
            cache.push((e.id, to, ix));
        }
        let action = if archived {
            "flag.archive"
        } else {
            "flag.unarchive"
        };
        let rec = AuditRecord::new(action, "flag", key)
            .scoped(Some(project), None)
            .before(json!({ "archived": !archived }))
            .after(json!({ "archived": archived }));
        audit(&mut c, ctx, rec, t).await?;
        let row = flag_row(&mut c, p.id, key).await?;
        let view = flag_view(&mut c, row).await?;
        tx.commit().await?;
        for (env_id, v, ix) in cache {
            self.put_index(env_id, v, ix);
        }
        Ok(view)
    }

    /// Deletes a flag and its configurations and history. Refused (409, naming them) while
    /// another flag names it as a prerequisite in any environment.
    pub async fn delete_flag(
        &self,
        ctx: &WriteContext,
        project: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        let (_local, mut tx) = self.begin_flag_write(project, key).await?;
        let mut c = tx.conn();
        let (p, f) = locked_flag(&mut c, project, key).await?;
        let envs = environment_rows(&mut c, p.id).await?;
        let versions = lock_environments(&mut c, &envs).await?;
        // Every configuration in the project, archived flags included: an archived flag
        // that requires this one could otherwise never be unarchived cleanly.
        let rows: Vec<(String, String, Json<Value>)> = c
            .fetch_all(
                "SELECT f.key, e.key, c.config FROM flag_configs c
                 JOIN flags f ON f.id = c.flag_id JOIN environments e ON e.id = c.environment_id
                 WHERE f.project_id = $1 AND f.id <> $2 ORDER BY f.key, e.key",
                args![p.id, f.id],
            )
            .await?;
        let mut blockers = Vec::new();
        for (flag_key, env_key, cfg) in rows {
            let cfg: FlagConfig = decode("flag configuration", cfg.0)?;
            if cfg.prerequisites.iter().any(|pr| pr.key == key) {
                blockers.push(format!("flag '{flag_key}' in environment '{env_key}'"));
            }
        }
        required_by_none(key, blockers)?;
        let before = flag_view(&mut c, f.clone()).await?;
        c.execute("DELETE FROM flags WHERE id = $1", args![f.id])
            .await?;
        let t = now();
        let mut advanced = Vec::new();
        if !f.archived {
            for (e, from) in envs.iter().zip(versions) {
                let to = record_changes(
                    &mut c,
                    e.id,
                    vec![(Op::Delete, Entity::Flag, key.to_owned(), None)],
                    t,
                )
                .await?;
                advanced.push((e.id, from, to));
            }
        }
        let rec = AuditRecord::new("flag.delete", "flag", key)
            .scoped(Some(project), None)
            .before(encode(&before));
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        for (env_id, from, to) in advanced {
            self.advance_index(env_id, from, to, |ix| {
                ix.remove_flag(key);
            });
        }
        Ok(())
    }
}

async fn flag_view(c: &mut Conn<'_>, f: FlagRow) -> Result<FlagView, StoreError> {
    let definition: FlagDefinition = decode("flag definition", f.definition.0)?;
    let rows: Vec<EnvConfigRow> = c
        .fetch_all(
            "SELECT e.key, c.config FROM flag_configs c JOIN environments e ON e.id = c.environment_id
             WHERE c.flag_id = $1",
            args![f.id],
        )
        .await?;
    let mut environments = BTreeMap::new();
    for r in rows {
        environments.insert(r.key, decode("flag configuration", r.config.0)?);
    }
    Ok(FlagView {
        definition,
        archived: f.archived,
        version: f.version,
        created_at: f.created_at,
        updated_at: f.updated_at,
        environments,
    })
}
