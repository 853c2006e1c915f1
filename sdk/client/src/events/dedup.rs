//! [`ExposureCache`]: which context × flag × variation exposures were sent recently, so that
//! each is sent once rather than on every evaluation.
//!
//! A fixed-capacity, 4-way set-associative cache of 64-bit hashes, lock-free: a set is four
//! `AtomicU64`s kept in recency order (a hit moves its entry to the front, a miss evicts the
//! set's least recently used entry), so within each set it is an LRU, and overall an LRU
//! approximation that never allocates and never locks. Concurrent updates of one set may
//! occasionally lose an entry; the cost is one duplicate exposure, which receivers tolerate
//! (exposures are deduplicated per unit when aggregated).

use std::sync::atomic::{AtomicU64, Ordering};

use xxhash_rust::xxh3::xxh3_64_with_seed;

const WAYS: usize = 4;

/// Recently sent exposures, as hashes.
#[derive(Debug)]
pub(crate) struct ExposureCache {
    slots: Box<[AtomicU64]>,
    /// Number of sets minus one (the count is a power of two).
    mask: usize,
}

impl ExposureCache {
    /// A cache of at least `capacity` entries (rounded up to a power of two, at least 4).
    pub(crate) fn new(capacity: usize) -> Self {
        let sets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        Self {
            slots: (0..sets * WAYS).map(|_| AtomicU64::new(0)).collect(),
            mask: sets - 1,
        }
    }

    /// The hash identifying an exposure.
    #[inline]
    pub(crate) fn hash(
        context_kind: &str,
        context_key: &str,
        flag_key: &str,
        variation: usize,
    ) -> u64 {
        let h = xxh3_64_with_seed(context_key.as_bytes(), variation as u64);
        let h = xxh3_64_with_seed(context_kind.as_bytes(), h);
        // 0 marks a free slot.
        xxh3_64_with_seed(flag_key.as_bytes(), h).max(1)
    }

    /// Records `hash`; `true` if it was not present (the exposure should be sent).
    #[inline]
    pub(crate) fn insert(&self, hash: u64) -> bool {
        let base = (hash as usize & self.mask) * WAYS;
        let Some(set) = self.slots.get(base..base + WAYS) else {
            return true;
        };
        if set[0].load(Ordering::Relaxed) == hash {
            return false;
        }
        for i in 1..WAYS {
            if set[i].load(Ordering::Relaxed) == hash {
                // Move to the front: shift the more recent entries back by one.
                for j in (1..=i).rev() {
                    set[j].store(set[j - 1].load(Ordering::Relaxed), Ordering::Relaxed);
                }
                set[0].store(hash, Ordering::Relaxed);
                return false;
            }
        }
        for j in (1..WAYS).rev() {
            set[j].store(set[j - 1].load(Ordering::Relaxed), Ordering::Relaxed);
        }
        set[0].store(hash, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_evicts_the_least_recently_used() {
        let c = ExposureCache::new(4); // one set of four
        let h = |k: &str| ExposureCache::hash("user", k, "f", 0);
        for k in ["a", "b", "c", "d"] {
            assert!(c.insert(h(k)));
        }
        assert!(!c.insert(h("a"))); // hit: a is now the most recent
        assert!(c.insert(h("e"))); // evicts b, the least recent
        assert!(!c.insert(h("a")));
        assert!(c.insert(h("b")));
        // Different variation, flag or kind: a different exposure.
        assert_ne!(h("a"), ExposureCache::hash("user", "a", "f", 1));
        assert_ne!(h("a"), ExposureCache::hash("user", "a", "g", 0));
        assert_ne!(h("a"), ExposureCache::hash("org", "a", "f", 0));
    }

    #[test]
    fn capacity_is_rounded_up() {
        assert_eq!(ExposureCache::new(0).slots.len(), 4);
        assert_eq!(ExposureCache::new(10_000).slots.len(), 16_384);
    }
}
