//! Applying the change log to the in-memory state: one compiled snapshot per environment
//! (for evaluation) and the hub (for SDK and relay streams).
//!
//! Only the feed's applier calls these (under [`super::Inner::apply_lock`]), so the state of an
//! environment moves forward one version at a time, in commit order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use vexil_eval::CompiledSnapshot;
use vexil_fanout::PublishError;
use vexil_schema::delta::{SegmentDelta, TargetsDelta};
use vexil_schema::stream::{
    Change, Delete, Delta, DeltaItem, EnvironmentId, ItemRef, Patch, PatchItem,
};
use vexil_schema::{EnvironmentSnapshot, Flag, FlagKey, Segment, SegmentKey};

use super::Inner;
use crate::db::args;
use crate::store::{LogEntry as LogRow, StoreError, to_u64};

/// Versions read per query while catching up (a range of versions, so that a version's rows
/// are never split between two reads).
const BATCH: i64 = 256;

/// One environment the feed serves.
#[derive(Debug)]
pub(crate) struct EnvEntry {
    /// Database id (notifications name environments by id).
    pub id: i64,
    /// `project/environment`.
    pub env: EnvironmentId,
    /// The compiled snapshot evaluations read; swapped whole on every applied version.
    pub compiled: ArcSwap<CompiledSnapshot>,
}

impl EnvEntry {
    /// The version applied to this environment.
    pub fn version(&self) -> u64 {
        self.compiled.load().version()
    }
}

/// Every environment the feed serves, by key and by id.
#[derive(Debug, Default)]
pub(crate) struct Envs {
    pub by_key: HashMap<EnvironmentId, Arc<EnvEntry>>,
    pub by_id: HashMap<i64, Arc<EnvEntry>>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct EnvListRow {
    pub id: i64,
    pub project: String,
    pub environment: String,
    pub version: i64,
}

/// How an environment's catch-up ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CaughtUp {
    /// The environment is at its database version.
    Current,
    /// The environment no longer exists (and was removed).
    Removed,
}

/// A change-log row that cannot be applied as a change: rebuild from the tables instead.
#[derive(Debug)]
struct Unusable(String);

fn env_id(project: &str, environment: &str) -> Result<EnvironmentId, StoreError> {
    EnvironmentId::parse(&format!("{project}/{environment}"))
        .map_err(|e| StoreError::Corrupt(format!("environment key: {e}")))
}

impl Inner {
    /// Every environment in the database with its version.
    pub(crate) async fn list_environments(&self) -> Result<Vec<EnvListRow>, StoreError> {
        let mut pc = self.store.db().acquire().await?;
        Ok(pc
            .conn()
            .fetch_all(
                "SELECT e.id, p.key AS project, e.key AS environment, e.version
                 FROM environments e JOIN projects p ON p.id = e.project_id ORDER BY e.id",
                args![],
            )
            .await?)
    }

    async fn environment_row(&self, id: i64) -> Result<Option<EnvListRow>, StoreError> {
        let mut pc = self.store.db().acquire().await?;
        Ok(pc
            .conn()
            .fetch_optional(
                "SELECT e.id, p.key AS project, e.key AS environment, e.version
                 FROM environments e JOIN projects p ON p.id = e.project_id WHERE e.id = $1",
                args![id],
            )
            .await?)
    }

    /// Brings every environment up to date: new ones loaded, deleted ones removed, the
    /// others caught up from the change log. Then reloads the SDK keys.
    pub(crate) async fn sync_all(&self) -> Result<(), StoreError> {
        let rows = self.list_environments().await?;
        let live: HashSet<i64> = rows.iter().map(|r| r.id).collect();
        let gone: Vec<Arc<EnvEntry>> = {
            let envs = self.envs.read().unwrap_or_else(|p| p.into_inner());
            envs.by_id
                .values()
                .filter(|e| !live.contains(&e.id))
                .cloned()
                .collect()
        };
        for entry in gone {
            self.remove(&entry);
        }
        for row in rows {
            self.sync_row(row).await?;
        }
        self.reload_keys(false).await
    }

    /// Brings one environment (by id) up to date, loading or removing it as needed.
    pub(crate) async fn sync_environment(&self, id: i64) -> Result<(), StoreError> {
        match self.environment_row(id).await? {
            Some(row) => self.sync_row(row).await,
            None => {
                let known = self.entry_by_id(id);
                if let Some(entry) = known {
                    self.remove(&entry);
                }
                Ok(())
            }
        }
    }

    pub(crate) fn entry_by_id(&self, id: i64) -> Option<Arc<EnvEntry>> {
        let envs = self.envs.read().unwrap_or_else(|p| p.into_inner());
        envs.by_id.get(&id).cloned()
    }

    async fn sync_row(&self, row: EnvListRow) -> Result<(), StoreError> {
        let env = env_id(&row.project, &row.environment)?;
        let known = self.entry_by_id(row.id);
        match known {
            Some(entry) if entry.env == env => {
                if entry.version() != to_u64(row.version) {
                    self.catch_up(&entry).await?;
                }
                Ok(())
            }
            Some(entry) => {
                // Same id, different keys: serve it under its new name.
                self.remove(&entry);
                self.load(row.id, env).await
            }
            None => self.load(row.id, env).await,
        }
    }

    /// Loads an environment from the tables and starts serving it.
    async fn load(&self, id: i64, env: EnvironmentId) -> Result<(), StoreError> {
        let snapshot = match self
            .store
            .environment_snapshot(env.project(), env.environment())
            .await
        {
            Ok(s) => s,
            // Deleted between listing and loading: the next sync removes nothing.
            Err(StoreError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let compiled = CompiledSnapshot::compile(&snapshot);
        let entry = Arc::new(EnvEntry {
            id,
            env: env.clone(),
            compiled: ArcSwap::from_pointee(compiled),
        });
        self.publish_snapshot(&env, &snapshot);
        {
            let mut envs = self.envs.write().unwrap_or_else(|p| p.into_inner());
            envs.by_key.insert(env.clone(), Arc::clone(&entry));
            envs.by_id.insert(id, entry);
        }
        self.set_hub_keys(&env);
        tracing::info!(environment = %env, version = snapshot.version, "environment loaded");
        Ok(())
    }

    fn remove(&self, entry: &EnvEntry) {
        {
            let mut envs = self.envs.write().unwrap_or_else(|p| p.into_inner());
            envs.by_id.remove(&entry.id);
            if envs
                .by_key
                .get(&entry.env)
                .is_some_and(|e| e.id == entry.id)
            {
                envs.by_key.remove(&entry.env);
            }
        }
        self.hub.remove_environment(&entry.env);
        tracing::info!(environment = %entry.env, "environment removed");
    }

    /// Reads the change log after the applied version and applies it, version by version.
    /// Falls back to a rebuild from the tables when the log no longer holds the next version
    /// (compacted), a version left no row, or a row cannot be used.
    ///
    /// The log rows and the environment's version are read in one snapshot
    /// ([`crate::store::Store::change_log_after`]): a commit landing between two reads would
    /// otherwise look like a version without log rows, and every subscriber would get a full
    /// `put` instead of a patch.
    pub(crate) async fn catch_up(&self, entry: &EnvEntry) -> Result<CaughtUp, StoreError> {
        loop {
            let from = entry.version();
            let after = i64::try_from(from).unwrap_or(i64::MAX);
            let Some((db_version, rows)) =
                self.store.change_log_after(entry.id, after, BATCH).await?
            else {
                self.remove(entry);
                return Ok(CaughtUp::Removed);
            };
            let db_version = to_u64(db_version);
            if rows.is_empty() {
                if db_version == from {
                    return Ok(CaughtUp::Current);
                }
                // Ahead without log rows, or behind (a restored database): rebuild.
                tracing::info!(environment = %entry.env, from, db_version,
                    "no change-log rows to catch up with: rebuilding from the tables");
                return self.rebuild(entry, "no_log_rows").await;
            }
            let groups = group_by_version(rows);
            if groups.first().map(|(v, _)| *v) != Some(from + 1) {
                tracing::info!(environment = %entry.env, from,
                    "the change log no longer holds the next version (compacted): rebuilding");
                return self.rebuild(entry, "compacted").await;
            }
            for (version, group) in groups {
                if version != entry.version() + 1 {
                    break; // a version with no row: the next round rebuilds
                }
                if let Err(Unusable(why)) = self.apply_version(entry, version, group) {
                    tracing::warn!(environment = %entry.env, version, reason = %why,
                        "change-log row unusable: rebuilding from the tables");
                    return self.rebuild(entry, "unusable_row").await;
                }
            }
        }
    }

    /// Reloads an environment from the tables and publishes it whole (subscribers get a
    /// `put`), counting the rebuild under `reason`.
    async fn rebuild(
        &self,
        entry: &EnvEntry,
        reason: &'static str,
    ) -> Result<CaughtUp, StoreError> {
        metrics::counter!(super::metrics::REBUILDS, "reason" => reason).increment(1);
        self.rebuilds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot = match self
            .store
            .environment_snapshot(entry.env.project(), entry.env.environment())
            .await
        {
            Ok(s) => s,
            Err(StoreError::NotFound(_)) => {
                self.remove(entry);
                return Ok(CaughtUp::Removed);
            }
            Err(e) => return Err(e),
        };
        entry
            .compiled
            .store(Arc::new(CompiledSnapshot::compile(&snapshot)));
        self.publish_snapshot(&entry.env, &snapshot);
        Ok(CaughtUp::Current)
    }

    /// Applies the rows of one version: one row is published as that change, several as a
    /// fresh snapshot (the hub takes one change per version).
    fn apply_version(
        &self,
        entry: &EnvEntry,
        version: u64,
        rows: Vec<LogRow>,
    ) -> Result<(), Unusable> {
        let current = entry.compiled.load_full();
        // The write's trace continues here: this server publishing the change.
        let traceparent = rows.iter().find_map(|r| r.traceparent.clone());
        let mut changes = Vec::with_capacity(rows.len());
        for row in rows {
            changes.push(to_change(version, row)?);
        }
        if changes.is_empty() {
            return Err(Unusable("a version without rows".to_owned()));
        }
        let next = current
            .apply_version(&changes)
            .map_err(|e| Unusable(e.to_string()))?;
        let next = Arc::new(next);
        entry.compiled.store(Arc::clone(&next));
        let span = tracing::info_span!("feed.publish", otel.kind = "producer");
        vexil_fanout::trace::distribution_span(
            &span,
            entry.env.as_str(),
            version,
            traceparent.as_deref(),
        );
        let _entered = span.enter();
        if let [change] = changes.as_slice() {
            let traced = vexil_fanout::trace::traceparent_of(&span);
            match self
                .hub
                .publish_change_traced(&entry.env, change, traced.as_deref())
            {
                Ok(_) => {}
                Err(e) if e.needs_resync() => {
                    self.publish_snapshot(&entry.env, &next.to_snapshot())
                }
                Err(e) => {
                    tracing::debug!(environment = %entry.env, error = %e, "change not published")
                }
            }
        } else {
            self.publish_snapshot(&entry.env, &next.to_snapshot());
        }
        Ok(())
    }

    /// Publishes a full state to the hub, replacing it even if the hub is past it (the
    /// database is the source of truth: a restored backup goes back in time).
    pub(crate) fn publish_snapshot(&self, env: &EnvironmentId, snapshot: &EnvironmentSnapshot) {
        let result = match self.hub.publish_snapshot(env, snapshot) {
            Err(PublishError::Stale { .. }) => self.hub.replace_snapshot(env, snapshot),
            other => other,
        };
        if let Err(e) = result {
            tracing::error!(environment = %env, error = %e, "cannot publish the snapshot");
        }
    }
}

fn group_by_version(rows: Vec<LogRow>) -> Vec<(u64, Vec<LogRow>)> {
    let mut groups: Vec<(u64, Vec<LogRow>)> = Vec::new();
    for row in rows {
        let v = to_u64(row.version);
        match groups.last_mut() {
            Some((last, g)) if *last == v => g.push(row),
            _ => groups.push((v, vec![row])),
        }
    }
    groups
}

fn to_change(version: u64, row: LogRow) -> Result<Change, Unusable> {
    let bad = |e: &dyn std::fmt::Display| Unusable(format!("{} {:?}: {e}", row.entity, row.key));
    match (row.op.as_str(), row.entity.as_str()) {
        ("put", "flag") => {
            let payload = row.payload.as_ref().ok_or_else(|| bad(&"no payload"))?;
            let flag: Flag = serde_json::from_value(payload.0.clone()).map_err(|e| bad(&e))?;
            Ok(Change::Patch(Patch {
                version,
                item: PatchItem::Flag(flag),
            }))
        }
        ("put", "segment") => {
            let payload = row.payload.as_ref().ok_or_else(|| bad(&"no payload"))?;
            let segment: Segment =
                serde_json::from_value(payload.0.clone()).map_err(|e| bad(&e))?;
            Ok(Change::Patch(Patch {
                version,
                item: PatchItem::Segment(segment),
            }))
        }
        ("delete", "flag") => Ok(Change::Delete(Delete {
            version,
            item: ItemRef::Flag(FlagKey::parse(row.key.clone()).map_err(|e| bad(&e))?),
        })),
        ("delete", "segment") => Ok(Change::Delete(Delete {
            version,
            item: ItemRef::Segment(SegmentKey::parse(row.key.clone()).map_err(|e| bad(&e))?),
        })),
        ("delta", "segment") => {
            let payload = row.payload.as_ref().ok_or_else(|| bad(&"no payload"))?;
            let delta: SegmentDelta =
                serde_json::from_value(payload.0.clone()).map_err(|e| bad(&e))?;
            Ok(Change::Delta(Delta {
                version,
                item: DeltaItem::Segment(delta),
            }))
        }
        ("delta", "flag") => {
            let payload = row.payload.as_ref().ok_or_else(|| bad(&"no payload"))?;
            let delta: TargetsDelta =
                serde_json::from_value(payload.0.clone()).map_err(|e| bad(&e))?;
            Ok(Change::Delta(Delta {
                version,
                item: DeltaItem::FlagTargets(delta),
            }))
        }
        (op, entity) => Err(bad(&format!("unknown change {op} {entity}"))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use sqlx::types::Json;

    use super::*;

    fn row(version: i64, op: &str, entity: &str, key: &str, payload: Option<Value>) -> LogRow {
        LogRow {
            version,
            op: op.to_owned(),
            entity: entity.to_owned(),
            key: key.to_owned(),
            payload: payload.map(Json),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            traceparent: None,
        }
    }

    #[test]
    fn rows_group_by_version_in_order() {
        let groups = group_by_version(vec![
            row(3, "delete", "flag", "a", None),
            row(4, "delete", "flag", "b", None),
            row(4, "delete", "segment", "c", None),
            row(5, "delete", "flag", "d", None),
        ]);
        let shape: Vec<(u64, usize)> = groups.iter().map(|(v, g)| (*v, g.len())).collect();
        assert_eq!(shape, vec![(3, 1), (4, 2), (5, 1)]);
    }

    #[test]
    fn rows_become_stream_changes_or_are_refused() {
        let del = to_change(7, row(7, "delete", "flag", "checkout", None)).unwrap();
        assert_eq!(
            del,
            Change::Delete(Delete {
                version: 7,
                item: ItemRef::Flag(FlagKey::parse("checkout").unwrap()),
            })
        );
        assert!(to_change(7, row(7, "put", "flag", "x", None)).is_err());
        assert!(
            to_change(
                7,
                row(7, "put", "flag", "x", Some(serde_json::json!({"no": 1})))
            )
            .is_err()
        );
        assert!(to_change(7, row(7, "rename", "flag", "x", None)).is_err());
        let seg = serde_json::json!({"key": "beta", "name": "Beta"});
        let put = to_change(8, row(8, "put", "segment", "beta", Some(seg)));
        assert!(
            matches!(
                put,
                Ok(Change::Patch(Patch {
                    version: 8,
                    item: PatchItem::Segment(_)
                }))
            ),
            "{put:?}"
        );
    }
}
