//! The plan lease and the writes of a step: one actor at a time applies a step, records a
//! transition with its audit entry, and the worker advances plans whose hold has ended.
//!
//! Under an approval policy a step that needs a write is not written: it becomes a change
//! request proposed by the plan on behalf of its author, and the plan waits
//! (`waiting_for_approval`). Once the request is approved, the worker applies it through the
//! change-request apply path ([`Store::apply_change_request`]) under the plan's lease, so
//! exactly one server applies it; a rejected request pauses the plan.

use super::*;
use crate::delivery::approvals::requests::{ChangeRequestState, Proposal, ReviewKind};
use crate::delivery::approvals::requests::{propose_in, withdraw_in};
use crate::delivery::approvals::requirement;

pub(super) async fn fetch(c: &mut Conn<'_>, id: i64) -> Result<Row, StoreError> {
    c.fetch_optional(select!("WHERE r.id = $1"), args![id])
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("release plan {id}")))
}

/// Takes the plan's lease for `me`; `false` if someone else holds it.
pub(super) async fn lease(
    store: &Store,
    id: i64,
    me: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
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

/// The ids of the plans `sql` selects as due at `now` (`$1`).
pub(super) async fn due(
    store: &Store,
    sql: &'static str,
    now: OffsetDateTime,
) -> Result<Vec<i64>, StoreError> {
    let mut pc = store.db().acquire().await?;
    let rows: Vec<(i64,)> = pc.conn().fetch_all(sql, args![now]).await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Leases plan `id` for a worker and re-reads it under the lease: `None` (lease given back
/// or never taken) unless it is still `wanted` (an action may have changed it since it was
/// selected).
pub(super) async fn lease_row(
    store: &Store,
    id: i64,
    me: &str,
    now: OffsetDateTime,
    wanted: impl Fn(&Row) -> bool,
) -> Result<Option<Row>, StoreError> {
    if !lease(store, id, me, now).await? {
        return Ok(None);
    }
    let row = {
        let mut pc = store.db().acquire().await?;
        fetch(&mut pc.conn(), id).await?
    };
    if wanted(&row) {
        Ok(Some(row))
    } else {
        unlease(store, id, me).await?;
        Ok(None)
    }
}

/// What an action does to the plan row, written with its audit entry in one transaction.
pub(super) struct Transition {
    pub(super) state: PlanState,
    pub(super) current_step: i64,
    pub(super) next_step_at: Option<OffsetDateTime>,
    pub(super) remaining_ms: Option<i64>,
    pub(super) last_fallthrough: Option<Value>,
    pub(super) reason: Option<String>,
    /// The change request of the next step (waiting for approval only).
    pub(super) change_request_id: Option<i64>,
    /// Guardrail readings to keep (a breach that could not roll back).
    pub(super) evidence: Option<Value>,
    pub(super) action: &'static str,
}

impl Transition {
    /// To `state` at the current step, nothing else set.
    pub(super) fn to(state: PlanState, row: &Row, action: &'static str) -> Self {
        Self {
            state,
            current_step: row.current_step,
            next_step_at: None,
            remaining_ms: None,
            last_fallthrough: None,
            reason: None,
            change_request_id: None,
            evidence: None,
            action,
        }
    }
}

/// Writes `t`, audits it as `ctx` and gives the lease back.
pub(super) async fn transition(
    store: &Store,
    ctx: &WriteContext,
    before: &Row,
    me: &str,
    t: Transition,
    now: OffsetDateTime,
) -> Result<ReleasePlan, StoreError> {
    let mut tx = store.db().begin().await?;
    let view = transition_in(&mut tx.conn(), ctx, before, me, t, now).await?;
    tx.commit().await?;
    Ok(view)
}

/// [`transition`] in the caller's transaction. Leaving `waiting_for_approval` other than by
/// applying the step (pause, abort) withdraws its change request.
pub(super) async fn transition_in(
    c: &mut Conn<'_>,
    ctx: &WriteContext,
    before: &Row,
    me: &str,
    t: Transition,
    now: OffsetDateTime,
) -> Result<ReleasePlan, StoreError> {
    if let Some(cr) = before.change_request_id
        && t.state != PlanState::WaitingForApproval
    {
        let why = format!(
            "withdrawn by release plan {} ({})",
            before.id,
            t.reason.as_deref().unwrap_or(t.action)
        );
        withdraw_in(c, ctx, cr, &why, now).await?;
    }
    let finished = matches!(t.state, PlanState::Completed | PlanState::Aborted).then_some(now);
    // A new step starts the guardrails' count afresh; a plan with guardrails whose step is
    // live (running, or waiting to approve the next one) is checked at once, then every
    // interval; any other is not checked.
    let step_started = (t.current_step != before.current_step).then_some(now);
    let has_guardrails = before.guardrails().is_ok_and(|g| !g.is_empty());
    let live = matches!(t.state, PlanState::Running | PlanState::WaitingForApproval)
        && t.current_step >= 0;
    let next_check = (live && has_guardrails).then_some(now);
    c.execute(
        "UPDATE release_plans SET state = $3, current_step = $4, next_step_at = $5,
             remaining_ms = $6, last_fallthrough = COALESCE($7, last_fallthrough), reason = $8,
             finished_at = COALESCE($9, finished_at), version = version + 1, updated_at = $10,
             claimed_by = NULL, lease_until = NULL,
             step_started_at = COALESCE($11, step_started_at), next_check_at = $12,
             change_request_id = $13, evidence = COALESCE($14, evidence)
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
            now,
            step_started,
            next_check,
            t.change_request_id,
            t.evidence
        ],
    )
    .await?;
    let view = fetch(c, before.id).await?.view()?;
    let key = before.id.to_string();
    let rec = AuditRecord::new(t.action, "release_plan", &key)
        .scoped(Some(&before.project), Some(&before.environment))
        .after(encode(&view));
    audit(c, ctx, rec, now).await?;
    Ok(view)
}

/// Gives a lease back without changing the plan.
pub(super) async fn unlease(store: &Store, id: i64, me: &str) -> Result<(), StoreError> {
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

/// Step `i` of a plan, ready to be written.
struct Prepared {
    /// The configuration now.
    current: FlagConfig,
    /// The step's fallthrough.
    serve: Serve,
    /// Whether it is already in force.
    in_place: bool,
}

/// Prepares step `i`. Fails (the plan should pause) if the fallthrough is no longer what the
/// plan last wrote.
async fn prepare(store: &Store, row: &Row, i: usize) -> Result<Prepared, String> {
    let (project, flag, environment) = row.path();
    let current = store
        .get_config(project, flag, environment)
        .await
        .map_err(|e| e.to_string())?;
    let serve = row.step_serve(i).map_err(|e| e.to_string())?;
    let now_serving = encode(&current.fallthrough);
    if now_serving == encode(&serve) {
        // Already in place (a server died after writing it, before recording it).
        return Ok(Prepared {
            current,
            serve,
            in_place: true,
        });
    }
    if let Some(expected) = row.last_fallthrough.as_ref().map(|j| &j.0)
        && now_serving != *expected
    {
        return Err(format!(
            "the fallthrough was changed outside the plan after step {}: resume to adopt it \
             or abort to restore the one from before the plan",
            row.current_step
        ));
    }
    Ok(Prepared {
        current,
        serve,
        in_place: false,
    })
}

pub(super) fn hold_of(steps: &[PlanStep], i: usize) -> time::Duration {
    time::Duration::minutes(i64::from(steps.get(i).map_or(0, |s| s.hold_minutes)))
}

/// Applies step `next` of a leased plan and records it (completed after the last step), or,
/// under an approval policy, proposes it as a change request and waits. On a write failure
/// the plan pauses with the reason.
pub(super) async fn step_to(
    store: &Store,
    ctx: &WriteContext,
    row: &Row,
    me: &str,
    next: usize,
    now: OffsetDateTime,
) -> Result<ReleasePlan, StoreError> {
    let p = match prepare(store, row, next).await {
        Ok(p) => p,
        Err(reason) => return pause(store, ctx, row, me, reason, now).await,
    };
    if p.in_place {
        return stepped(store, ctx, row, me, next, now).await;
    }
    let governed = {
        let mut pc = store.db().acquire().await?;
        requirement(&mut pc.conn(), row.environment_id)
            .await?
            .governed
    };
    if governed {
        return propose(store, ctx, row, me, next, p, now).await;
    }
    let (project, flag, environment) = row.path();
    let patch = ConfigPatch {
        fallthrough: Some(p.serve),
        ..ConfigPatch::default()
    };
    let written = store
        .patch_config(
            &row.actor(),
            project,
            flag,
            environment,
            patch,
            Some(p.current.version),
        )
        .await;
    match written {
        Ok(_) => stepped(store, ctx, row, me, next, now).await,
        Err(e) => pause(store, ctx, row, me, e.to_string(), now).await,
    }
}

/// Records step `next` as in force (its hold starting now); the last one completes the plan.
async fn stepped(
    store: &Store,
    ctx: &WriteContext,
    row: &Row,
    me: &str,
    next: usize,
    now: OffsetDateTime,
) -> Result<ReleasePlan, StoreError> {
    let steps = row.steps()?;
    let last = next + 1 >= steps.len();
    let (state, action) = if last {
        (PlanState::Completed, "plan.completed")
    } else {
        (PlanState::Running, "plan.step")
    };
    let t = Transition {
        current_step: i64::try_from(next).unwrap_or(i64::MAX),
        next_step_at: (!last).then(|| now + hold_of(&steps, next)),
        last_fallthrough: Some(encode(&row.step_serve(next)?)),
        ..Transition::to(state, row, action)
    };
    transition(store, ctx, row, me, t, now).await
}

/// Pauses a leased plan by itself, with the reason.
pub(super) async fn pause(
    store: &Store,
    ctx: &WriteContext,
    row: &Row,
    me: &str,
    reason: String,
    now: OffsetDateTime,
) -> Result<ReleasePlan, StoreError> {
    tracing::warn!(plan = row.id, %reason, "release plan paused");
    let t = Transition {
        remaining_ms: Some(0),
        reason: Some(reason),
        ..Transition::to(PlanState::Paused, row, "plan.pause")
    };
    transition(store, ctx, row, me, t, now).await
}

/// Proposes step `next` as a change request (by the plan, on behalf of its author, written
/// against the configuration now) and sets the plan waiting for it, in one transaction.
async fn propose(
    store: &Store,
    ctx: &WriteContext,
    row: &Row,
    me: &str,
    next: usize,
    p: Prepared,
    now: OffsetDateTime,
) -> Result<ReleasePlan, StoreError> {
    let steps = row.steps()?;
    let percentage = steps.get(next).map_or(100.0, |s| s.percentage);
    let mut description = format!(
        "release plan {} step {} of {}: {percentage} % on variation {}",
        row.id,
        next + 1,
        steps.len(),
        row.to_variation
    );
    if !row.description.is_empty() {
        description = format!("{description} ({})", row.description);
    }
    let patch = json!({ "fallthrough": encode(&p.serve) });
    let mut tx = store.db().begin().await?;
    let mut c = tx.conn();
    let proposal = Proposal {
        patch: &patch,
        base: &p.current,
        description: &description,
    };
    let cr = propose_in(&mut c, &row.actor(), row.path(), proposal, now).await?;
    let t = Transition {
        change_request_id: Some(cr.id),
        ..Transition::to(
            PlanState::WaitingForApproval,
            row,
            "plan.waiting_for_approval",
        )
    };
    let view = transition_in(&mut c, ctx, row, me, t, now).await?;
    tx.commit().await?;
    Ok(view)
}

/// Moves a leased plan waiting for approval on if its change request was decided: approved,
/// applies it (as the plan) and records the step; applied already (by a person, or by a
/// server that died before recording it), records the step; rejected, pauses. Returns
/// whether the plan moved.
async fn settle(
    store: &Store,
    row: &Row,
    me: &str,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let Some(id) = row.change_request_id else {
        return Ok(false);
    };
    let ctx = row.actor();
    let next = usize::try_from(row.current_step + 1).unwrap_or(0);
    let mut cr = store.get_change_request(row.path(), id).await?;
    if cr.state == ChangeRequestState::Approved {
        match store.apply_change_request(&ctx, row.path(), id, now).await {
            Ok(applied) => cr = applied,
            Err(e @ (StoreError::Database(_) | StoreError::PreconditionFailed { .. })) => {
                return Err(e);
            }
            Err(e) => {
                cr = store.get_change_request(row.path(), id).await?;
                if cr.state != ChangeRequestState::Applied {
                    let reason = format!(
                        "change request {id} for step {} could not be applied: {e}",
                        next + 1
                    );
                    pause(store, &ctx, row, me, reason, now).await?;
                    return Ok(true);
                }
            }
        }
    }
    match cr.state {
        ChangeRequestState::Open | ChangeRequestState::Approved => Ok(false),
        ChangeRequestState::Applied => {
            stepped(store, &ctx, row, me, next, now).await?;
            Ok(true)
        }
        ChangeRequestState::Rejected => {
            let by = cr
                .reviews
                .iter()
                .rev()
                .find(|r| r.kind == ReviewKind::Reject)
                .map(|r| match r.comment.trim() {
                    "" => format!(" by {}", r.actor),
                    c => format!(" by {}: {c}", r.actor),
                })
                .unwrap_or_default();
            let reason = format!(
                "change request {id} for step {} was rejected{by}; resume to propose the step \
                 again, or abort",
                next + 1
            );
            pause(store, &ctx, row, me, reason, now).await?;
            Ok(true)
        }
    }
}

/// Advances every running plan whose hold has ended at `now`, and every plan waiting for a
/// change request that was decided; returns how many moved.
pub(crate) async fn run_due(
    store: &Store,
    me: &str,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let mut moved = 0;
    let running = "SELECT id FROM release_plans WHERE state = 'running' AND next_step_at <= $1
                     AND (lease_until IS NULL OR lease_until < $1)
                   ORDER BY next_step_at LIMIT 16";
    for id in due(store, running, now).await? {
        let due_now = |r: &Row| r.state == "running" && r.next_step_at.is_some_and(|t| t <= now);
        let Some(row) = lease_row(store, id, me, now, due_now).await? else {
            continue;
        };
        let next = usize::try_from(row.current_step + 1).unwrap_or(0);
        match step_to(store, &row.actor(), &row, me, next, now).await {
            Ok(_) => moved += 1,
            Err(e) => {
                tracing::warn!(plan = id, error = %e, "release plan step failed, will retry");
                unlease(store, id, me).await?;
            }
        }
    }
    let decided = "SELECT r.id FROM release_plans r
                     JOIN change_requests c ON c.id = r.change_request_id
                   WHERE r.state = 'waiting_for_approval' AND c.state <> 'open'
                     AND (r.lease_until IS NULL OR r.lease_until < $1)
                   ORDER BY r.id LIMIT 16";
    for id in due(store, decided, now).await? {
        let waiting = |r: &Row| r.state == "waiting_for_approval";
        let Some(row) = lease_row(store, id, me, now, waiting).await? else {
            continue;
        };
        match settle(store, &row, me, now).await {
            Ok(true) => moved += 1,
            Ok(false) => unlease(store, id, me).await?,
            Err(e) => {
                tracing::warn!(plan = id, error = %e, "approved plan step failed, will retry");
                unlease(store, id, me).await?;
            }
        }
    }
    Ok(moved)
}
