//! The hub's tuning: ring size, subscriber buffers, keep-alives, `Retry-After`.

use std::time::Duration;

/// Tuning of the fan-out engine.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubConfig {
    /// Recent changes kept per environment for `Last-Event-ID` resume.
    pub ring_capacity: usize,
    /// Messages a subscriber may fall behind before it is resynchronised with a fresh `put`
    /// (the capacity of the environment's broadcast channel, shared by all its subscribers).
    pub subscriber_buffer: usize,
    /// Resyncs after which a subscriber that keeps falling behind is disconnected instead.
    pub max_lag_resyncs: u32,
    /// Interval between keep-alive comments on every stream.
    pub keep_alive: Duration,
    /// `Retry-After` sent with 503 answers (no state yet, or shutting down).
    pub retry_after: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            ring_capacity: 1024,
            subscriber_buffer: 256,
            max_lag_resyncs: 2,
            keep_alive: Duration::from_secs(15),
            retry_after: Duration::from_secs(5),
        }
    }
}

impl HubConfig {
    /// Sets [`HubConfig::ring_capacity`].
    pub fn ring_capacity(mut self, n: usize) -> Self {
        self.ring_capacity = n;
        self
    }

    /// Sets [`HubConfig::subscriber_buffer`] (at least 1).
    pub fn subscriber_buffer(mut self, n: usize) -> Self {
        self.subscriber_buffer = n.max(1);
        self
    }

    /// Sets [`HubConfig::max_lag_resyncs`].
    pub fn max_lag_resyncs(mut self, n: u32) -> Self {
        self.max_lag_resyncs = n;
        self
    }

    /// Sets [`HubConfig::keep_alive`] (at least 1 ms).
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval.max(Duration::from_millis(1));
        self
    }

    /// Sets [`HubConfig::retry_after`].
    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = d;
        self
    }
}
