//! Segments of one environment: the list, creating one, and a segment's page where its
//! included or excluded list is replaced by pasted or uploaded keys (one per line, up to the
//! API's limit) through the same `sync_segment_list` the API's list upload calls.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;
use vexil_schema::Segment;

use super::page::{self, Nav};
use super::session::Session;
use super::{ConsoleError, enc, settle};
use crate::app::AppState;
use crate::auth::Role;
use crate::store::{SegmentList, StoreError, segment_key_list};

/// Keys shown per list on a segment's page.
const SHOWN_KEYS: usize = 200;

/// `GET …/segments`.
pub async fn list(
    State(app): State<AppState>,
    session: Session,
    Path((project, environment)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    render_list(&app, &session, &project, &environment, &[], StatusCode::OK).await
}

async fn render_list(
    app: &AppState,
    session: &Session,
    project: &str,
    environment: &str,
    errors: &[(String, String)],
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(app, Some(project), Some(environment), "segments").await?;
    let page = app
        .store
        .list_segments(project, environment, None, Some(100))
        .await?;
    let base = format!(
        "/projects/{}/environments/{}/segments",
        enc(project),
        enc(environment)
    );
    let body = html! {
        h1 { "Segments in " (environment) }
        @if page.items.is_empty() {
            (page::empty("No segments yet", html! { "A segment is a reusable set of users: create one below, then pick it in a flag rule." }))
        } @else {
            table {
                thead { tr { th scope="col" { "Segment" } th scope="col" { "Included" } th scope="col" { "Excluded" } th scope="col" { "Version" } } }
                tbody {
                    @for s in &page.items {
                        tr {
                            td { a href=(format!("{base}/{}", enc(&s.key))) { (s.name) } br; code.muted { (s.key) } }
                            td { (s.included_count) } td { (s.excluded_count) } td { (s.version) }
                        }
                    }
                }
            }
        }
        @if session.can(Role::Editor) {
            h2 { "New segment" }
            form.row method="post" action=(base) {
                (page::csrf(session))
                div { label for="seg-key" { "Key" } input #seg-key type="text" name="key" required aria-invalid=[errors.iter().any(|(p, _)| p == "key").then_some("true")]; (page::field_errors(errors, "key")) }
                div { label for="seg-name" { "Name" } input #seg-name type="text" name="name" required; (page::field_errors(errors, "name")) }
                div { button type="submit" { "Create segment" } }
            }
            (page::field_errors(errors, ""))
        }
    };
    Ok((status, page::layout(session, &nav, "Segments", body)).into_response())
}

/// The new-segment form.
#[derive(Debug, Deserialize)]
pub struct CreateForm {
    csrf: String,
    key: String,
    name: String,
}

/// `POST …/segments`: creates an empty segment (`create_segment`).
pub async fn create(
    State(app): State<AppState>,
    session: Session,
    Path((project, environment)): Path<(String, String)>,
    Form(f): Form<CreateForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Editor, &f.csrf)?;
    let segment: Segment =
        match serde_json::from_value(json!({"key": f.key.trim(), "name": f.name.trim()})) {
            Ok(s) => s,
            Err(e) => {
                let errors = vec![("key".to_owned(), e.to_string())];
                return render_list(
                    &app,
                    &session,
                    &project,
                    &environment,
                    &errors,
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
            }
        };
    match app
        .store
        .create_segment(&ctx, &project, &environment, segment)
        .await
    {
        Ok(view) => {
            settle(&app).await;
            Ok(Redirect::to(&format!(
                "/projects/{}/environments/{}/segments/{}",
                enc(&project),
                enc(&environment),
                enc(view.segment.key.as_ref())
            ))
            .into_response())
        }
        Err(StoreError::Invalid(v)) => {
            let errors: Vec<(String, String)> =
                v.errors.into_iter().map(|e| (e.path, e.message)).collect();
            render_list(
                &app,
                &session,
                &project,
                &environment,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(StoreError::AlreadyExists(w)) => {
            let errors = vec![("key".to_owned(), format!("{w} already exists"))];
            render_list(
                &app,
                &session,
                &project,
                &environment,
                &errors,
                StatusCode::CONFLICT,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// Query of a segment's page.
#[derive(Debug, Default, Deserialize)]
pub struct ShowQuery {
    #[serde(default)]
    done: Option<String>,
}

/// `GET …/segments/{segment}`.
pub async fn show(
    State(app): State<AppState>,
    session: Session,
    Path((project, environment, segment)): Path<(String, String, String)>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, ConsoleError> {
    render_segment(
        &app,
        &session,
        (&project, &environment, &segment),
        q.done.as_deref(),
        &[],
        StatusCode::OK,
    )
    .await
}

async fn render_segment(
    app: &AppState,
    session: &Session,
    (project, environment, segment): (&str, &str, &str),
    done: Option<&str>,
    errors: &[(String, String)],
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(app, Some(project), Some(environment), "segments").await?;
    let view = app.store.get_segment(project, environment, segment).await?;
    let s = &view.segment;
    let action = format!(
        "/projects/{}/environments/{}/segments/{}",
        enc(project),
        enc(environment),
        enc(segment)
    );
    let list = |title: &str, keys: &vexil_schema::KeyList| -> Markup {
        html! {
            h2 { (title) " (" (keys.len()) ")" }
            @if keys.is_empty() { p.muted { "None." } }
            @else {
                p { @for k in keys.iter().take(SHOWN_KEYS) { code { (k) } " " } }
                @if keys.len() > SHOWN_KEYS { p.muted { "… and " (keys.len() - SHOWN_KEYS) " more." } }
            }
        }
    };
    let body = html! {
        p.muted { a href=(format!("/projects/{}/environments/{}/segments", enc(project), enc(environment))) { "Segments" } " / " code { (s.key) } }
        h1 { (s.name) }
        @if done == Some("saved") { (page::notice("ok", html! { "List saved." })) }
        @if !errors.is_empty() {
            (page::notice("error", html! { "Nothing was saved: " @for (_, m) in errors { (m) " " } }))
        }
        p.muted { "Version " (s.version) " · " (s.rules.len()) " rule" @if s.rules.len() != 1 { "s" } }
        (list("Included", &s.included))
        (list("Excluded", &s.excluded))
        @if session.can(Role::Editor) {
            h2 { "Replace a list" }
            form.stack method="post" action=(action) {
                (page::csrf(session))
                input type="hidden" name="version" value=(s.version);
                div.row {
                    div {
                        label for="list" { "List" }
                        select #list name="list" { option value="included" { "Included" } option value="excluded" { "Excluded" } }
                    }
                    div {
                        label for="upload" { "Upload a file (one key per line)" }
                        input #upload type="file" accept=".txt,.csv,text/plain" data-into="keys";
                    }
                }
                div {
                    label for="keys" { "Keys, one per line (replaces the whole list; up to 100,000)" }
                    textarea.code #keys name="keys" rows="8" aria-invalid=[(!errors.is_empty()).then_some("true")] {}
                }
                button type="submit" { "Replace list" }
            }
        }
    };
    Ok((status, page::layout(session, &nav, &s.name, body)).into_response())
}

/// The replace-a-list form.
#[derive(Debug, Deserialize)]
pub struct KeysForm {
    csrf: String,
    version: u64,
    list: String,
    keys: String,
}

/// `POST …/segments/{segment}`: replaces the included or excluded list (`If-Match`: the
/// version the page showed).
pub async fn replace_keys(
    State(app): State<AppState>,
    session: Session,
    Path((project, environment, segment)): Path<(String, String, String)>,
    Form(f): Form<KeysForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Editor, &f.csrf)?;
    let list = match f.list.as_str() {
        "excluded" => SegmentList::Excluded,
        _ => SegmentList::Included,
    };
    let at = (project.as_str(), environment.as_str(), segment.as_str());
    let result = match segment_key_list(&f.keys) {
        Ok(keys) => app
            .store
            .sync_segment_list(&ctx, at, list, keys, Some(f.version))
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            settle(&app).await;
            Ok(Redirect::to(&format!(
                "/projects/{}/environments/{}/segments/{}?done=saved",
                enc(&project),
                enc(&environment),
                enc(&segment)
            ))
            .into_response())
        }
        Err(StoreError::Invalid(v)) => {
            let errors: Vec<(String, String)> =
                v.errors.into_iter().map(|e| (e.path, e.message)).collect();
            render_segment(
                &app,
                &session,
                at,
                None,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(StoreError::PreconditionFailed { current }) => {
            let errors = vec![(
                String::new(),
                format!(
                    "The segment changed meanwhile (now version {current}); review it and paste again."
                ),
            )];
            render_segment(
                &app,
                &session,
                at,
                None,
                &errors,
                StatusCode::PRECONDITION_FAILED,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}
