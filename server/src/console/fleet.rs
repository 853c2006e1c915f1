//! The fleet panel: where an environment's SDK streams stand and how the last changes
//! reached them, from the same reports as `GET /api/v1/…/fleet` ([`crate::fleet`]). Linked
//! from each environment card of the flag page (the page refreshes itself every few
//! seconds).
//!
//! After every flip (on/off, kill, a saved configuration, an applied change request) the
//! flag page shows that change's convergence inline ([`after_flip`]): the share of the
//! streams on the new version and the 50/90/99/100 % times, refreshed by htmx from
//! [`converge`] every second for [`WATCH_MS`], or until every stream has it.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::ConsoleError;
use super::page::{self, Nav};
use super::session::Session;
use crate::app::AppState;
use crate::fleet::view;
use crate::fleet::view::FleetView;

/// How long the inline convergence keeps refreshing after a flip.
pub const WATCH_MS: u64 = 30_000;

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
    let fleet = load(&app, &project, &environment).await?;
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
                thead { tr { th scope="col" { "Relay" } th scope="col" { "Version" } th scope="col" { "Upstream" } th scope="col" { "Chained below" } th scope="col" { "Streams" } th scope="col" { "Holds" } } }
                tbody {
                    @for r in &fleet.relays {
                        tr { td { code { (r.id) } } td { (r.version) } td { (r.upstream) } td { @match &r.parent { Some(p) => code { (p) }, None => "—" } } td { (r.subscribers) } td { (r.environment_version) } }
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

/// The environment's fleet now.
async fn load(app: &AppState, project: &str, environment: &str) -> Result<FleetView, ConsoleError> {
    Ok(crate::fleet::api::environment_fleet(app, project, environment).await?)
}

/// The inline convergence panel of the change a flip made at `since_ms` in `environment`:
/// the environment's version now is the one the flip produced (the write has settled).
pub async fn after_flip(
    app: &AppState,
    project: &str,
    environment: &str,
    since_ms: u64,
) -> Result<Markup, ConsoleError> {
    let fleet = load(app, project, environment).await?;
    let version = fleet.environment_version;
    Ok(html! {
        div aria-live="polite" {
            (panel(project, environment, version, since_ms, &fleet))
        }
    })
}

/// The refresh's query: the version to follow and when the flip was made.
#[derive(Debug, Deserialize)]
pub struct ConvergeQuery {
    v: u64,
    t: u64,
}

/// `GET …/environments/{environment}/fleet/converge?v=…&t=…`: the panel, for htmx to swap in.
pub async fn converge(
    State(app): State<AppState>,
    _session: Session,
    Path((project, environment)): Path<(String, String)>,
    Query(q): Query<ConvergeQuery>,
) -> Result<Response, ConsoleError> {
    let fleet = load(&app, &project, &environment).await?;
    Ok(panel(&project, &environment, q.v, q.t, &fleet).into_response())
}

/// How long an environment must report no stream before the panel says there is nothing
/// to reach (a stream that connected just before the flip is reported within
/// [`crate::fleet::REPORT_MIN_GAP`]).
const NO_STREAM_GRACE_MS: u64 = 3_000;

/// Whether the change of `version` has reached every stream, `elapsed_ms` after the flip.
fn converged(fleet: &FleetView, version: u64, elapsed_ms: u64) -> bool {
    match change_of(fleet, version) {
        Some(c) => c.delivered >= c.streams && c.p100_ms.is_some(),
        None => fleet.sdk_streams == 0 && elapsed_ms >= NO_STREAM_GRACE_MS,
    }
}

/// The tracked change that carries `version`: that one, or the oldest newer one.
fn change_of(fleet: &FleetView, version: u64) -> Option<&view::ChangeConvergence> {
    fleet
        .changes
        .iter()
        .filter(|c| c.version >= version)
        .min_by_key(|c| c.version)
}

/// The panel: refreshes itself (htmx swaps it whole) until the change has converged or
/// [`WATCH_MS`] has passed since the flip.
fn panel(
    project: &str,
    environment: &str,
    version: u64,
    since_ms: u64,
    fleet: &FleetView,
) -> Markup {
    let elapsed = crate::events::now_ms().saturating_sub(since_ms);
    let done = converged(fleet, version, elapsed);
    let live = !done && elapsed < WATCH_MS;
    let url = format!(
        "/projects/{}/environments/{}/fleet/converge?v={version}&t={since_ms}",
        super::enc(project),
        super::enc(environment)
    );
    let fleet_url = format!(
        "/projects/{}/environments/{}/fleet",
        super::enc(project),
        super::enc(environment)
    );
    let change = change_of(fleet, version);
    html! {
        section.card.converge #converge aria-labelledby="converge-h"
            hx-get=[live.then_some(url.as_str())] hx-trigger=[live.then_some("every 1s")] hx-swap=[live.then_some("outerHTML")] {
            h2 #converge-h { "Reaching the SDKs in " (environment) " · version " (version) }
            @match change {
                Some(c) => {
                    p {
                        strong.big { (format!("{:.0} %", c.delivered_percent)) } " of the streams have it ("
                        (c.delivered) " of " (c.streams) ")"
                    }
                    progress max="100" value=(format!("{:.1}", c.delivered_percent)) aria-label=(format!("Streams on version {version}")) {}
                    dl.quantiles {
                        div { dt { "50 %" } dd { (ms(c.p50_ms)) } }
                        div { dt { "90 %" } dd { (ms(c.p90_ms)) } }
                        div { dt { "99 %" } dd { (ms(c.p99_ms)) } }
                        div { dt { "100 %" } dd { (ms(c.p100_ms)) } }
                    }
                }
                None if done => p.muted { "No SDK stream is connected to this environment: there is nothing to reach." },
                None => p.muted { "Waiting for the streams' first report (" (fleet.sdk_streams) " connected)…" },
            }
            p.muted {
                @if done { "Every connected stream has this change. " }
                @else if live { "Updating every second. " }
                @else { "Stopped updating after 30 s. " }
                a href=(fleet_url) { "Open the fleet panel" }
            }
        }
    }
}
