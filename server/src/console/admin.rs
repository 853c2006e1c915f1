//! Projects, environments, SDK/client/relay keys and API tokens. New secrets are shown once,
//! on the page that answers their creation, and never again (only their hint is stored).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

use super::page::{self, Nav};
use super::session::Session;
use super::{ConsoleError, enc, settle, store_status};
use crate::app::AppState;
use crate::auth::Role;
use crate::store::{AccessKeyKind, CreateEnvironment, RelayEnvironment, StoreError};

/// Field errors of a store validation failure, or the failure itself.
fn field_errors(e: StoreError) -> Result<Vec<(String, String)>, ConsoleError> {
    match e {
        StoreError::Invalid(v) => Ok(v.errors.into_iter().map(|e| (e.path, e.message)).collect()),
        StoreError::AlreadyExists(w) => Ok(vec![("key".into(), format!("{w} already exists"))]),
        StoreError::Conflict { message, .. } => Ok(vec![(String::new(), message)]),
        other => Err(other.into()),
    }
}

fn general_errors(errors: &[(String, String)]) -> Markup {
    html! {
        @if !errors.is_empty() {
            (page::notice("error", html! {
                "Nothing was changed: "
                @for (p, m) in errors { @if !p.is_empty() { code { (p) } ": " } (m) " " }
            }))
        }
    }
}

/// `GET /projects`.
pub async fn projects(
    State(app): State<AppState>,
    session: Session,
) -> Result<Response, ConsoleError> {
    render_projects(&app, &session, &[], StatusCode::OK).await
}

async fn render_projects(
    app: &AppState,
    session: &Session,
    errors: &[(String, String)],
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(app, None, None, "projects").await?;
    let body = html! {
        h1 { "Projects" }
        (general_errors(errors))
        @if nav.projects.is_empty() {
            (page::empty("No projects yet", html! {
                @if session.can(Role::Editor) { "Create a project below; then add its environments (e.g. production, staging)." }
                @else { "An editor or admin can create projects." }
            }))
        } @else {
            table {
                thead { tr { th scope="col" { "Project" } th scope="col" { "Key" } th scope="col" { "Description" } } }
                tbody {
                    @for p in &nav.projects {
                        tr {
                            td { a href=(format!("/projects/{}/flags", enc(&p.key))) { (p.name) } }
                            td { code { (p.key) } }
                            td { (p.description) }
                        }
                    }
                }
            }
        }
        @if session.can(Role::Editor) {
            h2 { "New project" }
            form.row method="post" action="/projects" {
                (page::csrf(session))
                div { label for="p-key" { "Key" } input #p-key type="text" name="key" required; (page::field_errors(errors, "key")) }
                div { label for="p-name" { "Name" } input #p-name type="text" name="name" required; (page::field_errors(errors, "name")) }
                div { label for="p-desc" { "Description" } input #p-desc type="text" name="description"; }
                div { button type="submit" { "Create project" } }
            }
        }
    };
    Ok((status, page::layout(session, &nav, "Projects", body)).into_response())
}

/// A key, name and description form.
#[derive(Debug, Deserialize)]
pub struct KeyNameForm {
    csrf: String,
    key: String,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    copy_from: Option<String>,
}

/// `POST /projects`: `create_project`.
pub async fn create_project(
    State(app): State<AppState>,
    session: Session,
    Form(f): Form<KeyNameForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Editor, &f.csrf)?;
    let project = match serde_json::from_value(
        json!({"key": f.key.trim(), "name": f.name.trim(), "description": f.description}),
    ) {
        Ok(p) => p,
        Err(e) => {
            let errors = [("key".to_owned(), e.to_string())];
            return render_projects(&app, &session, &errors, StatusCode::UNPROCESSABLE_ENTITY)
                .await;
        }
    };
    match app.store.create_project(&ctx, project).await {
        Ok(p) => Ok(Redirect::to(&format!("/projects/{}/settings", enc(&p.key))).into_response()),
        Err(e) => {
            let status = store_status(&e).0;
            let errors = field_errors(e)?;
            render_projects(&app, &session, &errors, status).await
        }
    }
}

/// `GET /projects/{project}/settings`: the project's environments.
pub async fn project_settings(
    State(app): State<AppState>,
    session: Session,
    Path(project): Path<String>,
) -> Result<Response, ConsoleError> {
    render_settings(&app, &session, &project, &[], StatusCode::OK).await
}

async fn render_settings(
    app: &AppState,
    session: &Session,
    project: &str,
    errors: &[(String, String)],
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(app, Some(project), None, "settings").await?;
    let p = enc(project);
    let approvals = super::policy::section(app, session, project, &nav.environments).await?;
    let body = html! {
        div.row style="justify-content:space-between;align-items:center" {
            h1 { "Environments" }
            @if session.can(Role::Editor) { a.button.secondary href=(format!("/projects/{p}/edit")) { "Rename or delete the project" } }
        }
        (general_errors(errors))
        @if nav.environments.is_empty() {
            (page::empty("No environments yet", html! { "Flags are configured per environment: create one (e.g. production) below." }))
        } @else {
            table {
                thead { tr { th scope="col" { "Environment" } th scope="col" { "Key" } th scope="col" { "Data version" } th scope="col" { "Allowed browser origins" } @if session.can(Role::Editor) { th scope="col" { "Actions" } } } }
                tbody {
                    @for e in &nav.environments {
                        tr {
                            td { (e.name) } td { code { (e.key) } } td { (e.version) }
                            td { @if e.allowed_origins.is_empty() { span.muted { "none" } } @else { (e.allowed_origins.join(", ")) } }
                            @if session.can(Role::Editor) {
                                td { div.row {
                                    a href=(format!("/projects/{p}/environments/{}/edit", enc(&e.key))) aria-label=(format!("Edit environment {}", e.name)) { "Edit" }
                                    @if session.can(Role::Admin) {
                                        form method="post" action=(format!("/projects/{p}/environments/{}/delete", enc(&e.key))) {
                                            (page::csrf(session))
                                            button.secondary.small type="submit" aria-label=(format!("Delete environment {}", e.name)) { "Delete…" }
                                        }
                                    }
                                } }
                            }
                        }
                    }
                }
            }
        }
        (approvals)
        @if session.can(Role::Editor) {
            h2 { "New environment" }
            form.row method="post" action=(format!("/projects/{p}/environments")) {
                (page::csrf(session))
                div { label for="e-key" { "Key" } input #e-key type="text" name="key" required; (page::field_errors(errors, "key")) }
                div { label for="e-name" { "Name" } input #e-name type="text" name="name" required; (page::field_errors(errors, "name")) }
                div {
                    label for="e-copy" { "Copy flag settings from" }
                    select #e-copy name="copy_from" {
                        option value="" { "Nothing (every flag off)" }
                        @for e in &nav.environments { option value=(e.key) { (e.name) } }
                    }
                }
                div { button type="submit" { "Create environment" } }
            }
        }
    };
    Ok((status, page::layout(session, &nav, "Environments", body)).into_response())
}

/// `POST /projects/{project}/environments`: `create_environment`.
pub async fn create_environment(
    State(app): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    Form(f): Form<KeyNameForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Editor, &f.csrf)?;
    let req: CreateEnvironment = match serde_json::from_value(json!({
        "key": f.key.trim(), "name": f.name.trim(), "description": f.description,
        "copy_from": f.copy_from.as_deref().filter(|c| !c.is_empty()),
    })) {
        Ok(r) => r,
        Err(e) => {
            let errors = [("key".to_owned(), e.to_string())];
            return render_settings(
                &app,
                &session,
                &project,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    match app.store.create_environment(&ctx, &project, req).await {
        Ok(_) => {
            settle(&app).await;
            Ok(Redirect::to(&format!("/projects/{}/settings", enc(&project))).into_response())
        }
        Err(e) => {
            let status = store_status(&e).0;
            let errors = field_errors(e)?;
            render_settings(&app, &session, &project, &errors, status).await
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

/// `POST …/environments/{environment}/delete`: after a confirmation, `delete_environment`.
pub async fn delete_environment(
    State(app): State<AppState>,
    session: Session,
    Path((project, environment)): Path<(String, String)>,
    Form(f): Form<ConfirmForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Admin, &f.csrf)?;
    if f.confirmed.as_deref() != Some("yes") {
        let nav = Nav::load(&app, Some(&project), None, "settings").await?;
        let body = html! {
            h1 { "Delete environment " (environment) "?" }
            (page::notice("warn", html! { "Every flag configuration, segment and key of " strong { (environment) } " is deleted. SDKs connected to it lose their flags. This cannot be undone." }))
            div.row {
                form method="post" action=(format!("/projects/{}/environments/{}/delete", enc(&project), enc(&environment))) {
                    (page::csrf(&session))
                    input type="hidden" name="confirmed" value="yes";
                    button.danger type="submit" { "Delete " (environment) }
                }
                a.button.secondary href=(format!("/projects/{}/settings", enc(&project))) { "Cancel" }
            }
        };
        return Ok(page::layout(&session, &nav, "Delete environment", body).into_response());
    }
    app.store
        .delete_environment(&ctx, &project, &environment)
        .await?;
    settle(&app).await;
    Ok(Redirect::to(&format!("/projects/{}/settings", enc(&project))).into_response())
}

fn kind_name(k: AccessKeyKind) -> &'static str {
    match k {
        AccessKeyKind::Sdk => "SDK key (server-side SDKs)",
        AccessKeyKind::Client => "Client key (browsers and mobile apps)",
        AccessKeyKind::Relay => "Relay key",
    }
}

/// `GET …/environments/{environment}/keys`.
pub async fn keys(
    State(app): State<AppState>,
    session: Session,
    Path((project, environment)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    render_keys(
        &app,
        &session,
        &project,
        &environment,
        None,
        &[],
        StatusCode::OK,
    )
    .await
}

async fn render_keys(
    app: &AppState,
    session: &Session,
    project: &str,
    environment: &str,
    created: Option<(&str, &str)>,
    errors: &[(String, String)],
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(app, Some(project), Some(environment), "keys").await?;
    let base = format!(
        "/projects/{}/environments/{}/keys",
        enc(project),
        enc(environment)
    );
    let body = if !session.can(Role::Admin) {
        html! {
            h1 { "SDK & relay keys" }
            (page::notice("warn", html! { "Keys are managed by admins. Your role (" (session.actor.role.as_str()) ") cannot see them." }))
        }
    } else {
        let env = RelayEnvironment {
            project: project.to_owned(),
            environment: environment.to_owned(),
        };
        let mut lists = Vec::new();
        for kind in [AccessKeyKind::Sdk, AccessKeyKind::Client] {
            let items = app
                .store
                .list_access_keys(kind, Some(&env), None, Some(100))
                .await?
                .items;
            lists.push((kind, items));
        }
        let relay: Vec<_> = app
            .store
            .list_access_keys(AccessKeyKind::Relay, None, None, Some(100))
            .await?
            .items
            .into_iter()
            .filter(|k| k.environments.contains(&env))
            .collect();
        lists.push((AccessKeyKind::Relay, relay));
        html! {
            h1 { "Keys for " (environment) }
            @if let Some((name, secret)) = created {
                (page::notice("warn", html! {
                    p { "Copy the secret of " strong { (name) } " now: it is shown only this once." }
                    p.secret #new-secret { (secret) }
                }))
            }
            (general_errors(errors))
            @for (kind, items) in &lists {
                h2 { (kind_name(*kind)) "s" }
                @if items.is_empty() { p.muted { "None yet." } }
                @else {
                    table {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Secret" } th scope="col" { "Created" } th scope="col" { "Actions" } } }
                        tbody {
                            @for k in items {
                                tr {
                                    td { (k.name) }
                                    td { code { (k.hint) } }
                                    td { (k.created_at.format(&Rfc3339).unwrap_or_default()) " by " (k.created_by) }
                                    td {
                                        form method="post" action=(format!("{base}/{}/revoke", k.id)) {
                                            (page::csrf(session))
                                            input type="hidden" name="kind" value=(kind_slug(*kind));
                                            button.secondary.small type="submit" aria-label=(format!("Revoke {}", k.name)) { "Revoke…" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "New key" }
            form.row method="post" action=(base) {
                (page::csrf(session))
                div { label for="k-name" { "Name" } input #k-name type="text" name="name" required; }
                div {
                    label for="k-kind" { "Kind" }
                    select #k-kind name="kind" {
                        option value="sdk" { (kind_name(AccessKeyKind::Sdk)) }
                        option value="client" { (kind_name(AccessKeyKind::Client)) }
                        option value="relay" { (kind_name(AccessKeyKind::Relay)) " for this environment" }
                    }
                }
                div { button type="submit" { "Create key" } }
            }
        }
    };
    Ok((status, page::layout(session, &nav, "Keys", body)).into_response())
}

fn kind_slug(k: AccessKeyKind) -> &'static str {
    match k {
        AccessKeyKind::Sdk => "sdk",
        AccessKeyKind::Client => "client",
        AccessKeyKind::Relay => "relay",
    }
}

fn parse_kind(s: &str) -> Result<AccessKeyKind, ConsoleError> {
    match s {
        "sdk" => Ok(AccessKeyKind::Sdk),
        "client" => Ok(AccessKeyKind::Client),
        "relay" => Ok(AccessKeyKind::Relay),
        other => Err(ConsoleError::BadForm(format!("unknown key kind '{other}'"))),
    }
}

/// The new-key form.
#[derive(Debug, Deserialize)]
pub struct KeyForm {
    csrf: String,
    name: String,
    kind: String,
}

/// `POST …/keys`: `create_access_key`; the answer shows the secret once.
pub async fn create_key(
    State(app): State<AppState>,
    session: Session,
    Path((project, environment)): Path<(String, String)>,
    Form(f): Form<KeyForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Admin, &f.csrf)?;
    let kind = parse_kind(&f.kind)?;
    app.store.get_environment(&project, &environment).await?;
    let env = RelayEnvironment {
        project: project.clone(),
        environment: environment.clone(),
    };
    match app
        .store
        .create_access_key(&ctx, kind, &f.name, &[env])
        .await
    {
        Ok(created) => {
            settle(&app).await;
            let mut res = render_keys(
                &app,
                &session,
                &project,
                &environment,
                Some((&created.key.name, &created.secret)),
                &[],
                StatusCode::CREATED,
            )
            .await?;
            res.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            Ok(res)
        }
        Err(e) => {
            let status = store_status(&e).0;
            let errors = field_errors(e)?;
            render_keys(
                &app,
                &session,
                &project,
                &environment,
                None,
                &errors,
                status,
            )
            .await
        }
    }
}

/// The revoke form.
#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    csrf: String,
    kind: String,
    #[serde(default)]
    confirmed: Option<String>,
}

/// `POST …/keys/{id}/revoke`: after a confirmation, `revoke_access_key`.
pub async fn revoke_key(
    State(app): State<AppState>,
    session: Session,
    Path((project, environment, id)): Path<(String, String, i64)>,
    Form(f): Form<RevokeForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Admin, &f.csrf)?;
    let kind = parse_kind(&f.kind)?;
    let env = RelayEnvironment {
        project: project.clone(),
        environment: environment.clone(),
    };
    app.store.access_key_in(kind, id, &env).await?;
    let base = format!(
        "/projects/{}/environments/{}/keys",
        enc(&project),
        enc(&environment)
    );
    if f.confirmed.as_deref() != Some("yes") {
        let nav = Nav::load(&app, Some(&project), Some(&environment), "keys").await?;
        let body = html! {
            h1 { "Revoke this key?" }
            (page::notice("warn", html! { "Every SDK or relay using it is disconnected and refused from now on." }))
            div.row {
                form method="post" action=(format!("{base}/{id}/revoke")) {
                    (page::csrf(&session))
                    input type="hidden" name="kind" value=(f.kind);
                    input type="hidden" name="confirmed" value="yes";
                    button.danger type="submit" { "Revoke" }
                }
                a.button.secondary href=(base) { "Cancel" }
            }
        };
        return Ok(page::layout(&session, &nav, "Revoke key", body).into_response());
    }
    app.store.revoke_access_key(&ctx, kind, id).await?;
    settle(&app).await;
    Ok(Redirect::to(&base).into_response())
}

/// Query of the tokens page.
#[derive(Debug, Default, Deserialize)]
pub struct TokensQuery {
    #[serde(default)]
    cursor: Option<String>,
}

/// `GET /tokens` (admins).
pub async fn tokens(
    State(app): State<AppState>,
    session: Session,
    Query(q): Query<TokensQuery>,
) -> Result<Response, ConsoleError> {
    render_tokens(
        &app,
        &session,
        q.cursor.as_deref(),
        None,
        &[],
        StatusCode::OK,
    )
    .await
}

async fn render_tokens(
    app: &AppState,
    session: &Session,
    cursor: Option<&str>,
    created: Option<(&str, &str)>,
    errors: &[(String, String)],
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    if !session.can(Role::Admin) {
        return Err(ConsoleError::Forbidden(Role::Admin));
    }
    let nav = Nav::load(app, None, None, "tokens").await?;
    let page = app.store.list_tokens(cursor, Some(100)).await?;
    let body = html! {
        h1 { "API tokens" }
        p.muted { "A token signs in to this console and calls the API with its role. The audit log records changes under its name." }
        @if let Some((name, secret)) = created {
            (page::notice("warn", html! {
                p { "Copy the secret of " strong { (name) } " now: it is shown only this once." }
                p.secret #new-secret { (secret) }
            }))
        }
        (general_errors(errors))
        table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Secret" } th scope="col" { "Created" } th scope="col" { "State" } } }
            tbody {
                @for t in &page.items {
                    tr {
                        td { (t.name) } td { (t.role.as_str()) } td { code { (t.hint) } }
                        td { (t.created_at.format(&Rfc3339).unwrap_or_default()) " by " (t.created_by) }
                        td {
                            @if let Some(r) = t.revoked_at { "Revoked " (r.format(&Rfc3339).unwrap_or_default()) }
                            @else if Some(t.id) == session.actor.token_id { "In use by you" }
                            @else {
                                form method="post" action=(format!("/tokens/{}/revoke", t.id)) {
                                    (page::csrf(session))
                                    button.secondary.small type="submit" aria-label=(format!("Revoke token {}", t.name)) { "Revoke…" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = &page.next_cursor {
            nav.pager aria-label="Pages" { a href=(format!("/tokens?cursor={}", enc(next))) rel="next" { "More tokens" } }
        }
        h2 { "New token" }
        form.row method="post" action="/tokens" {
            (page::csrf(session))
            div { label for="t-name" { "Name (a person or a tool)" } input #t-name type="text" name="name" required; (page::field_errors(errors, "name")) }
            div {
                label for="t-role" { "Role" }
                select #t-role name="role" {
                    option value="viewer" { "Viewer: read only" }
                    option value="editor" { "Editor: change flags and segments" }
                    option value="admin" { "Admin: everything, including keys and tokens" }
                }
            }
            div { button type="submit" { "Create token" } }
        }
    };
    Ok((status, page::layout(session, &nav, "API tokens", body)).into_response())
}

/// The new-token form.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    csrf: String,
    name: String,
    role: String,
}

/// `POST /tokens`: `create_token`; the answer shows the secret once.
pub async fn create_token(
    State(app): State<AppState>,
    session: Session,
    Form(f): Form<TokenForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Admin, &f.csrf)?;
    let role = Role::parse(&f.role)
        .ok_or_else(|| ConsoleError::BadForm(format!("unknown role '{}'", f.role)))?;
    match app.store.create_token(&ctx, f.name.trim(), role).await {
        Ok(created) => {
            let mut res = render_tokens(
                &app,
                &session,
                None,
                Some((&created.token.name, &created.secret)),
                &[],
                StatusCode::CREATED,
            )
            .await?;
            res.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            Ok(res)
        }
        Err(e) => {
            let status = store_status(&e).0;
            let errors = field_errors(e)?;
            render_tokens(&app, &session, None, None, &errors, status).await
        }
    }
}

/// `POST /tokens/{id}/revoke`: after a confirmation, `revoke_token` (its console sessions
/// end with it).
pub async fn revoke_token(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<ConfirmForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Admin, &f.csrf)?;
    if f.confirmed.as_deref() != Some("yes") {
        let nav = Nav::load(&app, None, None, "tokens").await?;
        let body = html! {
            h1 { "Revoke this token?" }
            (page::notice("warn", html! { "Tools using it are refused from now on, and its console sessions end." }))
            div.row {
                form method="post" action=(format!("/tokens/{id}/revoke")) {
                    (page::csrf(&session))
                    input type="hidden" name="confirmed" value="yes";
                    button.danger type="submit" { "Revoke" }
                }
                a.button.secondary href="/tokens" { "Cancel" }
            }
        };
        return Ok(page::layout(&session, &nav, "Revoke token", body).into_response());
    }
    app.store.revoke_token(&ctx, id).await?;
    Ok(Redirect::to("/tokens").into_response())
}
