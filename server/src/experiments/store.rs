//! Metrics and experiments in the database: CRUD, start and stop, and iterations (a new one
//! whenever the flag's allocation changes while the experiment runs).

use serde_json::Value;
use sqlx::types::Json;
use time::OffsetDateTime;
use vexil_schema::{FlagConfig, FlagDefinition, Rollout, Serve};

use super::model::{
    Allocation, Experiment, ExperimentStatus, ExperimentView, Iteration, Metric, MetricView,
};
use crate::db::{Conn, args, now};
use crate::store::{
    AuditRecord, Page, Store, StoreError, WriteContext, audit, decode, encode, environment_row,
    page_limit, paginate, project_row, to_u64,
};

#[derive(sqlx::FromRow)]
struct MetricRow {
    id: i64,
    definition: Json<Value>,
    version: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

fn metric_view(row: MetricRow) -> Result<MetricView, StoreError> {
    Ok(MetricView {
        metric: decode("metric", row.definition.0)?,
        version: to_u64(row.version),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

#[derive(sqlx::FromRow)]
struct ExperimentRow {
    id: i64,
    definition: Json<Value>,
    status: String,
    version: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
pub(crate) struct IterationRow {
    pub(crate) id: i64,
    pub(crate) number: i64,
    pub(crate) started_ms: i64,
    pub(crate) ended_ms: Option<i64>,
    pub(crate) allocation: Json<Value>,
    pub(crate) reason: String,
}

fn ms_time(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Milliseconds since the epoch.
pub(crate) fn time_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl IterationRow {
    pub(crate) fn view(&self) -> Result<Iteration, StoreError> {
        Ok(Iteration {
            number: to_u64(self.number),
            started_at: ms_time(self.started_ms),
            ended_at: self.ended_ms.map(ms_time),
            allocation: decode("iteration allocation", self.allocation.0.clone())?,
            reason: self.reason.clone(),
        })
    }
}

/// The rollout that assigns an experiment's variations: the first rollout marked
/// `experiment` (fallthrough, then rules in order), else the fallthrough's rollout.
fn experiment_rollout(cfg: &FlagConfig) -> Option<&Rollout> {
    let mut serves = std::iter::once(&cfg.fallthrough).chain(cfg.rules.iter().map(|r| &r.serve));
    let marked = serves.find_map(|s| match s {
        Serve::Rollout(r) if r.experiment => Some(r),
        _ => None,
    });
    marked.or(match &cfg.fallthrough {
        Serve::Rollout(r) => Some(r),
        Serve::Variation(_) => None,
    })
}

/// The allocation a flag configuration gives an experiment.
pub(crate) fn allocation_of(def: &FlagDefinition, cfg: &FlagConfig) -> Allocation {
    let weights = experiment_rollout(cfg).map(|r| {
        let mut w = vec![0u32; def.variations.len()];
        for slice in &r.variations {
            if let Some(x) = w.get_mut(slice.variation) {
                *x = x.saturating_add(slice.weight);
            }
        }
        w
    });
    Allocation {
        variations: def.variations.iter().map(|v| v.value.clone()).collect(),
        weights,
    }
}

/// Ends the running iteration of every running experiment on this flag in this environment
/// whose allocation differs from the one `cfg` gives, and starts the next, in the caller's
/// transaction (the flag-config write that changed it, holding the environment lock).
pub(crate) async fn on_flag_config_written(
    c: &mut Conn<'_>,
    flag_id: i64,
    environment_id: i64,
    def: &FlagDefinition,
    cfg: &FlagConfig,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let running: Vec<IterationWithExperiment> = c
        .fetch_all(
            "SELECT i.id, i.experiment_id, i.number, i.allocation FROM experiments x
             JOIN experiment_iterations i ON i.experiment_id = x.id AND i.ended_ms IS NULL
             WHERE x.flag_id = $1 AND x.environment_id = $2 AND x.status = 'running'",
            args![flag_id, environment_id],
        )
        .await?;
    if running.is_empty() {
        return Ok(());
    }
    let allocation = allocation_of(def, cfg);
    let ms = time_ms(at);
    for it in running {
        let current: Allocation = decode("iteration allocation", it.allocation.0)?;
        if current == allocation {
            continue;
        }
        c.execute(
            "UPDATE experiment_iterations SET ended_ms = $2 WHERE id = $1",
            args![it.id, ms],
        )
        .await?;
        c.execute(
            "INSERT INTO experiment_iterations (experiment_id, number, started_ms, allocation, reason)
             VALUES ($1, $2, $3, $4, 'allocation_changed')",
            args![it.experiment_id, it.number + 1, ms, encode(&allocation)],
        )
        .await?;
        tracing::info!(
            experiment_id = it.experiment_id,
            iteration = it.number + 1,
            "flag allocation changed: the experiment starts a new iteration"
        );
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct IterationWithExperiment {
    id: i64,
    experiment_id: i64,
    number: i64,
    allocation: Json<Value>,
}

#[derive(sqlx::FromRow)]
struct FlagConfigRow {
    id: i64,
    definition: Json<Value>,
    archived: bool,
    config: Option<Json<Value>>,
}

/// The flag an experiment names, with its configuration in the environment.
async fn flag_with_config(
    c: &mut Conn<'_>,
    project_id: i64,
    environment_id: i64,
    key: &str,
) -> Result<(i64, FlagDefinition, FlagConfig), StoreError> {
    let row: FlagConfigRow = c
        .fetch_optional(
            "SELECT f.id, f.definition, f.archived, c.config FROM flags f
             LEFT JOIN flag_configs c ON c.flag_id = f.id AND c.environment_id = $3
             WHERE f.project_id = $1 AND f.key = $2",
            args![project_id, key, environment_id],
        )
        .await?
        .ok_or_else(|| {
            StoreError::invalid(
                "flag",
                "unknown_flag",
                format!("no flag '{key}' in the project"),
            )
        })?;
    if row.archived {
        return Err(StoreError::invalid(
            "flag",
            "archived_flag",
            format!("flag '{key}' is archived"),
        ));
    }
    let def = decode("flag definition", row.definition.0)?;
    let cfg = row
        .config
        .ok_or_else(|| StoreError::Corrupt(format!("flag '{key}' has no configuration")))?;
    Ok((row.id, def, decode("flag configuration", cfg.0)?))
}

/// Checks an experiment against the project: its flag and metrics exist, its control is a
/// variation of the flag. Returns the flag's id.
async fn check_experiment(
    c: &mut Conn<'_>,
    project_id: i64,
    environment_id: i64,
    x: &Experiment,
) -> Result<i64, StoreError> {
    x.validate()?;
    let (flag_id, def, _) = flag_with_config(c, project_id, environment_id, &x.flag).await?;
    if x.control >= def.variations.len() {
        return Err(StoreError::invalid(
            "control",
            "variation_index",
            format!(
                "flag '{}' has {} variations: control must be one of them",
                x.flag,
                def.variations.len()
            ),
        ));
    }
    for (key, _) in x.metric_keys() {
        let found: Option<(i64,)> = c
            .fetch_optional(
                "SELECT id FROM metrics WHERE project_id = $1 AND key = $2",
                args![project_id, key],
            )
            .await?;
        if found.is_none() {
            return Err(StoreError::invalid(
                "primary_metric",
                "unknown_metric",
                format!("no metric '{key}' in the project"),
            ));
        }
    }
    Ok(flag_id)
}

async fn iterations(c: &mut Conn<'_>, experiment_id: i64) -> Result<Vec<IterationRow>, StoreError> {
    Ok(c.fetch_all(
        "SELECT id, number, started_ms, ended_ms, allocation, reason FROM experiment_iterations
         WHERE experiment_id = $1 ORDER BY number",
        args![experiment_id],
    )
    .await?)
}

async fn experiment_view(
    c: &mut Conn<'_>,
    row: ExperimentRow,
) -> Result<ExperimentView, StoreError> {
    let its = iterations(c, row.id).await?;
    Ok(ExperimentView {
        experiment: decode("experiment", row.definition.0)?,
        status: ExperimentStatus::parse(&row.status)
            .ok_or_else(|| StoreError::Corrupt(format!("experiment status '{}'", row.status)))?,
        version: to_u64(row.version),
        iterations: its
            .iter()
            .map(IterationRow::view)
            .collect::<Result<_, _>>()?,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

async fn experiment_row(
    c: &mut Conn<'_>,
    environment_id: i64,
    key: &str,
    lock: bool,
) -> Result<ExperimentRow, StoreError> {
    let sql = match (&*c, lock) {
        (Conn::Pg(_), true) => {
            "SELECT id, definition, status, version, created_at, updated_at
             FROM experiments WHERE environment_id = $1 AND key = $2 FOR UPDATE"
        }
        _ => {
            "SELECT id, definition, status, version, created_at, updated_at
             FROM experiments WHERE environment_id = $1 AND key = $2"
        }
    };
    c.fetch_optional(sql, args![environment_id, key])
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("experiment '{key}'")))
}

fn check_version(if_match: Option<u64>, current: i64) -> Result<(), StoreError> {
    match if_match {
        Some(v) if v != to_u64(current) => Err(StoreError::PreconditionFailed {
            current: to_u64(current),
        }),
        _ => Ok(()),
    }
}

/// One experiment and what analysing it needs.
pub(crate) struct LoadedExperiment {
    pub(crate) view: ExperimentView,
    pub(crate) project_id: i64,
    pub(crate) iterations: Vec<IterationRow>,
}

impl Store {
    /// Creates a metric.
    pub async fn create_metric(
        &self,
        ctx: &WriteContext,
        project: &str,
        metric: Metric,
    ) -> Result<MetricView, StoreError> {
        metric.validate()?;
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let p = project_row(&mut c, project).await?;
        let t = now();
        c.execute(
            "INSERT INTO metrics (project_id, key, event_key, definition, version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 1, $5, $5)",
            args![p.id, metric.key.as_str(), metric.event_key.as_str(), encode(&metric), t],
        )
        .await
        .map_err(|e| crate::store::unique_or(e, || format!("metric '{}'", metric.key)))?;
        let rec = AuditRecord::new("metric.create", "metric", &metric.key)
            .scoped(Some(project), None)
            .after(encode(&metric));
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        Ok(MetricView {
            metric,
            version: 1,
            created_at: t,
            updated_at: t,
        })
    }

    /// One metric.
    pub async fn get_metric(&self, project: &str, key: &str) -> Result<MetricView, StoreError> {
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        let p = project_row(&mut c, project).await?;
        let row: MetricRow = c
            .fetch_optional(
                "SELECT id, definition, version, created_at, updated_at FROM metrics
                 WHERE project_id = $1 AND key = $2",
                args![p.id, key],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("metric '{key}'")))?;
        metric_view(row)
    }

    /// A project's metrics by key.
    pub async fn list_metrics(
        &self,
        project: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<MetricView>, StoreError> {
        let limit = page_limit(limit);
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        let p = project_row(&mut c, project).await?;
        let rows: Vec<MetricRow> = c
            .fetch_all(
                "SELECT id, definition, version, created_at, updated_at FROM metrics
                 WHERE project_id = $1 AND key > $2 ORDER BY key LIMIT $3",
                args![p.id, cursor.unwrap_or(""), limit + 1],
            )
            .await?;
        let mut items = rows
            .into_iter()
            .map(metric_view)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(&mut items, limit, |m| m.metric.key.clone()))
    }

    /// Replaces a metric (the key cannot change). Honours `If-Match`. Changing what a running
    /// experiment's metric measures affects only events ingested from then on.
    pub async fn put_metric(
        &self,
        ctx: &WriteContext,
        project: &str,
        key: &str,
        metric: Metric,
        if_match: Option<u64>,
    ) -> Result<MetricView, StoreError> {
        if metric.key != key {
            return Err(StoreError::invalid(
                "key",
                "key_mismatch",
                format!(
                    "the body names metric '{}' but the path names '{key}'; keys cannot be changed",
                    metric.key
                ),
            ));
        }
        metric.validate()?;
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let p = project_row(&mut c, project).await?;
        let sql = match c {
            Conn::Pg(_) => {
                "SELECT id, definition, version, created_at, updated_at FROM metrics
                 WHERE project_id = $1 AND key = $2 FOR UPDATE"
            }
            Conn::Lite(_) => {
                "SELECT id, definition, version, created_at, updated_at FROM metrics
                 WHERE project_id = $1 AND key = $2"
            }
        };
        let row: MetricRow = c
            .fetch_optional(sql, args![p.id, key])
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("metric '{key}'")))?;
        check_version(if_match, row.version)?;
        let before = metric_view(row)?;
        if before.metric == metric {
            return Ok(before);
        }
        let t = now();
        let version = i64::try_from(before.version + 1).unwrap_or(i64::MAX);
        c.execute(
            "UPDATE metrics SET event_key = $3, definition = $4, version = $5, updated_at = $6
             WHERE project_id = $1 AND key = $2",
            args![
                p.id,
                key,
                metric.event_key.as_str(),
                encode(&metric),
                version,
                t
            ],
        )
        .await?;
        let rec = AuditRecord::new("metric.update", "metric", key)
            .scoped(Some(project), None)
            .before(encode(&before.metric))
            .after(encode(&metric));
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        Ok(MetricView {
            metric,
            version: to_u64(version),
            created_at: before.created_at,
            updated_at: t,
        })
    }

    /// Deletes a metric. Refused (409, naming them) while experiments use it.
    pub async fn delete_metric(
        &self,
        ctx: &WriteContext,
        project: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let p = project_row(&mut c, project).await?;
        let row: MetricRow = c
            .fetch_optional(
                "SELECT id, definition, version, created_at, updated_at FROM metrics
                 WHERE project_id = $1 AND key = $2",
                args![p.id, key],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("metric '{key}'")))?;
        let users: Vec<(String, String, Json<Value>)> = c
            .fetch_all(
                "SELECT e.key, x.key, x.definition FROM experiments x
                 JOIN environments e ON e.id = x.environment_id
                 WHERE e.project_id = $1 ORDER BY e.key, x.key",
                args![p.id],
            )
            .await?;
        let mut blockers = Vec::new();
        for (env, x, def) in users {
            let def: Experiment = decode("experiment", def.0)?;
            if def.metric_keys().iter().any(|(k, _)| *k == key) {
                blockers.push(format!("experiment '{x}' in environment '{env}'"));
            }
        }
        if !blockers.is_empty() {
            return Err(StoreError::Conflict {
                message: format!(
                    "metric '{key}' is in use: remove it from these experiments first"
                ),
                blockers,
            });
        }
        c.execute("DELETE FROM metrics WHERE id = $1", args![row.id])
            .await?;
        let before = metric_view(row)?;
        let t = now();
        let rec = AuditRecord::new("metric.delete", "metric", key)
            .scoped(Some(project), None)
            .before(encode(&before.metric));
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates an experiment, as a draft.
    pub async fn create_experiment(
        &self,
        ctx: &WriteContext,
        project: &str,
        environment: &str,
        x: Experiment,
    ) -> Result<ExperimentView, StoreError> {
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let p = project_row(&mut c, project).await?;
        let e = environment_row(&mut c, p.id, environment).await?;
        let flag_id = check_experiment(&mut c, p.id, e.id, &x).await?;
        let t = now();
        c.execute(
            "INSERT INTO experiments (environment_id, flag_id, flag_key, key, definition, status,
                                      version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'draft', 1, $6, $6)",
            args![
                e.id,
                flag_id,
                x.flag.as_str(),
                x.key.as_str(),
                encode(&x),
                t
            ],
        )
        .await
        .map_err(|err| crate::store::unique_or(err, || format!("experiment '{}'", x.key)))?;
        let rec = AuditRecord::new("experiment.create", "experiment", &x.key)
            .scoped(Some(project), Some(environment))
            .after(encode(&x));
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        Ok(ExperimentView {
            experiment: x,
            status: ExperimentStatus::Draft,
            version: 1,
            iterations: Vec::new(),
            created_at: t,
            updated_at: t,
        })
    }

    /// One experiment with its iterations, and what its analysis needs.
    pub(crate) async fn load_experiment(
        &self,
        project: &str,
        environment: &str,
        key: &str,
    ) -> Result<LoadedExperiment, StoreError> {
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        let p = project_row(&mut c, project).await?;
        let e = environment_row(&mut c, p.id, environment).await?;
        let row = experiment_row(&mut c, e.id, key, false).await?;
        let id = row.id;
        let view = experiment_view(&mut c, row).await?;
        let iterations = iterations(&mut c, id).await?;
        Ok(LoadedExperiment {
            view,
            project_id: p.id,
            iterations,
        })
    }

    /// One experiment with its iterations.
    pub async fn get_experiment(
        &self,
        project: &str,
        environment: &str,
        key: &str,
    ) -> Result<ExperimentView, StoreError> {
        Ok(self.load_experiment(project, environment, key).await?.view)
    }

    /// An environment's experiments by key.
    pub async fn list_experiments(
        &self,
        project: &str,
        environment: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<ExperimentView>, StoreError> {
        let limit = page_limit(limit);
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        let p = project_row(&mut c, project).await?;
        let e = environment_row(&mut c, p.id, environment).await?;
        let rows: Vec<ExperimentRow> = c
            .fetch_all(
                "SELECT id, definition, status, version, created_at, updated_at
                 FROM experiments WHERE environment_id = $1 AND key > $2 ORDER BY key LIMIT $3",
                args![e.id, cursor.unwrap_or(""), limit + 1],
            )
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            items.push(experiment_view(&mut c, row).await?);
        }
        Ok(paginate(&mut items, limit, |x| x.experiment.key.clone()))
    }

    /// Replaces an experiment's definition (the key cannot change; nor can the flag or the
    /// control once it has started). Honours `If-Match`.
    pub async fn put_experiment(
        &self,
        ctx: &WriteContext,
        project: &str,
        environment: &str,
        key: &str,
        x: Experiment,
        if_match: Option<u64>,
    ) -> Result<ExperimentView, StoreError> {
        if x.key != key {
            return Err(StoreError::invalid(
                "key",
                "key_mismatch",
                format!(
                    "the body names experiment '{}' but the path names '{key}'; keys cannot be changed",
                    x.key
                ),
            ));
        }
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let p = project_row(&mut c, project).await?;
        let e = environment_row(&mut c, p.id, environment).await?;
        let row = experiment_row(&mut c, e.id, key, true).await?;
        check_version(if_match, row.version)?;
        let id = row.id;
        let before = experiment_view(&mut c, row).await?;
        if before.experiment == x {
            return Ok(before);
        }
        let flag_id = check_experiment(&mut c, p.id, e.id, &x).await?;
        if before.status != ExperimentStatus::Draft
            && (x.flag != before.experiment.flag || x.control != before.experiment.control)
        {
            return Err(StoreError::Conflict {
                message: format!(
                    "experiment '{key}' has started: its flag and control cannot change (create a new experiment)"
                ),
                blockers: Vec::new(),
            });
        }
        let t = now();
        let version = i64::try_from(before.version + 1).unwrap_or(i64::MAX);
        c.execute(
            "UPDATE experiments SET flag_id = $2, flag_key = $3, definition = $4, version = $5,
                    updated_at = $6 WHERE id = $1",
            args![id, flag_id, x.flag.as_str(), encode(&x), version, t],
        )
        .await?;
        let rec = AuditRecord::new("experiment.update", "experiment", key)
            .scoped(Some(project), Some(environment))
            .before(encode(&before.experiment))
            .after(encode(&x));
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        Ok(ExperimentView {
            experiment: x,
            version: to_u64(version),
            updated_at: t,
            ..before
        })
    }

    /// Deletes an experiment and its aggregates.
    pub async fn delete_experiment(
        &self,
        ctx: &WriteContext,
        project: &str,
        environment: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let p = project_row(&mut c, project).await?;
        let e = environment_row(&mut c, p.id, environment).await?;
        let row = experiment_row(&mut c, e.id, key, true).await?;
        let id = row.id;
        let before = experiment_view(&mut c, row).await?;
        c.execute("DELETE FROM experiments WHERE id = $1", args![id])
            .await?;
        let t = now();
        let rec = AuditRecord::new("experiment.delete", "experiment", key)
            .scoped(Some(project), Some(environment))
            .before(encode(&before.experiment));
        audit(&mut c, ctx, rec, t).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Starts (or restarts) an experiment: a new iteration under the flag's current
    /// allocation. Refused while it runs.
    pub async fn start_experiment(
        &self,
        ctx: &WriteContext,
        project: &str,
        environment: &str,
        key: &str,
    ) -> Result<ExperimentView, StoreError> {
        self.transition(ctx, (project, environment, key), true)
            .await
    }

    /// Stops a running experiment: its iteration ends and results freeze.
    pub async fn stop_experiment(
        &self,
        ctx: &WriteContext,
        project: &str,
        environment: &str,
        key: &str,
    ) -> Result<ExperimentView, StoreError> {
        self.transition(ctx, (project, environment, key), false)
            .await
    }

    async fn transition(
        &self,
        ctx: &WriteContext,
        (project, environment, key): (&str, &str, &str),
        start: bool,
    ) -> Result<ExperimentView, StoreError> {
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let p = project_row(&mut c, project).await?;
        let e = environment_row(&mut c, p.id, environment).await?;
        // The environment lock orders this with flag-configuration writes, so the allocation
        // read here is the one in force when the iteration starts.
        c.lock_environment(e.id).await?;
        let row = experiment_row(&mut c, e.id, key, true).await?;
        let id = row.id;
        let before = experiment_view(&mut c, row).await?;
        let running = before.status == ExperimentStatus::Running;
        if start == running {
            return Err(StoreError::Conflict {
                message: format!(
                    "experiment '{key}' is {}",
                    if running {
                        "already running"
                    } else {
                        "not running"
                    }
                ),
                blockers: Vec::new(),
            });
        }
        let t = now();
        let ms = time_ms(t);
        if start {
            let (_, def, cfg) =
                flag_with_config(&mut c, p.id, e.id, &before.experiment.flag).await?;
            let number = i64::try_from(before.iterations.len()).unwrap_or(i64::MAX) + 1;
            c.execute(
                "INSERT INTO experiment_iterations (experiment_id, number, started_ms, allocation, reason)
                 VALUES ($1, $2, $3, $4, 'start')",
                args![id, number, ms, encode(&allocation_of(&def, &cfg))],
            )
            .await?;
        } else {
            c.execute(
                "UPDATE experiment_iterations SET ended_ms = $2
                 WHERE experiment_id = $1 AND ended_ms IS NULL",
                args![id, ms],
            )
            .await?;
        }
        let (status, action) = if start {
            (ExperimentStatus::Running, "experiment.start")
        } else {
            (ExperimentStatus::Stopped, "experiment.stop")
        };
        let version = i64::try_from(before.version + 1).unwrap_or(i64::MAX);
        let (started, stopped): (Option<OffsetDateTime>, Option<OffsetDateTime>) = if start {
            (Some(t), None)
        } else {
            (None, Some(t))
        };
        c.execute(
            "UPDATE experiments SET status = $2, version = $3, updated_at = $4,
                    started_at = COALESCE($5, started_at), stopped_at = COALESCE($6, stopped_at)
             WHERE id = $1",
            args![id, status.as_str(), version, t, started, stopped],
        )
        .await?;
        let rec = AuditRecord::new(action, "experiment", key)
            .scoped(Some(project), Some(environment))
            .after(serde_json::json!({"status": status.as_str()}));
        audit(&mut c, ctx, rec, t).await?;
        let its = iterations(&mut c, id).await?;
        tx.commit().await?;
        Ok(ExperimentView {
            status,
            version: to_u64(version),
            iterations: its
                .iter()
                .map(IterationRow::view)
                .collect::<Result<_, _>>()?,
            updated_at: t,
            ..before
        })
    }
}
