//! The bounded ring of an environment's recent changes, each already encoded as an SSE frame.
//!
//! Entries are contiguous in version: the ring holds versions `first..=last` with no gap, and
//! `last` is the environment's current version whenever the ring is not empty. A snapshot
//! that jumps versions empties it, because the changes in between are unknown.

use std::collections::VecDeque;

use bytes::Bytes;

/// How a subscriber that says it holds `last_seen` catches up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// It already holds the current version: nothing to send.
    Current,
    /// Send these frames, oldest first; afterwards it holds the current version.
    Replay(Vec<Bytes>),
    /// Some change it lacks has left the ring, or its version is unknown here: it needs the
    /// full state.
    Snapshot,
}

/// Recent changes of one environment.
#[derive(Debug)]
pub struct Ring {
    entries: VecDeque<(u64, Bytes)>,
    capacity: usize,
}

impl Ring {
    /// An empty ring that keeps at most `capacity` changes (`0` keeps none).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::with_capacity(capacity.min(64)),
            capacity,
        }
    }

    /// Appends the frame of the change that produced `version`, evicting the oldest if full.
    ///
    /// The caller has checked that `version` follows the environment's current version; if
    /// the ring's last entry is not `version - 1` the ring is reset to hold only this one,
    /// which keeps it contiguous.
    pub fn push(&mut self, version: u64, frame: Bytes) {
        if self.capacity == 0 {
            return;
        }
        if let Some(&(last, _)) = self.entries.back()
            && last.checked_add(1) != Some(version)
        {
            self.entries.clear();
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back((version, frame));
    }

    /// Forgets every entry (after a snapshot replaced the state).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Number of changes held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no change is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How a subscriber at `last_seen` reaches `current`, the environment's version.
    pub fn resume(&self, last_seen: u64, current: u64) -> Resume {
        if last_seen == current {
            return Resume::Current;
        }
        if last_seen > current {
            return Resume::Snapshot;
        }
        let (Some(&(first, _)), Some(&(last, _))) = (self.entries.front(), self.entries.back())
        else {
            return Resume::Snapshot;
        };
        // `last_seen < current` here, so `last_seen + 1` cannot overflow.
        let wanted = last_seen + 1;
        if last != current || first > wanted {
            return Resume::Snapshot;
        }
        let skip = usize::try_from(wanted - first).unwrap_or(usize::MAX);
        Resume::Replay(
            self.entries
                .iter()
                .skip(skip)
                .map(|(_, f)| f.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: u64) -> Bytes {
        Bytes::from(format!("v{v}"))
    }

    fn filled(capacity: usize, versions: std::ops::RangeInclusive<u64>) -> Ring {
        let mut r = Ring::new(capacity);
        for v in versions {
            r.push(v, frame(v));
        }
        r
    }

    fn replay(versions: std::ops::RangeInclusive<u64>) -> Resume {
        Resume::Replay(versions.map(frame).collect())
    }

    #[test]
    fn replays_only_missing_changes() {
        let r = filled(8, 11..=15);
        assert_eq!(r.resume(12, 15), replay(13..=15));
        assert_eq!(r.resume(10, 15), replay(11..=15));
        assert_eq!(r.resume(14, 15), replay(15..=15));
    }

    #[test]
    fn current_subscriber_gets_nothing() {
        assert_eq!(filled(8, 11..=15).resume(15, 15), Resume::Current);
        assert_eq!(Ring::new(8).resume(3, 3), Resume::Current);
    }

    #[test]
    fn beyond_the_ring_or_from_the_future_needs_a_snapshot() {
        let r = filled(8, 11..=15);
        assert_eq!(r.resume(9, 15), Resume::Snapshot);
        assert_eq!(r.resume(0, 15), Resume::Snapshot);
        assert_eq!(r.resume(16, 15), Resume::Snapshot);
        assert_eq!(Ring::new(8).resume(2, 3), Resume::Snapshot);
    }

    #[test]
    fn evicts_oldest_when_full() {
        let r = filled(3, 1..=10);
        assert_eq!(r.len(), 3);
        assert_eq!(r.resume(7, 10), replay(8..=10));
        assert_eq!(r.resume(6, 10), Resume::Snapshot);
    }

    #[test]
    fn a_gap_resets_the_ring_so_it_stays_contiguous() {
        let mut r = filled(8, 1..=4);
        r.push(9, frame(9));
        assert_eq!(r.len(), 1);
        assert_eq!(r.resume(8, 9), replay(9..=9));
        assert_eq!(r.resume(4, 9), Resume::Snapshot);
    }

    #[test]
    fn a_ring_not_ending_at_current_is_not_trusted() {
        let r = filled(8, 1..=4);
        assert_eq!(r.resume(2, 6), Resume::Snapshot);
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let r = filled(0, 1..=4);
        assert!(r.is_empty());
        assert_eq!(r.resume(3, 4), Resume::Snapshot);
    }

    #[test]
    fn clear_forgets_everything() {
        let mut r = filled(8, 1..=4);
        r.clear();
        assert_eq!(r.resume(3, 4), Resume::Snapshot);
    }
}
