//! Bounded change-log retention.
//!
//! The tables are the state; the change log only lets processes (and, through the hub's
//! ring, SDKs) catch up by version. Rows are deleted when they are more than
//! [`super::FeedConfig::retain_versions`] versions behind their environment's version, or
//! older than [`super::FeedConfig::retain_age`]. A process whose applied version falls before
//! the oldest kept row rebuilds that environment from the tables and publishes it whole, so
//! compaction never loses state.

use std::sync::Arc;

use tokio::sync::watch;

use super::Inner;
use crate::db::now;
use crate::store::StoreError;

impl Inner {
    /// Deletes the rows beyond the retention limits; returns how many.
    pub(crate) async fn compact(&self) -> Result<u64, StoreError> {
        let keep = i64::try_from(self.config.retain_versions).unwrap_or(i64::MAX);
        let age = time::Duration::try_from(self.config.retain_age).unwrap_or(time::Duration::MAX);
        let cutoff = now()
            .checked_sub(age)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        self.store.compact_change_log(keep, cutoff).await
    }
}

/// Compacts every compaction interval until `stop`, the first time one interval after the
/// start (not at once: a fleet restarting together would otherwise compact together, and
/// a process needs none to start).
pub(crate) async fn run(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let every = inner.config.compact_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => match inner.compact().await {
                Ok(0) => {}
                Ok(n) => {
                    metrics::counter!(super::metrics::COMPACTED_ROWS).increment(n);
                    tracing::info!(deleted = n, "change log compacted");
                }
                Err(e) => tracing::warn!(error = %e, "cannot compact the change log"),
            },
        }
    }
}
