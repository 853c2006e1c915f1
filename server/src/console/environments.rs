//! Editing an environment (name, description, the browser origins its client-side keys
//! accept) and a project (rename; delete, admin only, after a confirmation).
//!
//! Each form calls the store function the API calls (`update_environment`,
//! `update_project`, `delete_project`) with the role the API requires.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::page::{self, Nav};
use super::session::Session;
use super::{ConsoleError, enc, settle, store_status};
use crate::app::AppState;
use crate::auth::Role;
use crate::store::{EnvironmentView, ProjectView, StoreError, UpdateEnvironment, UpdateProject};

/// Field errors of a store validation failure, or the failure itself.
fn field_errors(e: StoreError) -> Result<Vec<(String, String)>, ConsoleError> {
    match e {
        StoreError::Invalid(v) => Ok(v.errors.into_iter().map(|e| (e.path, e.message)).collect()),
        other => Err(other.into()),
    }
}

fn invalid(errors: &[(String, String)], path: &str) -> Option<&'static str> {
    errors
        .iter()
        .any(|(p, _)| p == path || p.starts_with(&format!("{path}[")))
        .then_some("true")
}

fn error_notice(errors: &[(String, String)]) -> Markup {
    html! {
        @if !errors.is_empty() {
            (page::notice("error", html! { "Nothing was saved: fix the fields marked below." }))
        }
    }
}

/// The environment form, as typed.
#[derive(Debug, Default, Deserialize)]
pub struct EnvironmentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    /// One origin per line (or comma-separated).
    #[serde(default)]
    allowed_origins: String,
}

fn origins(text: &str) -> Vec<String> {
    text.split(['\n', ','])
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect()
}

fn environment_form(
    session: &Session,
    project: &str,
    env: &EnvironmentView,
    f: &EnvironmentForm,
    errors: &[(String, String)],
) -> Markup {
    let action = format!(
        "/projects/{}/environments/{}/edit",
        enc(project),
        enc(&env.key)
    );
    // An origin's error names its index among the non-empty lines.
    let origin_errors: Vec<(String, String)> = errors
        .iter()
        .filter(|(p, _)| p.starts_with("allowed_origins"))
        .map(|(p, m)| {
            let line = p
                .strip_prefix("allowed_origins[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|i| i.parse::<usize>().ok());
            let text = match line.and_then(|i| origins(&f.allowed_origins).get(i).cloned()) {
                Some(o) => format!("{o}: {m}"),
                None => m.clone(),
            };
            (p.clone(), text)
        })
        .collect();
    html! {
        p.muted { a href=(format!("/projects/{}/settings", enc(project))) { "Environments" } " / " code { (env.key) } }
        h1 { "Edit environment " (env.name) }
        (error_notice(errors))
        form.stack method="post" action=(action) {
            (page::csrf(session))
            div.row {
                div { label for="env-name" { "Name" } input #env-name type="text" name="name" value=(f.name) required aria-invalid=[invalid(errors, "name")]; (page::field_errors(errors, "name")) }
                div { label for="env-desc" { "Description" } input #env-desc type="text" name="description" value=(f.description) aria-invalid=[invalid(errors, "description")]; (page::field_errors(errors, "description")) }
            }
            div {
                label for="env-origins" { "Allowed browser origins (one per line)" }
                textarea.code #env-origins name="allowed_origins" rows="4" aria-describedby="env-origins-help"
                    aria-invalid=[invalid(errors, "allowed_origins")] placeholder="https://app.example.com" { (f.allowed_origins) }
                span #env-origins-help .muted {
                    "Pages on these origins may use this environment's client-side keys (CORS). "
                    code { "*" } " allows any origin; an empty list allows no browser."
                }
                (page::field_errors(&origin_errors, "allowed_origins"))
            }
            div.row {
                button type="submit" { "Save environment" }
                a href=(format!("/projects/{}/settings", enc(project))) { "Cancel" }
            }
        }
    }
}

/// `GET /projects/{project}/environments/{environment}/edit`.
pub async fn edit_environment(
    State(app): State<AppState>,
    session: Session,
    Path((project, environment)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    if !session.can(Role::Editor) {
        return Err(ConsoleError::Forbidden(Role::Editor));
    }
    let nav = Nav::load(&app, Some(&project), Some(&environment), "settings").await?;
    let env = app.store.get_environment(&project, &environment).await?;
    let f = EnvironmentForm {
        csrf: String::new(),
        name: env.name.clone(),
        description: env.description.clone(),
        allowed_origins: env.allowed_origins.join("\n"),
    };
    let body = environment_form(&session, &project, &env, &f, &[]);
    Ok(page::layout(&session, &nav, "Edit environment", body).into_response())
}

/// `POST /projects/{project}/environments/{environment}/edit`: `update_environment`.
pub async fn update_environment(
    State(app): State<AppState>,
    session: Session,
    Path((project, environment)): Path<(String, String)>,
    Form(f): Form<EnvironmentForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Editor, &f.csrf)?;
    let update = UpdateEnvironment {
        name: Some(f.name.trim().to_owned()),
        description: Some(f.description.clone()),
        allowed_origins: Some(origins(&f.allowed_origins)),
    };
    match app
        .store
        .update_environment(&ctx, &project, &environment, update)
        .await
    {
        Ok(_) => {
            settle(&app).await;
            Ok(Redirect::to(&format!("/projects/{}/settings", enc(&project))).into_response())
        }
        Err(e) => {
            let status = store_status(&e).0;
            let errors = field_errors(e)?;
            let nav = Nav::load(&app, Some(&project), Some(&environment), "settings").await?;
            let env = app.store.get_environment(&project, &environment).await?;
            let body = environment_form(&session, &project, &env, &f, &errors);
            Ok((
                status,
                page::layout(&session, &nav, "Edit environment", body),
            )
                .into_response())
        }
    }
}

/// The project form.
#[derive(Debug, Default, Deserialize)]
pub struct ProjectForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
}

fn project_page(
    session: &Session,
    project: &ProjectView,
    f: &ProjectForm,
    errors: &[(String, String)],
) -> Markup {
    let p = enc(&project.key);
    html! {
        p.muted { a href="/projects" { "Projects" } " / " code { (project.key) } }
        h1 { "Project " (project.name) }
        (error_notice(errors))
        @if session.can(Role::Editor) {
            h2 { "Name and description" }
            form.stack method="post" action=(format!("/projects/{p}/edit")) {
                (page::csrf(session))
                div.row {
                    div { label for="proj-name" { "Name" } input #proj-name type="text" name="name" value=(f.name) required aria-invalid=[invalid(errors, "name")]; (page::field_errors(errors, "name")) }
                    div { label for="proj-desc" { "Description" } input #proj-desc type="text" name="description" value=(f.description) aria-invalid=[invalid(errors, "description")]; (page::field_errors(errors, "description")) }
                }
                div { button type="submit" { "Save project" } }
            }
        }
        @if session.can(Role::Admin) {
            h2 { "Delete the project" }
            p.muted { "Deletes its environments, flags, segments and SDK keys. The audit log keeps its entries." }
            form method="post" action=(format!("/projects/{p}/delete")) {
                (page::csrf(session))
                button.danger type="submit" { "Delete project…" }
            }
        }
    }
}

/// `GET /projects/{project}/edit`.
pub async fn edit_project(
    State(app): State<AppState>,
    session: Session,
    Path(project): Path<String>,
) -> Result<Response, ConsoleError> {
    if !session.can(Role::Editor) {
        return Err(ConsoleError::Forbidden(Role::Editor));
    }
    let nav = Nav::load(&app, Some(&project), None, "settings").await?;
    let view = app.store.get_project(&project).await?;
    let f = ProjectForm {
        csrf: String::new(),
        name: view.name.clone(),
        description: view.description.clone(),
    };
    let body = project_page(&session, &view, &f, &[]);
    Ok(page::layout(&session, &nav, "Project", body).into_response())
}

/// `POST /projects/{project}/edit`: `update_project`.
pub async fn update_project(
    State(app): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    Form(f): Form<ProjectForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Editor, &f.csrf)?;
    let update = UpdateProject {
        name: Some(f.name.trim().to_owned()),
        description: Some(f.description.clone()),
    };
    match app.store.update_project(&ctx, &project, update).await {
        Ok(_) => Ok(Redirect::to(&format!("/projects/{}/settings", enc(&project))).into_response()),
        Err(e) => {
            let status = store_status(&e).0;
            let errors = field_errors(e)?;
            let nav = Nav::load(&app, Some(&project), None, "settings").await?;
            let view = app.store.get_project(&project).await?;
            let body = project_page(&session, &view, &f, &errors);
            Ok((status, page::layout(&session, &nav, "Project", body)).into_response())
        }
    }
}

/// A confirmable form.
#[derive(Debug, Deserialize)]
pub struct ConfirmForm {
    csrf: String,
    #[serde(default)]
    confirmed: Option<String>,
}

/// `POST /projects/{project}/delete`: after a confirmation, `delete_project` (admin).
pub async fn delete_project(
    State(app): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    Form(f): Form<ConfirmForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Admin, &f.csrf)?;
    if f.confirmed.as_deref() != Some("yes") {
        let nav = Nav::load(&app, Some(&project), None, "settings").await?;
        let view = app.store.get_project(&project).await?;
        let body = html! {
            h1 { "Delete project " (view.name) "?" }
            (page::notice("warn", html! {
                "Every environment, flag, segment and SDK key of " strong { (project) }
                " is deleted, and SDKs using its keys lose their flags. This cannot be undone."
            }))
            div.row {
                form method="post" action=(format!("/projects/{}/delete", enc(&project))) {
                    (page::csrf(&session))
                    input type="hidden" name="confirmed" value="yes";
                    button.danger type="submit" { "Delete " (project) " for good" }
                }
                a.button.secondary href=(format!("/projects/{}/edit", enc(&project))) { "Cancel" }
            }
        };
        return Ok(page::layout(&session, &nav, "Delete project", body).into_response());
    }
    app.store.delete_project(&ctx, &project).await?;
    settle(&app).await;
    Ok(Redirect::to("/projects").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_one_per_line_or_comma_separated() {
        assert_eq!(
            origins("https://a.example\n\n https://b.example, *\n"),
            ["https://a.example", "https://b.example", "*"]
        );
        assert!(origins("  \n").is_empty());
    }
}
