//! Each environment's approval policy on the environments page: shown to everyone, set or
//! removed by an admin through [`crate::store::Store::put_approval_policy`] and
//! `delete_approval_policy` (the functions the API's `PUT`/`DELETE …/approval-policy` call,
//! with the admin role required in the environment as there).

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::page;
use super::session::Session;
use super::{ConsoleError, enc};
use crate::app::AppState;
use crate::auth::Role;
use crate::delivery::approvals::{ApprovalPolicy, PolicyInput};
use crate::store::{EnvironmentView, StoreError};

/// The policy of each environment (`None` where there is none).
async fn load(
    app: &AppState,
    project: &str,
    environments: &[EnvironmentView],
) -> Result<Vec<Option<ApprovalPolicy>>, ConsoleError> {
    let mut out = Vec::with_capacity(environments.len());
    for e in environments {
        out.push(match app.store.get_approval_policy(project, &e.key).await {
            Ok(p) => Some(p),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        });
    }
    Ok(out)
}

/// A policy in words.
fn describe(p: &ApprovalPolicy) -> Markup {
    html! {
        strong { (p.required_approvals) " approval" @if p.required_approvals != 1 { "s" } }
        " (role " (p.approver_role.as_str()) " or higher); kill switch "
        @if p.kill_switch_exempt { "exempt" } @else { "needs approval too" }
        br; span.muted { "Set by " (p.updated_by) }
    }
}

/// The "Approval policies" section of the environments page.
pub async fn section(
    app: &AppState,
    session: &Session,
    project: &str,
    environments: &[EnvironmentView],
) -> Result<Markup, ConsoleError> {
    if environments.is_empty() {
        return Ok(html! {});
    }
    let policies = load(app, project, environments).await?;
    let p = enc(project);
    Ok(html! {
        h2 #approvals { "Approval policies" }
        p.muted { "With a policy, every change of a flag's configuration in the environment goes through a change request approved by that many people." }
        table {
            thead { tr {
                th scope="col" { "Environment" } th scope="col" { "Policy" }
                @if session.can(Role::Admin) { th scope="col" { "Set or remove" } }
            } }
            tbody {
                @for (e, policy) in environments.iter().zip(&policies) {
                    @let action = format!("/projects/{p}/environments/{}/approval-policy", enc(&e.key));
                    @let id = format!("ap-{}", e.key);
                    tr {
                        td { (e.name) }
                        td {
                            @match policy {
                                Some(pol) => (describe(pol)),
                                None => span.muted { "None: changes save directly" },
                            }
                        }
                        @if session.can(Role::Admin) {
                            td {
                                form.row method="post" action=(action) {
                                    (page::csrf(session))
                                    div {
                                        label for=(format!("{id}-n")) { "Approvals" }
                                        input id=(format!("{id}-n")) type="number" name="required_approvals" min="1" max="10" required
                                            value=(policy.as_ref().map_or(1, |x| x.required_approvals));
                                    }
                                    div {
                                        label for=(format!("{id}-role")) { "From role" }
                                        select id=(format!("{id}-role")) name="approver_role" {
                                            @for r in [Role::Editor, Role::Admin] {
                                                option value=(r.as_str()) selected[policy.as_ref().is_some_and(|x| x.approver_role == r)] { (r.as_str()) }
                                            }
                                        }
                                    }
                                    div {
                                        label {
                                            input type="checkbox" name="kill_switch_exempt" value="true"
                                                checked[policy.as_ref().is_none_or(|x| x.kill_switch_exempt)];
                                            " Kill switch exempt"
                                        }
                                    }
                                    div { button.small type="submit" aria-label=(format!("Set the approval policy of {}", e.name)) { "Set" } }
                                }
                                @if policy.is_some() {
                                    form method="post" action=(format!("{action}/delete")) {
                                        (page::csrf(session))
                                        button.secondary.small type="submit" aria-label=(format!("Remove policy of {}", e.name)) { "Remove policy" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

/// The policy form.
#[derive(Debug, Deserialize)]
pub struct PolicyForm {
    csrf: String,
    required_approvals: i64,
    #[serde(default)]
    approver_role: String,
    #[serde(default)]
    kill_switch_exempt: Option<String>,
}

fn back(project: &str) -> Redirect {
    Redirect::to(&format!("/projects/{}/settings#approvals", enc(project)))
}

/// `POST …/environments/{environment}/approval-policy`: `put_approval_policy`.
pub async fn set(
    State(app): State<AppState>,
    session: Session,
    Path((project, environment)): Path<(String, String)>,
    Form(f): Form<PolicyForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write_in(Role::Admin, &f.csrf, (&project, &environment))?;
    let approver_role = Role::parse(&f.approver_role)
        .ok_or_else(|| ConsoleError::BadForm(format!("unknown role '{}'", f.approver_role)))?;
    let input = PolicyInput {
        required_approvals: f.required_approvals,
        approver_role,
        kill_switch_exempt: f.kill_switch_exempt.is_some(),
    };
    app.store
        .put_approval_policy(&ctx, (&project, &environment), input, app.clock.now())
        .await?;
    Ok(back(&project).into_response())
}

/// `POST …/environments/{environment}/approval-policy/delete`: `delete_approval_policy`.
pub async fn remove(
    State(app): State<AppState>,
    session: Session,
    Path((project, environment)): Path<(String, String)>,
    Form(f): Form<super::session::CsrfForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write_in(Role::Admin, &f.csrf, (&project, &environment))?;
    app.store
        .delete_approval_policy(&ctx, (&project, &environment), app.clock.now())
        .await?;
    Ok(back(&project).into_response())
}
