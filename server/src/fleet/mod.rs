//! The fleet view (issue 16): where every SDK stream of an environment stands, across the
//! relays and the server instances, and which flags are stale.
//!
//! - Relays post their reports to `POST /relay/v1/fleet` ([`api::receive`], relay key);
//!   every server instance writes its own direct streams' report ([`Reporter`]) every
//!   [`REPORT_INTERVAL`] and, debounced, whenever its hub's streams move. All land in the
//!   `fleet_reports` table ([`store`]), so any instance on the database sees the whole
//!   fleet; a report not renewed within [`REPORT_TTL`] is the report of a process gone.
//! - [`view`] combines the reports: streams per version, relays, and each recent change's
//!   convergence curve (`GET /api/v1/projects/{p}/environments/{e}/fleet`).
//! - [`store::on_ingest`] folds SDK evaluation summaries into per-flag usage
//!   (`GET …/flag-usage`), which [`stale`] reads (`GET …/stale-flags`).
//! - [`Reporter`] also sets the `vexil_fleet_*` gauges of the environments this instance
//!   serves.

pub mod api;
pub mod stale;
pub mod store;
pub mod view;

use std::time::Duration;

use metrics::gauge;
use tokio::sync::watch;
use vexil_fanout::Hub;

use crate::db::Db;
use store::Meta;
use view::SourceKind;

/// How often a server instance writes its own report.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest gap between two reports written because streams moved.
pub const REPORT_MIN_GAP: Duration = Duration::from_millis(500);
/// A report older than this is ignored (its process stopped reporting).
pub const REPORT_TTL: Duration = Duration::from_secs(35);

/// Gauge, by `environment`: SDK streams connected across the fleet.
pub const STREAMS: &str = "vexil_fleet_sdk_streams";
/// Gauge, by `environment`: share (0–1) of those streams holding the latest version.
pub const ON_LATEST: &str = "vexil_fleet_streams_on_latest_ratio";
/// Gauge, by `environment`: relays reporting.
pub const RELAYS: &str = "vexil_fleet_relays";
/// Gauge, by `environment` and `quantile` (`0.5`, `0.9`, `0.99`, `1`): seconds until that
/// share of the streams had the latest tracked change (`NaN` until reached).
pub const CONVERGENCE: &str = "vexil_fleet_convergence_seconds";
/// Gauge, by `environment` and `lag` (`0`, `1`, `2`, `3-9`, `10+`): SDK streams that many
/// versions behind the latest (the fleet's streams per version, relative to the latest, so
/// that the series stay few whatever the version numbers).
pub const STREAMS_BY_LAG: &str = "vexil_fleet_sdk_streams_by_lag";
/// Gauge, by `environment`: when the latest tracked change was first published (Unix
/// seconds), so that alerts can tell how long a change has been converging.
pub const LATEST_CHANGE_TIME: &str = "vexil_fleet_latest_change_timestamp_seconds";
/// Gauge, by `environment`: share (0–1) of the streams to reach that have the latest tracked
/// change.
pub const LATEST_CHANGE_DELIVERED: &str = "vexil_fleet_latest_change_delivered_ratio";

/// The `lag` labels of [`STREAMS_BY_LAG`], with the lags each covers (inclusive).
const LAGS: [(&str, u64, u64); 5] = [
    ("0", 0, 0),
    ("1", 1, 1),
    ("2", 2, 2),
    ("3-9", 3, 9),
    ("10+", 10, u64::MAX),
];

/// Streams per [`LAGS`] bucket: how many versions behind `view`'s latest each stream is.
fn streams_by_lag(view: &view::FleetView) -> [u64; LAGS.len()] {
    let mut out = [0; LAGS.len()];
    for v in &view.by_version {
        let lag = view.environment_version.saturating_sub(v.version);
        if let Some(i) = LAGS
            .iter()
            .position(|(_, lo, hi)| (*lo..=*hi).contains(&lag))
        {
            out[i] += v.streams;
        }
    }
    out
}

fn now_ms() -> u64 {
    crate::events::now_ms()
}

/// Writes this instance's fleet reports and refreshes the fleet gauges, until stopped.
#[derive(Debug)]
pub struct Reporter {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Reporter {
    /// Starts reporting `hub`'s streams into `db` as a new server instance.
    pub fn spawn(db: Db, hub: Hub) -> Self {
        let (stop, stopped) = watch::channel(false);
        let id = format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "server".into()),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let task = tokio::spawn(report_loop(db, hub, id, stopped));
        Self { stop, task }
    }

    /// Stops reporting and waits for the task.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the fleet reporter failed");
        }
    }
}

async fn report_loop(db: Db, hub: Hub, id: String, mut stop: watch::Receiver<bool>) {
    let meta = Meta {
        id,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        upstream_connected: true,
        parent: None,
    };
    let mut changes = hub.fleet_changes();
    let mut ticker = tokio::time::interval(REPORT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                () = tokio::time::sleep(REPORT_MIN_GAP) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            changes.mark_unchanged();
        }
        if let Err(e) = report_once(&db, &hub, &meta).await {
            tracing::warn!(error = %e, "cannot write this instance's fleet report");
        }
    }
}

async fn report_once(db: &Db, hub: &Hub, meta: &Meta) -> Result<(), crate::store::StoreError> {
    let mut reports = Vec::new();
    {
        let mut pc = db.acquire().await?;
        let mut c = pc.conn();
        for r in hub.fleet_reports() {
            let Some((project, environment)) = r.environment.split_once('/') else {
                continue;
            };
            match store::environment_id(&mut c, project, environment).await {
                Ok((id, _)) => reports.push((id, r)),
                // Deleted meanwhile: the hub drops it shortly.
                Err(crate::store::StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let now = now_ms();
    store::save(
        db,
        SourceKind::Server,
        meta,
        &reports,
        now,
        u64::try_from(REPORT_TTL.as_millis()).unwrap_or(u64::MAX),
    )
    .await?;
    let mut pc = db.acquire().await?;
    let mut c = pc.conn();
    for (env_id, r) in &reports {
        let sources = store::load(&mut c, *env_id, now).await?;
        set_gauges(&r.environment, &view::combine(r.version, &sources));
    }
    Ok(())
}

fn set_gauges(environment: &str, v: &view::FleetView) {
    let env = environment.to_owned();
    gauge!(STREAMS, "environment" => env.clone()).set(v.sdk_streams as f64);
    gauge!(ON_LATEST, "environment" => env.clone())
        .set(v.on_latest_percent.map_or(1.0, |p| p / 100.0));
    gauge!(RELAYS, "environment" => env.clone()).set(v.relays.len() as f64);
    for ((lag, _, _), n) in LAGS.iter().zip(streams_by_lag(v)) {
        gauge!(STREAMS_BY_LAG, "environment" => env.clone(), "lag" => *lag).set(n as f64);
    }
    if let Some(c) = v.changes.first() {
        gauge!(LATEST_CHANGE_TIME, "environment" => env.clone())
            .set(c.published_at_ms as f64 / 1000.0);
        gauge!(LATEST_CHANGE_DELIVERED, "environment" => env.clone())
            .set(c.delivered_percent / 100.0);
        for (q, at) in [
            ("0.5", c.p50_ms),
            ("0.9", c.p90_ms),
            ("0.99", c.p99_ms),
            ("1", c.p100_ms),
        ] {
            // NaN until reached: a quantile of the previous change must not linger.
            gauge!(CONVERGENCE, "environment" => env.clone(), "quantile" => q)
                .set(at.map_or(f64::NAN, |ms| ms / 1000.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_bucketed_by_how_far_behind_the_latest_they_are() {
        let by_version = [(100, 5), (99, 2), (98, 1), (95, 3), (91, 4), (80, 6)]
            .into_iter()
            .map(|(version, streams)| view::VersionStreams { version, streams })
            .collect();
        let v = view::FleetView {
            environment_version: 100,
            sdk_streams: 21,
            direct_sdk_streams: 0,
            streams_on_latest: 5,
            on_latest_percent: None,
            by_version,
            relays: vec![],
            servers: vec![],
            changes: vec![],
        };
        assert_eq!(streams_by_lag(&v), [5, 2, 1, 7, 6]);
    }
}
