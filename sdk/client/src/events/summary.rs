//! Evaluation counters for summary events: per flag × variation × reason, counted on the
//! evaluation path without locks or allocation.
//!
//! Each compiled snapshot gets a [`Table`] of `AtomicU64` counters, laid out by the flag's
//! position in that snapshot (`CompiledSnapshot::evaluate_indexed`): per flag one slot for
//! `ERROR` (no variation) and five per variation (`OFF`, `TARGET_MATCH`, `RULE_MATCH`,
//! `PREREQUISITE_FAILED`, `FALLTHROUGH`). An evaluation finds its snapshot's table through a
//! one-entry thread-local cache keyed by the snapshot's address (the table holds the
//! snapshot, so the address cannot be reused while the table lives); a miss, i.e. the first
//! evaluation of a new snapshot on a thread, takes the registry's lock and builds the table
//! if no other thread has. The flusher swaps every counter to zero, and drops the tables of
//! snapshots no longer served once they are read.
//!
//! An evaluation racing with a snapshot swap and a flush may count into a table that was just
//! dropped: that count is lost (a window of nanoseconds per change). A thread's cache keeps
//! its last table (and so one snapshot) alive until it evaluates a newer one.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use vexil_eval::{CompiledSnapshot, EvalReason};
use vexil_schema::events::SummaryCounter;

/// Reason names, by slot offset within a variation (`ERROR` has its own slot).
const REASONS: [&str; 5] = [
    "OFF",
    "TARGET_MATCH",
    "RULE_MATCH",
    "PREREQUISITE_FAILED",
    "FALLTHROUGH",
];
const REASONS_PER_VARIATION: usize = REASONS.len();

/// The counters of one snapshot.
#[derive(Debug)]
pub(crate) struct Table {
    /// The snapshot counted (kept alive so that its address identifies this table).
    snapshot: Arc<CompiledSnapshot>,
    /// Per flag position, its first slot; one extra entry ends the last flag's slots.
    offsets: Box<[u32]>,
    counts: Box<[AtomicU64]>,
}

impl Table {
    fn new(snapshot: Arc<CompiledSnapshot>) -> Self {
        let mut offsets = Vec::with_capacity(snapshot.len() + 1);
        let mut next = 0u32;
        for pos in 0..snapshot.len() as u32 {
            offsets.push(next);
            let variations = snapshot.flag_at(pos).map_or(0, |f| f.variations.len());
            let slots = 1 + variations * REASONS_PER_VARIATION;
            next = next.saturating_add(u32::try_from(slots).unwrap_or(u32::MAX));
        }
        offsets.push(next);
        let counts = (0..next).map(|_| AtomicU64::new(0)).collect();
        Self {
            snapshot,
            offsets: offsets.into_boxed_slice(),
            counts,
        }
    }

    fn key(&self) -> usize {
        Arc::as_ptr(&self.snapshot) as usize
    }

    #[inline]
    fn add(&self, pos: u32, variation: Option<usize>, reason: Option<usize>) {
        let pos = pos as usize;
        let (Some(&start), Some(&end)) = (self.offsets.get(pos), self.offsets.get(pos + 1)) else {
            return;
        };
        let slot = match (variation, reason) {
            (Some(v), Some(r)) => start as usize + 1 + v * REASONS_PER_VARIATION + r,
            _ => start as usize,
        };
        if slot < end as usize
            && let Some(c) = self.counts.get(slot)
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves every non-zero counter into `out`, zeroing it.
    fn drain(&self, out: &mut BTreeMap<(String, Option<u32>, &'static str), u64>) {
        for pos in 0..self.offsets.len().saturating_sub(1) {
            let (start, end) = (self.offsets[pos] as usize, self.offsets[pos + 1] as usize);
            for slot in start..end.min(self.counts.len()) {
                if self.counts[slot].load(Ordering::Relaxed) == 0 {
                    continue;
                }
                let n = self.counts[slot].swap(0, Ordering::Relaxed);
                let Some(flag) = self.snapshot.flag_at(pos as u32) else {
                    continue;
                };
                let i = slot - start;
                let (variation, reason) = if i == 0 {
                    (None, "ERROR")
                } else {
                    let v = (i - 1) / REASONS_PER_VARIATION;
                    let r = (i - 1) % REASONS_PER_VARIATION;
                    (u32::try_from(v).ok(), REASONS[r])
                };
                *out.entry((flag.key.to_string(), variation, reason))
                    .or_default() += n;
            }
        }
    }
}

thread_local! {
    /// The table this thread counted into last.
    static CACHE: RefCell<Option<Arc<Table>>> = const { RefCell::new(None) };
}

/// The slot offset of a reason within its variation; `None` for `ERROR`.
#[inline]
fn reason_slot(reason: &EvalReason<'_>) -> Option<usize> {
    match reason {
        EvalReason::Off => Some(0),
        EvalReason::TargetMatch => Some(1),
        EvalReason::RuleMatch { .. } => Some(2),
        EvalReason::PrerequisiteFailed { .. } => Some(3),
        EvalReason::Fallthrough => Some(4),
        _ => None,
    }
}

/// One client's counters: the tables of the snapshots counted since the last flush.
#[derive(Debug, Default)]
pub(crate) struct Summaries {
    tables: Mutex<Vec<Arc<Table>>>,
}

impl Summaries {
    /// Counts one evaluation of the flag at `pos` in `snapshot`.
    #[inline]
    pub(crate) fn count(
        &self,
        snapshot: &Arc<CompiledSnapshot>,
        pos: u32,
        variation: Option<usize>,
        reason: &EvalReason<'_>,
    ) {
        let key = Arc::as_ptr(snapshot) as usize;
        let reason = reason_slot(reason);
        let counted = CACHE
            .try_with(|cell| match cell.try_borrow() {
                Ok(cached) => match cached.as_ref() {
                    Some(t) if t.key() == key => {
                        t.add(pos, variation, reason);
                        true
                    }
                    _ => false,
                },
                Err(_) => false,
            })
            // The thread is exiting: its thread-local state is gone; skip the count.
            .unwrap_or(true);
        if !counted {
            self.count_slow(snapshot, pos, variation, reason);
        }
    }

    #[cold]
    fn count_slow(
        &self,
        snapshot: &Arc<CompiledSnapshot>,
        pos: u32,
        variation: Option<usize>,
        reason: Option<usize>,
    ) {
        let table = {
            let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
            let key = Arc::as_ptr(snapshot) as usize;
            match tables.iter().find(|t| t.key() == key) {
                Some(t) => Arc::clone(t),
                None => {
                    let t = Arc::new(Table::new(Arc::clone(snapshot)));
                    tables.push(Arc::clone(&t));
                    t
                }
            }
        };
        table.add(pos, variation, reason);
        let _ = CACHE.try_with(|cell| {
            if let Ok(mut cached) = cell.try_borrow_mut() {
                *cached = Some(table);
            }
        });
    }

    /// Every count since the last call, merged across snapshots and reset; forgets the
    /// tables of snapshots other than `current`.
    pub(crate) fn drain(&self, current: Option<&Arc<CompiledSnapshot>>) -> Vec<SummaryCounter> {
        let mut merged = BTreeMap::new();
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        for t in tables.iter() {
            t.drain(&mut merged);
        }
        let current = current.map(|s| Arc::as_ptr(s) as usize);
        tables.retain(|t| Some(t.key()) == current);
        drop(tables);
        merged
            .into_iter()
            .map(|((flag_key, variation, reason), count)| SummaryCounter {
                flag_key,
                variation,
                reason: reason.to_owned(),
                count,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vexil_schema::{Context, EnvironmentSnapshot};

    fn snapshot(version: u64) -> Arc<CompiledSnapshot> {
        let s: EnvironmentSnapshot = serde_json::from_value(json!({
            "version": version,
            "flags": [
                {"key": "a", "kind": "boolean", "variations": [{"value": true}, {"value": false}],
                 "on": true, "off_variation": 1, "fallthrough": {"variation": 0}},
                {"key": "b", "kind": "boolean", "variations": [{"value": true}, {"value": false}],
                 "on": false, "off_variation": 1, "fallthrough": {"variation": 0}}
            ]
        }))
        .unwrap();
        Arc::new(CompiledSnapshot::compile(&s))
    }

    fn eval(s: &Arc<CompiledSnapshot>, sums: &Summaries, key: &str) {
        let (pos, e) = s.evaluate_indexed(key, &Context::new("u"));
        if let Some(pos) = pos {
            sums.count(s, pos, e.variation, &e.reason);
        }
    }

    #[test]
    fn counts_per_flag_variation_and_reason_across_snapshots() {
        let sums = Summaries::default();
        let (s1, s2) = (snapshot(1), snapshot(2));
        for _ in 0..3 {
            eval(&s1, &sums, "a");
        }
        eval(&s1, &sums, "b");
        eval(&s2, &sums, "a");
        eval(&s1, &sums, "a");
        let counters = sums.drain(Some(&s2));
        let find = |k: &str, r: &str| {
            counters
                .iter()
                .find(|c| c.flag_key == k && c.reason == r)
                .map(|c| (c.variation, c.count))
        };
        assert_eq!(find("a", "FALLTHROUGH"), Some((Some(0), 5)));
        assert_eq!(find("b", "OFF"), Some((Some(1), 1)));
        assert_eq!(counters.len(), 2);
        // Reset, and the table of the old snapshot is gone.
        assert!(sums.drain(Some(&s2)).is_empty());
        assert_eq!(sums.tables.lock().unwrap().len(), 1);
    }

    #[test]
    fn threads_count_into_one_table() {
        let sums = Arc::new(Summaries::default());
        let s = snapshot(1);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (sums, s) = (Arc::clone(&sums), Arc::clone(&s));
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        eval(&s, &sums, "a");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let counters = sums.drain(Some(&s));
        assert_eq!(counters.len(), 1);
        assert_eq!(counters[0].count, 4000);
    }
}
