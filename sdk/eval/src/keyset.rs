//! [`KeySet`]: a segment's `included` or `excluded` list, compiled into a persistent hash set
//! that keeps the list's order, so that a `delta` of a few keys edits a list of a million in
//! microseconds while every older snapshot keeps its own version.
//!
//! # Layout
//!
//! Keys are spread by their hash over `2^bits` leaves (about [`LEAF`] keys each), reached
//! through two levels of shared arrays: `top[i]` → `mid[j]` → leaf. A leaf stores its keys'
//! bytes back to back (one allocation), each key's end offset and insertion sequence number,
//! and a small open-addressing table of `u64` slots (32 bits of hash tag, 32 bits of entry
//! index). Membership is one hash, three indirections and a probe, with no allocation.
//!
//! An edit rebuilds only the leaves it touches and copies the two small arrays on their
//! path; everything else is shared (`Arc`) with the set it came from. The list's order is
//! the order of sequence numbers: removed keys take theirs with them, added keys get new,
//! larger ones, which is exactly the canonical list rules of [`vexil_schema::delta`].
//!
//! Memory per key, beyond its bytes: 4 (end) + 8 (sequence) + 11–21 (slots at a load between
//! 3/8 and 3/4), plus a share of the arrays: about 25–35 bytes.

use std::collections::HashSet;
use std::sync::Arc;

use vexil_schema::KeyList;
use vexil_schema::delta::ListDelta;

use crate::table::HashIndex;

/// Keys a leaf holds on average after a full build.
const LEAF: usize = 256;

/// A leaf grown past this by edits triggers a full rebuild with more leaves.
const LEAF_MAX: usize = 16 * LEAF;

/// A compiled key list: membership in O(1), edits in O(keys edited × leaf size).
#[derive(Clone, Default)]
pub(crate) struct KeySet {
    /// `top[i][j]` is leaf `i << mid_bits | j`. Empty when the set is.
    top: Arc<[Arc<[Arc<Leaf>]>]>,
    /// Bits of a key's hash choosing its leaf (from the top).
    bits: u32,
    /// Bits of the leaf number choosing its place in a `mid` array.
    mid_bits: u32,
    /// Distinct keys held.
    len: usize,
    /// The next sequence number: larger than every one held.
    next_seq: u64,
    /// The wrapping sum of [`member_mark`] over the keys held: sets with different marks
    /// hold different keys, which tells an edited set from its original in O(1). Kept up to
    /// date by edits in O(keys edited).
    marks: u64,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("len", &self.len)
            .field("leaves", &(1usize << self.bits))
            .finish()
    }
}

#[derive(Default)]
struct Leaf {
    /// The keys' bytes, back to back.
    bytes: Box<str>,
    /// End offset of each entry in `bytes` (an entry starts where the previous one ends).
    ends: Box<[u32]>,
    /// Each entry's sequence number (its place in the list).
    seqs: Box<[u64]>,
    /// `tag << 32 | (entry + 1)`; 0 is a free slot. Length is a power of two.
    slots: Box<[u64]>,
}

/// One entry being placed in a leaf.
struct Entry<'k> {
    key: &'k str,
    hash: u64,
    seq: u64,
}

/// The part of a hash a slot keeps: the high half.
#[inline]
fn tag(hash: u64) -> u64 {
    hash & TAG
}

/// The tag bits of a slot (or of a hash).
const TAG: u64 = 0xffff_ffff_0000_0000;

/// The slot a tag (or hash) probes first, in a table of `mask + 1` slots: taken from the
/// tag's low bits (below the few top bits that chose the leaf, which all of a leaf's keys
/// share), so that a table can be rebuilt from its slots alone, without rehashing a key.
#[inline]
fn home(tag_or_hash: u64, mask: usize) -> usize {
    (tag_or_hash >> 32) as usize & mask
}

/// Slots for `n` entries: a load between 3/8 and 3/4.
fn capacity(n: usize) -> usize {
    (n + n / 3 + 1).next_power_of_two().max(2)
}

/// Puts `slot` (tag and entry) in the first free place from its home.
#[inline]
fn place(slots: &mut [u64], slot: u64) {
    let mask = slots.len() - 1;
    let mut s = home(slot, mask);
    while slots[s] != 0 {
        s = (s + 1) & mask;
    }
    slots[s] = slot;
}

impl Leaf {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn key(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.bytes.get(start..self.ends[i] as usize).unwrap_or("")
    }

    /// Builds a leaf from distinct entries.
    fn build(entries: &[Entry<'_>]) -> Self {
        let n = entries.len();
        let mut slots = vec![0u64; capacity(n)].into_boxed_slice();
        let mut bytes = String::with_capacity(entries.iter().map(|e| e.key.len()).sum());
        let mut ends = Vec::with_capacity(n);
        let mut seqs = Vec::with_capacity(n);
        for (i, e) in entries.iter().enumerate() {
            bytes.push_str(e.key);
            ends.push(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
            seqs.push(e.seq);
            place(&mut slots, tag(e.hash) | (i as u64 + 1));
        }
        Self {
            bytes: bytes.into_boxed_str(),
            ends: ends.into_boxed_slice(),
            seqs: seqs.into_boxed_slice(),
            slots,
        }
    }

    /// The entry holding `key`, if any.
    #[inline]
    fn find(&self, hash: u64, key: &str) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let want = tag(hash);
        let mut s = home(hash, mask);
        loop {
            let slot = self.slots[s];
            if slot == 0 {
                return None;
            }
            let i = (slot & 0xffff_ffff) as usize - 1;
            if slot & TAG == want && self.key(i) == key {
                return Some(i);
            }
            s = (s + 1) & mask;
        }
    }

    /// Where entry `i`'s bytes start.
    fn start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.ends[i - 1] as usize }
    }

    /// This leaf without the entries `removed` (ascending, distinct) and with `added`
    /// appended (distinct, absent from the kept entries). Kept entries keep their relative
    /// order and are copied in runs; the table is rebuilt from the slots' tags (or copied,
    /// when nothing leaves and the size class holds), so no kept key is hashed again.
    fn edit(&self, removed: &[u32], added: &[Entry<'_>]) -> Self {
        let old_len = self.len();
        let n = old_len - removed.len() + added.len();
        let removed_bytes: usize = removed.iter().map(|&r| self.key(r as usize).len()).sum();
        let added_bytes: usize = added.iter().map(|e| e.key.len()).sum();
        let mut bytes = String::with_capacity(self.bytes.len() - removed_bytes + added_bytes);
        let mut ends = Vec::with_capacity(n);
        let mut seqs = Vec::with_capacity(n);
        let mut run = 0;
        for r in removed
            .iter()
            .map(|&r| r as usize)
            .chain(std::iter::once(old_len))
        {
            if run < r {
                let from = self.start(run);
                let to = self.ends[r - 1] as usize;
                // Every end in the run moves by the same amount.
                let shift = from - bytes.len();
                bytes.push_str(self.bytes.get(from..to).unwrap_or(""));
                ends.extend(self.ends[run..r].iter().map(|&e| e - shift as u32));
                seqs.extend_from_slice(&self.seqs[run..r]);
            }
            run = r + 1;
        }
        let kept = ends.len();
        for e in added {
            bytes.push_str(e.key);
            ends.push(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
            seqs.push(e.seq);
        }
        let size = capacity(n);
        let mut slots = if removed.is_empty() && size == self.slots.len() {
            self.slots.clone()
        } else {
            let mut slots = vec![0u64; size].into_boxed_slice();
            for &slot in self.slots.iter().filter(|&&s| s != 0) {
                let i = (slot & !TAG) as usize - 1;
                // Entry `i` moves down by the number of removed entries before it.
                let below = removed.partition_point(|&r| (r as usize) < i);
                if removed.get(below).is_some_and(|&r| r as usize == i) {
                    continue;
                }
                place(&mut slots, (slot & TAG) | (i - below + 1) as u64);
            }
            slots
        };
        for (j, e) in added.iter().enumerate() {
            place(&mut slots, tag(e.hash) | (kept + j + 1) as u64);
        }
        Self {
            bytes: bytes.into_boxed_str(),
            ends: ends.into_boxed_slice(),
            seqs: seqs.into_boxed_slice(),
            slots,
        }
    }
}

impl KeySet {
    /// Compiles `keys`, in order; a repeated key keeps its first place.
    pub(crate) fn build<'k, S, I>(keys: I) -> Self
    where
        S: AsRef<str> + ?Sized + 'k,
        I: IntoIterator<Item = &'k S>,
        I::IntoIter: ExactSizeIterator,
    {
        let keys = keys.into_iter();
        Self::from_entries(
            keys.len(),
            keys.enumerate().map(|(i, k)| {
                let key = k.as_ref();
                Entry {
                    key,
                    hash: HashIndex::hash(key),
                    seq: i as u64,
                }
            }),
        )
    }

    /// Builds from entries in sequence order (`n` of them, some possibly repeated).
    fn from_entries<'k>(n: usize, entries: impl Iterator<Item = Entry<'k>>) -> Self {
        if n == 0 {
            return Self::default();
        }
        let mut bits = 0;
        while (LEAF << bits) < n {
            bits += 1;
        }
        let mid_bits = bits / 2;
        let mut leaves: Vec<Vec<Entry<'k>>> = (0..1usize << bits).map(|_| Vec::new()).collect();
        let mut next_seq = 0;
        for e in entries {
            next_seq = next_seq.max(e.seq + 1);
            leaves[leaf_of(e.hash, bits)].push(e);
        }
        let mut len = 0;
        let mut marks = 0u64;
        let leaves: Vec<Arc<Leaf>> = leaves
            .into_iter()
            .map(|mut entries| {
                dedup_first(&mut entries);
                len += entries.len();
                for e in &entries {
                    marks = marks.wrapping_add(member_mark(e.hash));
                }
                Arc::new(Leaf::build(&entries))
            })
            .collect();
        let top = leaves
            .chunks(1 << mid_bits)
            .map(Arc::<[Arc<Leaf>]>::from)
            .collect();
        Self {
            top,
            bits,
            mid_bits,
            len,
            next_seq,
            marks,
        }
    }

    /// The number of keys.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the set holds no key.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn leaf(&self, hash: u64) -> Option<&Leaf> {
        let l = leaf_of(hash, self.bits);
        let mid = self.top.get(l >> self.mid_bits)?;
        mid.get(l & ((1 << self.mid_bits) - 1)).map(|l| &**l)
    }

    /// Whether `key`, whose [`HashIndex::hash`] is `hash`, is in the set.
    #[inline]
    pub(crate) fn contains_hashed(&self, hash: u64, key: &str) -> bool {
        self.leaf(hash).is_some_and(|l| l.find(hash, key).is_some())
    }

    /// Whether `key` is in the set.
    #[cfg(test)]
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.contains_hashed(HashIndex::hash(key), key)
    }

    /// The keys, in list order.
    pub(crate) fn to_list(&self) -> KeyList {
        let mut all: Vec<(u64, &str)> = Vec::with_capacity(self.len);
        for mid in self.top.iter() {
            for leaf in mid.iter() {
                all.extend((0..leaf.len()).map(|i| (leaf.seqs[i], leaf.key(i))));
            }
        }
        all.sort_unstable_by_key(|e| e.0);
        all.into_iter().map(|(_, k)| k).collect()
    }

    /// Whether both hold the same keys in the same order (shared structure compares in
    /// O(1)).
    /// O(1) as well when they hold different keys (counts or marks differ), as a set and
    /// the set an edit of its keys made from it do.
    pub(crate) fn same_list(&self, other: &Self) -> bool {
        if Arc::ptr_eq(&self.top, &other.top) {
            return true;
        }
        self.len == other.len && self.marks == other.marks && self.to_list() == other.to_list()
    }

    /// This set with `delta` applied by the canonical list rules: removed keys leave, added
    /// keys absent after the removals are appended in order, once. Only the leaves holding
    /// an edited key are rebuilt, by copying (no kept key is hashed again).
    pub(crate) fn apply(&self, delta: &ListDelta) -> Self {
        if delta.is_empty() {
            return self.clone();
        }
        if self.is_empty() || delta.add.len() + delta.remove.len() > self.len / 2 {
            // A large edit: rebuilding whole costs about the same and rebalances.
            let mut list = self.to_list();
            delta.apply(&mut list);
            return Self::build(&list);
        }
        // Every edit, located: (leaf, entry removed) and (leaf, entry appended).
        let mut removals: Vec<(usize, u32)> = Vec::with_capacity(delta.remove.len());
        let mut marks = self.marks;
        for key in &delta.remove {
            let hash = HashIndex::hash(key);
            let l = leaf_of(hash, self.bits);
            if let Some(i) = self.leaf_at(l).and_then(|leaf| leaf.find(hash, key)) {
                removals.push((l, i as u32));
                // Taken back below for a key removed twice.
                marks = marks.wrapping_sub(member_mark(hash));
            }
        }
        let found = removals.len();
        removals.sort_unstable();
        removals.dedup();
        if removals.len() != found {
            marks = self.marks;
            for &(l, i) in &removals {
                if let Some(leaf) = self.leaf_at(l) {
                    let key = leaf.key(i as usize);
                    marks = marks.wrapping_sub(member_mark(HashIndex::hash(key)));
                }
            }
        }
        let mut next_seq = self.next_seq;
        let mut additions: Vec<(usize, Entry<'_>)> = Vec::with_capacity(delta.add.len());
        for key in &delta.add {
            let hash = HashIndex::hash(key);
            let l = leaf_of(hash, self.bits);
            let at = self.leaf_at(l).and_then(|leaf| leaf.find(hash, key));
            // Present and staying: nothing to do. Present and removed: re-appended.
            if at.is_some_and(|i| removals.binary_search(&(l, i as u32)).is_err()) {
                continue;
            }
            additions.push((
                l,
                Entry {
                    key,
                    hash,
                    seq: next_seq,
                },
            ));
            next_seq += 1;
        }
        // By leaf, keeping the delta's order within a leaf (the first of repeated adds wins).
        additions.sort_by_key(|a| a.0);
        dedup_additions(&mut additions);
        if removals.is_empty() && additions.is_empty() {
            return self.clone();
        }
        let len = self.len - removals.len() + additions.len();
        for (_, e) in &additions {
            marks = marks.wrapping_add(member_mark(e.hash));
        }

        let mut top: Vec<Arc<[Arc<Leaf>]>> = self.top.to_vec();
        let mid_mask = (1 << self.mid_bits) - 1;
        let mut mid: Option<(usize, Vec<Arc<Leaf>>)> = None;
        let mut oversized = false;
        let (mut r, mut a) = (0, 0);
        let mut removed: Vec<u32> = Vec::new();
        let mut added: Vec<Entry<'_>> = Vec::new();
        while r < removals.len() || a < additions.len() {
            let l = match (removals.get(r), additions.get(a)) {
                (Some(x), Some(y)) => x.0.min(y.0),
                (Some(x), None) => x.0,
                (None, Some(y)) => y.0,
                (None, None) => break,
            };
            removed.clear();
            added.clear();
            while let Some(&(_, i)) = removals.get(r).filter(|x| x.0 == l) {
                removed.push(i);
                r += 1;
            }
            while let Some((_, e)) = additions.get(a).filter(|x| x.0 == l) {
                added.push(Entry {
                    key: e.key,
                    hash: e.hash,
                    seq: e.seq,
                });
                a += 1;
            }
            let Some(old) = self.leaf_at(l) else {
                continue;
            };
            let leaf = old.edit(&removed, &added);
            oversized |= leaf.len() > LEAF_MAX;
            let m = l >> self.mid_bits;
            if mid.as_ref().is_none_or(|(at, _)| *at != m) {
                if let Some((at, done)) = mid.take() {
                    top[at] = done.into();
                }
                mid = Some((m, top[m].to_vec()));
            }
            if let Some((_, leaves)) = mid.as_mut() {
                leaves[l & mid_mask] = Arc::new(leaf);
            }
        }
        if let Some((at, done)) = mid {
            top[at] = done.into();
        }
        let next = Self {
            top: top.into(),
            bits: self.bits,
            mid_bits: self.mid_bits,
            len,
            next_seq,
            marks,
        };
        if oversized {
            // Edits grew a leaf far past its size: spread the keys over more leaves.
            return Self::build(&next.to_list());
        }
        next
    }

    fn leaf_at(&self, l: usize) -> Option<&Arc<Leaf>> {
        self.top
            .get(l >> self.mid_bits)?
            .get(l & ((1 << self.mid_bits) - 1))
    }
}

/// A key's contribution to [`KeySet::marks`], from its hash (mixed again, so that the sum
/// does not inherit the placement hash's structure).
#[inline]
fn member_mark(hash: u64) -> u64 {
    let x = (hash ^ (hash >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 29)
}

/// The leaf of a hash: its top `bits` bits.
#[inline]
fn leaf_of(hash: u64, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        (hash >> (64 - bits)) as usize
    }
}

/// Drops repeated keys from additions sorted by leaf (a key's repeats share its leaf, in
/// delta order), keeping each key's first entry. No allocation when no leaf gets more than
/// a few keys, as in small edits.
fn dedup_additions(additions: &mut Vec<(usize, Entry<'_>)>) {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut keep: Vec<bool> = Vec::new();
    let mut start = 0;
    while start < additions.len() {
        let l = additions[start].0;
        let end = start + additions[start..].iter().take_while(|x| x.0 == l).count();
        let group = &additions[start..end];
        if group.len() > 1 {
            if keep.is_empty() {
                keep = vec![true; additions.len()];
            }
            if group.len() <= 8 {
                for j in 1..group.len() {
                    keep[start + j] = group[..j].iter().all(|x| x.1.key != group[j].1.key);
                }
            } else {
                seen.clear();
                for (j, x) in group.iter().enumerate() {
                    keep[start + j] = seen.insert(x.1.key);
                }
            }
        }
        start = end;
    }
    if !keep.is_empty() {
        let mut i = 0;
        additions.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }
}

/// Keeps the first entry of each key (entries are in sequence order).
fn dedup_first(entries: &mut Vec<Entry<'_>>) {
    if entries.len() < 2 {
        return;
    }
    let mut seen: HashSet<&str> = HashSet::with_capacity(entries.len());
    entries.retain(|e| seen.insert(e.key));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("user-{i}")).collect()
    }

    #[test]
    fn membership_and_order_survive_building() {
        for n in [0, 1, 5, LEAF, LEAF + 1, 10 * LEAF + 7] {
            let list = keys(n);
            let set = KeySet::build(&list);
            assert_eq!(set.len(), n);
            assert_eq!(set.to_list(), list, "{n}");
            assert!(list.iter().all(|k| set.contains(k)));
            assert!(!set.contains("user-x"));
            assert!(!set.contains(""));
        }
    }

    #[test]
    fn duplicates_keep_their_first_place() {
        let list: Vec<String> = ["b", "a", "b", "c", "a"].map(String::from).to_vec();
        let set = KeySet::build(&list);
        assert_eq!(set.len(), 3);
        assert_eq!(set.to_list(), ["b", "a", "c"]);
    }

    #[test]
    fn edits_follow_the_canonical_rules_and_share_the_rest() {
        let mut list = keys(20 * LEAF);
        let set = KeySet::build(&list);
        let delta = ListDelta {
            add: vec![
                "new-1".into(),
                "user-3".into(),
                "new-2".into(),
                "new-1".into(),
            ],
            remove: vec!["user-3".into(), "user-4".into(), "absent".into()],
        };
        let next = set.apply(&delta);
        delta.apply(&mut list);
        assert_eq!(next.to_list(), list);
        assert_eq!(next.len(), list.len());
        assert!(next.contains("new-2") && next.contains("user-3") && !next.contains("user-4"));
        assert!(
            set.contains("user-4") && !set.contains("new-1"),
            "the old set is intact"
        );
        let shared = set
            .top
            .iter()
            .flat_map(|m| m.iter())
            .zip(next.top.iter().flat_map(|m| m.iter()))
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert!(shared >= (1 << set.bits) - 5, "{shared} leaves shared");
        assert!(next.same_list(&next.clone()));
        assert!(!next.same_list(&set));
        assert!(
            next.same_list(&KeySet::build(&list)),
            "same list, built apart"
        );
        // The same keys in another order are another list.
        let moved = set.apply(&ListDelta {
            add: vec!["user-9".into()],
            remove: vec!["user-9".into()],
        });
        assert_eq!(moved.marks, set.marks);
        assert!(!moved.same_list(&set));
        assert!(set.apply(&ListDelta::default()).same_list(&set));
    }

    #[test]
    fn growing_by_edits_rebalances() {
        let mut set = KeySet::build(&keys(3));
        let mut list = keys(3);
        for round in 0..40 {
            let delta = ListDelta {
                add: (0..200).map(|i| format!("r{round}-{i}")).collect(),
                remove: vec![format!("r{}-7", round.max(1) - 1)],
            };
            set = set.apply(&delta);
            delta.apply(&mut list);
        }
        assert_eq!(set.to_list(), list);
        assert!(set.bits > 0);
    }

    /// The canonical rules written the slow, obvious way.
    fn naive(list: &mut Vec<String>, delta: &ListDelta) {
        list.retain(|k| !delta.remove.contains(k));
        for k in &delta.add {
            if !list.contains(k) {
                list.push(k.clone());
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 64,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_7973),
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Edits in place (many leaves; keys removed, re-added, repeated, absent) equal the
        /// naive model, membership included, and leave the original set intact.
        #[test]
        fn edits_in_place_equal_the_model(
            edits in proptest::collection::vec(
                (
                    proptest::collection::vec(0..3_000usize, 0..12),
                    proptest::collection::vec(0..3_000usize, 0..12),
                ),
                1..16,
            )
        ) {
            let mut list = keys(2_000);
            let mut set = KeySet::build(&list);
            let original = set.clone();
            for (add, remove) in edits {
                let delta = ListDelta {
                    add: add.iter().map(|i| format!("user-{i}")).collect(),
                    remove: remove.iter().map(|i| format!("user-{i}")).collect(),
                };
                set = set.apply(&delta);
                naive(&mut list, &delta);
                proptest::prop_assert_eq!(set.len(), list.len());
                for k in delta.add.iter().chain(&delta.remove) {
                    proptest::prop_assert_eq!(set.contains(k), list.contains(k), "{}", k);
                }
            }
            proptest::prop_assert_eq!(set.to_list(), list.clone());
            proptest::prop_assert!(list.iter().all(|k| set.contains(k)));
            let rebuilt = KeySet::build(&list);
            proptest::prop_assert_eq!(set.marks, rebuilt.marks, "marks kept up to date");
            proptest::prop_assert!(set.same_list(&rebuilt));
            proptest::prop_assert_eq!(original.to_list(), keys(2_000));
        }
    }
}
