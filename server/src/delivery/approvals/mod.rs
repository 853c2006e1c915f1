//! Approvals: a per-environment policy that routes every change of a flag's configuration
//! there through a change request approved by N distinct people of a role.
//!
//! - this file: the policy ([`ApprovalPolicy`]), its store functions, and the guard the
//!   store's one configuration write path calls under the environment lock
//!   ([`check_config_write`], [`check_kill`]);
//! - [`requests`]: change requests, their reviews, and applying an approved one.
//!
//! Enforcement lives in the store, not in the handlers, so the API, the console, scheduled
//! changes and release plans are all held to the policy: a write to a governed environment
//! is refused with [`StoreError::ApprovalRequired`] (HTTP 409, problem type
//! `urn:vexil:problem:approval-required`) unless it is the application of an approved change
//! request ([`requests`] marks that write with a task-local). The kill switch is exempt unless
//! the policy says otherwise; each exempt kill is audited as `approval.bypass`.

pub mod requests;

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::auth::Role;
use crate::db::{Conn, args};
use crate::store::{
    AuditRecord, Store, StoreError, WriteContext, audit, environment_row, project_row,
};

tokio::task_local! {
    /// The change request whose approved patch the current task is writing: the one write a
    /// policy lets through.
    static APPLYING: i64;
    /// The safety action (`plan.abort`, `plan.rolled_back`) the current task is writing: it
    /// passes a policy that exempts the kill switch, audited as `approval.bypass`.
    static SAFETY: &'static str;
}

/// Runs `f` as the safety action `operation` (restoring the configuration from before a
/// release plan): like the kill switch, configuration writes inside it pass a policy that
/// exempts the kill switch (`kill_switch_exempt`), each audited as `approval.bypass` in the
/// write's transaction, and are refused by one that does not.
pub(crate) async fn safety_action<F: std::future::Future>(
    operation: &'static str,
    f: F,
) -> F::Output {
    SAFETY.scope(operation, f).await
}

/// Runs `f` as the application of change request `id`: configuration writes inside it pass
/// the approval guard.
pub(crate) async fn applying<F: std::future::Future>(id: i64, f: F) -> F::Output {
    APPLYING.scope(id, f).await
}

/// An environment's approval policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ApprovalPolicy {
    /// Project key.
    pub project: String,
    /// Environment key.
    pub environment: String,
    /// Distinct approvals a change request needs before it can be applied.
    pub required_approvals: i64,
    /// The least role whose approval counts (`editor` or `admin`); also the role needed to
    /// approve or reject.
    pub approver_role: Role,
    /// Whether the kill switch may turn the flag off here without approval (audited as
    /// `approval.bypass`).
    pub kill_switch_exempt: bool,
    /// Who set the policy last.
    pub updated_by: String,
    /// When it was set last.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The policy to set on an environment.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    /// Distinct approvals a change request needs (1 to 10).
    pub required_approvals: i64,
    /// The least role whose approval counts: `editor` (default) or `admin`.
    #[serde(default = "default_role")]
    pub approver_role: Role,
    /// Whether the kill switch bypasses the policy (default `true`: the kill switch is
    /// never blocked unless the policy says so).
    #[serde(default = "default_exempt")]
    pub kill_switch_exempt: bool,
}

fn default_role() -> Role {
    Role::Editor
}

fn default_exempt() -> bool {
    true
}

/// What an approval needs in an environment: its policy, or one editor's approval when it
/// has none (a change request can be used without a policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Requirement {
    /// Distinct approvals needed.
    pub approvals: i64,
    /// The least role an approval counts for.
    pub role: Role,
    /// Whether a policy is set at all.
    pub governed: bool,
    /// Whether the kill switch bypasses it.
    pub kill_switch_exempt: bool,
}

impl Requirement {
    const NONE: Requirement = Requirement {
        approvals: 1,
        role: Role::Editor,
        governed: false,
        kill_switch_exempt: true,
    };
}

#[derive(Debug, sqlx::FromRow)]
struct PolicyRow {
    required_approvals: i64,
    approver_role: String,
    kill_switch_exempt: bool,
    updated_by: String,
    updated_at: OffsetDateTime,
}

impl PolicyRow {
    fn requirement(&self) -> Result<Requirement, StoreError> {
        Ok(Requirement {
            approvals: self.required_approvals,
            role: parse_role(&self.approver_role)?,
            governed: true,
            kill_switch_exempt: self.kill_switch_exempt,
        })
    }
}

fn parse_role(s: &str) -> Result<Role, StoreError> {
    Role::parse(s).ok_or_else(|| StoreError::Corrupt(format!("approver role '{s}'")))
}

async fn policy_row(
    c: &mut Conn<'_>,
    environment_id: i64,
) -> Result<Option<PolicyRow>, StoreError> {
    Ok(c.fetch_optional(
        "SELECT required_approvals, approver_role, kill_switch_exempt, updated_by, updated_at
         FROM approval_policies WHERE environment_id = $1",
        args![environment_id],
    )
    .await?)
}

/// The requirement in force in an environment.
pub(crate) async fn requirement(
    c: &mut Conn<'_>,
    environment_id: i64,
) -> Result<Requirement, StoreError> {
    match policy_row(c, environment_id).await? {
        Some(p) => p.requirement(),
        None => Ok(Requirement::NONE),
    }
}

fn refusal(req: &Requirement, project: &str, environment: &str, flag: &str) -> StoreError {
    StoreError::ApprovalRequired(format!(
        "environment '{project}/{environment}' requires {n} approval{s} (role '{role}' or \
         higher) for flag configuration changes: propose this change as a change request \
         (POST /api/v1/projects/{project}/flags/{flag}/environments/{environment}/change-requests), \
         then apply it once approved",
        n = req.approvals,
        s = if req.approvals == 1 { "" } else { "s" },
        role = req.role.as_str(),
    ))
}

/// The approval guard of a configuration write (called by the store under the environment
/// lock, in the write's transaction): refuses the write if the environment has a policy,
/// unless the task is applying an approved change request, or is a safety action under a
/// policy exempting the kill switch (then audited as `approval.bypass`).
pub(crate) async fn check_config_write(
    c: &mut Conn<'_>,
    ctx: &WriteContext,
    environment_id: i64,
    (project, flag, environment): (&str, &str, &str),
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    if APPLYING.try_with(|_| ()).is_ok() {
        return Ok(());
    }
    let req = requirement(c, environment_id).await?;
    if !req.governed {
        return Ok(());
    }
    match SAFETY.try_with(|op| *op) {
        Ok(operation) if req.kill_switch_exempt => {
            let rec = bypass(&req, (project, flag, environment), operation);
            audit(c, ctx, rec, now).await
        }
        Ok(operation) => Err(StoreError::ApprovalRequired(format!(
            "environment '{project}/{environment}' does not exempt safety actions from its \
             approval policy (kill_switch_exempt is false): {operation} cannot restore the \
             configuration from before the plan; propose that change as a change request \
             (POST /api/v1/projects/{project}/flags/{flag}/environments/{environment}/change-requests)"
        ))),
        Err(_) => Err(refusal(&req, project, environment, flag)),
    }
}

/// The `approval.bypass` audit entry of `operation` under the policy `req`.
fn bypass<'a>(
    req: &Requirement,
    (project, flag, environment): (&'a str, &'a str, &'a str),
    operation: &str,
) -> AuditRecord<'a> {
    AuditRecord::new("approval.bypass", "flag", flag)
        .scoped(Some(project), Some(environment))
        .after(json!({
            "bypass": "kill_switch_exempt",
            "operation": operation,
            "required_approvals": req.approvals,
            "approver_role": req.role,
        }))
}

/// The approval guard of the kill switch in one environment (called by the store in the
/// kill's transaction): without a policy, nothing; with an exempt policy, an
/// `approval.bypass` audit entry; otherwise the kill is refused.
pub(crate) async fn check_kill(
    c: &mut Conn<'_>,
    ctx: &WriteContext,
    environment_id: i64,
    (project, flag, environment): (&str, &str, &str),
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let req = requirement(c, environment_id).await?;
    if !req.governed {
        return Ok(());
    }
    if !req.kill_switch_exempt {
        return Err(StoreError::ApprovalRequired(format!(
            "environment '{project}/{environment}' does not exempt the kill switch from its \
             approval policy: turn the flag off there with an approved change request \
             ({{\"on\": false}} at POST /api/v1/projects/{project}/flags/{flag}/environments/{environment}/change-requests)"
        )));
    }
    let rec = bypass(&req, (project, flag, environment), "flag.kill");
    audit(c, ctx, rec, now).await
}

async fn environment_ids(
    c: &mut Conn<'_>,
    project: &str,
    environment: &str,
) -> Result<i64, StoreError> {
    let p = project_row(c, project).await?;
    Ok(environment_row(c, p.id, environment).await?.id)
}

fn view(project: &str, environment: &str, r: PolicyRow) -> Result<ApprovalPolicy, StoreError> {
    Ok(ApprovalPolicy {
        project: project.to_owned(),
        environment: environment.to_owned(),
        required_approvals: r.required_approvals,
        approver_role: parse_role(&r.approver_role)?,
        kill_switch_exempt: r.kill_switch_exempt,
        updated_by: r.updated_by,
        updated_at: r.updated_at,
    })
}

impl Store {
    /// An environment's approval policy (404 when it has none).
    pub async fn get_approval_policy(
        &self,
        project: &str,
        environment: &str,
    ) -> Result<ApprovalPolicy, StoreError> {
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        let env = environment_ids(&mut c, project, environment).await?;
        let row = policy_row(&mut c, env).await?.ok_or_else(|| {
            StoreError::NotFound(format!(
                "approval policy of environment '{project}/{environment}'"
            ))
        })?;
        view(project, environment, row)
    }

    /// The role an approval or rejection needs in an environment (its policy's approver
    /// role; editor without a policy).
    pub async fn approver_role(
        &self,
        project: &str,
        environment: &str,
    ) -> Result<Role, StoreError> {
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        let env = environment_ids(&mut c, project, environment).await?;
        Ok(requirement(&mut c, env).await?.role)
    }

    /// Refuses with [`StoreError::ApprovalRequired`] if the environment has a policy: for work
    /// created to change the configuration later (scheduled changes, release plans), which
    /// under a policy must go through change requests instead. A scheduled kill passes when
    /// the policy exempts the kill switch.
    pub async fn refuse_under_policy(
        &self,
        (project, flag, environment): (&str, &str, &str),
        kill: bool,
    ) -> Result<(), StoreError> {
        let mut pc = self.db().acquire().await?;
        let mut c = pc.conn();
        let env = environment_ids(&mut c, project, environment).await?;
        let req = requirement(&mut c, env).await?;
        if req.governed && !(kill && req.kill_switch_exempt) {
            return Err(refusal(&req, project, environment, flag));
        }
        Ok(())
    }

    /// Sets (creates or replaces) an environment's approval policy. Audited as
    /// `approval_policy.update`.
    pub async fn put_approval_policy(
        &self,
        ctx: &WriteContext,
        (project, environment): (&str, &str),
        input: PolicyInput,
        now: OffsetDateTime,
    ) -> Result<ApprovalPolicy, StoreError> {
        if !(1..=10).contains(&input.required_approvals) {
            return Err(StoreError::invalid(
                "required_approvals",
                "range",
                "between 1 and 10 approvals",
            ));
        }
        if input.approver_role == Role::Viewer {
            return Err(StoreError::invalid(
                "approver_role",
                "one_of",
                "approvals count from 'editor' or 'admin'",
            ));
        }
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let env = environment_ids(&mut c, project, environment).await?;
        let before = match policy_row(&mut c, env).await? {
            Some(r) => Some(view(project, environment, r)?),
            None => None,
        };
        c.execute(
            "INSERT INTO approval_policies (environment_id, required_approvals, approver_role,
                 kill_switch_exempt, updated_by, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (environment_id) DO UPDATE SET
                 required_approvals = EXCLUDED.required_approvals,
                 approver_role = EXCLUDED.approver_role,
                 kill_switch_exempt = EXCLUDED.kill_switch_exempt,
                 updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at",
            args![
                env,
                input.required_approvals,
                input.approver_role.as_str(),
                input.kill_switch_exempt,
                ctx.actor.name.as_str(),
                now
            ],
        )
        .await?;
        let row = policy_row(&mut c, env)
            .await?
            .ok_or_else(|| StoreError::Gone("the approval policy".into()))?;
        let after = view(project, environment, row)?;
        let mut rec = AuditRecord::new("approval_policy.update", "approval_policy", environment)
            .scoped(Some(project), Some(environment))
            .after(crate::store::encode(&after));
        if let Some(b) = &before {
            rec = rec.before(crate::store::encode(b));
        }
        audit(&mut c, ctx, rec, now).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Removes an environment's approval policy (404 when it has none). Audited as
    /// `approval_policy.delete`.
    pub async fn delete_approval_policy(
        &self,
        ctx: &WriteContext,
        (project, environment): (&str, &str),
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.db().begin().await?;
        let mut c = tx.conn();
        let env = environment_ids(&mut c, project, environment).await?;
        let before = policy_row(&mut c, env).await?.ok_or_else(|| {
            StoreError::NotFound(format!(
                "approval policy of environment '{project}/{environment}'"
            ))
        })?;
        let before = view(project, environment, before)?;
        c.execute(
            "DELETE FROM approval_policies WHERE environment_id = $1",
            args![env],
        )
        .await?;
        let rec = AuditRecord::new("approval_policy.delete", "approval_policy", environment)
            .scoped(Some(project), Some(environment))
            .before(crate::store::encode(&before));
        audit(&mut c, ctx, rec, now).await?;
        tx.commit().await?;
        Ok(())
    }
}
