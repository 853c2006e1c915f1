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

use crate::db::{Conn, args};
use crate::delivery::guardrails::{Evidence, Guardrail};
use crate::delivery::shared::{id_cursor, ids, on_behalf};
use crate::store::{
    AuditRecord, ConfigPatch, Page, Store, StoreError, WriteContext, audit, encode, paginate,
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
    /// Checks that roll the plan back by themselves when breached (see
    /// `docs/progressive-delivery.md`).
    #[serde(default)]
    pub guardrails: Vec<Guardrail>,
}

/// Where a plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanState {
    /// Steps advance when their holds end.
    Running,
    /// Held at the current step until resumed.
    Paused,
    /// Under an approval policy: the next step is a change request (`change_request_id`);
    /// the scheduler applies it once approved and the plan runs on.
    WaitingForApproval,
    /// The last step (100 %) is in force.
    Completed,
    /// Stopped, the fallthrough from before the plan restored.
    Aborted,
    /// A guardrail was breached: the fallthrough from before the plan was restored by the
    /// server, with the reason and the evidence recorded.
    RolledBack,
}

impl PlanState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::WaitingForApproval => "waiting_for_approval",
            Self::Completed => "completed",
            Self::Aborted => "aborted",
            Self::RolledBack => "rolled_back",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "running" => Self::Running,
            "paused" => Self::Paused,
            "waiting_for_approval" => Self::WaitingForApproval,
            "completed" => Self::Completed,
            "aborted" => Self::Aborted,
            "rolled_back" => Self::RolledBack,
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
    /// While waiting for approval: the change request of the next step (same flag and
    /// environment, `…/change-requests/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_request_id: Option<i64>,
    /// Its guardrails.
    pub guardrails: Vec<Guardrail>,
    /// When the step in force began (guardrails count units from then).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub step_started_at: Option<OffsetDateTime>,
    /// The readings of the last guardrail check; once rolled back, those of the breach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
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
    environment_id: i64,
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
    guardrails: Json<Value>,
    step_started_at: Option<OffsetDateTime>,
    evidence: Option<Json<Value>>,
    change_request_id: Option<i64>,
}

macro_rules! select {
    ($tail:literal) => {
        concat!(
            "SELECT r.id, p.key AS project, e.key AS environment, r.environment_id,
                f.key AS flag,
                r.from_variation, r.to_variation, r.steps, r.current_step, r.state,
                r.next_step_at, r.remaining_ms, r.pre_fallthrough, r.last_fallthrough, r.reason,
                r.description, r.author, r.author_token_id, r.version, r.created_at,
                r.finished_at, r.guardrails, r.step_started_at, r.evidence, r.change_request_id
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

    fn guardrails(&self) -> Result<Vec<Guardrail>, StoreError> {
        crate::store::decode("plan guardrails", self.guardrails.0.clone())
    }

    /// Whether the plan compares metrics: its rollouts are then marked as experiments, so
    /// that SDKs report exposures (which units are on which variation).
    fn measures_exposures(&self) -> bool {
        self.guardrails()
            .is_ok_and(|g| g.iter().any(|g| matches!(g, Guardrail::Metric { .. })))
    }

    fn view(self) -> Result<ReleasePlan, StoreError> {
        Ok(ReleasePlan {
            guardrails: self.guardrails()?,
            step_started_at: self.step_started_at,
            evidence: self
                .evidence
                .clone()
                .map(|e| crate::store::decode("plan evidence", e.0))
                .transpose()?,
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
            change_request_id: self.change_request_id,
            description: self.description,
            author: self.author,
            version: self.version,
            created_at: self.created_at,
            finished_at: self.finished_at,
        })
    }

    /// Whether a step is in force and may be checked: running, or waiting to approve the
    /// next one.
    fn is_live(&self) -> bool {
        self.current_step >= 0 && matches!(&self.state[..], "running" | "waiting_for_approval")
    }

    fn path(&self) -> (&str, &str, &str) {
        (&self.project, &self.flag, &self.environment)
    }

    /// The plan writing on behalf of its author.
    fn actor(&self) -> WriteContext {
        on_behalf(
            format!("release plan {}", self.id),
            &self.author,
            self.author_token_id,
        )
    }

    /// The fallthrough of step `i`.
    fn step_serve(&self, i: usize) -> Result<Serve, StoreError> {
        let steps = self.steps()?;
        let step = steps
            .get(i)
            .ok_or_else(|| StoreError::Corrupt(format!("release plan {}: no step {i}", self.id)))?;
        let from = usize::try_from(self.from_variation).unwrap_or(0);
        let to = usize::try_from(self.to_variation).unwrap_or(0);
        Ok(step_fallthrough(
            from,
            to,
            step.percentage,
            self.measures_exposures(),
        ))
    }
}

/// The weight of `percentage` on the rollout scale.
fn weight(percentage: f64) -> u32 {
    // Checked to lie in (0, 100] at creation.
    (percentage * 1000.0).round().clamp(0.0, f64::from(SCALE)) as u32
}

/// The fallthrough of a step: the new variation first (so a higher weight only adds contexts
/// to it), the old one for the rest; 100 % serves the new variation alone.
pub(crate) fn step_fallthrough(from: usize, to: usize, percentage: f64, experiment: bool) -> Serve {
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
        experiment,
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

/// Refuses (409, naming it) while a plan on the flag is running or paused.
async fn active_plan(
    c: &mut Conn<'_>,
    flag_id: i64,
    environment_id: i64,
) -> Result<(), StoreError> {
    let active: Option<(i64,)> = c
        .fetch_optional(
            "SELECT id FROM release_plans WHERE flag_id = $1 AND environment_id = $2
             AND state IN ('running', 'paused', 'waiting_for_approval')",
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

// Declared after `select!`, which they use (macros are in scope textually).
mod guard;
mod run;
mod store;

pub use guard::Checker;
pub(crate) use guard::check_due;
pub(crate) use run::run_due;
use run::*;

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
        let s = encode(&step_fallthrough(1, 0, 10.0, false));
        assert_eq!(
            s,
            json!({"rollout": {"variations": [{"variation": 0, "weight": 10000},
                                              {"variation": 1, "weight": 90000}]}})
        );
        assert_eq!(
            encode(&step_fallthrough(1, 0, 100.0, false)),
            json!({"variation": 0})
        );
        assert_eq!(weight(0.001), 1);
    }
}
