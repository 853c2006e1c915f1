//! The audit log, filtered by actor, action, project, flag and time, newest first; each
//! entry opens onto a diff of its before and after documents.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use super::page::{self, Nav};
use super::session::Session;
use super::{ConsoleError, diff};
use crate::app::AppState;
use crate::store::AuditQuery;

/// Filters of the audit page (times as the browser's `datetime-local`, read as UTC).
#[derive(Debug, Default, Deserialize)]
pub struct AuditForm {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    flag: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

fn parse_local(s: &Option<String>) -> Result<Option<OffsetDateTime>, ConsoleError> {
    let Some(s) = s.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let with_seconds = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let without = format_description!("[year]-[month]-[day]T[hour]:[minute]");
    PrimitiveDateTime::parse(s, with_seconds)
        .or_else(|_| PrimitiveDateTime::parse(s, without))
        .map(|t| Some(t.assume_utc()))
        .map_err(|_| ConsoleError::BadForm(format!("'{s}' is not a date and time")))
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// `GET /audit`.
pub async fn page(
    State(app): State<AppState>,
    session: Session,
    Query(f): Query<AuditForm>,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(&app, None, None, "audit").await?;
    let q = AuditQuery {
        project: nonempty(&f.project),
        flag: nonempty(&f.flag),
        actor: nonempty(&f.actor),
        action: nonempty(&f.action),
        from: parse_local(&f.from)?,
        to: parse_local(&f.to)?,
        cursor: nonempty(&f.cursor),
        limit: Some(50),
        ..AuditQuery::default()
    };
    let (page, problem) = match app.store.query_audit(&q).await {
        Ok(p) => (p, None),
        Err(crate::store::StoreError::Invalid(v)) => (
            crate::store::Page {
                items: Vec::new(),
                next_cursor: None,
            },
            Some(
                v.errors
                    .into_iter()
                    .map(|e| e.message)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        ),
        Err(e) => return Err(e.into()),
    };
    let next = page.next_cursor.as_ref().map(|c| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("actor", &f.actor),
            ("action", &f.action),
            ("project", &f.project),
            ("flag", &f.flag),
            ("from", &f.from),
            ("to", &f.to),
        ] {
            if let Some(v) = nonempty(v) {
                s.append_pair(k, &v);
            }
        }
        s.append_pair("cursor", c);
        s.finish()
    });
    let body = html! {
        h1 { "Audit log" }
        form.filters.row method="get" action="/audit" role="search" {
            div { label for="actor" { "Actor (token name)" } input #actor type="text" name="actor" value=[f.actor.as_deref()] size="14"; }
            div { label for="action" { "Action" } input #action type="text" name="action" value=[f.action.as_deref()] size="14" placeholder="e.g. flag.config"; }
            div { label for="a-project" { "Project" } input #a-project type="text" name="project" value=[f.project.as_deref()] size="10"; }
            div { label for="a-flag" { "Flag" } input #a-flag type="text" name="flag" value=[f.flag.as_deref()] size="12"; }
            div { label for="from" { "From (UTC)" } input #from type="datetime-local" name="from" value=[f.from.as_deref()]; }
            div { label for="to" { "To (UTC)" } input #to type="datetime-local" name="to" value=[f.to.as_deref()]; }
            div { button.secondary type="submit" { "Filter" } }
        }
        @if let Some(p) = &problem { (page::notice("error", html! { "These filters cannot be used: " (p) })) }
        @if page.items.is_empty() {
            (page::empty("No audit entries match", html! { "Changes made through the API or this console appear here with the token that made them." }))
        } @else {
            table {
                thead { tr { th scope="col" { "When (UTC)" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Resource" } th scope="col" { "Change" } } }
                tbody {
                    @for e in &page.items {
                        tr {
                            td { (e.occurred_at.format(&Rfc3339).unwrap_or_default()) }
                            td { (e.actor) }
                            td { code { (e.action) } }
                            td {
                                (e.resource)
                                @if let Some(p) = &e.project { " · " (p) }
                                @if let Some(env) = &e.environment { " · " (env) }
                                @if let Some(k) = &e.key { " · " code { (k) } }
                            }
                            td {
                                details {
                                    summary { "Diff" }
                                    @let pretty = |v: &Option<serde_json::Value>| v.as_ref().map(|v| serde_json::to_string_pretty(v).unwrap_or_default()).unwrap_or_default();
                                    (diff::side_by_side("Before", "After", &pretty(&e.before), &pretty(&e.after)))
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(n) = next {
                nav.pager aria-label="Pages" { a href=(format!("/audit?{n}")) rel="next" { "Older entries" } }
            }
        }
    };
    Ok(page::layout(&session, &nav, "Audit log", body).into_response())
}
