//! Release plans: move a flag's fallthrough in one environment from variation A to B in steps
//! (`percentage`, minimum hold), e.g. 1 % for 1 h → 10 % for 4 h → 50 % for a day → 100 %.
//!
//! Each step is an ordinary configuration write ([`Store::patch_config`] of `fallthrough`), so
//! it is validated, versioned, audited and streamed like any other; B is listed first in the
//! rollout, so raising its weight only adds contexts to B (bucketing is monotone). The plan
//! touches nothing but the fallthrough: abort restores the fallthrough it found.
//!
//! One actor changes a plan at a time: the worker of any server (advancing a step whose hold
//! is over) or an API request (advance, pause, resume, abort) first takes the plan's lease
//! with one conditional `UPDATE`, and gives it back when done. A request that finds the lease
//! taken gets 409 and retries; a lease left by a dead server expires after 60 s.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::types::Json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use vexil_schema::{FlagConfig, Rollout, Serve, WeightedVariation};

use crate::auth::{Actor, Role};
use crate::db::{Conn, args};
use crate::store::{
    AuditRecord, ConfigPatch, Page, Store, StoreError, WriteContext, audit, encode,
    environment_row, paginate, project_row,
};

/// Total rollout weight (100 %).
const SCALE: u32 = 100_000;
/// How long a lease keeps others off a plan.
const LEASE: time::Duration = time::Duration::seconds(60);

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanStep {
    /// Share of contexts on the new variation, in percent (0 < p ≤ 100, at most three
    /// decimals).
    pub percentage: f64,
    /// Minutes to hold this step before the next one (ignored for the last step).
    #[serde(default)]
    pub hold_minutes: u32,
}

/// A plan to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReleasePlan {
    /// The variation contexts move from (default: the one the fallthrough serves now).
    #[serde(default)]
    pub from_variation: Option<usize>,
    /// The variation contexts move to.
    pub to_variation: usize,
    /// Strictly increasing percentages, the last one 100.
    pub steps: Vec<PlanStep>,
    /// Why.
    #[serde(default)]
    pub description: String,
}

/// Where a plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanState {
    /// Steps advance when their holds end.
    Running,
    /// Held at the current step until resumed.
    Paused,
    /// The last step (100 %) is in force.
    Completed,
    /// Stopped, the fallthrough from before the plan restored.
    Aborted,
}

impl PlanState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Aborted => "aborted",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "running" => Self::Running,
            "paused" => Self::Paused,
            "completed" => Self::Completed,
            "aborted" => Self::Aborted,
            other => return Err(StoreError::Corrupt(format!("plan state '{other}'"))),
        })
    }
}

/// A release plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReleasePlan {
    /// Id.
    pub id: i64,
    /// Project key.
    pub project: String,
    /// Environment key.
    pub environment: String,
    /// Flag key.
    pub flag: String,
    /// The variation contexts move from.
    pub from_variation: i64,
    /// The variation contexts move to.
    pub to_variation: i64,
    /// The steps.
    pub steps: Vec<PlanStep>,
    /// The index of the step in force.
    pub current_step: i64,
    /// Its state.
    pub state: PlanState,
    /// While running: when the next step is due.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub next_step_at: Option<OffsetDateTime>,
    /// While paused: milliseconds of the current hold left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<i64>,
    /// Why it paused or stopped, when not by hand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why.
    pub description: String,
    /// Who created it.
    pub author: String,
    /// Version; changes with every step and action.
    pub version: i64,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it completed or was aborted.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub finished_at: Option<OffsetDateTime>,
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: i64,
    project: String,
    environment: String,
    flag: String,
    from_variation: i64,
    to_variation: i64,
    steps: Json<Value>,
    current_step: i64,
    state: String,
    next_step_at: Option<OffsetDateTime>,
    remaining_ms: Option<i64>,
    pre_fallthrough: Json<Value>,
    last_fallthrough: Option<Json<Value>>,
    reason: Option<String>,
    description: String,
    author: String,
    author_token_id: Option<i64>,
    version: i64,
    created_at: OffsetDateTime,
    finished_at: Option<OffsetDateTime>,
}

macro_rules! select {
    ($tail:literal) => {
        concat!(
            "SELECT r.id, p.key AS project, e.key AS environment, f.key AS flag,
                r.from_variation, r.to_variation, r.steps, r.current_step, r.state,
                r.next_step_at, r.remaining_ms, r.pre_fallthrough, r.last_fallthrough, r.reason,
                r.description, r.author, r.author_token_id, r.version, r.created_at,
                r.finished_at
             FROM release_plans r
             JOIN projects p ON p.id = r.project_id
             JOIN environments e ON e.id = r.environment_id
             JOIN flags f ON f.id = r.flag_id ",
            $tail
        )
    };
}

impl Row {
    fn steps(&self) -> Result<Vec<PlanStep>, StoreError> {
        crate::store::decode("plan steps", self.steps.0.clone())
    }

    fn view(self) -> Result<ReleasePlan, StoreError> {
        Ok(ReleasePlan {
            steps: self.steps()?,
            id: self.id,
            project: self.project,
            environment: self.environment,
            flag: self.flag,
            from_variation: self.from_variation,
            to_variation: self.to_variation,
            current_step: self.current_step,
            state: PlanState::parse(&self.state)?,
            next_step_at: self.next_step_at,
            remaining_ms: self.remaining_ms,
            reason: self.reason,
            description: self.description,
            author: self.author,
            version: self.version,
            created_at: self.created_at,
            finished_at: self.finished_at,
        })
    }

    fn path(&self) -> (&str, &str, &str) {
        (&self.project, &self.flag, &self.environment)
    }

    fn actor(&self) -> WriteContext {
        WriteContext {
            actor: Actor {
                token_id: self.author_token_id,
                name: format!("release plan {} (on behalf of {})", self.id, self.author),
                role: Role::Editor,
                // Checked against the author's scope when the work was created.
                scope: crate::auth::Scope::unrestricted(),
            },
            request_id: None,
        }
    }
}

/// The weight of `percentage` on the rollout scale.
fn weight(percentage: f64) -> u32 {
    // Checked to lie in (0, 100] at creation.
    (percentage * 1000.0).round().clamp(0.0, f64::from(SCALE)) as u32
}

/// The fallthrough of a step: the new variation first (so a higher weight only adds contexts
/// to it), the old one for the rest; 100 % serves the new variation alone.
pub(crate) fn step_fallthrough(from: usize, to: usize, percentage: f64) -> Serve {
    let w = weight(percentage);
    if w >= SCALE {
        return Serve::Variation(to);
    }
    Serve::Rollout(Rollout {
        variations: vec![
            WeightedVariation {
                variation: to,
                weight: w,
            },
            WeightedVariation {
                variation: from,
                weight: SCALE - w,
            },
        ],
        bucket_by: None,
        experiment: false,
    })
}

fn check_steps(steps: &[PlanStep]) -> Result<(), StoreError> {
    if steps.is_empty() || steps.len() > 50 {
        return Err(StoreError::invalid(
            "steps",
            "length",
            "a plan has 1 to 50 steps",
        ));
    }
    let mut last = 0.0;
    for (i, s) in steps.iter().enumerate() {
        let p = s.percentage;
        if !(p.is_finite() && p > last && p <= 100.0) {
            return Err(StoreError::invalid(
                format!("steps[{i}].percentage"),
                "increasing",
                "percentages increase strictly, above 0 and at most 100",
            ));
        }
        if (p * 1000.0).fract().abs() > 1e-6 {
            return Err(StoreError::invalid(
                format!("steps[{i}].percentage"),
                "precision",
                "at most three decimals",
            ));
        }
        last = p;
    }
    if last < 100.0 {
        return Err(StoreError::invalid(
            format!("steps[{}].percentage", steps.len() - 1),
            "ends_at_100",
            "the last step is 100",
        ));
    }
    Ok(())
}

async fn ids(
    c: &mut Conn<'_>,
    project: &str,
    flag: &str,
    environment: &str,
) -> Result<(i64, i64, i64), StoreError> {
    let p = project_row(c, project).await?;
    let e = environment_row(c, p.id, environment).await?;
    let f: Option<(i64,)> = c
        .fetch_optional(
            "SELECT id FROM flags WHERE project_id = $1 AND key = $2",
            args![p.id, flag],
        )
        .await?;
    let (f,) = f.ok_or_else(|| StoreError::NotFound(format!("flag '{flag}'")))?;
    Ok((p.id, e.id, f))
}

/// Refuses (409, naming it) while a plan on the flag is running or paused.
async fn active_plan(
    c: &mut Conn<'_>,
    flag_id: i64,
    environment_id: i64,
) -> Result<(), StoreError> {
    let active: Option<(i64,)> = c
        .fetch_optional(
            "SELECT id FROM release_plans WHERE flag_id = $1 AND environment_id = $2
             AND state IN ('running', 'paused')",
            args![flag_id, environment_id],
        )
        .await?;
    match active {
        Some((other,)) => Err(StoreError::Conflict {
            message: format!(
                "release plan {other} is active on this flag: finish or abort it first"
            ),
            blockers: vec![other.to_string()],
        }),
        None => Ok(()),
    }
}

async fn fetch(c: &mut Conn<'_>, id: i64) -> Result<Row, StoreError> {
    c.fetch_optional(select!("WHERE r.id = $1"), args![id])
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("release plan {id}")))
}

/// Takes the plan's lease for `me`; `false` if someone else holds it.
async fn lease(store: &Store, id: i64, me: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
    let mut pc = store.db().acquire().await?;
    let n = pc
        .conn()
        .execute(
            "UPDATE release_plans SET claimed_by = $2, lease_until = $3
             WHERE id = $1 AND (lease_until IS NULL OR lease_until < $4)",
            args![id, me, now + LEASE, now],
        )
        .await?;
    Ok(n == 1)
}

/// What an action does to the plan row, written with its audit entry in one transaction.
struct Transition {
    state: PlanState,
    current_step: i64,
    next_step_at: Option<OffsetDateTime>,
    remaining_ms: Option<i64>,
    last_fallthrough: Option<Value>,
    reason: Option<String>,
    action: &'static str,
}

/// Writes `t`, audits it as `ctx` and gives the lease back.
async fn transition(
    store: &Store,
    ctx: &WriteContext,
    before: &Row,
    me: &str,
    t: Transition,
    now: OffsetDateTime,
) -> Result<ReleasePlan, StoreError> {
    let mut tx = store.db().begin().await?;
    let mut c = tx.conn();
    let finished = matches!(t.state, PlanState::Completed | PlanState::Aborted).then_some(now);
    c.execute(
        "UPDATE release_plans SET state = $3, current_step = $4, next_step_at = $5,
             remaining_ms = $6, last_fallthrough = COALESCE($7, last_fallthrough), reason = $8,
             finished_at = COALESCE($9, finished_at), version = version + 1, updated_at = $10,
             claimed_by = NULL, lease_until = NULL
         WHERE id = $1 AND claimed_by = $2",
        args![
            before.id,
            me,
            t.state.as_str(),
            t.current_step,
            t.next_step_at,
            t.remaining_ms,
            t.last_fallthrough,
            t.reason,
            finished,
            now
        ],
    )
    .await?;
    let view = fetch(&mut c, before.id).await?.view()?;
    let key = before.id.to_string();
    let rec = AuditRecord::new(t.action, "release_plan", &key)
        .scoped(Some(&before.project), Some(&before.environment))
        .after(encode(&view));
    audit(&mut c, ctx, rec, now).await?;
    tx.commit().await?;
    Ok(view)
}

/// Gives a lease back without changing the plan.
async fn unlease(store: &Store, id: i64, me: &str) -> Result<(), StoreError> {
    let mut pc = store.db().acquire().await?;
    pc.conn()
        .execute(
            "UPDATE release_plans SET claimed_by = NULL, lease_until = NULL
             WHERE id = $1 AND claimed_by = $2",
            args![id, me],
        )
        .await?;
    Ok(())
}

/// Writes the fallthrough of step `i` as the plan. Fails (the plan should pause) if the
/// fallthrough is no longer what the plan last wrote.
async fn write_step(store: &Store, row: &Row, i: usize) -> Result<(FlagConfig, Value), String> {
    let steps = row.steps().map_err(|e| e.to_string())?;
    let step = steps.get(i).ok_or("no such step")?;
    let (project, flag, environment) = row.path();
    let current = store
        .get_config(project, flag, environment)
        .await
        .map_err(|e| e.to_string())?;
    let from = usize::try_from(row.from_variation).unwrap_or(0);
    let to = usize::try_from(row.to_variation).unwrap_or(0);
    let serve = step_fallthrough(from, to, step.percentage);
    let written = encode(&serve);
    let now_serving = encode(&current.fallthrough);
    if now_serving == written {
        // Already in place (a server died after writing it, before recording it).
        return Ok((current, written));
    }
    let expected = row.last_fallthrough.as_ref().map(|j| &j.0);
    if let Some(expected) = expected
        && now_serving != *expected
    {
        return Err(format!(
            "the fallthrough was changed outside the plan after step {}: resume to adopt it \
             or abort to restore the one from before the plan",
            row.current_step
        ));
    }
    let patch = ConfigPatch {
        fallthrough: Some(serve),
        ..ConfigPatch::default()
    };
    let view = store
        .patch_config(
            &row.actor(),
            project,
            flag,
            environment,
            patch,
            Some(current.version),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((view.config, written))
}

fn hold_of(steps: &[PlanStep], i: usize) -> time::Duration {
    time::Duration::minutes(i64::from(steps.get(i).map_or(0, |s| s.hold_minutes)))
}

/// Applies step `next` of a leased plan and records it (completed after the last step). On a
/// write failure the plan pauses with the reason.
async fn step_to(
    store: &Store,
    ctx: &WriteContext,
    row: &Row,
    me: &str,
    next: usize,
    now: OffsetDateTime,
) -> Result<ReleasePlan, StoreError> {
    let steps = row.steps()?;
    match write_step(store, row, next).await {
        Ok((_, written)) => {
            let last = next + 1 >= steps.len();
            let t = Transition {
                state: if last {
                    PlanState::Completed
                } else {
                    PlanState::Running
                },
                current_step: i64::try_from(next).unwrap_or(i64::MAX),
                next_step_at: (!last).then(|| now + hold_of(&steps, next)),
                remaining_ms: None,
                last_fallthrough: Some(written),
                reason: None,
                action: if last { "plan.completed" } else { "plan.step" },
            };
            transition(store, ctx, row, me, t, now).await
        }
        Err(reason) => {
            tracing::warn!(plan = row.id, %reason, "release plan paused");
            let t = Transition {
                state: PlanState::Paused,
                current_step: row.current_step,
                next_step_at: None,
                remaining_ms: Some(0),
                last_fallthrough: None,
                reason: Some(reason),
                action: "plan.pause",
            };
            transition(store, ctx, row, me, t, now).await
        }
    }
}

/// A manual action on a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanAction {
    /// Apply the next step now.
    Advance,
    /// Hold at the current step.
    Pause,
    /// Continue, with the rest of the current hold.
    Resume,
    /// Stop and restore the fallthrough from before the plan.
    Abort,
}

impl Store {
    /// Creates a release plan and applies its first step.
    pub async fn create_release_plan(
        &self,
        ctx: &WriteContext,
        (project, flag, environment): (&str, &str, &str),
        req: NewReleasePlan,
        now: OffsetDateTime,
    ) -> Result<ReleasePlan, StoreError> {
        check_steps(&req.steps)?;
        {
            // Said first: while a plan runs, the fallthrough is the plan's rollout.
            let mut pc = self.db().acquire().await?;
            let mut c = pc.conn();
            let (_, environment_id, flag_id) = ids(&mut c, project, flag, environment).await?;
            active_plan(&mut c, flag_id, environment_id).await?;
        }
        let current = self.get_config(project, flag, environment).await?;
        let from = match (req.from_variation, &current.fallthrough) {
            (Some(v), _) => v,
            (None, Serve::Variation(v)) => *v,
            (None, Serve::Rollout(_)) => {
                return Err(StoreError::invalid(
                    "from_variation",
                    "required",
                    "the fallthrough is a rollout: name the variation contexts move from",
                ));
            }
        };
        let variations = self
            .get_flag(project, flag)
            .await?
            .definition
            .variations
            .len();
        for (field, v) in [("from_variation", from), ("to_variation", req.to_variation)] {
            if v >= variations {
                return Err(StoreError::invalid(
                    field,
                    "variation",
                    format!("the flag has {variations} variations"),
                ));
            }
        }
        if from == req.to_variation {
            return Err(StoreError::invalid(
                "to_variation",
                "distinct",
                "the plan moves contexts to another variation",
            ));
        }
        let me = format!("request-{}", uuid::Uuid::new_v4().simple());
        let id = {
            let mut tx = self.db().begin().await?;
            let mut c = tx.conn();
            let (project_id, environment_id, flag_id) =
                ids(&mut c, project, flag, environment).await?;
            active_plan(&mut c, flag_id, environment_id).await?;
            let (id,): (i64,) = c
                .fetch_one(
                    "INSERT INTO release_plans
                         (project_id, environment_id, flag_id, from_variation, to_variation,
                          steps, current_step, state, pre_fallthrough, last_fallthrough,
                          description, author, author_token_id, claimed_by, lease_until,
                          version, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, -1, 'running', $7, $7, $8, $9, $10,
                             $11, $12, 1, $13, $13)
                     RETURNING id",
                    args![
                        project_id,
                        environment_id,
                        flag_id,
                        i64::try_from(from).unwrap_or(i64::MAX),
                        i64::try_from(req.to_variation).unwrap_or(i64::MAX),
                        json!(req.steps),
                        encode(&current.fallthrough),
                        req.description.as_str(),
                        ctx.actor.name.as_str(),
                        ctx.actor.token_id,
                        me.as_str(),
                        now + LEASE,
                        now
                    ],
                )
                .await?;
            let view = fetch(&mut c, id).await?.view()?;
            let key = id.to_string();
            let rec = AuditRecord::new("plan.create", "release_plan", &key)
                .scoped(Some(project), Some(environment))
                .after(encode(&view));
            audit(&mut c, ctx, rec, now).await?;
            tx.commit().await?;
            id
        };
        let row = {
            let mut pc = self.db().acquire().await?;
            fetch(&mut pc.conn(), id).await?
        };
        step_to(self, ctx, &row, &me, 0, now).await
    }

    /// The plans of a flag in an environment, newest first.
    pub async fn list_release_plans(
        &self,
        (project, flag, environment): (&str, &str, &str),
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<ReleasePlan>, StoreError> {
        let limit = crate::store::page_limit(limit);
        let before = match cursor {
            None => i64::MAX,
            Some(c) => c.parse::<i64>().map_err(|_| {
                StoreError::invalid("cursor", "cursor", "not a cursor from this API")
            })?,
        };
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        let (_, environment_id, flag_id) = ids(&mut c, project, flag, environment).await?;
        let rows: Vec<Row> = c
            .fetch_all(
                select!(
                    "WHERE r.flag_id = $1 AND r.environment_id = $2 AND r.id < $3
                     ORDER BY r.id DESC LIMIT $4"
                ),
                args![flag_id, environment_id, before, limit + 1],
            )
            .await?;
        let mut items = rows
            .into_iter()
            .map(Row::view)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(&mut items, limit, |p| p.id.to_string()))
    }

    /// One plan of a flag in an environment.
    pub async fn get_release_plan(
        &self,
        path: (&str, &str, &str),
        id: i64,
    ) -> Result<ReleasePlan, StoreError> {
        self.plan_row(path, id).await?.view()
    }

    async fn plan_row(
        &self,
        (project, flag, environment): (&str, &str, &str),
        id: i64,
    ) -> Result<Row, StoreError> {
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        let (_, environment_id, flag_id) = ids(&mut c, project, flag, environment).await?;
        c.fetch_optional(
            select!("WHERE r.id = $1 AND r.flag_id = $2 AND r.environment_id = $3"),
            args![id, flag_id, environment_id],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("release plan {id}")))
    }

    /// Advances, pauses, resumes or aborts a plan. 409 if the action does not apply to its
    /// state or the plan is being changed at this moment.
    pub async fn act_on_release_plan(
        &self,
        ctx: &WriteContext,
        path: (&str, &str, &str),
        id: i64,
        action: PlanAction,
        now: OffsetDateTime,
    ) -> Result<ReleasePlan, StoreError> {
        self.plan_row(path, id).await?;
        let me = format!("request-{}", uuid::Uuid::new_v4().simple());
        if !lease(self, id, &me, now).await? {
            return Err(StoreError::Conflict {
                message: format!("release plan {id} is being changed right now: retry"),
                blockers: Vec::new(),
            });
        }
        let result = self.act_leased(ctx, id, &me, action, now).await;
        if result.is_err() {
            unlease(self, id, &me).await?;
        }
        result
    }

    async fn act_leased(
        &self,
        ctx: &WriteContext,
        id: i64,
        me: &str,
        action: PlanAction,
        now: OffsetDateTime,
    ) -> Result<ReleasePlan, StoreError> {
        let row = {
            let mut pc = self.db().acquire().await?;
            fetch(&mut pc.conn(), id).await?
        };
        let state = PlanState::parse(&row.state)?;
        let refuse = |what: &str| StoreError::Conflict {
            message: format!(
                "release plan {id} is {}: it cannot be {what}",
                state.as_str()
            ),
            blockers: Vec::new(),
        };
        let next = usize::try_from(row.current_step + 1).unwrap_or(0);
        match (action, state) {
            (PlanAction::Advance, PlanState::Running) => {
                step_to(self, ctx, &row, me, next, now).await
            }
            (PlanAction::Advance, _) => Err(refuse("advanced")),
            (PlanAction::Pause, PlanState::Running) => {
                let left = row
                    .next_step_at
                    .map_or(0, |t| (t - now).whole_milliseconds().max(0));
                let t = Transition {
                    state: PlanState::Paused,
                    current_step: row.current_step,
                    next_step_at: None,
                    remaining_ms: Some(i64::try_from(left).unwrap_or(0)),
                    last_fallthrough: None,
                    reason: None,
                    action: "plan.pause",
                };
                transition(self, ctx, &row, me, t, now).await
            }
            (PlanAction::Pause, _) => Err(refuse("paused")),
            (PlanAction::Resume, PlanState::Paused) => {
                // Resuming after the plan paused itself (the fallthrough changed by hand)
                // takes the current fallthrough as the plan's own.
                let current = self
                    .get_config(&row.project, &row.flag, &row.environment)
                    .await?;
                let left = time::Duration::milliseconds(row.remaining_ms.unwrap_or(0));
                let t = Transition {
                    state: PlanState::Running,
                    current_step: row.current_step,
                    next_step_at: Some(now + left),
                    remaining_ms: None,
                    last_fallthrough: Some(encode(&current.fallthrough)),
                    reason: None,
                    action: "plan.resume",
                };
                transition(self, ctx, &row, me, t, now).await
            }
            (PlanAction::Resume, _) => Err(refuse("resumed")),
            (PlanAction::Abort, PlanState::Running | PlanState::Paused) => {
                let pre: Serve =
                    crate::store::decode("plan fallthrough", row.pre_fallthrough.0.clone())?;
                let patch = ConfigPatch {
                    fallthrough: Some(pre),
                    ..ConfigPatch::default()
                };
                self.patch_config(ctx, &row.project, &row.flag, &row.environment, patch, None)
                    .await?;
                let t = Transition {
                    state: PlanState::Aborted,
                    current_step: row.current_step,
                    next_step_at: None,
                    remaining_ms: None,
                    last_fallthrough: None,
                    reason: None,
                    action: "plan.abort",
                };
                transition(self, ctx, &row, me, t, now).await
            }
            (PlanAction::Abort, _) => Err(refuse("aborted")),
        }
    }
}

/// Advances every running plan whose hold has ended at `now`; returns how many moved.
pub(crate) async fn run_due(
    store: &Store,
    me: &str,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let due: Vec<(i64,)> = {
        let mut pc = store.db().acquire().await?;
        pc.conn()
            .fetch_all(
                "SELECT id FROM release_plans WHERE state = 'running' AND next_step_at <= $1
                   AND (lease_until IS NULL OR lease_until < $1)
                 ORDER BY next_step_at LIMIT 16",
                args![now],
            )
            .await?
    };
    let mut moved = 0;
    for (id,) in due {
        if !lease(store, id, me, now).await? {
            continue;
        }
        let row = {
            let mut pc = store.db().acquire().await?;
            fetch(&mut pc.conn(), id).await?
        };
        // Re-read under the lease: an action may have paused or advanced it since.
        let due_now = row.state == "running" && row.next_step_at.is_some_and(|t| t <= now);
        if !due_now {
            unlease(store, id, me).await?;
            continue;
        }
        let next = usize::try_from(row.current_step + 1).unwrap_or(0);
        match step_to(store, &row.actor(), &row, me, next, now).await {
            Ok(_) => moved += 1,
            Err(e) => {
                tracing::warn!(plan = id, error = %e, "release plan step failed, will retry");
                unlease(store, id, me).await?;
            }
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(p: f64) -> PlanStep {
        PlanStep {
            percentage: p,
            hold_minutes: 60,
        }
    }

    #[test]
    fn steps_increase_to_100_with_three_decimals_at_most() {
        assert!(check_steps(&[step(1.0), step(10.0), step(50.0), step(100.0)]).is_ok());
        assert!(check_steps(&[step(0.5), step(100.0)]).is_ok());
        assert!(check_steps(&[step(100.0)]).is_ok());
        assert!(check_steps(&[]).is_err());
        assert!(check_steps(&[step(10.0), step(10.0), step(100.0)]).is_err());
        assert!(check_steps(&[step(0.0), step(100.0)]).is_err());
        assert!(check_steps(&[step(10.0), step(50.0)]).is_err());
        assert!(check_steps(&[step(10.0), step(101.0)]).is_err());
        assert!(check_steps(&[step(0.0001), step(100.0)]).is_err());
        assert!(check_steps(&[step(f64::NAN), step(100.0)]).is_err());
    }

    #[test]
    fn a_step_puts_the_new_variation_first_and_100_serves_it_alone() {
        let s = encode(&step_fallthrough(1, 0, 10.0));
        assert_eq!(
            s,
            json!({"rollout": {"variations": [{"variation": 0, "weight": 10000},
                                              {"variation": 1, "weight": 90000}]}})
        );
        assert_eq!(
            encode(&step_fallthrough(1, 0, 100.0)),
            json!({"variation": 0})
        );
        assert_eq!(weight(0.001), 1);
    }
}
