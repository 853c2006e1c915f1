//! Flags: the list (search, filters, each environment's state, pagination), creating a flag,
//! the flag page (per-environment on/off, variations, kill switch, archive).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};
use vexil_schema::FlagDefinition;

use super::page::{self, Nav};
use super::reads::{FlagListFilter, FlagListItem, list_flags};
use super::session::Session;
use super::{ConsoleError, enc, settle};
use crate::app::AppState;
use crate::auth::Role;
use crate::store::{ConfigPatch, FlagView, Page, StoreError};

/// Query of the flags list.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Environment shown first and used by the on/off filter.
    #[serde(default)]
    pub env: Option<String>,
    /// Search text.
    #[serde(default)]
    pub q: Option<String>,
    /// Tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// `on`, `off` or empty.
    #[serde(default)]
    pub state: Option<String>,
    /// `archived`, `all` or empty (live only).
    #[serde(default)]
    pub archived: Option<String>,
    /// `temporary`, `permanent` or empty.
    #[serde(default)]
    pub lifetime: Option<String>,
    /// Key to start after.
    #[serde(default)]
    pub cursor: Option<String>,
}

impl ListQuery {
    /// The store filter for environment `env`.
    pub fn filter(&self, env: Option<&str>) -> FlagListFilter {
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        FlagListFilter {
            q: nonempty(&self.q).map(|q| q.trim().to_owned()),
            tag: nonempty(&self.tag).map(|t| t.trim().to_owned()),
            archived: match self.archived.as_deref() {
                Some("archived") => Some(true),
                Some("all") => None,
                _ => Some(false),
            },
            temporary: match self.lifetime.as_deref() {
                Some("temporary") => Some(true),
                Some("permanent") => Some(false),
                _ => None,
            },
            on: match self.state.as_deref() {
                Some("on") => Some(true),
                Some("off") => Some(false),
                _ => None,
            },
            environment: env.map(str::to_owned),
            cursor: nonempty(&self.cursor),
            limit: Some(50),
        }
    }

    /// This query's parameters with `cursor` replaced.
    fn with_cursor(&self, env: Option<&str>, cursor: Option<&str>) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if let Some(e) = env {
            s.append_pair("env", e);
        }
        for (k, v) in [
            ("q", &self.q),
            ("tag", &self.tag),
            ("state", &self.state),
            ("archived", &self.archived),
            ("lifetime", &self.lifetime),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                s.append_pair(k, v);
            }
        }
        if let Some(c) = cursor {
            s.append_pair("cursor", c);
        }
        s.finish()
    }
}

/// `GET /projects/{project}/flags`.
pub async fn list(
    State(app): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(&app, Some(&project), q.env.as_deref(), "flags").await?;
    let page = list_flags(&app.store, &project, &q.filter(nav.environment.as_deref())).await?;
    Ok(page::layout(
        &session,
        &nav,
        "Flags",
        render_list(&session, &nav, &project, &q, &page),
    )
    .into_response())
}

/// The flags list's content (separate so that the benchmark can render it alone).
pub fn render_list(
    session: &Session,
    nav: &Nav,
    project: &str,
    q: &ListQuery,
    page: &Page<FlagListItem>,
) -> Markup {
    let p = enc(project);
    let env = nav.environment.as_deref();
    let sel = |v: &Option<String>, x: &str| v.as_deref().unwrap_or("") == x;
    let base = format!("/projects/{p}/flags");
    html! {
        div.row style="justify-content:space-between;align-items:center" {
            h1 { "Flags" }
            @if session.can(Role::Editor) {
                a.button href=(format!("/projects/{p}/flags/new")) { "New flag" }
            }
        }
        form.filters.row method="get" action=(base) role="search"
            hx-get=(base) hx-trigger="input changed delay:300ms from:#q, change" hx-target="#flag-table"
            hx-select="#flag-table" hx-swap="outerHTML" hx-push-url="true" {
            @if let Some(e) = env { input type="hidden" name="env" value=(e); }
            div { label for="q" { "Search " span.kbd aria-hidden="true" { "/" } } input #q type="search" name="q" value=[q.q.as_deref()] placeholder="key or name"; }
            div { label for="tag" { "Tag" } input #tag type="text" name="tag" value=[q.tag.as_deref()] size="12"; }
            div {
                label for="state" { "State in " (env.unwrap_or("environment")) }
                select #state name="state" {
                    option value="" selected[sel(&q.state, "")] { "Any" }
                    option value="on" selected[sel(&q.state, "on")] { "On" }
                    option value="off" selected[sel(&q.state, "off")] { "Off" }
                }
            }
            div {
                label for="archived" { "Archived" }
                select #archived name="archived" {
                    option value="" selected[sel(&q.archived, "")] { "Live only" }
                    option value="archived" selected[sel(&q.archived, "archived")] { "Archived only" }
                    option value="all" selected[sel(&q.archived, "all")] { "Both" }
                }
            }
            div {
                label for="lifetime" { "Lifetime" }
                select #lifetime name="lifetime" {
                    option value="" selected[sel(&q.lifetime, "")] { "Any" }
                    option value="temporary" selected[sel(&q.lifetime, "temporary")] { "Temporary" }
                    option value="permanent" selected[sel(&q.lifetime, "permanent")] { "Permanent" }
                }
            }
            div { button.secondary type="submit" { "Filter" } }
        }
        div #flag-table {
            @if page.items.is_empty() {
                @if q.cursor.is_none() && q.q.is_none() && q.tag.is_none() && q.state.is_none() {
                    (page::empty("No flags yet", html! {
                        @if session.can(Role::Editor) {
                            a href=(format!("/projects/{p}/flags/new")) { "Create the first flag" }
                            " — it starts off in every environment."
                        } @else { "An editor can create flags here." }
                    }))
                } @else {
                    (page::empty("No flags match these filters", html! {
                        a href=(format!("{base}?{}", q.with_cursor(env, None).split('&').filter(|kv| kv.starts_with("env=")).collect::<Vec<_>>().join("&"))) { "Clear the filters" }
                    }))
                }
            } @else {
                table {
                    caption.muted style="text-align:left;caption-side:top" { "On/off per environment; archived flags are hidden unless asked for." }
                    thead { tr {
                        th scope="col" { "Flag" }
                        th scope="col" { "Kind" }
                        th scope="col" { "Tags" }
                        @for e in &nav.environments { th scope="col" { (e.name) } }
                    } }
                    tbody {
                        @for f in &page.items {
                            tr {
                                td {
                                    a href=(format!("/projects/{p}/flags/{}{}", enc(&f.key), env.map(|e| format!("?env={}", enc(e))).unwrap_or_default())) { strong { (f.name) } }
                                    br; code.muted { (f.key) }
                                    @if f.temporary { " " span.tag { "temporary" } }
                                    @if f.archived { " " span.tag { "archived" } }
                                }
                                td { (f.kind) }
                                td { @for t in &f.tags { span.tag { (t) } } }
                                @for e in &nav.environments {
                                    td {
                                        @match f.states.iter().find(|(k, _)| *k == e.key) {
                                            Some((_, on)) => (page::state_badge(*on)),
                                            None => span.muted { "—" },
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                nav.pager aria-label="Pages" {
                    @if q.cursor.is_some() { a href=(format!("{base}?{}", q.with_cursor(env, None))) { "First page" } }
                    @if let Some(next) = &page.next_cursor {
                        a href=(format!("{base}?{}", q.with_cursor(env, Some(next)))) rel="next" { "Next page" }
                    }
                    span.muted { (page.items.len()) " shown" }
                }
            }
        }
    }
}

/// `GET /projects/{project}/flags/new`.
pub async fn new_form(
    State(app): State<AppState>,
    session: Session,
    Path(project): Path<String>,
) -> Result<Response, ConsoleError> {
    if !session.can(Role::Editor) {
        return Err(ConsoleError::Forbidden(Role::Editor));
    }
    let nav = Nav::load(&app, Some(&project), None, "flags").await?;
    Ok(page::layout(
        &session,
        &nav,
        "New flag",
        create_form(&session, &project, &CreateForm::default(), &[], None),
    )
    .into_response())
}

/// The new-flag form.
#[derive(Debug, Default, Deserialize)]
pub struct CreateForm {
    /// CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// Key.
    #[serde(default)]
    pub key: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
    /// Variation values, one JSON value per line (non-boolean kinds).
    #[serde(default)]
    pub variations: String,
    /// Tags, comma-separated.
    #[serde(default)]
    pub tags: String,
    /// `on` if temporary.
    #[serde(default)]
    pub temporary: Option<String>,
    /// `on` if client-side.
    #[serde(default)]
    pub client_side: Option<String>,
}

fn create_form(
    session: &Session,
    project: &str,
    f: &CreateForm,
    errors: &[(String, String)],
    general: Option<&str>,
) -> Markup {
    let invalid = |path: &str| {
        errors
            .iter()
            .any(|(p, _)| p == path || p.starts_with(&format!("{path}[")))
            .then_some("true")
    };
    let kind = if f.kind.is_empty() {
        "boolean"
    } else {
        f.kind.as_str()
    };
    html! {
        h1 { "New flag" }
        @if let Some(g) = general { (page::notice("error", html! { (g) })) }
        form.stack method="post" action=(format!("/projects/{}/flags", enc(project))) {
            (page::csrf(session))
            div.row {
                div { label for="key" { "Key" } input #key type="text" name="key" value=(f.key) required aria-invalid=[invalid("key")] aria-describedby="key-help"; span #key-help .muted { "Used by the SDKs; cannot change later." } (page::field_errors(errors, "key")) }
                div { label for="name" { "Name" } input #name type="text" name="name" value=(f.name) required aria-invalid=[invalid("name")]; (page::field_errors(errors, "name")) }
            }
            div { label for="description" { "Description" } textarea #description name="description" rows="2" { (f.description) } }
            div.row {
                div {
                    label for="kind" { "Kind" }
                    select #kind name="kind" {
                        @for k in ["boolean", "string", "number", "json"] { option value=(k) selected[k == kind] { (k) } }
                    }
                }
                div { label for="tags" { "Tags (comma-separated)" } input #tags type="text" name="tags" value=(f.tags) aria-invalid=[invalid("tags")]; (page::field_errors(errors, "tags")) }
            }
            div {
                label for="variations" { "Variations: one JSON value per line (ignored for boolean: true and false)" }
                textarea.code #variations name="variations" rows="4" aria-invalid=[invalid("variations")] placeholder="\"control\"\n\"treatment\"" { (f.variations) }
                (page::field_errors(errors, "variations"))
            }
            div.row {
                div { label { input type="checkbox" name="temporary" checked[f.temporary.is_some()]; " Temporary (a release flag to remove later)" } }
                div { label { input type="checkbox" name="client_side" checked[f.client_side.is_some()]; " Available to client-side SDKs" } }
            }
            p.muted { "The flag starts off in every environment, serving its off variation." }
            button type="submit" { "Create flag" }
        }
    }
}

/// `POST /projects/{project}/flags`: creates a flag through the store's `create_flag`.
pub async fn create(
    State(app): State<AppState>,
    session: Session,
    Path(project): Path<String>,
    Form(f): Form<CreateForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Editor, &f.csrf)?;
    let (app_r, session_r, project_r, f_r) = (&app, &session, &project, &f);
    let again = |errors: Vec<(String, String)>, general: Option<String>| async move {
        let nav = Nav::load(app_r, Some(project_r), None, "flags").await?;
        Ok::<Response, ConsoleError>(
            (
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                page::layout(
                    session_r,
                    &nav,
                    "New flag",
                    create_form(session_r, project_r, f_r, &errors, general.as_deref()),
                ),
            )
                .into_response(),
        )
    };
    let variations: Result<Vec<Value>, (String, String)> = if f.kind == "boolean" {
        Ok(vec![json!({"value": true}), json!({"value": false})])
    } else {
        f.variations
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str::<Value>(l)
                    .map(|v| json!({ "value": v }))
                    .map_err(|e| {
                        (
                            format!("variations[{i}]"),
                            format!(
                                "line {}: not a JSON value ({e}); strings need quotes",
                                i + 1
                            ),
                        )
                    })
            })
            .collect()
    };
    let variations = match variations {
        Ok(v) => v,
        Err(e) => return again(vec![e], None).await,
    };
    let tags: Vec<&str> = f
        .tags
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    let doc = json!({
        "key": f.key.trim(), "name": f.name.trim(), "description": f.description,
        "kind": f.kind, "variations": variations, "tags": tags,
        "temporary": f.temporary.is_some(), "client_side": f.client_side.is_some(),
    });
    let def: FlagDefinition = match serde_json::from_value(doc) {
        Ok(d) => d,
        Err(e) => {
            let msg = e.to_string();
            let field = if msg.contains("key") { "key" } else { "" };
            return again(vec![(field.to_owned(), msg.clone())], Some(msg)).await;
        }
    };
    match app.store.create_flag(&ctx, &project, def).await {
        Ok(view) => {
            settle(&app).await;
            Ok(Redirect::to(&format!(
                "/projects/{}/flags/{}?done=created",
                enc(&project),
                enc(view.definition.key.as_ref())
            ))
            .into_response())
        }
        Err(StoreError::Invalid(v)) => {
            let errors = v.errors.into_iter().map(|e| (e.path, e.message)).collect();
            again(
                errors,
                Some("The flag was not created: fix the fields marked below.".into()),
            )
            .await
        }
        Err(StoreError::AlreadyExists(what)) => {
            again(
                vec![(
                    "key".into(),
                    format!("{what} already exists: pick another key"),
                )],
                None,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// Query of the flag page.
#[derive(Debug, Default, Deserialize)]
pub struct ShowQuery {
    /// The environment the switcher has chosen.
    #[serde(default)]
    pub env: Option<String>,
    /// What was just done (shown as a notice).
    #[serde(default)]
    pub done: Option<String>,
    /// When a flip was made (ms since the epoch): shows its convergence.
    #[serde(default)]
    pub t: Option<u64>,
}

/// `GET /projects/{project}/flags/{flag}`.
pub async fn show(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag)): Path<(String, String)>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(&app, Some(&project), q.env.as_deref(), "flags").await?;
    let view = app.store.get_flag(&project, &flag).await?;
    // After a flip: how the change reaches the environment's SDK streams.
    let converge = match (q.t, nav.environment.as_deref()) {
        (Some(t), Some(env)) => Some(super::fleet::after_flip(&app, &project, env, t).await?),
        _ => None,
    };
    let body = render_flag(&session, &nav, &project, &view, q.done.as_deref(), converge);
    Ok(page::layout(&session, &nav, &view.definition.name, body).into_response())
}

/// A human sentence for a variation: its name or value.
pub fn variation_label(view: &FlagView, i: usize) -> String {
    match view.definition.variations.get(i) {
        Some(v) => match &v.name {
            Some(n) => format!("{n} ({})", v.value),
            None => v.value.to_string(),
        },
        None => format!("variation {i} (missing)"),
    }
}

fn render_flag(
    session: &Session,
    nav: &Nav,
    project: &str,
    view: &FlagView,
    done: Option<&str>,
    converge: Option<Markup>,
) -> Markup {
    let p = enc(project);
    let key = view.definition.key.to_string();
    let f = enc(&key);
    let editor = session.can(Role::Editor) && !view.archived;
    html! {
        p.muted { a href=(format!("/projects/{p}/flags")) { "Flags" } " / " code { (key) } }
        h1 { (view.definition.name) }
        @if let Some(d) = done {
            (page::notice("ok", html! { (done_message(d)) }))
        }
        @if let Some(c) = converge { (c) }
        @if view.archived {
            (page::notice("warn", html! { "This flag is archived: SDKs no longer receive it and its configurations are frozen." }))
        }
        p {
            "Kind " strong { (view.definition.kind.as_str()) }
            @for t in &view.definition.tags { " " span.tag { (t) } }
            @if view.definition.temporary { " " span.tag { "temporary" } }
            @if view.definition.client_side { " " span.tag { "client-side" } }
        }
        @if !view.definition.description.is_empty() { p { (view.definition.description) } }
        h2 { "Environments" }
        @if nav.environments.is_empty() {
            (page::empty("This project has no environments", html! {
                a href=(format!("/projects/{p}/settings")) { "Create an environment" } " to configure the flag in it."
            }))
        }
        div.envs {
            @for e in &nav.environments {
                @if let Some(cfg) = view.environments.get(&e.key) {
                    section.card aria-labelledby=(format!("env-{}", e.key)) {
                        h3 #(format!("env-{}", e.key)) { (e.name) " " (page::state_badge(cfg.on)) }
                        p.muted {
                            @if cfg.on {
                                (cfg.rules.len()) " rule" @if cfg.rules.len() != 1 { "s" } ", "
                                (cfg.targets.iter().map(|t| t.values.len()).sum::<usize>()) " targeted keys; otherwise "
                                (super::targeting::serve_text(view, &cfg.fallthrough))
                            } @else {
                                "Serves " (variation_label(view, cfg.off_variation)) " to everyone."
                            }
                        }
                        div.row {
                            @if editor {
                                form method="post" action=(format!("/projects/{p}/flags/{f}/toggle")) {
                                    (page::csrf(session))
                                    input type="hidden" name="environment" value=(e.key);
                                    input type="hidden" name="version" value=(cfg.version);
                                    input type="hidden" name="on" value=(if cfg.on { "false" } else { "true" });
                                    @if cfg.on {
                                        button.secondary.small type="submit" aria-label=(format!("Turn off in {}", e.name)) { "Turn off" }
                                    } @else {
                                        button.small type="submit" aria-label=(format!("Turn on in {}", e.name)) { "Turn on" }
                                    }
                                }
                            }
                            a href=(format!("/projects/{p}/flags/{f}/environments/{}/targeting", enc(&e.key))) {
                                @if editor { "Edit targeting" } @else { "View targeting" }
                            }
                            a href=(format!("/projects/{p}/flags/{f}/environments/{}/history", enc(&e.key))) { "History" }
                            a href=(format!("/projects/{p}/flags/{f}/environments/{}/releases", enc(&e.key))) { "Releases" }
                            a href=(format!("/projects/{p}/environments/{}/fleet", enc(&e.key))) { "Fleet" }
                            a href=(format!("{}?flag={f}", super::changes::list_path(project, &e.key))) { "Change requests" }
                        }
                        p.muted { "Version " (cfg.version) }
                    }
                }
            }
        }
        div.row style="justify-content:space-between;align-items:center" {
            h2 { "Variations" }
            @if editor { a.button.secondary href=(format!("/projects/{p}/flags/{f}/edit")) { "Edit definition" } }
        }
        table {
            thead { tr { th scope="col" { "#" } th scope="col" { "Name" } th scope="col" { "Value" } } }
            tbody {
                @for (i, v) in view.definition.variations.iter().enumerate() {
                    tr { td { (i) } td { (v.name.as_deref().unwrap_or("—")) } td { code { (v.value) } } }
                }
            }
        }
        @if editor {
            h2 { "Danger zone" }
            div.row {
                form method="post" action=(format!("/projects/{p}/flags/{f}/kill")) {
                    (page::csrf(session))
                    button.danger type="submit" { "Kill switch…" }
                }
                form method="post" action=(format!("/projects/{p}/flags/{f}/archive")) {
                    (page::csrf(session))
                    input type="hidden" name="archived" value="true";
                    button.secondary type="submit" { "Archive…" }
                }
            }
            p.muted { "Both ask for confirmation first. The kill switch turns the flag off in every environment at once." }
        } @else if session.can(Role::Editor) && view.archived {
            form method="post" action=(format!("/projects/{p}/flags/{f}/archive")) {
                (page::csrf(session))
                input type="hidden" name="archived" value="false";
                input type="hidden" name="confirmed" value="yes";
                button.secondary type="submit" { "Unarchive" }
            }
        }
    }
}

fn done_message(done: &str) -> &'static str {
    match done {
        "created" => "Flag created. It is off everywhere until you turn it on.",
        "on" => "Turned on.",
        "off" => "Turned off.",
        "killed" => "Killed: the flag is off in every environment.",
        "archived" => "Archived.",
        "unarchived" => "Unarchived.",
        "saved" => "Targeting saved.",
        "defined" => "Definition saved.",
        "rolled-back" => "Rolled back: the earlier version is now the current one.",
        "applied" => "Change request applied.",
        _ => "Done.",
    }
}

/// The on/off form.
#[derive(Debug, Deserialize)]
pub struct ToggleForm {
    /// CSRF token.
    csrf: String,
    /// Environment key.
    environment: String,
    /// The configuration version the page showed (sent as `If-Match`).
    version: u64,
    /// The new state.
    on: bool,
}

/// `POST …/toggle`: turns the flag on or off in one environment (`patch_config` with
/// `If-Match`: a page showing an older version gets the conflict page).
pub async fn toggle(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag)): Path<(String, String)>,
    Form(f): Form<ToggleForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Editor, &f.csrf)?;
    let patch = ConfigPatch {
        on: Some(f.on),
        ..ConfigPatch::default()
    };
    match app
        .store
        .patch_config(
            &ctx,
            &project,
            &flag,
            &f.environment,
            patch,
            Some(f.version),
        )
        .await
    {
        Ok(_) => {
            settle(&app).await;
            Ok(Redirect::to(&format!(
                "/projects/{}/flags/{}?env={}&done={}&t={}",
                enc(&project),
                enc(&flag),
                enc(&f.environment),
                if f.on { "on" } else { "off" },
                crate::events::now_ms()
            ))
            .into_response())
        }
        Err(StoreError::ApprovalRequired(why)) => {
            let path = (project.as_str(), flag.as_str(), f.environment.as_str());
            super::changes::proposal_page(&app, &session, path, &json!({"on": f.on}), &why).await
        }
        Err(StoreError::PreconditionFailed { current }) => {
            let nav = Nav::load(&app, Some(&project), Some(&f.environment), "flags").await?;
            let body = html! {
                h1 { "Someone changed this flag meanwhile" }
                (page::notice("warn", html! {
                    "Your page showed version " (f.version) " in " (f.environment) "; the current version is " (current)
                    ". Nothing was changed. Reload the flag to see the current state, then decide again."
                }))
                a.button href=(format!("/projects/{}/flags/{}?env={}", enc(&project), enc(&flag), enc(&f.environment))) { "Reload the flag" }
            };
            Ok((
                axum::http::StatusCode::PRECONDITION_FAILED,
                page::layout(&session, &nav, "Conflict", body),
            )
                .into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// A confirmable form: the first post shows a confirmation page, the second (with
/// `confirmed=yes`) acts.
#[derive(Debug, Deserialize)]
pub struct ConfirmForm {
    /// CSRF token.
    csrf: String,
    /// `yes` once confirmed.
    #[serde(default)]
    confirmed: Option<String>,
    /// For archive: the new archived state.
    #[serde(default)]
    archived: Option<bool>,
}

fn confirm_page(
    session: &Session,
    action: &str,
    title: &str,
    text: Markup,
    button: &str,
    back: &str,
    extra: Markup,
) -> Markup {
    html! {
        h1 { (title) }
        (page::notice("warn", text))
        div.row {
            form method="post" action=(action) {
                (page::csrf(session))
                input type="hidden" name="confirmed" value="yes";
                (extra)
                button.danger type="submit" autofocus { (button) }
            }
            a.button.secondary href=(back) { "Cancel" }
        }
    }
}

/// `POST …/kill`: the kill switch, after a confirmation page.
pub async fn kill(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag)): Path<(String, String)>,
    Form(f): Form<ConfirmForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Editor, &f.csrf)?;
    let back = format!("/projects/{}/flags/{}", enc(&project), enc(&flag));
    if f.confirmed.as_deref() != Some("yes") {
        let view = app.store.get_flag(&project, &flag).await?;
        let on: Vec<&String> = view
            .environments
            .iter()
            .filter(|(_, c)| c.on)
            .map(|(k, _)| k)
            .collect();
        let nav = Nav::load(&app, Some(&project), None, "flags").await?;
        let text = html! {
            "Turn " strong { (flag) } " off in every environment at once? "
            @if on.is_empty() { "It is already off everywhere." }
            @else { "It is on in: " @for (i, e) in on.iter().enumerate() { @if i > 0 { ", " } strong { (e) } } "." }
            " Everyone will get the off variation within seconds."
        };
        let body = confirm_page(
            &session,
            &format!("{back}/kill"),
            "Kill switch",
            text,
            "Turn off everywhere",
            &back,
            html! {},
        );
        return Ok(page::layout(&session, &nav, "Kill switch", body).into_response());
    }
    app.store.kill_flag(&ctx, &project, &flag).await?;
    settle(&app).await;
    Ok(Redirect::to(&format!("{back}?done=killed&t={}", crate::events::now_ms())).into_response())
}

/// `POST …/archive`: archives (after confirmation) or unarchives.
pub async fn archive(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag)): Path<(String, String)>,
    Form(f): Form<ConfirmForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Editor, &f.csrf)?;
    let archived = f.archived.unwrap_or(true);
    let back = format!("/projects/{}/flags/{}", enc(&project), enc(&flag));
    if f.confirmed.as_deref() != Some("yes") {
        let nav = Nav::load(&app, Some(&project), None, "flags").await?;
        let body = confirm_page(
            &session,
            &format!("{back}/archive"),
            "Archive flag",
            html! { "Archive " strong { (flag) } "? SDKs stop receiving it and its configurations are frozen until it is unarchived." },
            "Archive",
            &back,
            html! { input type="hidden" name="archived" value="true"; },
        );
        return Ok(page::layout(&session, &nav, "Archive flag", body).into_response());
    }
    app.store
        .set_archived(&ctx, &project, &flag, archived)
        .await?;
    settle(&app).await;
    Ok(Redirect::to(&format!(
        "{back}?done={}",
        if archived { "archived" } else { "unarchived" }
    ))
    .into_response())
}
