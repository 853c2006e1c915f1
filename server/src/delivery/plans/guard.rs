//! The guardrail worker: checks the guardrails of running plans every interval and, on a
//! breach, rolls the plan back by itself.
//!
//! A check takes the plan's lease (so it never races a step or an action), reads every
//! guardrail, and either records the readings as the plan's `evidence` (not versioned nor
//! audited: it runs every minute) or, when one is breached, restores the fallthrough from
//! before the plan through the store's one configuration write and, **in the same
//! transaction**, marks the plan `rolled_back` with the reason and the evidence and audits
//! `plan.rolled_back` (which fills the webhook outbox). A breach is thus acted on within one
//! check interval.

use std::time::Duration;

use vexil_stats::GuardrailTest;

use super::*;
use crate::delivery::approvals::requests::withdraw_in;
use crate::delivery::approvals::safety_action;
use crate::delivery::guardrails::{self, metric, prometheus};
use crate::experiments::model::Direction;

/// How the worker checks guardrails.
#[derive(Debug, Clone)]
pub struct Checker {
    /// Client for Prometheus queries (with its timeout).
    pub http: reqwest::Client,
    /// The Prometheus to query (`VEXIL_PROMETHEUS_URL`); without it Prometheus guardrails
    /// read as errors.
    pub prometheus: Option<String>,
    /// Time between two checks of a plan (`VEXIL_GUARDRAIL_CHECK_SECS`).
    pub interval: time::Duration,
}

impl Checker {
    /// A checker querying `prometheus` with `timeout`, every `interval`.
    pub fn new(prometheus: Option<String>, timeout: Duration, interval: time::Duration) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default(),
            prometheus: prometheus.filter(|u| !u.is_empty()),
            interval,
        }
    }
}

/// Checks every running plan whose guardrails are due at `now`; returns how many rolled back.
pub(crate) async fn check_due(
    store: &Store,
    checker: &Checker,
    me: &str,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let sql = "SELECT id FROM release_plans
               WHERE state IN ('running', 'waiting_for_approval') AND next_check_at <= $1
                 AND (lease_until IS NULL OR lease_until < $1)
               ORDER BY next_check_at LIMIT 16";
    let mut rolled_back = 0;
    for id in due(store, sql, now).await? {
        let Some(row) = lease_row(store, id, me, now, |r| r.is_live()).await? else {
            continue;
        };
        let evidence = match measure(store, checker, &row, now).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(plan = id, error = %e, "guardrail check failed, will retry");
                unlease(store, id, me).await?;
                continue;
            }
        };
        if let Some(breach) = evidence.breach() {
            let reason = format!(
                "guardrail {} breached: {}",
                breach.guardrail, breach.message
            );
            tracing::warn!(plan = id, %reason, "release plan rolled back");
            match roll_back(store, &row, me, &evidence, reason.clone(), now).await {
                Ok(_) => rolled_back += 1,
                Err(StoreError::ApprovalRequired(why)) => {
                    // The policy does not exempt safety actions: stop the ramp where it is.
                    let reason = format!("{reason}; not rolled back: {why}");
                    let t = Transition {
                        remaining_ms: Some(0),
                        reason: Some(reason),
                        evidence: Some(encode(&evidence)),
                        ..Transition::to(PlanState::Paused, &row, "plan.pause")
                    };
                    transition(store, &guardrail_actor(&row), &row, me, t, now).await?;
                }
                Err(e) => {
                    tracing::warn!(plan = id, error = %e, "guardrail rollback failed, will retry");
                    unlease(store, id, me).await?;
                }
            }
        } else {
            record(store, id, me, &evidence, now + checker.interval).await?;
        }
    }
    Ok(rolled_back)
}

/// Reads every guardrail of `row` for the step in force.
async fn measure(
    store: &Store,
    checker: &Checker,
    row: &Row,
    now: OffsetDateTime,
) -> Result<Evidence, StoreError> {
    let since = row.step_started_at.unwrap_or(row.created_at);
    let since_ms = i64::try_from(since.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    let mut readings = Vec::new();
    for g in row.guardrails()? {
        let name = g.name();
        let reading = match g {
            Guardrail::Metric {
                metric,
                max_regression,
                min_units,
                alpha,
                tau,
            } => {
                let def = store.get_metric(&row.project, &metric).await?.metric;
                let environment_id = row.environment_id;
                let q = metric::Query {
                    environment_id,
                    flag: &row.flag,
                    event_key: &def.event_key,
                    kind: def.kind,
                    since_ms,
                };
                let (control, treatment) = {
                    let mut pc = store.db().acquire().await?;
                    metric::samples(&mut pc.conn(), q, row.from_variation, row.to_variation).await?
                };
                let test = GuardrailTest {
                    threshold: max_regression,
                    // "Decrease is good": an increase is the regression, and vice versa.
                    direction: match def.direction {
                        Direction::Decrease => vexil_stats::Direction::Increase,
                        Direction::Increase => vexil_stats::Direction::Decrease,
                    },
                    alpha,
                    tau: tau.unwrap_or(vexil_stats::DEFAULT_GUARDRAIL_TAU),
                };
                guardrails::judge_metric(name, &control, &treatment, &test, min_units)
            }
            Guardrail::Prometheus { query, max } => {
                let value = match &checker.prometheus {
                    Some(base) => prometheus::query(&checker.http, base, &query).await,
                    None => Err("no Prometheus is configured (VEXIL_PROMETHEUS_URL)".to_owned()),
                };
                guardrails::judge_prometheus(name, max, value)
            }
        };
        readings.push(reading);
    }
    Ok(Evidence {
        checked_at: now,
        step: row.current_step,
        since,
        readings,
    })
}

/// Keeps the readings of a healthy check and gives the lease back.
async fn record(
    store: &Store,
    id: i64,
    me: &str,
    evidence: &Evidence,
    next: OffsetDateTime,
) -> Result<(), StoreError> {
    let mut pc = store.db().acquire().await?;
    pc.conn()
        .execute(
            "UPDATE release_plans SET evidence = $3, next_check_at = $4,
                 claimed_by = NULL, lease_until = NULL
             WHERE id = $1 AND claimed_by = $2
               AND state IN ('running', 'waiting_for_approval')",
            args![id, me, encode(evidence), next],
        )
        .await?;
    Ok(())
}

/// The guardrail of a plan, acting on behalf of the plan's author.
fn guardrail_actor(row: &Row) -> WriteContext {
    on_behalf(
        format!("guardrail of release plan {}", row.id),
        &row.author,
        row.author_token_id,
    )
}

/// Restores the fallthrough from before the plan and records the rollback, in one
/// transaction.
async fn roll_back(
    store: &Store,
    row: &Row,
    me: &str,
    evidence: &Evidence,
    reason: String,
    now: OffsetDateTime,
) -> Result<ReleasePlan, StoreError> {
    let pre: Serve = crate::store::decode("plan fallthrough", row.pre_fallthrough.0.clone())?;
    let ctx = guardrail_actor(row);
    let (id, me, project, environment, request) = (
        row.id,
        me.to_owned(),
        row.project.clone(),
        row.environment.clone(),
        row.change_request_id,
    );
    let evidence = encode(evidence);
    let audit_ctx = ctx.clone();
    // A safety action: it passes a policy that exempts the kill switch (audited as a bypass).
    let write = store.write_fallthrough_then(
        &ctx,
        (&row.project, &row.flag, &row.environment),
        pre,
        move |c| {
            Box::pin(async move {
                let n = c
                    .execute(
                        "UPDATE release_plans SET state = 'rolled_back', reason = $3,
                                 evidence = $4, next_step_at = NULL, next_check_at = NULL,
                                 finished_at = $5, version = version + 1, updated_at = $5,
                                 claimed_by = NULL, lease_until = NULL
                             WHERE id = $1 AND claimed_by = $2
                               AND state IN ('running', 'waiting_for_approval')",
                        args![id, me.as_str(), reason, evidence, now],
                    )
                    .await?;
                if n != 1 {
                    return Err(StoreError::Conflict {
                        message: format!("release plan {id} changed during its check"),
                        blockers: Vec::new(),
                    });
                }
                let view = fetch(c, id).await?.view()?;
                let key = id.to_string();
                let rec = AuditRecord::new("plan.rolled_back", "release_plan", &key)
                    .scoped(Some(&project), Some(&environment))
                    .after(encode(&view));
                audit(c, &audit_ctx, rec, now).await?;
                if let Some(cr) = request {
                    let why = format!("withdrawn: release plan {id} was rolled back");
                    withdraw_in(c, &audit_ctx, cr, &why, now).await?;
                }
                Ok(view)
            })
        },
    );
    let (_, plan) = safety_action("plan.rolled_back", write).await?;
    Ok(plan)
}
