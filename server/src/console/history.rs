//! A flag's history in one environment: its versions with who and when, a side-by-side diff
//! of any version against the one before it, and rollback (after a confirmation) through the
//! store's `rollback_config`, which records the restored configuration as a new version.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;

use super::diff;
use super::page::{self, Nav};
use super::session::Session;
use super::{ConsoleError, enc, settle};
use crate::app::AppState;
use crate::auth::Role;
use crate::store::{FlagVersion, StoreError};

/// Query of the history page.
#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    /// The version whose change is shown (default: the newest).
    #[serde(default)]
    pub version: Option<u64>,
    /// Page cursor.
    #[serde(default)]
    pub cursor: Option<String>,
    /// What was just done.
    #[serde(default)]
    pub done: Option<String>,
}

/// The comparable text of a version's configuration (without salt and version).
fn text(v: &FlagVersion) -> String {
    let mut j = serde_json::to_value(&v.config).unwrap_or_default();
    if let serde_json::Value::Object(m) = &mut j {
        m.remove("salt");
        m.remove("version");
    }
    serde_json::to_string_pretty(&j).unwrap_or_default()
}

/// `GET …/history`.
pub async fn list(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag, environment)): Path<(String, String, String)>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(&app, Some(&project), Some(&environment), "flags").await?;
    let view = app.store.get_flag(&project, &flag).await?;
    let page = app
        .store
        .list_versions(&project, &flag, &environment, q.cursor.as_deref(), Some(50))
        .await?;
    let current = view
        .environments
        .get(&environment)
        .map(|c| c.version)
        .unwrap_or(0);
    let shown = q.version.unwrap_or(current);
    let this = app
        .store
        .get_version(&project, &flag, &environment, shown)
        .await?;
    let before = match shown.checked_sub(1).filter(|v| *v > 0) {
        Some(v) => match app
            .store
            .get_version(&project, &flag, &environment, v)
            .await
        {
            Ok(b) => Some(b),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let base = format!(
        "/projects/{}/flags/{}/environments/{}",
        enc(&project),
        enc(&flag),
        enc(&environment)
    );
    let editor = session.can(Role::Editor) && !view.archived;
    let body = html! {
        p.muted { a href=(format!("/projects/{}/flags", enc(&project))) { "Flags" } " / "
            a href=(format!("/projects/{}/flags/{}?env={}", enc(&project), enc(&flag), enc(&environment))) { code { (flag) } } " / " (environment) }
        h1 { "History in " (environment) }
        @if q.done.as_deref() == Some("rolled-back") {
            (page::notice("ok", html! { "Rolled back: the restored configuration is now version " (current) "." }))
        }
        h2 { "Version " (this.version) " — " (this.action) " by " (this.actor) }
        p.muted { (this.created_at.format(&Rfc3339).unwrap_or_default()) }
        (diff::side_by_side(
            &before.as_ref().map(|b| format!("Version {}", b.version)).unwrap_or_else(|| "Before".into()),
            &format!("Version {}", this.version),
            &before.as_ref().map(text).unwrap_or_default(),
            &text(&this),
        ))
        @if editor && u64::try_from(this.version).ok() != Some(current) {
            form method="post" action=(format!("{base}/rollback")) {
                (page::csrf(&session))
                input type="hidden" name="version" value=(this.version);
                input type="hidden" name="current" value=(current);
                button.danger type="submit" { "Roll back to version " (this.version) "…" }
            }
        }
        h2 { "Versions" }
        table {
            thead { tr { th scope="col" { "Version" } th scope="col" { "Change" } th scope="col" { "By" } th scope="col" { "When" } th scope="col" { "State" } } }
            tbody {
                @for v in &page.items {
                    tr {
                        td {
                            @if u64::try_from(v.version).ok() == Some(shown) { strong { (v.version) " (shown)" } }
                            @else { a href=(format!("{base}/history?version={}", v.version)) { "Version " (v.version) } }
                            @if u64::try_from(v.version).ok() == Some(current) { " " span.tag { "current" } }
                        }
                        td { (v.action) }
                        td { (v.actor) }
                        td { (v.created_at.format(&Rfc3339).unwrap_or_default()) }
                        td { (page::state_badge(v.config.on)) }
                    }
                }
            }
        }
        @if let Some(next) = &page.next_cursor {
            nav.pager aria-label="Pages" { a href=(format!("{base}/history?cursor={}", enc(next))) rel="next" { "Older versions" } }
        }
    };
    Ok(page::layout(&session, &nav, "History", body).into_response())
}

/// The rollback form.
#[derive(Debug, Deserialize)]
pub struct RollbackForm {
    csrf: String,
    /// The version to restore.
    version: u64,
    /// The version current when the page was shown (`If-Match`).
    current: u64,
    #[serde(default)]
    confirmed: Option<String>,
}

/// `POST …/rollback`: confirmation page, then `rollback_config` with `If-Match`.
pub async fn rollback(
    State(app): State<AppState>,
    session: Session,
    Path((project, flag, environment)): Path<(String, String, String)>,
    Form(f): Form<RollbackForm>,
) -> Result<Response, ConsoleError> {
    let ctx = session.write(Role::Editor, &f.csrf)?;
    let base = format!(
        "/projects/{}/flags/{}/environments/{}",
        enc(&project),
        enc(&flag),
        enc(&environment)
    );
    if f.confirmed.as_deref() != Some("yes") {
        let nav = Nav::load(&app, Some(&project), Some(&environment), "flags").await?;
        let body = html! {
            h1 { "Roll back " (flag) " in " (environment) "?" }
            (page::notice("warn", html! {
                "The configuration of version " (f.version) " becomes the current one, as version " (f.current + 1)
                ". SDKs receive it within seconds. Later versions stay in the history."
            }))
            div.row {
                form method="post" action=(format!("{base}/rollback")) {
                    (page::csrf(&session))
                    input type="hidden" name="version" value=(f.version);
                    input type="hidden" name="current" value=(f.current);
                    input type="hidden" name="confirmed" value="yes";
                    button.danger type="submit" autofocus { "Roll back to version " (f.version) }
                }
                a.button.secondary href=(format!("{base}/history?version={}", f.version)) { "Cancel" }
            }
        };
        return Ok(page::layout(&session, &nav, "Roll back", body).into_response());
    }
    match app
        .store
        .rollback_config(
            &ctx,
            &project,
            &flag,
            &environment,
            f.version,
            Some(f.current),
        )
        .await
    {
        Ok(_) => {
            settle(&app).await;
            Ok(Redirect::to(&format!("{base}/history?done=rolled-back")).into_response())
        }
        Err(StoreError::PreconditionFailed { current }) => {
            let nav = Nav::load(&app, Some(&project), Some(&environment), "flags").await?;
            let body = html! {
                h1 { "The flag changed meanwhile" }
                (page::notice("warn", html! {
                    "You confirmed a rollback while version " (f.current) " was current; it is now version " (current)
                    ". Nothing was rolled back. Look at the newest history and decide again."
                }))
                a.button href=(format!("{base}/history")) { "Reload the history" }
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
