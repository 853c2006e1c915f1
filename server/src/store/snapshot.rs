//! Whole-environment reads: the snapshot an SDK evaluates, and the change log since a version.

use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use vexil_schema::{EnvironmentSnapshot, Flag, FlagConfig, FlagDefinition};

use super::environments::environment_row;
use super::projects::project_row;
use super::{Store, StoreError, decode, to_u64};
use crate::db::args;

/// One committed change to an environment, as the change log records it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Change {
    /// The environment data version the change was committed as.
    pub version: i64,
    /// `put`, `delete` or `delta` (keys added to and removed from a segment's lists or a
    /// flag's targets).
    pub op: String,
    /// `flag` or `segment`.
    pub entity: String,
    /// The flag or segment key.
    pub key: String,
    /// For `put`: the whole flag (as SDKs see it) or segment; for `delta`: the keys added and
    /// removed (`{"key", "version", "included"|"excluded"}` or `{"key", "version", "targets"}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// When it was committed.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct SnapshotFlagRow {
    definition: Json<Value>,
    config: Json<Value>,
    version: i64,
}

impl Store {
    /// Everything an SDK needs to evaluate one environment, read from one consistent state:
    /// every live (unarchived) flag and every segment, with the environment's data version.
    pub async fn environment_snapshot(
        &self,
        project: &str,
        environment: &str,
    ) -> Result<EnvironmentSnapshot, StoreError> {
        let mut tx = self.db.begin_read().await?;
        let mut c = tx.conn();
        let p = project_row(&mut c, project).await?;
        let e = environment_row(&mut c, p.id, environment).await?;
        let (version,): (i64,) = c
            .fetch_one(
                "SELECT version FROM environments WHERE id = $1",
                args![e.id],
            )
            .await?;
        let rows: Vec<SnapshotFlagRow> = c
            .fetch_all(
                "SELECT f.definition, c.config, c.version FROM flag_configs c
                 JOIN flags f ON f.id = c.flag_id
                 WHERE c.environment_id = $1 AND NOT f.archived ORDER BY f.key",
                args![e.id],
            )
            .await?;
        let mut flags = Vec::with_capacity(rows.len());
        for r in rows {
            let def: FlagDefinition = decode("flag definition", r.definition.0)?;
            let mut cfg: FlagConfig = decode("flag configuration", r.config.0)?;
            cfg.version = to_u64(r.version);
            flags.push(Flag::new(&def, cfg));
        }
        let segments = self.load_segments(&mut c, e.id).await?;
        tx.commit().await?;
        Ok(EnvironmentSnapshot {
            version: to_u64(version),
            flags,
            segments,
        })
    }

    /// The changes committed to an environment after `after_version`, oldest first, at most
    /// `limit` of them.
    pub async fn changes_since(
        &self,
        project: &str,
        environment: &str,
        after_version: i64,
        limit: i64,
    ) -> Result<Vec<Change>, StoreError> {
        let mut pc = self.db.acquire().await?;
        let mut c = pc.conn();
        let p = project_row(&mut c, project).await?;
        let e = environment_row(&mut c, p.id, environment).await?;
        let rows =
            super::changes::change_log_since(&mut c, e.id, after_version, limit.clamp(1, 10_000))
                .await?;
        Ok(rows
            .into_iter()
            .map(|r| Change {
                version: r.version,
                op: r.op,
                entity: r.entity,
                key: r.key,
                payload: r.payload.map(|j| j.0),
                created_at: r.created_at,
            })
            .collect())
    }
}
