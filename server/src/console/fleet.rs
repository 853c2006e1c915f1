//! The fleet panel: where an environment's SDK streams stand and how the last changes
//! reached them, from the same reports as `GET /api/v1/…/fleet` ([`crate::fleet`]). Linked
//! from each environment card of the flag page, so that after a flip the operator sees the
//! change converge (the page refreshes itself every few seconds).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::ConsoleError;
use super::page::{self, Nav};
use super::session::Session;
use crate::app::AppState;
use crate::fleet::{store, view};

fn ms(v: Option<f64>) -> Markup {
    match v {
        Some(ms) if ms < 1000.0 => html! { (format!("{ms:.1} ms")) },
        Some(ms) => html! { (format!("{:.2} s", ms / 1000.0)) },
        None => html! { span.muted { "not yet" } },
    }
}

/// `GET /projects/{project}/environments/{environment}/fleet`.
pub async fn page(
    State(app): State<AppState>,
    session: Session,
    Path((project, environment)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    let nav = Nav::load(&app, Some(&project), Some(&environment), "flags").await?;
    let fleet = {
        let mut pc = app
            .store
            .db()
            .acquire()
            .await
            .map_err(crate::store::StoreError::from)?;
        let mut c = pc.conn();
        let (env_id, version) = store::environment_id(&mut c, &project, &environment).await?;
        let sources = store::load(&mut c, env_id, crate::events::now_ms()).await?;
        view::combine(version, &sources)
    };
    let title = format!("Fleet · {environment}");
    let body = html! {
        meta http-equiv="refresh" content="5";
        h1 { "Fleet of " code { (project) "/" (environment) } }
        p {
            strong { (fleet.sdk_streams) } " SDK streams (" (fleet.direct_sdk_streams) " on servers), "
            strong { (fleet.on_latest_percent.map_or_else(|| "—".to_owned(), |p| format!("{p:.1} %"))) }
            " on the latest version " (fleet.environment_version) "."
        }
        h2 { "Recent changes" }
        @if fleet.changes.is_empty() {
            (page::empty("No change tracked yet", html! { "Changes published while streams are connected appear here with their convergence." }))
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Version" } th scope="col" { "Reached" }
                    th scope="col" { "50 %" } th scope="col" { "90 %" } th scope="col" { "99 %" } th scope="col" { "100 %" }
                } }
                tbody {
                    @for c in &fleet.changes {
                        tr {
                            td { (c.version) }
                            td { (c.delivered) " / " (c.streams) " (" (format!("{:.1}", c.delivered_percent)) " %)" }
                            td { (ms(c.p50_ms)) } td { (ms(c.p90_ms)) } td { (ms(c.p99_ms)) } td { (ms(c.p100_ms)) }
                        }
                    }
                }
            }
        }
        h2 { "Relays" }
        @if fleet.relays.is_empty() {
            (page::empty("No relay reports", html! { "Relays report every 10 s; one silent for 35 s is left out." }))
        } @else {
            table {
                thead { tr { th scope="col" { "Relay" } th scope="col" { "Version" } th scope="col" { "Upstream" } th scope="col" { "Streams" } th scope="col" { "Holds" } } }
                tbody {
                    @for r in &fleet.relays {
                        tr { td { code { (r.id) } } td { (r.version) } td { (r.upstream) } td { (r.subscribers) } td { (r.environment_version) } }
                    }
                }
            }
        }
        h2 { "Streams per version" }
        ul {
            @for v in &fleet.by_version {
                li { "Version " (v.version) ": " (v.streams) }
            }
        }
    };
    Ok(page::layout(&session, &nav, &title, body).into_response())
}
