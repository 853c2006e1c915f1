//! Reconnection delays: exponential backoff with full jitter, reset once a connection has
//! stayed healthy for a while.
//!
//! The n-th consecutive failure waits a uniformly random time in `[0, min(max, initial·2ⁿ)]`
//! ("full jitter"): thousands of SDKs cut off by the same outage spread their reconnections
//! over the whole window instead of arriving in waves. A connection that stayed up for
//! [`RESET_AFTER`] counts as healthy, and the next failure starts again from `initial`;
//! one that drops sooner keeps climbing, so a server that accepts and immediately closes
//! connections is not hammered.

use std::time::Duration;

use tokio::time::Instant;

/// A connection that stayed up this long resets the backoff.
pub(crate) const RESET_AFTER: Duration = Duration::from_secs(60);

/// Backoff state of one data source.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    /// Consecutive failures since the last healthy connection.
    attempt: u32,
    /// When the current connection became healthy, if one is up.
    healthy_since: Option<Instant>,
}

impl Backoff {
    /// Delays start at `initial` and never exceed `max`.
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
            healthy_since: None,
        }
    }

    /// The upper bound of the next delay.
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Records that a connection is up and delivering data.
    pub(crate) fn connected(&mut self) {
        self.healthy_since = Some(Instant::now());
    }

    /// The delay before the next attempt, after a failure: random in `[0, ceiling]`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.next_delay_with(rand::random::<f64>())
    }

    /// [`Backoff::next_delay`] with the random draw `unit` in `[0, 1)` supplied.
    pub(crate) fn next_delay_with(&mut self, unit: f64) -> Duration {
        if let Some(since) = self.healthy_since.take()
            && since.elapsed() >= RESET_AFTER
        {
            self.attempt = 0;
        }
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// Forgets every failure (e.g. after a successful poll).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
        self.healthy_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn ceilings_double_up_to_the_maximum() {
        let mut b = Backoff::new(S, 30 * S);
        let ceilings: Vec<u64> = (0..8)
            .map(|_| {
                let c = b.ceiling().as_secs();
                b.next_delay_with(0.5);
                c
            })
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn jitter_spans_the_whole_window() {
        let mut b = Backoff::new(S, 30 * S);
        for _ in 0..5 {
            b.next_delay_with(0.0);
        }
        assert_eq!(b.clone().next_delay_with(0.0), Duration::ZERO);
        assert_eq!(
            b.clone().next_delay_with(0.999_999),
            Duration::from_secs(30).mul_f64(0.999_999)
        );
        for _ in 0..1000 {
            assert!(b.clone().next_delay() <= 30 * S);
        }
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(S, 30 * S);
        b.attempt = u32::MAX;
        assert_eq!(b.ceiling(), 30 * S);
        b.next_delay_with(1.0);
        assert_eq!(b.attempt, u32::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_healthy_for_a_minute_resets_the_backoff() {
        let mut b = Backoff::new(S, 30 * S);
        for _ in 0..4 {
            b.next_delay_with(1.0);
        }
        assert_eq!(b.ceiling(), 16 * S);

        // Up for 59 s: still climbing.
        b.connected();
        tokio::time::sleep(59 * S).await;
        assert_eq!(b.next_delay_with(1.0), 16 * S);
        assert_eq!(b.ceiling(), 30 * S);

        // Up for 60 s: back to the start.
        b.connected();
        tokio::time::sleep(60 * S).await;
        assert_eq!(b.next_delay_with(1.0), S);
        assert_eq!(b.ceiling(), 2 * S);
    }

    #[tokio::test(start_paused = true)]
    async fn sleeping_the_delays_takes_bounded_virtual_time() {
        let mut b = Backoff::new(S, 30 * S);
        let start = Instant::now();
        let mut bound = Duration::ZERO;
        for _ in 0..10 {
            bound += b.ceiling();
            tokio::time::sleep(b.next_delay()).await;
        }
        // 1+2+4+8+16+30·5 = 181 s at most.
        assert_eq!(bound, 181 * S);
        assert!(start.elapsed() <= bound);
    }
}
