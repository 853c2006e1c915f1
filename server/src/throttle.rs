//! Throttling of failed authentication per client address.
//!
//! Each address may fail `limit` times per window (fixed windows, starting at its first
//! failure); past that, requests from it that are not authenticated from memory get `429`
//! with `Retry-After` until the window ends, without a database lookup. Only failures count,
//! so no amount of correctly authenticated traffic (many users behind one proxy, a test
//! suite) is ever throttled; a caller whose token was verified recently is let through even
//! from a throttled address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses tracked; past it, windows that have ended are dropped, and if that is not
/// enough the oldest half goes (a spray from many addresses must not grow memory).
const MAX_CLIENTS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Failed-authentication counts per client address.
#[derive(Debug)]
pub struct AuthThrottle {
    /// Failures allowed per window; 0 turns throttling off.
    limit: u32,
    window: Duration,
    clients: Mutex<HashMap<IpAddr, Window>>,
}

impl AuthThrottle {
    /// Allows `limit` failures per `window` per address (`limit` 0: never throttle).
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window: window.max(Duration::from_secs(1)),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// How long `client` must wait, if it has used up its failures at `now`.
    pub fn blocked(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        if self.limit == 0 {
            return None;
        }
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let w = clients.get(&client)?;
        let ends = w.started + self.window;
        (w.failures >= self.limit && now < ends).then(|| ends - now)
    }

    /// Counts a failed authentication by `client` at `now`.
    pub fn failed(&self, client: IpAddr, now: Instant) {
        if self.limit == 0 {
            return;
        }
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&client) {
            let window = self.window;
            clients.retain(|_, w| now < w.started + window);
            if clients.len() >= MAX_CLIENTS {
                let mut starts: Vec<Instant> = clients.values().map(|w| w.started).collect();
                starts.sort_unstable();
                let cutoff = starts[starts.len() / 2];
                clients.retain(|_, w| w.started > cutoff);
            }
        }
        let w = clients.entry(client).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now >= w.started + self.window {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn an_address_is_blocked_after_its_failures_until_the_window_ends() {
        let t = AuthThrottle::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(t.blocked(A, t0), None, "failure {i} is allowed");
            t.failed(A, t0);
        }
        let later = t0 + Duration::from_secs(20);
        assert_eq!(t.blocked(A, later), Some(Duration::from_secs(40)));
        // Other addresses are not affected.
        assert_eq!(t.blocked(B, later), None);
        // The window ends: a fresh start.
        let after = t0 + Duration::from_secs(60);
        assert_eq!(t.blocked(A, after), None);
        t.failed(A, after);
        assert_eq!(t.blocked(A, after), None);
    }

    #[test]
    fn a_zero_limit_never_blocks() {
        let t = AuthThrottle::new(0, Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..1000 {
            t.failed(A, now);
        }
        assert_eq!(t.blocked(A, now), None);
    }

    #[test]
    fn memory_stays_bounded_under_a_spray_of_addresses() {
        let t = AuthThrottle::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            let at = t0 + Duration::from_micros(u64::from(i));
            t.failed(IpAddr::V4(std::net::Ipv4Addr::from(i)), at);
        }
        let n = t.clients.lock().unwrap().len();
        assert!(n <= MAX_CLIENTS, "{n} addresses tracked");
    }
}
