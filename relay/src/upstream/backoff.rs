//! Reconnection delays: exponential backoff with full jitter, reset once a connection has
//! stayed healthy for a while (the SDK's policy, `sdk/client/src/backoff.rs`, with the
//! relay's tuning).
//!
//! The n-th consecutive failure waits a uniformly random time in `[0, min(max, initial·2ⁿ)]`:
//! relays cut off by the same outage spread their reconnections over the window instead of
//! arriving in waves. A connection that stayed up for `reset_after` counts as healthy and the
//! next failure starts again from `initial`; one that drops sooner keeps climbing, so an
//! upstream that accepts and immediately closes connections is not hammered.

use std::time::Duration;

use tokio::time::Instant;

/// Backoff state of the upstream connection.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
    /// Consecutive failures since the last healthy connection.
    attempt: u32,
    /// When the current connection was established, if one is up.
    connected_since: Option<Instant>,
}

impl Backoff {
    /// Delays start at `initial`, never exceed `max`, and reset after a connection that
    /// lasted `reset_after`.
    pub(crate) fn new(initial: Duration, max: Duration, reset_after: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            reset_after,
            attempt: 0,
            connected_since: None,
        }
    }

    /// The upper bound of the next delay.
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Records that a connection is up.
    pub(crate) fn connected(&mut self) {
        self.connected_since = Some(Instant::now());
    }

    /// The delay before the next attempt, after a failure: `unit` (a random draw in
    /// `[0, 1)`) times the ceiling.
    pub(crate) fn next_delay_with(&mut self, unit: f64) -> Duration {
        if let Some(since) = self.connected_since.take()
            && since.elapsed() >= self.reset_after
        {
            self.attempt = 0;
        }
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::new(S, 30 * S, 60 * S);
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
    fn full_jitter_spans_zero_to_the_ceiling() {
        let mut b = Backoff::new(S, 30 * S, 60 * S);
        for _ in 0..6 {
            b.next_delay_with(0.0);
        }
        assert_eq!(b.clone().next_delay_with(0.0), Duration::ZERO);
        assert_eq!(b.clone().next_delay_with(1.0), 30 * S);
        let draws: Vec<Duration> = (0..200)
            .map(|_| b.clone().next_delay_with(rand::random::<f64>()))
            .collect();
        assert!(draws.iter().all(|d| *d <= 30 * S));
        assert!(draws.iter().any(|d| *d < 15 * S) && draws.iter().any(|d| *d > 15 * S));
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_connection_resets_the_backoff() {
        let mut b = Backoff::new(S, 30 * S, 60 * S);
        for _ in 0..4 {
            b.next_delay_with(1.0);
        }
        b.connected();
        tokio::time::sleep(59 * S).await;
        assert_eq!(
            b.next_delay_with(1.0),
            16 * S,
            "too short to count as healthy"
        );
        b.connected();
        tokio::time::sleep(60 * S).await;
        assert_eq!(b.next_delay_with(1.0), S);
    }
}
