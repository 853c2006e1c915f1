//! Fast comparisons of short strings against compiled operands.
//!
//! Most clause operands and attribute values are short (country codes, plan names, email
//! domains). Comparing them with `==`, `starts_with` or `ends_with` calls `memcmp` for every
//! candidate of the same length, which dominated evaluation time. Instead each operand keeps
//! its length and its first and last 8 bytes as integers ([`Needle`]); a value is loaded the
//! same way once ([`Hay`]), and most comparisons are then settled by one or two integer
//! compares, falling back to a byte comparison only for operands longer than 16 bytes.

/// The first `min(8, len)` bytes of `b`, little-endian, zero-padded.
#[inline]
pub(crate) fn head(b: &[u8]) -> u64 {
    match b.first_chunk::<8>() {
        Some(chunk) => u64::from_le_bytes(*chunk),
        None => pack(b),
    }
}

/// The last `min(8, len)` bytes of `b`, little-endian, zero-padded.
#[inline]
pub(crate) fn tail(b: &[u8]) -> u64 {
    match b.last_chunk::<8>() {
        Some(chunk) => u64::from_le_bytes(*chunk),
        None => pack(b),
    }
}

/// Up to 8 bytes packed little-endian (bytes past the 8th are ignored). Short strings are
/// read with two overlapping loads instead of a byte loop.
#[inline]
fn pack(b: &[u8]) -> u64 {
    let n = b.len();
    if let Some(chunk) = b.first_chunk::<8>() {
        return u64::from_le_bytes(*chunk);
    }
    if n >= 4 {
        let lo = b.first_chunk::<4>().map_or(0, |c| u32::from_le_bytes(*c));
        let hi = b.last_chunk::<4>().map_or(0, |c| u32::from_le_bytes(*c));
        // The loads overlap on equal bytes, so OR-ing them is exact.
        u64::from(lo) | (u64::from(hi) << (8 * (n - 4)))
    } else if n >= 2 {
        let lo = b.first_chunk::<2>().map_or(0, |c| u16::from_le_bytes(*c));
        let hi = b.last_chunk::<2>().map_or(0, |c| u16::from_le_bytes(*c));
        u64::from(lo) | (u64::from(hi) << (8 * (n - 2)))
    } else {
        b.first().map_or(0, |&x| u64::from(x))
    }
}

/// A mask of the low `n` bytes, `n` in `1..=8`.
#[inline]
fn low_bytes(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    }
}

/// A compiled string operand.
#[derive(Debug, Clone)]
pub(crate) struct Needle {
    s: Box<str>,
    head: u64,
    tail: u64,
}

impl Needle {
    pub(crate) fn new(s: &str) -> Self {
        Self {
            head: head(s.as_bytes()),
            tail: tail(s.as_bytes()),
            s: s.into(),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.s
    }
}

/// A value prepared for comparison with needles.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hay<'s> {
    s: &'s str,
    head: u64,
    tail: u64,
}

impl<'s> Hay<'s> {
    #[inline]
    pub(crate) fn new(s: &'s str) -> Self {
        let b = s.as_bytes();
        let head = head(b);
        let tail = if b.len() <= 8 { head } else { tail(b) };
        Self { s, head, tail }
    }

    /// Whether the value equals the needle.
    #[inline]
    pub(crate) fn eq(&self, n: &Needle) -> bool {
        let len = n.s.len();
        // Up to 16 bytes, head and tail together cover every byte.
        self.s.len() == len
            && self.head == n.head
            && self.tail == n.tail
            && (len <= 16 || self.s == &*n.s)
    }

    /// Whether the value starts with the needle.
    #[inline]
    pub(crate) fn starts_with(&self, n: &Needle) -> bool {
        let len = n.s.len();
        if len > self.s.len() {
            return false;
        }
        if len == 0 {
            return true;
        }
        if self.head & low_bytes(len) != n.head {
            return false;
        }
        if len <= 8 {
            return true;
        }
        // Up to 16 bytes: the needle's last 8 bytes against the value's bytes len-8..len.
        let b = self.s.as_bytes();
        if len <= 16 {
            tail(b.get(..len).unwrap_or(b)) == n.tail
        } else {
            b.starts_with(n.s.as_bytes())
        }
    }

    /// Whether the value ends with the needle.
    #[inline]
    pub(crate) fn ends_with(&self, n: &Needle) -> bool {
        let len = n.s.len();
        let own = self.s.len();
        if len > own {
            return false;
        }
        if len == 0 {
            return true;
        }
        // The value's last min(8, len) bytes, aligned low like the needle's tail.
        let k = len.min(8);
        let last = if own >= 8 {
            self.tail >> (8 * (8 - k))
        } else {
            (self.head >> (8 * (own - k))) & low_bytes(k)
        };
        if last != n.tail {
            return false;
        }
        if len <= 8 {
            return true;
        }
        // Up to 16 bytes: the needle's first 8 bytes against the value's bytes at own-len.
        let b = self.s.as_bytes();
        if len <= 16 {
            head(b.get(own - len..).unwrap_or(b)) == n.head
        } else {
            b.ends_with(n.s.as_bytes())
        }
    }
}

/// A hash set of needles probed with the integers a [`Hay`] already holds (length, first and
/// last 8 bytes), so a lookup hashes nothing and settles most probes with integer compares.
/// Positions are those of the needles given to [`NeedleTable::new`]; duplicates keep the
/// first.
#[derive(Debug, Clone, Default)]
pub(crate) struct NeedleTable {
    /// Needle positions; `u32::MAX` marks a free slot. Length is a power of two (or zero).
    slots: Box<[u32]>,
    needles: Box<[Needle]>,
    /// `64 - log2(slots.len())`.
    shift: u32,
}

impl NeedleTable {
    const FREE: u32 = u32::MAX;

    #[inline]
    fn hash(len: usize, head: u64, tail: u64, shift: u32) -> usize {
        // Fibonacci hashing of a mix of the three; only the top bits are used.
        let mixed = head ^ tail.rotate_left(29) ^ (len as u64).rotate_left(53);
        (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as usize
    }

    pub(crate) fn new(needles: Vec<Needle>) -> Self {
        if needles.is_empty() {
            return Self::default();
        }
        let capacity = (needles.len() * 2).next_power_of_two().max(2);
        let shift = 64 - capacity.trailing_zeros();
        let mut slots = vec![Self::FREE; capacity].into_boxed_slice();
        for (pos, n) in needles.iter().enumerate().take(Self::FREE as usize) {
            let mut i = Self::hash(n.s.len(), n.head, n.tail, shift);
            loop {
                let p = slots[i];
                if p == Self::FREE {
                    slots[i] = pos as u32;
                    break;
                }
                if needles[p as usize].s == n.s {
                    break;
                }
                i = (i + 1) & (capacity - 1);
            }
        }
        Self {
            slots,
            needles: needles.into(),
            shift,
        }
    }

    /// The position of the needle equal to the value, if any.
    #[inline]
    pub(crate) fn find(&self, hay: &Hay<'_>) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        // A Hay's tail is its head up to 8 bytes, as a Needle's is.
        let mut i = Self::hash(hay.s.len(), hay.head, hay.tail, self.shift);
        loop {
            let p = *self.slots.get(i)?;
            if p == Self::FREE {
                return None;
            }
            if hay.eq(self.needles.get(p as usize)?) {
                return Some(p as usize);
            }
            i = (i + 1) & mask;
        }
    }
}

/// `starts_with` or `ends_with` operands, each with a payload, matched against a value in
/// one pass: operands of 8 bytes or more are grouped by their 8 bytes at the matching end,
/// and a value looks up its own 8 bytes there (one hash probe), so only operands that can
/// match are compared; shorter operands are compared one by one.
#[derive(Debug, Clone, Default)]
pub(crate) struct AffixTable<T> {
    /// `true` for `ends_with`, `false` for `starts_with`.
    suffix: bool,
    /// Operands shorter than 8 bytes.
    short: Box<[(Needle, T)]>,
    /// Bit `b` set: some short operand has `b` as its byte at the matching end (its first
    /// byte for `starts_with`, its last for `ends_with`), so values with another byte there
    /// skip them all. All set if an operand is empty.
    short_ends: [u64; 4],
    /// Operands of 8 bytes or more, ordered so that those sharing an end key are adjacent.
    long: Box<[(Needle, T)]>,
    /// Open addressing over the distinct end keys: `(key, start, end)` of their run in
    /// `long`; `start == u32::MAX` marks a free slot. Length is a power of two (or zero).
    groups: Box<[(u64, u32, u32)]>,
    /// `64 - log2(groups.len())`.
    shift: u32,
}

impl<T> AffixTable<T> {
    const FREE: (u64, u32, u32) = (0, u32::MAX, 0);

    #[inline]
    fn hash(key: u64, shift: u32) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as usize
    }

    /// The operand's or value's 8 bytes at the matching end (all of it up to 8 bytes).
    #[inline]
    fn end_key(suffix: bool, head: u64, tail: u64) -> u64 {
        if suffix { tail } else { head }
    }

    /// A table of `ends_with` (`suffix`) or `starts_with` operands.
    pub(crate) fn new(suffix: bool, operands: Vec<(Needle, T)>) -> Self {
        let (mut long, short): (Vec<_>, Vec<_>) =
            operands.into_iter().partition(|(n, _)| n.s.len() >= 8);
        let mut short_ends = [0u64; 4];
        for (n, _) in &short {
            let b = n.s.as_bytes();
            match if suffix { b.last() } else { b.first() } {
                Some(&byte) => short_ends[usize::from(byte >> 6)] |= 1 << (byte & 63),
                None => short_ends = [u64::MAX; 4],
            }
        }
        long.sort_by_key(|(n, _)| Self::end_key(suffix, n.head, n.tail));
        let mut runs: Vec<(u64, u32, u32)> = Vec::new();
        for (i, (n, _)) in long.iter().enumerate() {
            let key = Self::end_key(suffix, n.head, n.tail);
            match runs.last_mut() {
                Some(run) if run.0 == key => run.2 = i as u32 + 1,
                _ => runs.push((key, i as u32, i as u32 + 1)),
            }
        }
        let (groups, shift) = if runs.is_empty() {
            (Vec::new(), 0)
        } else {
            let capacity = (runs.len() * 2).next_power_of_two().max(2);
            let shift = 64 - capacity.trailing_zeros();
            let mut groups = vec![Self::FREE; capacity];
            for run in runs {
                let mut i = Self::hash(run.0, shift);
                while groups[i].1 != u32::MAX {
                    i = (i + 1) & (capacity - 1);
                }
                groups[i] = run;
            }
            (groups, shift)
        };
        Self {
            suffix,
            short: short.into(),
            short_ends,
            long: long.into(),
            groups: groups.into(),
            shift,
        }
    }

    /// Calls `f` with the payload of every operand the value starts (or ends) with.
    #[inline]
    pub(crate) fn for_each_match(&self, hay: &Hay<'_>, mut f: impl FnMut(&T)) {
        let matches = |n: &Needle| {
            if self.suffix {
                hay.ends_with(n)
            } else {
                hay.starts_with(n)
            }
        };
        let b = hay.s.as_bytes();
        let end = if self.suffix { b.last() } else { b.first() };
        // An empty value can only match empty operands, which set every bit.
        let byte = end.copied().unwrap_or(0);
        if self.short_ends[usize::from(byte >> 6)] >> (byte & 63) & 1 != 0 {
            for (n, t) in &*self.short {
                if matches(n) {
                    f(t);
                }
            }
        }
        if self.groups.is_empty() || hay.s.len() < 8 {
            return;
        }
        let key = Self::end_key(self.suffix, hay.head, hay.tail);
        let mask = self.groups.len() - 1;
        let mut i = Self::hash(key, self.shift);
        while let Some(&(k, start, end)) = self.groups.get(i) {
            if start == u32::MAX {
                return;
            }
            if k == key {
                for (n, t) in self.long.get(start as usize..end as usize).unwrap_or(&[]) {
                    if matches(n) {
                        f(t);
                    }
                }
                return;
            }
            i = (i + 1) & mask;
        }
    }
}

/// `contains` operands of at most [`FewSubstrings::MAX_BYTES`] bytes in all, found in one
/// pass over the value with the multi-pattern Shift-And algorithm: bit `i` of the state is
/// set when the last bytes read equal the first `i + 1 - start` bytes of the operand laid
/// out from bit `start`. Each byte costs a table load, a shift, an OR and an AND, with no
/// data-dependent branch; on short values this beats a general automaton, whose per-call
/// set-up dominates there.
#[derive(Debug, Clone)]
pub(crate) struct FewSubstrings {
    /// Bit `i` of `table[b]`: the operand byte laid out at bit `i` is `b`.
    table: Box<[u64; 256]>,
    /// The first bit of each operand.
    starts: u64,
    /// The last bit of each operand.
    finals: u64,
}

impl FewSubstrings {
    /// The most operand bytes, in all, a state holds.
    pub(crate) const MAX_BYTES: usize = 64;

    /// `None` when the operands are too long in all, or one is empty.
    pub(crate) fn new(operands: &[Box<str>]) -> Option<Self> {
        if operands.iter().map(|o| o.len()).sum::<usize>() > Self::MAX_BYTES {
            return None;
        }
        let mut table = Box::new([0u64; 256]);
        let (mut starts, mut finals, mut bit) = (0u64, 0u64, 0u32);
        for op in operands {
            if op.is_empty() {
                return None;
            }
            starts |= 1 << bit;
            for &b in op.as_bytes() {
                table[usize::from(b)] |= 1 << bit;
                bit += 1;
            }
            finals |= 1 << (bit - 1);
        }
        Some(Self {
            table,
            starts,
            finals,
        })
    }

    /// Whether `s` contains any operand. The loop has no branch but its own: a match is
    /// collected and tested after every 64 bytes, which bounds the work past it.
    #[inline]
    pub(crate) fn found_in(&self, s: &str) -> bool {
        let mut state = 0u64;
        for chunk in s.as_bytes().chunks(64) {
            let mut seen = 0u64;
            for &c in chunk {
                state = ((state << 1) | self.starts) & self.table[usize::from(c)];
                seen |= state;
            }
            if seen & self.finals != 0 {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edge_cases() {
        let h = Hay::new("jane@acme-corp.com");
        assert!(h.ends_with(&Needle::new("@acme-corp.com")));
        assert!(h.ends_with(&Needle::new("m")));
        assert!(h.ends_with(&Needle::new("")));
        assert!(!h.ends_with(&Needle::new("@acme-corp.co")));
        assert!(h.starts_with(&Needle::new("jane@")));
        assert!(h.starts_with(&Needle::new("jane@acme-corp.com")));
        assert!(!h.starts_with(&Needle::new("jane@acme-corp.comX")));
        assert!(h.eq(&Needle::new("jane@acme-corp.com")));
        assert!(!h.eq(&Needle::new("jane@acme-corp.con")));
        let short = Hay::new("DE");
        assert!(short.eq(&Needle::new("DE")));
        assert!(!short.eq(&Needle::new("DEU")));
        assert!(short.ends_with(&Needle::new("E")));
        assert!(!short.ends_with(&Needle::new("D")));
        assert!(Hay::new("").eq(&Needle::new("")));
        assert!(Hay::new("ab\0").ends_with(&Needle::new("\0")));
        assert!(!Hay::new("ab").eq(&Needle::new("ab\0")));
    }

    proptest! {
        /// The integer shortcuts agree with the standard library on arbitrary strings.
        #[test]
        fn agrees_with_std(a in "[ab\\x00é]{0,20}", b in "[ab\\x00é]{0,20}") {
            prop_assert_eq!(pack(a.as_bytes()), {
                let mut v = 0u64;
                for (i, &x) in a.as_bytes().iter().take(8).enumerate() {
                    v |= u64::from(x) << (8 * i);
                }
                v
            });
            let (h, n) = (Hay::new(&a), Needle::new(&b));
            prop_assert_eq!(h.eq(&n), a == b);
            prop_assert_eq!(h.starts_with(&n), a.starts_with(&b));
            prop_assert_eq!(h.ends_with(&n), a.ends_with(&b));
        }

        /// The needle table finds exactly the equal needles.
        #[test]
        fn needle_table_agrees_with_std(
            hay in "[ab\\x00é]{0,20}",
            keys in proptest::collection::vec("[ab\\x00é]{0,20}", 0..40),
        ) {
            let table = NeedleTable::new(keys.iter().map(|k| Needle::new(k)).collect());
            let found = table.find(&Hay::new(&hay));
            prop_assert_eq!(found, keys.iter().position(|k| *k == hay));
        }

        /// The prefix and suffix tables report exactly the operands `str::starts_with` and
        /// `str::ends_with` accept, short and long, including operands sharing their end
        /// bytes and empty ones.
        #[test]
        fn affix_tables_agree_with_std(
            hay in "[ab\\x00é]{0,20}",
            ops in proptest::collection::vec("[ab\\x00é]{0,14}", 0..12),
        ) {
            for suffix in [false, true] {
                let table = AffixTable::new(
                    suffix,
                    ops.iter().enumerate().map(|(i, o)| (Needle::new(o), i)).collect(),
                );
                let mut got = Vec::new();
                table.for_each_match(&Hay::new(&hay), |&i| got.push(i));
                got.sort_unstable();
                let want: Vec<usize> = (0..ops.len())
                    .filter(|&i| {
                        if suffix {
                            hay.ends_with(ops[i].as_str())
                        } else {
                            hay.starts_with(ops[i].as_str())
                        }
                    })
                    .collect();
                prop_assert_eq!(got, want, "suffix: {}", suffix);
            }
        }

        /// The substring table agrees with `str::contains`.
        #[test]
        fn few_substrings_agree_with_std(
            hay in "[ab\\x00é]{0,24}",
            ops in proptest::collection::vec("[ab\\x00é]{1,10}", 1..=5),
        ) {
            let boxed: Vec<Box<str>> = ops.iter().map(|s| s.as_str().into()).collect();
            match FewSubstrings::new(&boxed) {
                Some(few) => prop_assert_eq!(
                    few.found_in(&hay),
                    ops.iter().any(|o| hay.contains(o.as_str()))
                ),
                None => prop_assert!(boxed.iter().map(|o| o.len()).sum::<usize>() > 64),
            }
        }
    }
}
