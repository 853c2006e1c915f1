//! The change feed's Prometheus metrics (served at `/metrics` with the fan-out engine's
//! `vexil_fanout_*` series, which include each environment's version as held in memory).

/// Gauge: 1 while this process's PostgreSQL listener connection is up, else 0 (on SQLite,
/// 1 while the in-process commit watcher runs).
pub const LISTENER_CONNECTED: &str = "vexil_feed_listener_connected";
/// Counter: listener sessions that ended and were restarted (connection lost, heartbeat
/// not received in time, LISTEN refused).
pub const LISTENER_RESTARTS: &str = "vexil_feed_listener_restarts_total";
/// Counter: listener reconnections inside sqlx: notifications may have been lost, so every
/// environment is resynchronised from the change log.
pub const LISTENER_GAPS: &str = "vexil_feed_listener_gaps_total";
/// Counter: notifications received and understood (heartbeats included; on SQLite, commit
/// signals).
pub const NOTIFICATIONS: &str = "vexil_feed_notifications_total";
/// Counter: environments rebuilt from the tables instead of caught up from the change log
/// (`reason` = `no_log_rows`, `compacted`, `unusable_row`).
pub const REBUILDS: &str = "vexil_feed_rebuilds_total";
/// The `reason` labels of [`REBUILDS`].
pub const REBUILD_REASONS: &[&str] = &["no_log_rows", "compacted", "unusable_row"];
/// Counter: change-log rows deleted by compaction.
pub const COMPACTED_ROWS: &str = "vexil_feed_change_log_compacted_rows_total";
/// Counter: rounds of applying changes that failed (database errors); retried with back-off.
pub const APPLY_ERRORS: &str = "vexil_feed_apply_errors_total";
