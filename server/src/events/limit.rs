//! Event batches per second per key: token buckets, as OFREP's limit.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Most keys tracked; past it the buckets that are full again are forgotten.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per key (by SHA-256, so no secret is kept). Only authenticated keys reach
/// it.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_second: u32,
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
}

impl RateLimiter {
    /// `per_second` batches per second per key, with a burst of one second's worth (0: no
    /// limit).
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            per_second,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub(crate) fn check(&self, key: &str) -> Result<(), Duration> {
        if self.per_second == 0 {
            return Ok(());
        }
        self.check_at(Sha256::digest(key.as_bytes()).into(), Instant::now())
    }

    fn check_at(&self, key: [u8; 32], now: Instant) -> Result<(), Duration> {
        if self.per_second == 0 {
            return Ok(());
        }
        let rate = f64::from(self.per_second);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(&key) {
            buckets.retain(|_, b| now.saturating_duration_since(b.at).as_secs_f64() * rate < rate);
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refill_per_key() {
        let l = RateLimiter::new(2);
        let (a, b) = ([1; 32], [2; 32]);
        let t0 = Instant::now();
        assert!(l.check_at(a, t0).is_ok());
        assert!(l.check_at(a, t0).is_ok());
        assert_eq!(l.check_at(a, t0), Err(Duration::from_millis(500)));
        assert!(l.check_at(b, t0).is_ok());
        assert!(l.check_at(a, t0 + Duration::from_millis(500)).is_ok());
        let off = RateLimiter::new(0);
        for _ in 0..100 {
            assert!(off.check("k").is_ok());
        }
    }
}
