//! Scheduled changes: a configuration patch (or a kill) of one flag in one environment, run
//! at a time by whichever server claims it first.
//!
//! Execution goes through the store's ordinary writes ([`Store::patch_config`],
//! [`Store::kill_flag`]), so a scheduled change is validated, versioned, audited and streamed
//! exactly like the same change made over the API; the actor is the schedule, on behalf of
//! its author.
//!
//! Exactly once: a server claims due rows with one `UPDATE … WHERE id IN (SELECT … FOR UPDATE
//! SKIP LOCKED)` that sets a lease (SQLite has one writer, so the plain `UPDATE` is already
//! exclusive). A server that dies after claiming leaves the lease to expire, and the next
//! claimer re-runs it; re-running is harmless because a change whose touched fields already
//! hold its target values is recorded as executed without writing anything.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use vexil_schema::FlagConfig;

use super::patch::{Decision, decide, parse_patch, touched_fields};
use super::shared::{id_cursor, ids, on_behalf};
use crate::db::{Conn, args};
use crate::store::{
    AuditRecord, ConfigPatch, Page, Store, StoreError, WriteContext, audit, paginate,
};

/// A request to schedule a change. Give exactly one of `patch` and `kill`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewScheduledChange {
    /// When to run it (RFC 3339). A time in the past runs at once.
    #[serde(with = "time::serde::rfc3339")]
    pub execute_at: OffsetDateTime,
    /// Why; shown in listings and the audit log.
    #[serde(default)]
    pub description: String,
    /// The configuration fields to set, as for `PATCH` of the configuration.
    #[serde(default)]
    #[schema(value_type = Option<ConfigPatch>)]
    pub patch: Option<Value>,
    /// Turn the flag off in every environment (the kill switch) instead of patching.
    #[serde(default)]
    pub kill: bool,
    /// The configuration version the patch is written against (default: the current one).
    /// If a field the patch sets has changed since, the change fails instead of overwriting.
    #[serde(default)]
    pub base_version: Option<u64>,
    /// Apply even if the touched fields changed since `base_version`.
    #[serde(default)]
    pub force: bool,
}

/// Where a scheduled change is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleState {
    /// Waiting for its time.
    Pending,
    /// Ran (or found its target already in place).
    Executed,
    /// Did not run; `reason` says why (conflict, overdue beyond the grace, invalid).
    Failed,
    /// Cancelled before it ran.
    Cancelled,
}

impl ScheduleState {
    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => Self::Pending,
            "executed" => Self::Executed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            other => return Err(StoreError::Corrupt(format!("schedule state '{other}'"))),
        })
    }
}

/// A scheduled change.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduledChange {
    /// Id, unique on the server.
    pub id: i64,
    /// Project key.
    pub project: String,
    /// Environment key.
    pub environment: String,
    /// Flag key.
    pub flag: String,
    /// `patch` or `kill`.
    pub kind: String,
    /// The patch (absent for a kill).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ConfigPatch>)]
    pub patch: Option<Value>,
    /// Why.
    pub description: String,
    /// When it runs (or was due).
    #[serde(with = "time::serde::rfc3339")]
    pub execute_at: OffsetDateTime,
    /// Who scheduled it (the API token's name).
    pub author: String,
    /// The configuration version it was written against.
    pub base_version: i64,
    /// Whether it overwrites fields changed since `base_version`.
    pub force: bool,
    /// Its state.
    pub state: ScheduleState,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How many times a server picked it up (1 for a change run exactly once).
    pub attempts: i64,
    /// The configuration version its execution produced or found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_version: Option<i64>,
    /// When it ran, failed or was cancelled.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub finished_at: Option<OffsetDateTime>,
    /// Who cancelled it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    /// When it was scheduled.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: i64,
    project: String,
    environment: String,
    flag: String,
    kind: String,
    patch: Option<Json<Value>>,
    base_version: i64,
    base_config: Json<Value>,
    force: bool,
    execute_at: OffsetDateTime,
    description: String,
    author: String,
    author_token_id: Option<i64>,
    state: String,
    reason: Option<String>,
    attempts: i64,
    result_version: Option<i64>,
    finished_at: Option<OffsetDateTime>,
    cancelled_by: Option<String>,
    created_at: OffsetDateTime,
}

/// The columns of a [`ScheduledChange`], followed by the given SQL tail.
macro_rules! select {
    ($tail:literal) => {
        concat!(
            "SELECT s.id, p.key AS project, e.key AS environment, f.key AS flag, s.kind,
                s.patch, s.base_version, s.base_config, s.force, s.execute_at, s.description,
                s.author, s.author_token_id, s.state, s.reason, s.attempts, s.result_version,
                s.finished_at, s.cancelled_by, s.created_at
             FROM scheduled_changes s
             JOIN projects p ON p.id = s.project_id
             JOIN environments e ON e.id = s.environment_id
             JOIN flags f ON f.id = s.flag_id ",
            $tail
        )
    };
}

impl Row {
    fn view(self) -> Result<ScheduledChange, StoreError> {
        Ok(ScheduledChange {
            id: self.id,
            project: self.project,
            environment: self.environment,
            flag: self.flag,
            kind: self.kind,
            patch: self.patch.map(|p| p.0),
            description: self.description,
            execute_at: self.execute_at,
            author: self.author,
            base_version: self.base_version,
            force: self.force,
            state: ScheduleState::parse(&self.state)?,
            reason: self.reason,
            attempts: self.attempts,
            result_version: self.result_version,
            finished_at: self.finished_at,
            cancelled_by: self.cancelled_by,
            created_at: self.created_at,
        })
    }
}

async fn fetch(c: &mut Conn<'_>, id: i64) -> Result<Option<Row>, StoreError> {
    Ok(c.fetch_optional(select!("WHERE s.id = $1"), args![id])
        .await?)
}

/// The actor a schedule writes as: itself, on behalf of its author.
fn schedule_actor(id: i64, author: &str, author_token_id: Option<i64>) -> WriteContext {
    on_behalf(format!("schedule {id}"), author, author_token_id)
}

impl Store {
    /// Schedules a change of a flag's configuration in one environment.
    pub async fn create_scheduled_change(
        &self,
        ctx: &WriteContext,
        (project, flag, environment): (&str, &str, &str),
        req: NewScheduledChange,
        now: OffsetDateTime,
    ) -> Result<ScheduledChange, StoreError> {
        let (kind, patch) = match (&req.patch, req.kill) {
            (Some(p), false) => {
                parse_patch(p)?;
                ("patch", Some(p.clone()))
            }
            (None, true) => ("kill", None),
            _ => {
                return Err(StoreError::invalid(
                    "patch",
                    "one_of",
                    "give exactly one of 'patch' and 'kill: true'",
                ));
            }
        };
        if req.description.len() > 1024 {
            return Err(StoreError::invalid(
                "description",
                "max_length",
                "at most 1024 bytes",
            ));
        }
        let base = self
            .base_config((project, flag, environment), req.base_version)
            .await?;
        let base_version = i64::try_from(base.version).unwrap_or(i64::MAX);
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let (project_id, environment_id, flag_id) = ids(&mut c, project, flag, environment).await?;
        let (id,): (i64,) = c
            .fetch_one(
                "INSERT INTO scheduled_changes
                     (project_id, environment_id, flag_id, kind, patch, base_version, base_config,
                      force, execute_at, description, author, author_token_id, state, attempts,
                      created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', 0, $13, $13)
                 RETURNING id",
                args![
                    project_id,
                    environment_id,
                    flag_id,
                    kind,
                    patch,
                    base_version,
                    crate::store::encode(&base),
                    req.force,
                    req.execute_at,
                    req.description.as_str(),
                    ctx.actor.name.as_str(),
                    ctx.actor.token_id,
                    now
                ],
            )
            .await?;
        let view = fetch(&mut c, id)
            .await?
            .ok_or_else(|| StoreError::Gone("the scheduled change".into()))?
            .view()?;
        let key = id.to_string();
        let rec = AuditRecord::new("schedule.create", "schedule", &key)
            .scoped(Some(project), Some(environment))
            .after(crate::store::encode(&view));
        audit(&mut c, ctx, rec, now).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// The scheduled changes of a flag in an environment, newest first, optionally only
    /// those in `state`.
    pub async fn list_scheduled_changes(
        &self,
        (project, flag, environment): (&str, &str, &str),
        state: Option<ScheduleState>,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<ScheduledChange>, StoreError> {
        let limit = crate::store::page_limit(limit);
        let before = id_cursor(cursor)?;
        let state = state.map(|s| crate::store::encode(&s).as_str().unwrap_or("").to_owned());
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        let (_, environment_id, flag_id) = ids(&mut c, project, flag, environment).await?;
        let rows: Vec<Row> = c
            .fetch_all(
                select!(
                    "WHERE s.flag_id = $1 AND s.environment_id = $2 AND s.id < $3
                     AND ($4 IS NULL OR s.state = $4) ORDER BY s.id DESC LIMIT $5"
                ),
                args![flag_id, environment_id, before, state, limit + 1],
            )
            .await?;
        let mut items = rows
            .into_iter()
            .map(Row::view)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(&mut items, limit, |s| s.id.to_string()))
    }

    /// One scheduled change of a flag in an environment.
    pub async fn get_scheduled_change(
        &self,
        (project, flag, environment): (&str, &str, &str),
        id: i64,
    ) -> Result<ScheduledChange, StoreError> {
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        let (_, environment_id, flag_id) = ids(&mut c, project, flag, environment).await?;
        let row: Row = c
            .fetch_optional(
                select!("WHERE s.id = $1 AND s.flag_id = $2 AND s.environment_id = $3"),
                args![id, flag_id, environment_id],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("scheduled change {id}")))?;
        row.view()
    }

    /// Cancels a pending scheduled change (409 once it ran, failed or was cancelled).
    pub async fn cancel_scheduled_change(
        &self,
        ctx: &WriteContext,
        path: (&str, &str, &str),
        id: i64,
        now: OffsetDateTime,
    ) -> Result<ScheduledChange, StoreError> {
        let before = self.get_scheduled_change(path, id).await?;
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let n = c
            .execute(
                "UPDATE scheduled_changes SET state = 'cancelled', cancelled_by = $2,
                     finished_at = $3, updated_at = $3, lease_until = NULL
                 WHERE id = $1 AND state = 'pending'",
                args![id, ctx.actor.name.as_str(), now],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Conflict {
                message: format!(
                    "scheduled change {id} is {}: only a pending change can be cancelled",
                    crate::store::encode(&before.state)
                        .as_str()
                        .unwrap_or("finished")
                ),
                blockers: Vec::new(),
            });
        }
        let view = fetch(&mut c, id)
            .await?
            .ok_or_else(|| StoreError::Gone("the scheduled change".into()))?
            .view()?;
        let key = id.to_string();
        let rec = AuditRecord::new("schedule.cancel", "schedule", &key)
            .scoped(Some(path.0), Some(path.2))
            .before(crate::store::encode(&before))
            .after(crate::store::encode(&view));
        audit(&mut c, ctx, rec, now).await?;
        tx.commit().await?;
        Ok(view)
    }
}

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    /// This server's name in `claimed_by`.
    pub me: String,
    /// A due change older than this fails as overdue instead of running.
    pub grace: time::Duration,
    /// How long a claim keeps other servers off a change.
    pub lease: time::Duration,
}

/// Claims the changes due at `now` (at most 16) for this server.
async fn claim(store: &Store, run: &Runner, now: OffsetDateTime) -> Result<Vec<Row>, StoreError> {
    let mut tx = store.db().begin().await?;
    let mut c = tx.conn();
    let until = now + run.lease;
    let sql = match c {
        Conn::Pg(_) => {
            "UPDATE scheduled_changes SET claimed_by = $1, lease_until = $3,
                 attempts = attempts + 1, updated_at = $2
             WHERE id IN (
                 SELECT id FROM scheduled_changes
                 WHERE state = 'pending' AND execute_at <= $2
                   AND (lease_until IS NULL OR lease_until < $2)
                 ORDER BY execute_at, id LIMIT 16
                 FOR UPDATE SKIP LOCKED)
             RETURNING id"
        }
        Conn::Lite(_) => {
            "UPDATE scheduled_changes SET claimed_by = $1, lease_until = $3,
                 attempts = attempts + 1, updated_at = $2
             WHERE id IN (
                 SELECT id FROM scheduled_changes
                 WHERE state = 'pending' AND execute_at <= $2
                   AND (lease_until IS NULL OR lease_until < $2)
                 ORDER BY execute_at, id LIMIT 16)
             RETURNING id"
        }
    };
    let claimed: Vec<(i64,)> = c.fetch_all(sql, args![run.me.as_str(), now, until]).await?;
    let mut rows = Vec::with_capacity(claimed.len());
    for (id,) in claimed {
        if let Some(r) = fetch(&mut c, id).await? {
            rows.push(r);
        }
    }
    tx.commit().await?;
    Ok(rows)
}

/// How one execution ended.
enum Outcome {
    Executed(i64),
    Failed(String),
    /// Leave it for the next round (a concurrent write got in between; the database
    /// failed).
    Retry,
}

/// Runs every change due at `now`; returns how many finished (executed or failed).
pub(crate) async fn run_due(
    store: &Store,
    run: &Runner,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let mut finished = 0;
    for row in claim(store, run, now).await? {
        let id = row.id;
        let outcome = execute(store, run, &row, now).await;
        let done = match outcome {
            Outcome::Executed(v) => finish(store, run, &row, Ok(v), now).await?,
            Outcome::Failed(reason) => {
                tracing::warn!(schedule = id, %reason, "scheduled change failed");
                finish(store, run, &row, Err(reason), now).await?
            }
            Outcome::Retry => {
                release(store, run, id).await?;
                false
            }
        };
        finished += usize::from(done);
    }
    Ok(finished)
}

async fn execute(store: &Store, run: &Runner, row: &Row, now: OffsetDateTime) -> Outcome {
    let late = now - row.execute_at;
    if late > run.grace {
        return Outcome::Failed(format!(
            "overdue: due at {} and not run within the grace of {} s",
            row.execute_at,
            run.grace.whole_seconds()
        ));
    }
    let ctx = schedule_actor(row.id, &row.author, row.author_token_id);
    let path = (
        row.project.as_str(),
        row.flag.as_str(),
        row.environment.as_str(),
    );
    let result = match (&row.kind[..], &row.patch) {
        ("kill", _) => match store.kill_flag(&ctx, path.0, path.1).await {
            Ok(_) => store
                .get_config(path.0, path.1, path.2)
                .await
                .map_err(ScheduleFailure::Store),
            Err(e) => Err(ScheduleFailure::Store(e)),
        },
        (_, Some(Json(patch))) => apply_patch(store, &ctx, row, path, patch).await,
        _ => return Outcome::Failed("the stored patch is missing".into()),
    };
    match result {
        Ok(cfg) => Outcome::Executed(i64::try_from(cfg.version).unwrap_or(i64::MAX)),
        Err(ScheduleFailure::Conflict(fields)) => Outcome::Failed(format!(
            "conflict: {} changed since version {} (schedule with force to overwrite)",
            fields.join(", "),
            row.base_version
        )),
        Err(ScheduleFailure::Store(e)) => match e {
            StoreError::PreconditionFailed { .. } => Outcome::Retry,
            StoreError::Database(e) => {
                tracing::warn!(schedule = row.id, error = %e, "scheduled change: database error, will retry");
                Outcome::Retry
            }
            StoreError::Conflict { message, .. } if message.contains("concurrent") => {
                Outcome::Retry
            }
            other => Outcome::Failed(other.to_string()),
        },
    }
}

/// Why a patch did not apply.
enum ScheduleFailure {
    Conflict(Vec<String>),
    Store(StoreError),
}

impl From<StoreError> for ScheduleFailure {
    fn from(e: StoreError) -> Self {
        ScheduleFailure::Store(e)
    }
}

async fn apply_patch(
    store: &Store,
    ctx: &WriteContext,
    row: &Row,
    (project, flag, environment): (&str, &str, &str),
    patch_json: &Value,
) -> Result<FlagConfig, ScheduleFailure> {
    let patch = parse_patch(patch_json)?;
    let base: FlagConfig = crate::store::decode("scheduled base", row.base_config.0.clone())?;
    let current = store.get_config(project, flag, environment).await?;
    match decide(
        &base,
        &current,
        &patch,
        &touched_fields(patch_json),
        row.force,
    ) {
        Decision::AlreadyApplied => Ok(current),
        Decision::Conflict(fields) => Err(ScheduleFailure::Conflict(fields)),
        Decision::Apply => Ok(store
            .patch_config(
                ctx,
                project,
                flag,
                environment,
                patch,
                Some(current.version),
            )
            .await?
            .config),
    }
}

/// Records how a claimed change ended, with its audit entry, if this server still holds
/// the claim. Returns whether it did.
async fn finish(
    store: &Store,
    run: &Runner,
    row: &Row,
    result: Result<i64, String>,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let mut tx = store.db().begin().await?;
    let mut c = tx.conn();
    let (state, version, reason, action) = match &result {
        Ok(v) => ("executed", Some(*v), None, "schedule.executed"),
        Err(r) => ("failed", None, Some(r.clone()), "schedule.failed"),
    };
    let n = c
        .execute(
            "UPDATE scheduled_changes SET state = $3, result_version = $4, reason = $5,
                 finished_at = $6, updated_at = $6, lease_until = NULL
             WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
            args![row.id, run.me.as_str(), state, version, reason, now],
        )
        .await?;
    if n == 0 {
        return Ok(false);
    }
    let view = fetch(&mut c, row.id)
        .await?
        .ok_or_else(|| StoreError::Gone("the scheduled change".into()))?
        .view()?;
    let ctx = schedule_actor(row.id, &row.author, row.author_token_id);
    let key = row.id.to_string();
    let rec = AuditRecord::new(action, "schedule", &key)
        .scoped(Some(&row.project), Some(&row.environment))
        .after(crate::store::encode(&view));
    audit(&mut c, &ctx, rec, now).await?;
    tx.commit().await?;
    Ok(true)
}

/// Gives a claimed change back for the next round.
async fn release(store: &Store, run: &Runner, id: i64) -> Result<(), StoreError> {
    let mut pc = store.db().acquire().await?;
    pc.conn()
        .execute(
            "UPDATE scheduled_changes SET lease_until = NULL
             WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
            args![id, run.me.as_str()],
        )
        .await?;
    Ok(())
}
