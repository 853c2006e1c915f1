//! Fleet reports: the relay tells its upstream, per environment, how many SDK streams it
//! serves, which versions they hold and how the last changes reached them
//! ([`vexil_schema::fleet::FleetReport`], `POST {upstream}/relay/v1/fleet` with the relay
//! key). Sent every `VEXIL_FLEET_REPORT_INTERVAL` and, at most every
//! `VEXIL_FLEET_REPORT_MIN_GAP`, whenever the hub's streams moved (a change published, a
//! stream opened, received a change or closed), so that a change's convergence is visible
//! upstream within about a second. A report that fails is only logged: the next one carries
//! the whole state again.

use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use reqwest::header::AUTHORIZATION;
use tokio::sync::watch;
use vexil_fanout::hub::Hub;
use vexil_schema::fleet::FleetReport;

use crate::config::RelayConfig;
use crate::relay_state::RelayState;

/// Counter: fleet reports sent upstream, by `outcome` (`ok`, `error`).
pub const REPORTS: &str = "vexil_relay_fleet_reports_total";

/// Timeout of one report.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The report of everything `hub` serves.
pub fn report(config: &RelayConfig, hub: &Hub, state: &RelayState) -> FleetReport {
    FleetReport {
        relay_id: config.relay_name(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        upstream_connected: state.is_connected(),
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
        let sent = client
            .post(&url)
            .header(AUTHORIZATION, format!("Bearer {}", config.relay_key))
            .timeout(TIMEOUT)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())
            .and_then(|r| {
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("upstream answered {}", r.status()))
                }
            });
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
                // Once per failing spell: a parent relay (which does not take reports) or an
                // upstream down would otherwise log every few seconds.
                if !failing {
                    tracing::warn!(%error, "cannot send the fleet report upstream");
                }
                failing = true;
            }
        }
    }
}
