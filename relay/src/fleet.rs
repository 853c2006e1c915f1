//! Fleet reports: the relay tells its upstream, per environment, how many SDK streams it
//! serves, which versions they hold and how the last changes reached them
//! ([`vexil_schema::fleet::FleetReport`], `POST {upstream}/relay/v1/fleet` with the relay
//! key). Sent every `VEXIL_FLEET_REPORT_INTERVAL` and, at most every
//! `VEXIL_FLEET_REPORT_MIN_GAP`, whenever the hub's streams moved (a change published, a
//! stream opened, received a change or closed), so that a change's convergence is visible
//! upstream within about a second. A report that fails is only logged: the next one carries
//! the whole state again.
//!
//! A relay also takes the reports of the relays chained below it ([`router`]) and forwards
//! each at once to its own upstream with its own key, naming itself as the report's parent,
//! so that the control plane lists every relay of a chain with its own streams. The child's
//! request is answered with the upstream's verdict, so its report counter tells whether the
//! control plane got it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use metrics::counter;
use reqwest::header::AUTHORIZATION;
use tokio::sync::watch;
use vexil_fanout::hub::Hub;
use vexil_fanout::relay_stream::RelayAuth;
use vexil_schema::fleet::{FLEET_REPORT_PATH, FleetReport};

use crate::config::RelayConfig;
use crate::relay_state::RelayState;

/// Counter: fleet reports sent upstream, by `outcome` (`ok`, `error`).
pub const REPORTS: &str = "vexil_relay_fleet_reports_total";

/// Counter: reports of chained relays forwarded upstream, by `outcome` (`ok`, `error`,
/// `invalid`: refused here as malformed).
pub const FORWARDED: &str = "vexil_relay_fleet_reports_forwarded_total";

/// Largest report taken from a chained relay (the control plane's limit).
const MAX_REPORT_BYTES: usize = 4 * 1024 * 1024;

/// Timeout of one report.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Posts `report` to `url` with `relay_key`; the error says why it was not taken.
async fn send(
    client: &reqwest::Client,
    url: &str,
    relay_key: &str,
    report: &FleetReport,
) -> Result<(), String> {
    let r = client
        .post(url)
        .header(AUTHORIZATION, format!("Bearer {relay_key}"))
        .timeout(TIMEOUT)
        .json(report)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("upstream answered {}", r.status()))
    }
}

/// The report of everything `hub` serves.
pub fn report(config: &RelayConfig, hub: &Hub, state: &RelayState) -> FleetReport {
    FleetReport {
        relay_id: config.relay_name(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        upstream_connected: state.is_connected(),
        parent: None,
        environments: hub.fleet_reports(),
    }
}

/// Sends reports until `stop` turns true (returns at once if reports are off).
pub(crate) async fn run(
    client: reqwest::Client,
    config: Arc<RelayConfig>,
    hub: Hub,
    state: RelayState,
    mut stop: watch::Receiver<bool>,
) {
    if config.fleet_report_interval.is_zero() {
        return;
    }
    let url = config.fleet_url();
    let mut changes = hub.fleet_changes();
    let mut ticker = tokio::time::interval(config.fleet_report_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let moved = tokio::select! {
            _ = ticker.tick() => false,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
            _ = stop.wait_for(|s| *s) => return,
        };
        if moved {
            // Let a burst (a change reaching thousands of streams) settle into one report.
            tokio::select! {
                () = tokio::time::sleep(config.fleet_report_min_gap) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            changes.mark_unchanged();
        }
        let body = report(&config, &hub, &state);
        let sent = send(&client, &url, &config.relay_key, &body).await;
        match sent {
            Ok(()) => {
                counter!(REPORTS, "outcome" => "ok").increment(1);
                if failing {
                    tracing::info!("fleet reports reach upstream again");
                }
                failing = false;
            }
            Err(error) => {
                counter!(REPORTS, "outcome" => "error").increment(1);
                // Once per failing spell: an upstream down (or an older one without the
                // route) would otherwise log every few seconds.
                if !failing {
                    tracing::warn!(%error, "cannot send the fleet report upstream");
                }
                failing = true;
            }
        }
    }
}

/// What the forwarding route needs.
#[derive(Debug, Clone)]
struct Forward<R> {
    client: reqwest::Client,
    config: Arc<RelayConfig>,
    auth: R,
}

/// `POST /relay/v1/fleet`: reports of relays chained below this one (authenticated by
/// `auth`, the keys they stream with), forwarded upstream.
pub(crate) fn router<R: RelayAuth>(
    client: reqwest::Client,
    config: Arc<RelayConfig>,
    auth: R,
) -> Router {
    Router::new()
        .route(FLEET_REPORT_PATH, post(forward::<R>))
        .layer(DefaultBodyLimit::max(MAX_REPORT_BYTES))
        .with_state(Forward {
            client,
            config,
            auth,
        })
}

/// Checks the child's key and report, names this relay as its parent unless a relay further
/// down the chain already did, and posts it upstream: `204` once upstream took it, `502`
/// with the reason when it did not.
async fn forward<R: RelayAuth>(
    State(f): State<Forward<R>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(key) = crate::events::authorization_key(&headers) else {
        return crate::events::auth_refusal(vexil_fanout::AuthError::Unauthorized);
    };
    if let Err(e) = f.auth.authenticate(key).await {
        return crate::events::auth_refusal(e);
    }
    let mut report: FleetReport = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            counter!(FORWARDED, "outcome" => "invalid").increment(1);
            return crate::events::problem(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    if report.parent.as_deref().is_none_or(|p| p.trim().is_empty()) {
        report.parent = Some(f.config.relay_name());
    }
    match send(
        &f.client,
        &f.config.fleet_url(),
        &f.config.relay_key,
        &report,
    )
    .await
    {
        Ok(()) => {
            counter!(FORWARDED, "outcome" => "ok").increment(1);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => {
            counter!(FORWARDED, "outcome" => "error").increment(1);
            tracing::debug!(%error, relay = %report.relay_id, "cannot forward a chained relay's fleet report");
            crate::events::problem(
                StatusCode::BAD_GATEWAY,
                &format!("the report could not be forwarded: {error}"),
            )
        }
    }
}
