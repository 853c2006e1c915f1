//! Rule plans: the clauses of an owner (a flag or a segment) answered as bits.
//!
//! Targeting rules test the same few attributes again and again: ten rules each asking
//! whether `country` is in a list of five, whether `email` ends with one of a handful of
//! domains, whether `age` is at least some number. Testing clause by clause reads and
//! compares the same value once per clause, and pays the loop's bookkeeping each time.
//! Instead, when an owner has enough of them to pay for it, compilation gives each cheap
//! clause on a cached attribute slot one bit of a 64-bit word, and each rule the set of bits
//! it needs. Evaluation computes an attribute's bits once, the first time a rule needs them,
//! with one pass suited to the value's type:
//!
//! - a string: one lookup in a table of every `in` operand, one comparison per distinct
//!   short `starts_with`/`ends_with` operand and one hash probe for the longer ones, one
//!   Shift-And pass per `contains` clause with a few short operands, one version parse for
//!   all `semver_*` clauses;
//! - a number: one range check per `lt`/`lte`/`gt`/`gte` clause;
//! - missing, `null`, `true` or `false`: a constant per value, computed when planning;
//! - anything else (arrays, objects): each clause's own test.
//!
//! A rule then matches when its bits are all set and its remaining clauses (`matches`,
//! `contains` with many or long operands, `before`/`after`, `segment_match`, the key and
//! kind, slots past the cached ones, and clauses past the 64th) match one by one. Every bit
//! is the [`Outcome::Match`] of [`CClause::test`] on the same value, negation and missing
//! values included, so a rule's result is the same as testing its clauses in order;
//! `explain` does the latter, and the fixtures and property tests check both agree.

use std::collections::HashMap;

use serde_json::Value;

use super::{Attr, CClause, Found, Outcome, Substrings, Test, compare_version};
use crate::needle::{AffixTable, FewSubstrings, Hay, Needle, NeedleTable};

/// One bit per planned clause of an owner.
pub(crate) type Bits = u64;

/// Bits available to one owner's planned clauses: its cheap clauses past these are tested
/// one by one, as before plans.
const BITS: u32 = Bits::BITS;

/// A planned clause: a copy of the clause and its bit.
#[derive(Debug, Clone)]
struct Planned {
    clause: CClause,
    bit: Bits,
}

/// How one attribute slot's planned clauses are answered.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotPlan {
    /// Every clause planned on this slot.
    clauses: Box<[Planned]>,
    /// The bits of those that match a missing attribute, `null`, `false` and `true`: each
    /// clause's own answer, computed when planning (these values carry nothing else).
    missing: Bits,
    null: Bits,
    booleans: [Bits; 2],
    /// Distinct `in` strings, with the bits of the clauses listing each (by position).
    equals: NeedleTable,
    equal_bits: Box<[Bits]>,
    /// Distinct `starts_with` operands and the bits of the clauses listing each.
    prefixes: AffixTable<Bits>,
    /// Distinct `ends_with` operands and the bits of the clauses listing each.
    suffixes: AffixTable<Bits>,
    /// `contains` operands (a few short ones, matched in one pass each), with their bits.
    substrings: Box<[(FewSubstrings, Bits)]>,
    /// Bits of the negated clauses answered by the three tables and `substrings`.
    table_negated: Bits,
    /// Whether every clause is an `in`: strings then need only the `equals` table.
    equals_only: bool,
    /// Positions in `clauses` of the `semver_*` clauses.
    versions: Box<[u16]>,
    /// Positions of the clauses a string answers through their own test.
    string_rest: Box<[u16]>,
    /// `[lo, hi]` of the number-range clauses, with their bits.
    ranges: Box<[(f64, f64, Bits)]>,
    /// Bits of the negated range clauses.
    range_negated: Bits,
    /// Positions of the clauses a number answers through their own test.
    number_rest: Box<[u16]>,
}

/// What one rule needs from the plan.
#[derive(Debug, Clone, Default)]
pub(crate) struct RulePlan {
    /// The bits of the rule's planned clauses: all must be set.
    pub(crate) need: Bits,
    /// Bit `s` set: `need` reads bits of slot `s`.
    pub(crate) slots: u32,
    /// Positions of the rule's clauses that are not planned, in order; `None` when none is
    /// planned (all are tested one by one).
    pub(crate) rest: Option<Box<[u32]>>,
}

/// The slot a clause can be planned on, if its test is cheap enough to run for every
/// clause of the slot whenever one is needed (`matches`, `contains` through an automaton and
/// date parsing are left to the rule).
fn plannable(clause: &CClause, slots: usize) -> Option<usize> {
    let Attr::Slot(slot) = clause.attr else {
        return None;
    };
    let slot = usize::from(slot);
    let cheap = matches!(
        clause.test,
        Test::In(_)
            | Test::StartsWith(_)
            | Test::EndsWith(_)
            | Test::Range(..)
            | Test::SemverEq(_)
            | Test::SemverLt(_)
            | Test::SemverGt(_)
            | Test::Exists
            | Test::Never
            | Test::Contains(Substrings::Few(_))
    );
    (cheap && slot < slots).then_some(slot)
}

/// Plans the clauses of an owner's rules (given in order) on its first `slots` attribute
/// slots, if it has at least `min_planned` cheap clauses. Returns the plan of each slot
/// (empty when no clause is planned at all) and of each rule.
pub(crate) fn plan<'r>(
    rules: impl Iterator<Item = &'r [CClause]>,
    slots: usize,
    min_planned: usize,
) -> (Box<[SlotPlan]>, Vec<RulePlan>) {
    let rules: Vec<&[CClause]> = rules.collect();
    // Owners with fewer than `min_planned` cheap clauses test them one by one (see
    // `compile::PLAN_FLAGS_FROM`).
    let cheap = rules
        .iter()
        .flat_map(|c| c.iter())
        .filter(|c| plannable(c, slots).is_some())
        .count();
    let planned = |clause: &CClause| plannable(clause, slots).filter(|_| cheap >= min_planned);
    let mut by_slot: Vec<Vec<Planned>> = (0..slots).map(|_| Vec::new()).collect();
    let mut next = 0u32;
    let mut plans = Vec::with_capacity(rules.len());
    for clauses in rules {
        let mut rule = RulePlan::default();
        let mut rest = Vec::new();
        for (j, clause) in clauses.iter().enumerate() {
            match planned(clause).filter(|_| next < BITS) {
                Some(slot) => {
                    let bit = 1 << next;
                    next += 1;
                    rule.need |= bit;
                    rule.slots |= 1 << slot;
                    by_slot[slot].push(Planned {
                        clause: clause.clone(),
                        bit,
                    });
                }
                None => rest.push(j as u32),
            }
        }
        // A rule with no planned clause tests them all, without a list saying so.
        rule.rest = (rest.len() < clauses.len()).then(|| rest.into());
        plans.push(rule);
    }
    let slots = if next == 0 {
        Box::default()
    } else {
        by_slot.into_iter().map(SlotPlan::new).collect()
    };
    (slots, plans)
}

/// Distinct operands in first-seen order, each with the bits of the clauses listing it.
#[derive(Default)]
struct Operands {
    list: Vec<(Box<str>, Bits)>,
    seen: HashMap<Box<str>, usize>,
}

impl Operands {
    fn add(&mut self, s: &str, bit: Bits) {
        match self.seen.get(s) {
            Some(&i) => self.list[i].1 |= bit,
            None => {
                self.seen.insert(s.into(), self.list.len());
                self.list.push((s.into(), bit));
            }
        }
    }

    fn into_table(self, suffix: bool) -> AffixTable<Bits> {
        AffixTable::new(
            suffix,
            self.list
                .into_iter()
                .map(|(s, bits)| (Needle::new(&s), bits))
                .collect(),
        )
    }
}

impl SlotPlan {
    fn new(clauses: Vec<Planned>) -> Self {
        let mut plan = SlotPlan::default();
        let (mut equals, mut prefixes, mut suffixes) = Default::default();
        let (mut versions, mut string_rest, mut ranges, mut number_rest) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut substrings = Vec::new();
        for (i, p) in clauses.iter().enumerate() {
            let (clause, bit) = (&p.clause, p.bit);
            let pos = i as u16; // at most 64 planned clauses
            let matches = |value: Found<'_>| clause.test(value, |_| false) == Outcome::Match;
            if matches(Found::Missing) {
                plan.missing |= bit;
            }
            if matches(Found::Json(&Value::Null)) {
                plan.null |= bit;
            }
            for b in [false, true] {
                if matches(Found::Json(&Value::Bool(b))) {
                    plan.booleans[usize::from(b)] |= bit;
                }
            }
            let negated = if clause.negate { bit } else { 0 };
            let (equals, prefixes, suffixes): (&mut Operands, &mut Operands, &mut Operands) =
                (&mut equals, &mut prefixes, &mut suffixes);
            match &clause.test {
                Test::In(set) => set.strings().for_each(|n| equals.add(n.as_str(), bit)),
                Test::StartsWith(ns) => ns.iter().for_each(|n| prefixes.add(n.as_str(), bit)),
                Test::EndsWith(ns) => ns.iter().for_each(|n| suffixes.add(n.as_str(), bit)),
                Test::SemverEq(_) | Test::SemverLt(_) | Test::SemverGt(_) => versions.push(pos),
                Test::Contains(Substrings::Few(few)) => substrings.push((few.clone(), bit)),
                _ => string_rest.push(pos),
            }
            if matches!(
                clause.test,
                Test::In(_)
                    | Test::StartsWith(_)
                    | Test::EndsWith(_)
                    | Test::Contains(Substrings::Few(_))
            ) {
                plan.table_negated |= negated;
            }
            match clause.test {
                Test::Range(lo, hi) => {
                    ranges.push((lo, hi, bit));
                    plan.range_negated |= negated;
                }
                _ => number_rest.push(pos),
            }
        }
        let (needles, bits): (Vec<Needle>, Vec<Bits>) = equals
            .list
            .into_iter()
            .map(|(s, bits)| (Needle::new(&s), bits))
            .unzip();
        plan.equals_only = clauses.iter().all(|p| matches!(p.clause.test, Test::In(_)));
        plan.clauses = clauses.into();
        plan.equals = NeedleTable::new(needles);
        plan.equal_bits = bits.into();
        plan.prefixes = prefixes.into_table(false);
        plan.suffixes = suffixes.into_table(true);
        plan.versions = versions.into();
        plan.substrings = substrings.into();
        plan.string_rest = string_rest.into();
        plan.ranges = ranges.into();
        plan.number_rest = number_rest.into();
        plan
    }

    /// The bits of this slot's clauses that match `value` (the slot's value, if present).
    #[inline]
    pub(crate) fn truth(&self, value: Option<&Value>) -> Bits {
        match value {
            // The commonest shape: a string tested only by `in` clauses.
            Some(Value::String(s)) if self.equals_only => {
                let hay = Hay::new(s);
                let hits = match self.equals.find(&hay) {
                    Some(i) => self.equal_bits.get(i).copied().unwrap_or(0),
                    None => 0,
                };
                hits ^ self.table_negated
            }
            _ => self.truth_general(value.map_or(Found::Missing, Found::Json)),
        }
    }

    #[inline(never)]
    fn truth_general(&self, found: Found<'_>) -> Bits {
        match found {
            Found::Missing => self.missing,
            Found::Json(Value::Null) => self.null,
            Found::Json(Value::Bool(b)) => self.booleans[usize::from(*b)],
            Found::Json(Value::String(s)) => self.on_string(s, found),
            Found::Json(Value::Number(n)) => {
                let x = n.as_f64().unwrap_or(f64::NAN); // NaN compares false
                let mut hits = 0;
                for &(lo, hi, bit) in &*self.ranges {
                    if lo <= x && x <= hi {
                        hits |= bit;
                    }
                }
                let bits = hits ^ self.range_negated;
                if self.number_rest.is_empty() {
                    bits
                } else {
                    bits | self.each(&self.number_rest, found)
                }
            }
            _ => {
                let mut bits = 0;
                for p in &*self.clauses {
                    if p.clause.test(found, |_| false) == Outcome::Match {
                        bits |= p.bit;
                    }
                }
                bits
            }
        }
    }

    fn on_string(&self, s: &str, found: Found<'_>) -> Bits {
        let hay = Hay::new(s);
        let mut hits = 0;
        if let Some(i) = self.equals.find(&hay) {
            hits |= self.equal_bits.get(i).copied().unwrap_or(0);
        }
        self.prefixes.for_each_match(&hay, |bits| hits |= bits);
        self.suffixes.for_each_match(&hay, |bits| hits |= bits);
        for (few, bit) in &*self.substrings {
            if few.found_in(s) {
                hits |= bit;
            }
        }
        let mut bits = hits ^ self.table_negated;
        if !self.versions.is_empty() {
            bits |= self.on_version(s);
        }
        if self.string_rest.is_empty() {
            bits
        } else {
            bits | self.each(&self.string_rest, found)
        }
    }

    /// The bits of the version clauses that match `s`, parsed once for all of them.
    fn on_version(&self, s: &str) -> Bits {
        let bits = |hit: &dyn Fn(&Test) -> bool| {
            self.versions
                .iter()
                .filter_map(|&i| self.clauses.get(usize::from(i)))
                .filter(|p| hit(&p.clause.test) != p.clause.negate)
                .fold(0, |bits, p| bits | p.bit)
        };
        // Not a version: no comparison holds, so only negated clauses match.
        compare_version(s, |cmp| bits(&|test| test.on_version(cmp)))
            .unwrap_or_else(|| bits(&|_| false))
    }

    /// The bits of the clauses at `positions` that match `found`, each by its own test.
    fn each(&self, positions: &[u16], found: Found<'_>) -> Bits {
        let mut bits = 0;
        for &i in positions {
            if let Some(p) = self.clauses.get(usize::from(i))
                && p.clause.test(found, |_| false) == Outcome::Match
            {
                bits |= p.bit;
            }
        }
        bits
    }
}
