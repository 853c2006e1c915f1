//! Combining the reports of every process serving an environment (relays and server
//! instances) into one fleet view. Pure: the reports come from the database.
//!
//! The convergence curve of a change merges each process's delivery-latency histogram,
//! shifted by how much later than the earliest one that process published the change
//! (wall-clock times: a relay whose clock runs behind the server's reads as faster than it
//! is; keep clocks synchronised). Streams of a process that has not yet published the change
//! count as not reached, so a change stuck upstream of a relay never reads as complete.

use serde::Serialize;
use utoipa::ToSchema;
use vexil_schema::fleet::{EnvironmentReport, LatencyHistogram};

/// Who sent a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// An edge relay.
    Relay,
    /// A control-plane instance (its direct SDK streams).
    Server,
}

/// One process's latest report for the environment.
#[derive(Debug, Clone)]
pub struct Source {
    /// Relay or server instance.
    pub kind: SourceKind,
    /// Its name.
    pub id: String,
    /// The relay it is chained below (relays whose report a parent relay forwarded).
    pub parent: Option<String>,
    /// Its software version.
    pub version: String,
    /// Whether its upstream is connected (relays; servers always are).
    pub upstream_connected: bool,
    /// When the report arrived (ms since the epoch).
    pub received_at_ms: u64,
    /// The report.
    pub report: EnvironmentReport,
}

/// The fleet of one environment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FleetView {
    /// The environment's current version (the latest any process holds, at least the
    /// database's).
    pub environment_version: u64,
    /// SDK streams connected, everywhere.
    pub sdk_streams: u64,
    /// SDK streams connected directly to server instances.
    pub direct_sdk_streams: u64,
    /// SDK streams holding the current version.
    pub streams_on_latest: u64,
    /// Their share in percent; absent with no stream connected.
    pub on_latest_percent: Option<f64>,
    /// SDK streams per version held, ascending.
    pub by_version: Vec<VersionStreams>,
    /// The relays serving the environment.
    pub relays: Vec<RelayView>,
    /// The server instances serving it directly.
    pub servers: Vec<ServerView>,
    /// Recent changes, newest first, each with its convergence curve.
    pub changes: Vec<ChangeConvergence>,
}

/// Streams holding one version.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct VersionStreams {
    /// The environment version.
    pub version: u64,
    /// Streams holding it.
    pub streams: u64,
}

/// One relay, as it last reported.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RelayView {
    /// Its name (`VEXIL_RELAY_ID`).
    pub id: String,
    /// The relay it is chained below, which forwards its reports; absent for a relay
    /// connected to the control plane.
    pub parent: Option<String>,
    /// Its software version.
    pub version: String,
    /// `connected` or `disconnected`: its upstream stream.
    pub upstream: String,
    /// SDK streams it serves for the environment.
    pub subscribers: u64,
    /// The environment version it holds.
    pub environment_version: u64,
    /// When its report arrived (ms since the epoch).
    pub reported_at_ms: u64,
}

/// One server instance's direct SDK streams.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServerView {
    /// Its instance name.
    pub id: String,
    /// SDK streams connected to it for the environment.
    pub subscribers: u64,
    /// The environment version its hub holds.
    pub environment_version: u64,
    /// When it last wrote its report (ms since the epoch).
    pub reported_at_ms: u64,
}

/// How one change reached the fleet: the time until 50, 90, 99 and 100 % of the streams to
/// reach had it, in milliseconds from its earliest publication (absent until reached).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChangeConvergence {
    /// The environment version the change produced.
    pub version: u64,
    /// Its earliest publication by any process (ms since the epoch).
    pub published_at_ms: u64,
    /// Streams to reach.
    pub streams: u64,
    /// Streams that have it.
    pub delivered: u64,
    /// `delivered` in percent of `streams` (100 with no stream to reach).
    pub delivered_percent: f64,
    /// Time until half had it.
    pub p50_ms: Option<f64>,
    /// Time until 90 % had it.
    pub p90_ms: Option<f64>,
    /// Time until 99 % had it.
    pub p99_ms: Option<f64>,
    /// Time until every stream had it.
    pub p100_ms: Option<f64>,
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        (part as f64) * 100.0 / (whole as f64)
    }
}

/// The fleet of an environment whose database version is `db_version`, from `sources`.
pub fn combine(db_version: u64, sources: &[Source]) -> FleetView {
    let latest = sources
        .iter()
        .map(|s| s.report.version)
        .fold(db_version, u64::max);
    let mut by_version = std::collections::BTreeMap::<u64, u64>::new();
    for s in sources {
        for v in &s.report.on_version {
            *by_version.entry(v.version).or_default() += v.streams;
        }
    }
    let sdk_streams: u64 = sources.iter().map(|s| s.report.streams).sum();
    let streams_on_latest = by_version.get(&latest).copied().unwrap_or(0);
    let relays = sources
        .iter()
        .filter(|s| s.kind == SourceKind::Relay)
        .map(|s| RelayView {
            id: s.id.clone(),
            parent: s.parent.clone(),
            version: s.version.clone(),
            upstream: if s.upstream_connected {
                "connected"
            } else {
                "disconnected"
            }
            .to_owned(),
            subscribers: s.report.streams,
            environment_version: s.report.version,
            reported_at_ms: s.received_at_ms,
        })
        .collect();
    let servers: Vec<ServerView> = sources
        .iter()
        .filter(|s| s.kind == SourceKind::Server)
        .map(|s| ServerView {
            id: s.id.clone(),
            subscribers: s.report.streams,
            environment_version: s.report.version,
            reported_at_ms: s.received_at_ms,
        })
        .collect();
    FleetView {
        environment_version: latest,
        sdk_streams,
        direct_sdk_streams: servers.iter().map(|s| s.subscribers).sum(),
        streams_on_latest,
        on_latest_percent: (sdk_streams > 0).then(|| percent(streams_on_latest, sdk_streams)),
        by_version: by_version
            .into_iter()
            .map(|(version, streams)| VersionStreams { version, streams })
            .collect(),
        relays,
        servers,
        changes: convergence(sources),
    }
}

/// The convergence of every change some source tracks, newest first.
fn convergence(sources: &[Source]) -> Vec<ChangeConvergence> {
    let mut versions: Vec<u64> = sources
        .iter()
        .flat_map(|s| s.report.changes.iter().map(|c| c.version))
        .collect();
    versions.sort_unstable_by(|a, b| b.cmp(a));
    versions.dedup();
    versions
        .into_iter()
        .filter_map(|v| change(sources, v))
        .collect()
}

fn change(sources: &[Source], version: u64) -> Option<ChangeConvergence> {
    let deliveries: Vec<_> = sources
        .iter()
        .filter_map(|s| s.report.changes.iter().find(|c| c.version == version))
        .collect();
    let origin = deliveries.iter().map(|c| c.published_at_ms).min()?;
    let mut streams = 0u64;
    let mut delivered = 0u64;
    let mut latency = LatencyHistogram::default();
    for c in &deliveries {
        streams += c.streams;
        delivered += c.delivered;
        let offset_micros = c
            .published_at_ms
            .saturating_sub(origin)
            .saturating_mul(1000);
        latency.merge_shifted(&c.latency, offset_micros);
    }
    // Processes still below the change: their streams wait for it too.
    for s in sources {
        let tracks = s.report.changes.iter().any(|c| c.version == version);
        if !tracks && s.report.version < version {
            streams += s.report.streams;
        }
    }
    let at = |q: f64| {
        latency
            .time_to_reach(q, streams)
            .map(|micros| (micros as f64) / 1000.0)
    };
    Some(ChangeConvergence {
        version,
        published_at_ms: origin,
        streams,
        delivered,
        delivered_percent: percent(delivered, streams),
        p50_ms: at(0.5),
        p90_ms: at(0.9),
        p99_ms: at(0.99),
        p100_ms: at(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexil_schema::fleet::{ChangeDelivery, VersionCount};

    fn source(kind: SourceKind, id: &str, report: EnvironmentReport) -> Source {
        Source {
            kind,
            id: id.into(),
            parent: None,
            version: "0.1.0".into(),
            upstream_connected: true,
            received_at_ms: 1,
            report,
        }
    }

    fn delivery(version: u64, at: u64, streams: u64, latencies_ms: &[u64]) -> ChangeDelivery {
        let mut latency = LatencyHistogram::default();
        for ms in latencies_ms {
            latency.record(ms * 1000);
        }
        ChangeDelivery {
            version,
            published_at_ms: at,
            streams,
            delivered: latencies_ms.len() as u64,
            latency,
        }
    }

    fn report(version: u64, on: &[(u64, u64)], changes: Vec<ChangeDelivery>) -> EnvironmentReport {
        EnvironmentReport {
            environment: "p/e".into(),
            version,
            streams: on.iter().map(|(_, n)| n).sum(),
            on_version: on
                .iter()
                .map(|(version, streams)| VersionCount {
                    version: *version,
                    streams: *streams,
                })
                .collect(),
            changes,
        }
    }

    #[test]
    fn a_relay_and_a_server_merge_into_one_curve_from_the_earliest_publication() {
        let server = source(
            SourceKind::Server,
            "s1",
            report(5, &[(5, 2)], vec![delivery(5, 1000, 2, &[1, 2])]),
        );
        // The relay published 40 ms after the server; its streams got it 1 ms later.
        let relay = source(
            SourceKind::Relay,
            "edge",
            report(5, &[(5, 8)], vec![delivery(5, 1040, 8, &[1; 8])]),
        );
        let view = combine(5, &[server, relay]);
        assert_eq!(view.sdk_streams, 10);
        assert_eq!(view.direct_sdk_streams, 2);
        assert_eq!(view.on_latest_percent, Some(100.0));
        let c = &view.changes[0];
        assert_eq!((c.streams, c.delivered, c.published_at_ms), (10, 10, 1000));
        assert!(c.p50_ms.unwrap() >= 40.0, "{c:?}");
        assert!(
            c.p100_ms.unwrap() >= 41.0 && c.p100_ms.unwrap() <= 52.0,
            "{c:?}"
        );
    }

    #[test]
    fn a_relay_still_below_the_change_keeps_it_incomplete() {
        let server = source(
            SourceKind::Server,
            "s1",
            report(6, &[(6, 1)], vec![delivery(6, 1000, 1, &[1])]),
        );
        let relay = source(SourceKind::Relay, "edge", report(5, &[(5, 3)], vec![]));
        let view = combine(6, &[server, relay]);
        assert_eq!(view.streams_on_latest, 1);
        assert_eq!(view.on_latest_percent, Some(25.0));
        let c = &view.changes[0];
        assert_eq!((c.streams, c.delivered), (4, 1));
        assert!(c.p50_ms.is_none() && c.p100_ms.is_none());
        assert_eq!(view.relays[0].environment_version, 5);
    }

    #[test]
    fn a_chained_relay_counts_with_its_parent_named() {
        let parent = source(
            SourceKind::Relay,
            "edge-a",
            report(7, &[(7, 1)], vec![delivery(7, 1000, 1, &[1])]),
        );
        let mut child = source(
            SourceKind::Relay,
            "edge-b",
            report(7, &[(7, 4)], vec![delivery(7, 1010, 4, &[2; 4])]),
        );
        child.parent = Some("edge-a".into());
        let view = combine(7, &[parent, child]);
        assert_eq!(view.sdk_streams, 5);
        assert_eq!(view.on_latest_percent, Some(100.0));
        let ids: Vec<_> = view
            .relays
            .iter()
            .map(|r| (r.id.as_str(), r.parent.as_deref(), r.subscribers))
            .collect();
        assert_eq!(
            ids,
            vec![("edge-a", None, 1), ("edge-b", Some("edge-a"), 4)]
        );
        let c = &view.changes[0];
        assert_eq!((c.streams, c.delivered), (5, 5));
        // The child published 10 ms after its parent: its streams reach 100 % after that.
        assert!(c.p100_ms.unwrap() >= 12.0, "{c:?}");
    }
}
