//! What every write to an environment shares: the version bump, the change-log row, the audit
//! entry, the flag history row, and the validation index (cached per environment version).
//!
//! Every statement on the change log lives here, each in one helper with its dialects inside:
//! appending ([`record_changes`]), reading after a version ([`Store::change_log_after`] for
//! the feed, [`change_log_since`] for the API) and compaction
//! ([`Store::compact_change_log`]).

use std::sync::Arc;

use tokio::sync::OwnedMutexGuard;

use serde_json::Value;
use sqlx::types::Json;
use time::OffsetDateTime;
use vexil_schema::validate::EnvironmentIndex;
use vexil_schema::{FlagConfig, FlagDefinition, Segment};

use super::{Store, StoreError, WriteContext, decode};
use crate::db::{Conn, args};

/// One change-log row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LogEntry {
    /// The environment version the change was committed as.
    pub version: i64,
    /// `put`, `delete` or `delta`.
    pub op: String,
    /// `flag` or `segment`.
    pub entity: String,
    /// The flag or segment key.
    pub key: String,
    /// For `put`: the flag (as SDKs see it) or segment; for `delta`: the segment or targets
    /// delta.
    pub payload: Option<Json<Value>>,
    /// When it was committed.
    pub created_at: OffsetDateTime,
    /// The W3C trace context of the write that made it (`None` with tracing off, or for rows
    /// read by queries that do not select it).
    #[sqlx(default)]
    pub traceparent: Option<String>,
}

/// A catch-up read: the environment's version beside each change-log row (one row with no
/// log columns when there are none).
#[derive(sqlx::FromRow)]
struct CatchUpRow {
    environment_version: i64,
    version: Option<i64>,
    op: Option<String>,
    entity: Option<String>,
    key: Option<String>,
    payload: Option<Json<Value>>,
    created_at: Option<OffsetDateTime>,
    traceparent: Option<String>,
}

impl CatchUpRow {
    fn entry(self) -> Option<LogEntry> {
        Some(LogEntry {
            version: self.version?,
            op: self.op?,
            entity: self.entity?,
            key: self.key?,
            payload: self.payload,
            created_at: self.created_at?,
            traceparent: self.traceparent,
        })
    }
}

/// At most `limit` change-log rows of an environment after version `after`, oldest first.
pub(crate) async fn change_log_since(
    c: &mut Conn<'_>,
    environment_id: i64,
    after: i64,
    limit: i64,
) -> Result<Vec<LogEntry>, StoreError> {
    Ok(c.fetch_all(
        "SELECT version, op, entity, key, payload, created_at FROM change_log
         WHERE environment_id = $1 AND version > $2 ORDER BY version, id LIMIT $3",
        args![environment_id, after, limit],
    )
    .await?)
}

/// Change-log operation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Put,
    Delete,
    /// Keys added to or removed from a segment's lists or a flag's targets: the payload is a
    /// `vexil_schema::delta::SegmentDelta` or `TargetsDelta` (the effective one), so catch-up
    /// and resume replay the edit, not the whole item.
    Delta,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Delete => "delete",
            Op::Delta => "delta",
        }
    }
}

/// Change-log entity.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Entity {
    Flag,
    Segment,
}

impl Entity {
    fn as_str(self) -> &'static str {
        match self {
            Entity::Flag => "flag",
            Entity::Segment => "segment",
        }
    }
}

/// Bumps an environment's data version and appends one change-log row per change. The caller
/// holds the environment lock. Returns the new version.
///
/// On PostgreSQL the bump and the first row are one statement (a data-modifying CTE), as
/// this runs while the environment's writers queue for its lock; SQLite runs in process and
/// has no data-modifying CTEs, so it takes one statement each.
pub(crate) async fn record_changes(
    conn: &mut Conn<'_>,
    environment_id: i64,
    changes: Vec<(Op, Entity, String, Option<Value>)>,
    now: OffsetDateTime,
) -> Result<i64, StoreError> {
    // The write's trace context: the feed of every server continues it (issue 16).
    let traceparent = crate::telemetry::current_traceparent();
    let mut changes = changes.into_iter();
    let version = match (&*conn, changes.next()) {
        (Conn::Pg(_), Some((op, entity, key, payload))) => {
            let (version,): (i64,) = conn
                .fetch_one(
                    "WITH env AS (
                         UPDATE environments SET version = version + 1 WHERE id = $1
                         RETURNING version
                     )
                     INSERT INTO change_log (environment_id, version, op, entity, key, payload, created_at, traceparent)
                     SELECT $1, env.version, $2, $3, $4, $5, $6, $7 FROM env
                     RETURNING version",
                    args![
                        environment_id,
                        op.as_str(),
                        entity.as_str(),
                        key,
                        payload,
                        now,
                        traceparent.clone()
                    ],
                )
                .await?;
            version
        }
        (_, first) => {
            let (version,): (i64,) = conn
                .fetch_one(
                    "UPDATE environments SET version = version + 1 WHERE id = $1 RETURNING version",
                    args![environment_id],
                )
                .await?;
            if let Some(change) = first {
                append_change(conn, environment_id, version, change, now, &traceparent).await?;
            }
            version
        }
    };
    for change in changes {
        append_change(conn, environment_id, version, change, now, &traceparent).await?;
    }
    Ok(version)
}

async fn append_change(
    conn: &mut Conn<'_>,
    environment_id: i64,
    version: i64,
    (op, entity, key, payload): (Op, Entity, String, Option<Value>),
    now: OffsetDateTime,
    traceparent: &Option<String>,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO change_log (environment_id, version, op, entity, key, payload, created_at, traceparent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        args![
            environment_id,
            version,
            op.as_str(),
            entity.as_str(),
            key,
            payload,
            now,
            traceparent.clone()
        ],
    )
    .await?;
    Ok(())
}

/// One audit entry to append.
#[derive(Debug)]
pub(crate) struct AuditRecord<'a> {
    pub action: &'a str,
    pub resource: &'a str,
    pub project: Option<&'a str>,
    pub environment: Option<&'a str>,
    pub key: Option<&'a str>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl<'a> AuditRecord<'a> {
    /// An entry for `action` on the `resource` named `key`, outside any project, with neither
    /// side of the change recorded yet.
    pub(crate) fn new(action: &'a str, resource: &'a str, key: &'a str) -> Self {
        Self {
            action,
            resource,
            project: None,
            environment: None,
            key: Some(key),
            before: None,
            after: None,
        }
    }

    /// Places the entry in a project and, optionally, one of its environments.
    pub(crate) fn scoped(self, project: Option<&'a str>, environment: Option<&'a str>) -> Self {
        Self {
            project,
            environment,
            ..self
        }
    }

    /// Records the resource as it was before the change.
    pub(crate) fn before(self, before: Value) -> Self {
        Self {
            before: Some(before),
            ..self
        }
    }

    /// Records the resource as it is after the change.
    pub(crate) fn after(self, after: Value) -> Self {
        Self {
            after: Some(after),
            ..self
        }
    }
}

/// Appends an audit entry in the caller's transaction.
pub(crate) async fn audit(
    conn: &mut Conn<'_>,
    ctx: &WriteContext,
    rec: AuditRecord<'_>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    // The webhook outbox: written in this same transaction, so a committed change is never
    // without its deliveries and a rolled-back one never has any.
    crate::delivery::webhooks::enqueue(conn, ctx, &rec, now).await?;
    conn.execute(
        "INSERT INTO audit_log (occurred_at, actor, actor_token_id, action, resource, project_key,
                                environment_key, resource_key, request_id, before, after)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        args![
            now,
            ctx.actor.name.as_str(),
            ctx.actor.token_id,
            rec.action,
            rec.resource,
            rec.project,
            rec.environment,
            rec.key,
            ctx.request_id.clone(),
            rec.before,
            rec.after
        ],
    )
    .await?;
    Ok(())
}

/// One row of a flag's configuration history.
#[derive(Debug)]
pub(crate) struct HistoryRecord<'a> {
    pub flag_id: i64,
    pub environment_id: i64,
    pub config: &'a FlagConfig,
    pub environment_version: i64,
    pub action: &'a str,
}

/// Appends a flag configuration version to its history.
pub(crate) async fn history(
    conn: &mut Conn<'_>,
    ctx: &WriteContext,
    rec: HistoryRecord<'_>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let version = i64::try_from(rec.config.version).unwrap_or(i64::MAX);
    conn.execute(
        "INSERT INTO flag_config_versions
             (flag_id, environment_id, version, config, environment_version, actor, action, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        args![
            rec.flag_id,
            rec.environment_id,
            version,
            super::encode(rec.config),
            rec.environment_version,
            ctx.actor.name.as_str(),
            rec.action,
            now
        ],
    )
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct IndexFlagRow {
    definition: Json<Value>,
    config: Json<Value>,
}

#[derive(sqlx::FromRow)]
struct IndexSegmentRow {
    body: Json<Value>,
}

impl Store {
    /// The environment's current version and its change-log rows for versions `after + 1`
    /// to `after + versions`, oldest first; `None` if the environment is gone.
    ///
    /// One statement, so one snapshot: read apart, a commit landing between the two reads
    /// would look like a version without log rows (a gap) and force a needless rebuild.
    pub(crate) async fn change_log_after(
        &self,
        environment_id: i64,
        after: i64,
        versions: i64,
    ) -> Result<Option<(i64, Vec<LogEntry>)>, StoreError> {
        let mut pc = self.db.acquire().await?;
        let rows: Vec<CatchUpRow> = pc
            .conn()
            .fetch_all(
                "SELECT e.version AS environment_version, l.version, l.op, l.entity, l.key,
                        l.payload, l.created_at, l.traceparent
                 FROM environments e
                 LEFT JOIN change_log l ON l.environment_id = e.id
                      AND l.version > $2 AND l.version <= $2 + $3
                 WHERE e.id = $1
                 ORDER BY l.version, l.id",
                args![environment_id, after, versions],
            )
            .await?;
        let Some(version) = rows.first().map(|r| r.environment_version) else {
            return Ok(None);
        };
        Ok(Some((
            version,
            rows.into_iter().filter_map(CatchUpRow::entry).collect(),
        )))
    }

    /// Deletes the change-log rows more than `keep` versions behind their environment or
    /// committed before `cutoff`; returns how many.
    pub(crate) async fn compact_change_log(
        &self,
        keep: i64,
        cutoff: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut pc = self.db.acquire().await?;
        Ok(pc
            .conn()
            .execute(
                "DELETE FROM change_log WHERE created_at < $2 OR version <= (
                     SELECT e.version - $1 FROM environments e WHERE e.id = change_log.environment_id
                 )",
                args![keep, cutoff],
            )
            .await?)
    }

    /// The validation index of an environment at `version` (which the caller read under the
    /// environment lock), taken out of the cache when it describes that version, else loaded.
    /// Give it back with [`Store::put_index`] after the commit.
    pub(crate) async fn take_index(
        &self,
        conn: &mut Conn<'_>,
        environment_id: i64,
        version: i64,
    ) -> Result<EnvironmentIndex, StoreError> {
        if let Some(ix) = self.take_cached(environment_id, version) {
            return Ok(ix);
        }
        tracing::debug!(environment_id, version, "loading the validation index");
        let flags: Vec<IndexFlagRow> = conn
            .fetch_all(
                "SELECT f.definition, c.config FROM flag_configs c JOIN flags f ON f.id = c.flag_id
                 WHERE c.environment_id = $1 AND NOT f.archived",
                args![environment_id],
            )
            .await?;
        let segments: Vec<IndexSegmentRow> = conn
            .fetch_all(
                "SELECT body FROM segments WHERE environment_id = $1",
                args![environment_id],
            )
            .await?;
        let mut index = EnvironmentIndex::new();
        for row in flags {
            let def: FlagDefinition = decode("flag definition", row.definition.0)?;
            let cfg: FlagConfig = decode("flag configuration", row.config.0)?;
            index.insert_flag_config(&def, &cfg);
        }
        for row in segments {
            let seg: Segment = decode("segment", row.body.0)?;
            index.insert_segment(&seg);
        }
        Ok(index)
    }

    fn take_cached(&self, environment_id: i64, version: i64) -> Option<EnvironmentIndex> {
        let mut cache = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        match cache.remove(&environment_id) {
            Some((v, ix)) if v == version => Some(ix),
            _ => None,
        }
    }

    /// Caches the index of an environment at `version`. Call after the commit that produced
    /// that version; an index for an older version never replaces a newer one.
    pub(crate) fn put_index(&self, environment_id: i64, version: i64, index: EnvironmentIndex) {
        let mut cache = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(&environment_id) {
            Some((v, _)) if *v > version => {}
            _ => {
                cache.insert(environment_id, (version, index));
            }
        }
    }

    /// After a commit that took an environment from `from` to `to` without needing the index,
    /// applies the change to a cached index of version `from` (if any) and re-tags it.
    pub(crate) fn advance_index(
        &self,
        environment_id: i64,
        from: i64,
        to: i64,
        apply: impl FnOnce(&mut EnvironmentIndex),
    ) {
        let mut cache = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, ix)) = cache.get_mut(&environment_id) {
            if *v == from {
                apply(ix);
                *v = to;
            } else if *v < to {
                cache.remove(&environment_id);
            }
        }
    }

    /// Forgets an environment's cached index.
    pub(crate) fn forget_index(&self, environment_id: i64) {
        let mut cache = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        cache.remove(&environment_id);
    }

    /// Serialises this process's writers of the given environments (in id order, the order
    /// the database locks are taken in), so that each finds the validation index its
    /// predecessor cached instead of reloading it, and waits here rather than holding a pooled
    /// connection while blocked on the database lock.
    pub(crate) async fn local_locks(
        &self,
        mut environment_ids: Vec<i64>,
    ) -> Vec<OwnedMutexGuard<()>> {
        environment_ids.sort_unstable();
        environment_ids.dedup();
        let mutexes: Vec<Arc<tokio::sync::Mutex<()>>> = {
            let mut map = self.writers.lock().unwrap_or_else(|p| p.into_inner());
            environment_ids
                .iter()
                .map(|id| map.entry(*id).or_default().clone())
                .collect()
        };
        let mut guards = Vec::with_capacity(mutexes.len());
        for m in mutexes {
            guards.push(m.lock_owned().await);
        }
        guards
    }
}
