//! The server's notion of "now" for everything that happens at a time: scheduled changes,
//! webhook retries. Production reads the system clock; tests hold a [`ManualClock`] and move
//! it, so no test sleeps to see a schedule fire.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

/// A cheap-to-clone handle on the current time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None`: the system clock.
    manual: Option<Arc<ManualClock>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock that reads `manual` (tests).
    pub fn manual(manual: Arc<ManualClock>) -> Self {
        Self {
            manual: Some(manual),
        }
    }

    /// The current time, truncated to microseconds (what both database engines store).
    pub fn now(&self) -> OffsetDateTime {
        let t = match &self.manual {
            Some(m) => m.now(),
            None => OffsetDateTime::now_utc(),
        };
        t.replace_microsecond(t.microsecond()).unwrap_or(t)
    }

    /// A subscription to the moves of a manual clock: take it once, before a loop, so that
    /// a move made while the loop is busy is not missed.
    pub fn changes(&self) -> ClockChanges {
        ClockChanges(self.manual.as_ref().map(|m| m.moved.subscribe()))
    }
}

/// The moves of a clock (see [`Clock::changes`]).
#[derive(Debug)]
pub struct ClockChanges(Option<watch::Receiver<u64>>);

impl ClockChanges {
    /// Completes when a manual clock has moved since the last call; never for the system
    /// clock (whose passing time the workers notice on their own poll interval).
    pub async fn next(&mut self) {
        match &mut self.0 {
            Some(rx) => {
                if rx.changed().await.is_err() {
                    // The clock is gone: it will never move again.
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// A clock that stands still until the test moves it.
#[derive(Debug)]
pub struct ManualClock {
    /// The time it shows.
    now: Mutex<OffsetDateTime>,
    /// Bumped on every move, waking the workers at once.
    moved: watch::Sender<u64>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: OffsetDateTime) -> Arc<Self> {
        Arc::new(Self {
            now: Mutex::new(start),
            moved: watch::channel(0).0,
        })
    }

    /// The time it shows.
    pub fn now(&self) -> OffsetDateTime {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves it forward by `by` and wakes whoever waits on [`ClockChanges::next`].
    pub fn advance(&self, by: Duration) {
        {
            let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
            *now += by;
        }
        self.moved.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_moves_only_when_told_and_wakes_waiters() {
        let start = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let m = ManualClock::new(start);
        let clock = Clock::manual(m.clone());
        assert_eq!(clock.now(), start);
        let mut changes = clock.changes();
        let waiter = tokio::spawn(async move { changes.next().await });
        m.advance(Duration::from_secs(90));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(clock.now(), start + Duration::from_secs(90));
    }

    #[test]
    fn the_system_clock_is_truncated_to_microseconds() {
        assert_eq!(Clock::system().now().nanosecond() % 1_000, 0);
    }
}
