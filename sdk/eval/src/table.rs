//! A read-only string-keyed hash index, built once at compile time.
//!
//! It maps a string to the position of an entry in a list the caller owns (flags of a
//! snapshot, keys of a segment's include list, values of an `in` clause), so the strings
//! are stored once. Open addressing with linear probing at a load factor of at most one
//! half; slots keep the full 64-bit xxh3 hash so a probe compares strings only when the
//! hashes agree. Lookups allocate nothing.

use xxhash_rust::xxh3::xxh3_64;

use crate::needle::{head, tail};

/// Marks an empty slot.
const EMPTY: u32 = u32::MAX;

/// A hash index over `n` strings, each identified by its position `0..n`.
#[derive(Debug, Clone, Default)]
pub(crate) struct HashIndex {
    /// `(hash, position)`; position [`EMPTY`] marks a free slot. Length is a power of two.
    slots: Box<[(u64, u32)]>,
    /// Distinct strings indexed.
    len: usize,
}

impl HashIndex {
    /// Indexes positions `0..n`, where `key_of(i)` is the string at position `i`. When two
    /// positions hold the same string the first is kept. Positions must fit below
    /// `u32::MAX`; later ones are ignored (no list in a snapshot comes near that).
    pub(crate) fn build<'k>(n: usize, key_of: impl Fn(u32) -> &'k str) -> Self {
        let n = n.min(EMPTY as usize - 1);
        if n == 0 {
            return Self::default();
        }
        let capacity = (n * 2).next_power_of_two();
        let mut slots = vec![(0u64, EMPTY); capacity].into_boxed_slice();
        let mask = capacity - 1;
        let mut len = 0;
        for pos in 0..n as u32 {
            let key = key_of(pos);
            let hash = Self::hash(key);
            let mut i = hash as usize & mask;
            loop {
                let (h, p) = slots[i];
                if p == EMPTY {
                    slots[i] = (hash, pos);
                    len += 1;
                    break;
                }
                if h == hash && key_of(p) == key {
                    break; // duplicate: keep the first
                }
                i = (i + 1) & mask;
            }
        }
        Self { slots, len }
    }

    /// The hash [`HashIndex::find_hashed`] expects for `key`.
    #[inline]
    pub(crate) fn hash(key: &str) -> u64 {
        let b = key.as_bytes();
        if b.len() > 16 {
            return xxh3_64(b);
        }
        let mixed = (head(b) ^ tail(b).rotate_left(29) ^ (b.len() as u64).rotate_left(53))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        mixed ^ (mixed >> 32)
    }

    /// The position holding `key`, if any.
    #[inline]
    pub(crate) fn find<'k>(&self, key: &str, key_of: impl Fn(u32) -> &'k str) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        self.find_hashed(Self::hash(key), key, key_of)
    }

    /// [`HashIndex::find`] with the key's hash already computed, for looking one key up in
    /// several indexes.
    #[inline]
    pub(crate) fn find_hashed<'k>(
        &self,
        hash: u64,
        key: &str,
        key_of: impl Fn(u32) -> &'k str,
    ) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let (h, p) = self.slots[i];
            if p == EMPTY {
                return None;
            }
            if h == hash && same(key_of(p), key) {
                return Some(p);
            }
            i = (i + 1) & mask;
        }
    }

    /// The number of distinct strings indexed.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no string.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// String equality without a `memcmp` call for keys of up to 16 bytes: their first and
/// last 8 bytes, read as integers, cover every byte.
#[inline]
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    if a.len() <= 16 {
        head(a) == head(b) && tail(a) == tail(b)
    } else {
        a == b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_key_and_no_other() {
        let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
        let idx = HashIndex::build(keys.len(), |i| keys[i as usize].as_str());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(idx.find(k, |p| keys[p as usize].as_str()), Some(i as u32));
        }
        assert_eq!(idx.find("user-1000", |p| keys[p as usize].as_str()), None);
        assert_eq!(idx.find("", |p| keys[p as usize].as_str()), None);
    }

    #[test]
    fn duplicates_keep_the_first_position() {
        let keys = ["a", "b", "a", ""];
        let idx = HashIndex::build(keys.len(), |i| keys[i as usize]);
        assert_eq!(idx.find("a", |p| keys[p as usize]), Some(0));
        assert_eq!(idx.find("", |p| keys[p as usize]), Some(3));
    }

    #[test]
    fn short_and_long_keys_spread() {
        // Keys differing in one byte, short (integer hash) and long (xxh3).
        for prefix in ["", "tenant-0000000000-"] {
            let keys: Vec<String> = (0..4096).map(|i| format!("{prefix}u{i:05}")).collect();
            let idx = HashIndex::build(keys.len(), |i| keys[i as usize].as_str());
            let mask = idx.slots.len() - 1;
            let mut longest = 0;
            for k in &keys {
                let (mut i, mut probes) = (HashIndex::hash(k) as usize & mask, 1);
                while keys[idx.slots[i].1 as usize] != *k {
                    i = (i + 1) & mask;
                    probes += 1;
                }
                longest = longest.max(probes);
            }
            assert!(longest < 32, "{prefix:?}: a probe ran {longest} slots");
        }
    }

    #[test]
    fn same_agrees_with_equality() {
        let words = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefgh\0",
            "0123456789abcdef",
            "0123456789abcdeF",
            "0123456789abcdefg",
            "0123456789abcdefh",
        ];
        for a in words {
            for b in words {
                assert_eq!(same(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn empty_index_finds_nothing() {
        let idx = HashIndex::build(0, |_| "");
        assert!(idx.is_empty());
        assert_eq!(idx.find("x", |_| ""), None);
    }
}
