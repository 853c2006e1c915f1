//! Reconnection delays of every stream client (the SDK's data sources, the edge relay's
//! upstream connection): exponential backoff with full jitter, reset once a connection has
//! stayed healthy for a while. A pure calculator: the caller supplies the clock reading and
//! the random draw, so it needs no runtime and tests need no real time.
//!
//! The n-th consecutive failure waits a uniformly random time in `[0, min(max, initial·2ⁿ)]`
//! ("full jitter"): clients cut off by the same outage spread their reconnections over the
//! whole window instead of arriving in waves. A connection that stayed up for `reset_after`
//! counts as healthy and the next failure starts again from `initial`; one that drops sooner
//! keeps climbing, so a server that accepts and immediately closes connections is not
//! hammered.

use std::time::{Duration, Instant};

/// Backoff state of one connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
    /// Consecutive failures since the last healthy connection.
    attempt: u32,
    /// When the current connection was established, if one is up.
    connected_at: Option<Instant>,
}

impl Backoff {
    /// Delays start at `initial`, never exceed `max` (at least `initial`), and start again
    /// from `initial` after a connection that lasted `reset_after`.
    pub fn new(initial: Duration, max: Duration, reset_after: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            reset_after,
            attempt: 0,
            connected_at: None,
        }
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Records that a connection is up (and delivering) since `now`.
    pub fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The delay before the next attempt, after a failure at `now`: `unit` (a random draw in
    /// `[0, 1)`, clamped) times the ceiling.
    pub fn next_delay(&mut self, now: Instant, unit: f64) -> Duration {
        if let Some(since) = self.connected_at.take()
            && now.saturating_duration_since(since) >= self.reset_after
        {
            self.attempt = 0;
        }
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// Forgets every failure (e.g. after a successful poll).
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.connected_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn backoff() -> Backoff {
        Backoff::new(S, 30 * S, 60 * S)
    }

    #[test]
    fn ceilings_double_up_to_the_maximum() {
        let now = Instant::now();
        let mut b = backoff();
        let ceilings: Vec<u64> = (0..8)
            .map(|_| {
                let c = b.ceiling().as_secs();
                b.next_delay(now, 0.5);
                c
            })
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(
            Backoff::new(5 * S, S, S).ceiling(),
            5 * S,
            "max below initial"
        );
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let now = Instant::now();
        let mut b = backoff();
        for _ in 0..6 {
            b.next_delay(now, 0.0);
        }
        assert_eq!(b.clone().next_delay(now, 0.0), Duration::ZERO);
        assert_eq!(b.clone().next_delay(now, 0.5), 15 * S);
        assert_eq!(b.clone().next_delay(now, 1.0), 30 * S);
        assert_eq!(b.clone().next_delay(now, 7.0), 30 * S, "draws are clamped");
        assert_eq!(b.clone().next_delay(now, -1.0), Duration::ZERO);
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let now = Instant::now();
        let mut b = backoff();
        b.attempt = u32::MAX;
        assert_eq!(b.ceiling(), 30 * S);
        b.next_delay(now, 1.0);
        assert_eq!(b.attempt, u32::MAX);
    }

    #[test]
    fn a_connection_healthy_for_reset_after_resets_the_backoff() {
        let t0 = Instant::now();
        let mut b = backoff();
        for _ in 0..4 {
            b.next_delay(t0, 1.0);
        }
        assert_eq!(b.ceiling(), 16 * S);
        // Up for 59 s: still climbing.
        b.connected(t0);
        assert_eq!(b.next_delay(t0 + 59 * S, 1.0), 16 * S);
        assert_eq!(b.ceiling(), 30 * S);
        // Up for 60 s: back to the start.
        b.connected(t0 + 59 * S);
        assert_eq!(b.next_delay(t0 + 119 * S, 1.0), S);
        assert_eq!(b.ceiling(), 2 * S);
        // A connection counts once: the next failure keeps climbing.
        assert_eq!(b.next_delay(t0 + 500 * S, 1.0), 2 * S);
    }

    #[test]
    fn reset_forgets_failures() {
        let now = Instant::now();
        let mut b = backoff();
        b.next_delay(now, 1.0);
        b.next_delay(now, 1.0);
        b.reset();
        assert_eq!(b.ceiling(), S);
    }
}
