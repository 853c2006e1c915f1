//! Where an environment's SDK streams stand: how many hold each version, and how each recent
//! change reached them (the fleet view's raw material, see [`vexil_schema::fleet`]).
//!
//! Every SDK subscription registers the version it holds when it starts, moves when a frame
//! taking it to a newer version has been handed to its connection, and leaves when it ends.
//! Publishing a change starts tracking it: the streams connected below its version are the
//! ones to reach, and each move past it records the latency since publication. The last
//! [`TRACKED_CHANGES`] changes are kept. One short lock per event; nothing per frame for
//! relay-stream subscriptions, which are not SDK streams.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use metrics::Histogram;
use tokio::sync::watch;
use vexil_schema::fleet::{ChangeDelivery, EnvironmentReport, LatencyHistogram, VersionCount};
use vexil_schema::stream::EnvironmentId;

/// Changes tracked per environment.
pub const TRACKED_CHANGES: usize = 16;

/// One tracked change.
#[derive(Debug)]
struct Tracked {
    version: u64,
    published: Instant,
    published_at_ms: u64,
    streams: u64,
    delivered: u64,
    latency: LatencyHistogram,
}

#[derive(Debug, Default)]
struct State {
    /// SDK streams per version held (no zero entries).
    on_version: BTreeMap<u64, u64>,
    /// Oldest first.
    changes: VecDeque<Tracked>,
}

impl State {
    fn add(&mut self, version: u64, n: i64) {
        let entry = self.on_version.entry(version).or_insert(0);
        *entry = entry.saturating_add_signed(n);
        if *entry == 0 {
            self.on_version.remove(&version);
        }
    }
}

/// One environment's delivery tracking.
#[derive(Debug)]
pub(crate) struct FleetTracker {
    state: Mutex<State>,
    /// Bumped on anything a fleet report shows (shared by the hub's environments).
    changed: watch::Sender<u64>,
    latency: Histogram,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl FleetTracker {
    pub(crate) fn new(env: &EnvironmentId, changed: watch::Sender<u64>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed,
            latency: metrics::histogram!(crate::metrics::DELIVERY_SECONDS, "environment" => env.to_string()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent: a poisoned lock still guards valid data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A change to `version` was published: the streams below it are to receive it.
    pub(crate) fn published(&self, version: u64) {
        let mut s = self.lock();
        let streams = s.on_version.range(..version).map(|(_, n)| *n).sum();
        if s.changes.len() >= TRACKED_CHANGES {
            s.changes.pop_front();
        }
        s.changes.push_back(Tracked {
            version,
            published: Instant::now(),
            published_at_ms: now_ms(),
            streams,
            delivered: 0,
            latency: LatencyHistogram::default(),
        });
        drop(s);
        self.bump();
    }

    /// A stream started, holding `version`.
    pub(crate) fn joined(&self, version: u64) {
        self.lock().add(version, 1);
        self.bump();
    }

    /// A stream's connection took the frame moving it from `from` to `to`.
    pub(crate) fn moved(&self, from: u64, to: u64) {
        if to == from {
            return;
        }
        let mut s = self.lock();
        s.add(from, -1);
        s.add(to, 1);
        let mut completed = false;
        for c in s.changes.iter_mut() {
            if c.version > from && c.version <= to {
                let elapsed = c.published.elapsed();
                c.latency
                    .record(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
                self.latency.record(elapsed.as_secs_f64());
                c.delivered += 1;
                // A stream that chose its start just before the change was published and
                // registered just after: count it among those to reach.
                c.streams = c.streams.max(c.delivered);
                completed |= c.delivered == c.streams;
            }
        }
        drop(s);
        if completed {
            self.bump();
        }
    }

    /// A stream holding `version` ended: changes it had not received no longer wait for it.
    pub(crate) fn left(&self, version: u64) {
        let mut s = self.lock();
        s.add(version, -1);
        for c in s.changes.iter_mut() {
            if c.version > version && c.streams > c.delivered {
                c.streams -= 1;
            }
        }
        drop(s);
        self.bump();
    }

    /// The report of this environment at `version`.
    pub(crate) fn report(&self, env: &EnvironmentId, version: u64) -> EnvironmentReport {
        let s = self.lock();
        EnvironmentReport {
            environment: env.to_string(),
            version,
            streams: s.on_version.values().sum(),
            on_version: s
                .on_version
                .iter()
                .map(|(v, n)| VersionCount {
                    version: *v,
                    streams: *n,
                })
                .collect(),
            changes: s
                .changes
                .iter()
                .map(|c| ChangeDelivery {
                    version: c.version,
                    published_at_ms: c.published_at_ms,
                    streams: c.streams,
                    delivered: c.delivered,
                    latency: c.latency.clone(),
                })
                .collect(),
        }
    }
}

/// A stream's registration: moves with the stream, leaves when dropped.
#[derive(Debug)]
pub(crate) struct Held<'a> {
    tracker: &'a FleetTracker,
    version: u64,
}

impl<'a> Held<'a> {
    pub(crate) fn join(tracker: &'a FleetTracker, version: u64) -> Self {
        tracker.joined(version);
        Self { tracker, version }
    }

    /// The stream now holds `version` (ignored if not newer).
    pub(crate) fn move_to(&mut self, version: u64) {
        if version > self.version {
            self.tracker.moved(self.version, version);
            self.version = version;
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.tracker.left(self.version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> FleetTracker {
        FleetTracker::new(&EnvironmentId::parse("p/e").unwrap(), watch::Sender::new(0))
    }

    #[test]
    fn a_change_counts_the_streams_below_it_and_their_deliveries() {
        let t = tracker();
        let env = EnvironmentId::parse("p/e").unwrap();
        let mut a = Held::join(&t, 1);
        let mut b = Held::join(&t, 1);
        let c = Held::join(&t, 1);
        t.published(2);
        a.move_to(2);
        b.move_to(2);
        let r = t.report(&env, 2);
        assert_eq!(r.streams, 3);
        assert_eq!(
            r.on_version,
            vec![
                VersionCount {
                    version: 1,
                    streams: 1
                },
                VersionCount {
                    version: 2,
                    streams: 2
                }
            ]
        );
        assert_eq!((r.changes[0].streams, r.changes[0].delivered), (3, 2));
        assert_eq!(r.changes[0].latency.count(), 2);
        // The third closes without the change: the change no longer waits for it.
        drop(c);
        let r = t.report(&env, 2);
        assert_eq!((r.changes[0].streams, r.changes[0].delivered), (2, 2));
        assert_eq!(r.streams, 2);
        drop((a, b));
        assert_eq!(t.report(&env, 2).streams, 0);
    }

    #[test]
    fn a_jump_delivers_every_change_it_covers_and_old_changes_are_forgotten() {
        let t = tracker();
        let env = EnvironmentId::parse("p/e").unwrap();
        let mut a = Held::join(&t, 1);
        t.published(2);
        t.published(3);
        a.move_to(3);
        let r = t.report(&env, 3);
        assert!(r.changes.iter().all(|c| c.delivered == 1 && c.streams == 1));
        for v in 4..(4 + TRACKED_CHANGES as u64) {
            t.published(v);
        }
        let r = t.report(&env, 3 + TRACKED_CHANGES as u64);
        assert_eq!(r.changes.len(), TRACKED_CHANGES);
        assert_eq!(r.changes[0].version, 4);
    }
}
