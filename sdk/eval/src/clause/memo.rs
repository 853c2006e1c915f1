//! Per-attribute memo of string clauses.
//!
//! Targeting rules often test one attribute many times: ten rules each asking whether
//! `country` is in a list of five, or whether `email` ends with one of a handful of domains
//! that recur from rule to rule. Testing each clause on its own compares the same value
//! against the same operands again and again. Instead, when an owner (a flag or a segment)
//! has two or more `in`, `starts_with` or `ends_with` clauses on the same attribute, they are
//! given bits of a 64-bit mask, and the attribute gets a [`SlotMemo`]: every distinct operand
//! once, each with the mask of the clauses that list it. Evaluation computes the mask of a
//! string value once (one lookup in a table of the equality operands, one comparison per distinct
//! prefix and suffix) and then answers each of those clauses with one bit test.
//!
//! Only string values take the memo; any other value (and a missing one) goes through the
//! clause's own test, so results, negation and explanations are exactly those of
//! [`CClause::test`](super::CClause::test).

use std::collections::HashMap;

use super::{Attr, CClause, Test};
use crate::needle::{Hay, Needle, NeedleTable};

/// Marks a clause without a memo bit.
pub(crate) const NO_MEMO: u8 = u8::MAX;

/// Clauses on one attribute that share a memo; at most one bit each.
const MAX_BITS: usize = 64;

/// The memo of one attribute slot: distinct operands with the clause bits they set.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotMemo {
    /// Distinct `in` strings.
    equals: NeedleTable,
    /// The clause bits of each of `equals`, by position.
    equal_masks: Box<[u64]>,
    /// Distinct `starts_with` operands and their clause bits.
    prefixes: Box<[(Needle, u64)]>,
    /// Distinct `ends_with` operands and their clause bits.
    suffixes: Box<[(Needle, u64)]>,
}

impl SlotMemo {
    /// The bits of the memoised clauses that a string value satisfies (before negation).
    pub(crate) fn mask(&self, s: &str) -> u64 {
        let hay = Hay::new(s);
        let mut mask = 0;
        if let Some(i) = self.equals.find(&hay) {
            mask |= self.equal_masks.get(i).copied().unwrap_or(0);
        }
        for (n, bits) in &*self.prefixes {
            if hay.starts_with(n) {
                mask |= bits;
            }
        }
        for (n, bits) in &*self.suffixes {
            if hay.ends_with(n) {
                mask |= bits;
            }
        }
        mask
    }
}

/// Distinct operands in first-seen order, each with the bits of the clauses listing it.
#[derive(Default)]
struct Operands {
    list: Vec<(Box<str>, u64)>,
    seen: HashMap<Box<str>, usize>,
}

impl Operands {
    fn add(&mut self, s: &str, bit: u64) {
        match self.seen.get(s) {
            Some(&i) => self.list[i].1 |= bit,
            None => {
                self.seen.insert(s.into(), self.list.len());
                self.list.push((s.into(), bit));
            }
        }
    }

    fn into_needles(self) -> Box<[(Needle, u64)]> {
        self.list
            .into_iter()
            .map(|(s, bits)| (Needle::new(&s), bits))
            .collect()
    }
}

/// Whether a clause can take a memo bit.
fn memoisable(clause: &CClause) -> Option<usize> {
    match (&clause.attr, &clause.test) {
        (Attr::Slot(slot), Test::In(_) | Test::StartsWith(_) | Test::EndsWith(_)) => {
            Some(usize::from(*slot))
        }
        _ => None,
    }
}

/// Gives memo bits to an owner's clauses and builds the memo of each attribute slot below
/// `slots` that two or more clauses test. The result is indexed by slot; slots without a
/// memo get an empty one.
pub(crate) fn memoise<'c>(
    clauses: impl Iterator<Item = &'c mut CClause>,
    slots: usize,
) -> Box<[SlotMemo]> {
    let mut by_slot: Vec<Vec<&'c mut CClause>> = (0..slots).map(|_| Vec::new()).collect();
    for clause in clauses {
        clause.memo = NO_MEMO;
        if let Some(group) = memoisable(clause).and_then(|slot| by_slot.get_mut(slot)) {
            group.push(clause);
        }
    }
    if by_slot.iter().all(|g| g.len() < 2) {
        return Box::default();
    }
    by_slot
        .into_iter()
        .map(|group| {
            if group.len() < 2 {
                return SlotMemo::default();
            }
            let mut equals = Operands::default();
            let mut prefixes = Operands::default();
            let mut suffixes = Operands::default();
            for (bit, clause) in group.into_iter().take(MAX_BITS).enumerate() {
                let mask = 1u64 << bit;
                match &clause.test {
                    Test::In(set) => set.strings().for_each(|n| equals.add(n.as_str(), mask)),
                    Test::StartsWith(ns) => ns.iter().for_each(|n| prefixes.add(n.as_str(), mask)),
                    Test::EndsWith(ns) => ns.iter().for_each(|n| suffixes.add(n.as_str(), mask)),
                    _ => continue,
                }
                clause.memo = bit as u8;
            }
            let (equals, equal_masks): (Vec<Needle>, Vec<u64>) = equals
                .list
                .into_iter()
                .map(|(s, bits)| (Needle::new(&s), bits))
                .unzip();
            SlotMemo {
                equals: NeedleTable::new(equals),
                equal_masks: equal_masks.into(),
                prefixes: prefixes.into_needles(),
                suffixes: suffixes.into_needles(),
            }
        })
        .collect()
}
