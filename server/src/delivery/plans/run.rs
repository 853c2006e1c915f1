//! The plan lease and the writes of a step: one actor at a time applies a step, records a
//! transition with its audit entry, and the worker advances plans whose hold has ended.

use super::*;

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

/// What an action does to the plan row, written with its audit entry in one transaction.
pub(super) struct Transition {
    pub(super) state: PlanState,
    pub(super) current_step: i64,
    pub(super) next_step_at: Option<OffsetDateTime>,
    pub(super) remaining_ms: Option<i64>,
    pub(super) last_fallthrough: Option<Value>,
    pub(super) reason: Option<String>,
    pub(super) action: &'static str,
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
    let mut c = tx.conn();
    let finished = matches!(t.state, PlanState::Completed | PlanState::Aborted).then_some(now);
    // A new step starts the guardrails' count afresh; a running plan with guardrails is
    // checked at once (then every interval), any other is not checked.
    let step_started = (t.current_step != before.current_step).then_some(now);
    let has_guardrails = before.guardrails().is_ok_and(|g| !g.is_empty());
    let next_check = (t.state == PlanState::Running && has_guardrails).then_some(now);
    c.execute(
        "UPDATE release_plans SET state = $3, current_step = $4, next_step_at = $5,
             remaining_ms = $6, last_fallthrough = COALESCE($7, last_fallthrough), reason = $8,
             finished_at = COALESCE($9, finished_at), version = version + 1, updated_at = $10,
             claimed_by = NULL, lease_until = NULL,
             step_started_at = COALESCE($11, step_started_at), next_check_at = $12
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
            next_check
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

/// Writes the fallthrough of step `i` as the plan. Fails (the plan should pause) if the
/// fallthrough is no longer what the plan last wrote.
pub(super) async fn write_step(
    store: &Store,
    row: &Row,
    i: usize,
) -> Result<(FlagConfig, Value), String> {
    let steps = row.steps().map_err(|e| e.to_string())?;
    let step = steps.get(i).ok_or("no such step")?;
    let (project, flag, environment) = row.path();
    let current = store
        .get_config(project, flag, environment)
        .await
        .map_err(|e| e.to_string())?;
    let from = usize::try_from(row.from_variation).unwrap_or(0);
    let to = usize::try_from(row.to_variation).unwrap_or(0);
    let serve = step_fallthrough(from, to, step.percentage, row.measures_exposures());
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

pub(super) fn hold_of(steps: &[PlanStep], i: usize) -> time::Duration {
    time::Duration::minutes(i64::from(steps.get(i).map_or(0, |s| s.hold_minutes)))
}

/// Applies step `next` of a leased plan and records it (completed after the last step). On a
/// write failure the plan pauses with the reason.
pub(super) async fn step_to(
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
