//! Clauses: compiled once into a form that evaluates without parsing or allocating, and
//! matched against one attribute value.
//!
//! Compilation checks every operand with the schema's parsers (`vexil_schema::operand`) and
//! precomputes what it can: `in` lists become sorted number arrays and hashed string sets,
//! `lt`/`gt`/`before`/`after`/`semver_lt`/`semver_gt` keep only the bound that decides "any
//! value" (`x < any(v)` ⇔ `x < max(v)`), regular expressions become one `RegexSet`.
//!
//! This file holds the compiled representation and the matching; `compile` builds it.

use std::cmp::Ordering;
use std::collections::HashMap;

use regex::{Regex, RegexSet};
use semver::Version;
use serde_json::{Number, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use vexil_schema::operand::{parse_date_millis, parse_semver};

use vexil_schema::AttributeName as Name;

use crate::needle::{Hay, Needle};
use crate::table::HashIndex;

mod compile;
mod plan;

pub(crate) use compile::compile_clause;
pub(crate) use plan::{Bits, RulePlan, SlotPlan, plan};

/// Attribute slots below this are cached per evaluation (and may have a [`SlotPlan`]).
pub(crate) const CACHED: usize = 16;

/// `in` lists up to this long are scanned; longer ones are hashed.
const SCAN_LIMIT: usize = 8;

/// Which context value a clause (or a rollout) reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attr {
    /// The targeting key.
    Key,
    /// The context kind.
    Kind,
    /// A named attribute: an index into the owning flag's or segment's [`AttrNames`].
    Slot(u16),
}

/// The attribute names a flag or segment reads, each stored once; clauses refer to them by
/// slot so that evaluation looks each one up in the context at most once.
#[derive(Debug, Clone, Default)]
pub(crate) struct AttrNames {
    pub(crate) names: Vec<Name>,
    /// Name → slot, while compiling.
    slots: HashMap<Box<str>, u16>,
}

impl AttrNames {
    /// The [`Attr`] for `name`, adding a slot if it is new; `None` once 65,535 distinct
    /// names are in use.
    pub(crate) fn intern(&mut self, name: &str) -> Option<Attr> {
        match name {
            "key" => Some(Attr::Key),
            "kind" => Some(Attr::Kind),
            _ => {
                if let Some(&slot) = self.slots.get(name) {
                    return Some(Attr::Slot(slot));
                }
                let slot = u16::try_from(self.names.len()).ok()?;
                self.names.push(Name::new(name));
                self.slots.insert(name.into(), slot);
                Some(Attr::Slot(slot))
            }
        }
    }
}

impl AttrNames {
    /// The finished, read-only table.
    pub(crate) fn into_table(self) -> AttrTable {
        AttrTable {
            names: self.names.into(),
            plans: Box::default(),
        }
    }
}

/// The attribute names a compiled flag or segment reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct AttrTable {
    /// By slot.
    pub(crate) names: Box<[Name]>,
    /// By slot, for slots below [`CACHED`]; empty when no clause is planned.
    pub(crate) plans: Box<[SlotPlan]>,
}

/// A value read from the context for a clause.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Found<'c> {
    /// Absent.
    Missing,
    /// The targeting key or kind.
    Str(&'c str),
    /// A named attribute.
    Json(&'c Value),
}

/// What a clause concluded, for explanations; only `Match` counts as a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The clause matched.
    Match,
    /// The attribute was present and the clause did not match.
    NoMatch,
    /// The attribute was absent or null, so the clause did not match.
    Missing,
}

/// A compiled clause.
#[derive(Debug, Clone)]
pub(crate) struct CClause {
    /// The attribute read (unused by `segment_match`).
    pub(crate) attr: Attr,
    /// Whether the result is inverted.
    pub(crate) negate: bool,
    /// The comparison.
    pub(crate) test: Test,
}

/// A compiled comparison.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    /// `in`.
    In(InSet),
    /// `starts_with`.
    StartsWith(Box<[Needle]>),
    /// `ends_with`.
    EndsWith(Box<[Needle]>),
    /// `contains`.
    Contains(Substrings),
    /// `matches`.
    Matches(Matcher),
    /// `lt`, `lte`, `gt`, `gte`: the number lies in `[lo, hi]`. Strict bounds are moved one
    /// float inwards (`x < b` ⇔ `x <= b.next_down()`), so all four are one range check.
    Range(f64, f64),
    /// `before`, against the latest operand (epoch milliseconds).
    Before(i64),
    /// `after`, against the earliest operand.
    After(i64),
    /// `semver_eq`.
    SemverEq(Box<[Version]>),
    /// `semver_lt`, against the highest operand.
    SemverLt(Version),
    /// `semver_gt`, against the lowest operand.
    SemverGt(Version),
    /// `segment_match`: indexes into the owner's segment references.
    Segments(Box<[u32]>),
    /// `exists`.
    Exists,
    /// A value operator with an empty value list: matches nothing.
    Never,
}

/// Compiled `contains` operands.
#[derive(Debug, Clone)]
pub(crate) enum Substrings {
    /// An empty operand: every string contains it.
    Always,
    /// Operands of up to 64 bytes in all, found by one Shift-And pass.
    Few(crate::needle::FewSubstrings),
    /// One automaton finding any operand in a single pass over the value.
    Automaton(aho_corasick::AhoCorasick),
    /// Operands searched one by one (when the automaton could not be built).
    Each(Box<[Box<str>]>),
}

impl Substrings {
    /// Whether `s` contains any operand.
    #[inline]
    fn found_in(&self, s: &str) -> bool {
        match self {
            Substrings::Always => true,
            Substrings::Few(few) => few.found_in(s),
            Substrings::Automaton(ac) => ac.is_match(s),
            Substrings::Each(ps) => ps.iter().any(|p| s.contains(&**p)),
        }
    }
}

/// Compiled `matches` patterns.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    /// One automaton for all patterns.
    Set(RegexSet),
    /// Patterns tried one by one (when the combined automaton exceeds the size limit).
    Each(Box<[Regex]>),
}

/// The operands of an `in` clause, split by JSON type.
#[derive(Debug, Clone, Default)]
pub(crate) struct InSet {
    strings: Box<[Needle]>,
    /// Built only past [`SCAN_LIMIT`] strings.
    string_index: HashIndex,
    /// Integral numbers, sorted.
    ints: Box<[i128]>,
    /// Other numbers, sorted.
    floats: Box<[f64]>,
    /// Bit 0: `false` is listed; bit 1: `true` is listed.
    bools: u8,
}

/// A number as `in` compares it: integral values (whether written `1` or `1.0`) exactly,
/// others as floats.
#[derive(Debug, Clone, Copy, PartialEq)]
enum NumKey {
    Int(i128),
    Float(f64),
}

fn num_key(n: &Number) -> Option<NumKey> {
    if let Some(u) = n.as_u64() {
        return Some(NumKey::Int(i128::from(u)));
    }
    if let Some(i) = n.as_i64() {
        return Some(NumKey::Int(i128::from(i)));
    }
    let f = n.as_f64()?;
    // Integral floats below 2^126 convert to i128 exactly.
    if f.fract() == 0.0 && f.abs() < 8.5e37 {
        Some(NumKey::Int(f as i128))
    } else if f.is_finite() {
        Some(NumKey::Float(f))
    } else {
        None
    }
}

impl InSet {
    /// The string operands.
    pub(crate) fn strings(&self) -> impl Iterator<Item = &Needle> {
        self.strings.iter()
    }

    #[inline]
    fn contains_str(&self, s: &str) -> bool {
        if self.string_index.is_empty() {
            let hay = Hay::new(s);
            self.strings.iter().any(|x| hay.eq(x))
        } else {
            self.string_index
                .find(s, |p| self.strings[p as usize].as_str())
                .is_some()
        }
    }

    #[inline]
    fn contains_num(&self, n: &Number) -> bool {
        match num_key(n) {
            Some(NumKey::Int(i)) => self.ints.binary_search(&i).is_ok(),
            Some(NumKey::Float(f)) => self.floats.binary_search_by(|x| x.total_cmp(&f)).is_ok(),
            None => false,
        }
    }
}

/// `vexil_schema::operand::parse_date_millis` for a string held outside a `Value` (the
/// targeting key or kind); a unit test keeps the two in agreement.
fn date_millis_str(s: &str) -> Option<i64> {
    let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(dt.unix_timestamp_nanos() / 1_000_000).ok()
}

impl CClause {
    /// Tests the clause against `found`. `in_segment(i)` answers `segment_match` for the
    /// owner's `i`-th segment reference.
    #[inline]
    pub(crate) fn test(&self, found: Found<'_>, in_segment: impl FnMut(u32) -> bool) -> Outcome {
        // Dispatch on the value's type first (strings are by far the most common), then on
        // the operator within `on_str`/`on_num`: two short, well-predicted branches.
        let hit = if let Test::Segments(refs) = &self.test {
            refs.iter().copied().any(in_segment)
        } else if let Found::Json(Value::String(s)) = found {
            // The commonest clauses (string lists) inline; the rest behind a call.
            match &self.test {
                Test::In(set) if set.string_index.is_empty() => {
                    let hay = Hay::new(s);
                    set.strings.iter().any(|x| hay.eq(x))
                }
                Test::EndsWith(ps) => {
                    let hay = Hay::new(s);
                    ps.iter().any(|p| hay.ends_with(p))
                }
                Test::StartsWith(ps) => {
                    let hay = Hay::new(s);
                    ps.iter().any(|p| hay.starts_with(p))
                }
                test => test.on_str(s),
            }
        } else if let (Found::Json(Value::Number(n)), Test::Range(lo, hi)) = (found, &self.test) {
            let x = n.as_f64().unwrap_or(f64::NAN); // NaN compares false
            *lo <= x && x <= *hi
        } else {
            match self.test.on_other(found) {
                Some(hit) => hit,
                None => return Outcome::Missing,
            }
        };
        if hit != self.negate {
            Outcome::Match
        } else {
            Outcome::NoMatch
        }
    }
}

impl Test {
    /// The comparison (before negation) for anything but a string attribute; `None` for a
    /// missing or null attribute.
    #[inline(never)]
    fn on_other(&self, found: Found<'_>) -> Option<bool> {
        Some(match found {
            Found::Str(s) => self.on_str(s),
            Found::Json(Value::String(s)) => self.on_str(s),
            Found::Json(Value::Number(n)) => self.on_num(n),
            Found::Json(Value::Bool(b)) => self.on_bool(*b),
            Found::Json(Value::Array(items)) => {
                matches!(self, Test::Exists)
                    || items.iter().any(|v| match v {
                        Value::String(s) => self.on_str(s),
                        Value::Number(n) => self.on_num(n),
                        Value::Bool(b) => self.on_bool(*b),
                        _ => false,
                    })
            }
            Found::Json(Value::Object(_)) => matches!(self, Test::Exists),
            Found::Missing | Found::Json(Value::Null) => {
                if matches!(self, Test::Exists) {
                    false
                } else {
                    return None;
                }
            }
        })
    }

    /// Whether a string satisfies the comparison (before negation).
    #[inline(never)]
    fn on_str(&self, s: &str) -> bool {
        match self {
            Test::In(set) => set.contains_str(s),
            Test::StartsWith(ps) => {
                let hay = Hay::new(s);
                ps.iter().any(|p| hay.starts_with(p))
            }
            Test::EndsWith(ps) => {
                let hay = Hay::new(s);
                ps.iter().any(|p| hay.ends_with(p))
            }
            Test::Contains(ps) => ps.found_in(s),
            Test::Matches(Matcher::Set(set)) => set.is_match(s),
            Test::Matches(Matcher::Each(res)) => res.iter().any(|r| r.is_match(s)),
            Test::SemverEq(_) | Test::SemverLt(_) | Test::SemverGt(_) => {
                compare_version(s, |cmp| self.on_version(cmp)).unwrap_or(false)
            }
            Test::Before(b) => date_millis_str(s).is_some_and(|x| x < *b),
            Test::After(b) => date_millis_str(s).is_some_and(|x| x > *b),
            Test::Exists => true,
            Test::Range(..) => false,
            Test::Segments(_) | Test::Never => false,
        }
    }

    /// Whether a number satisfies the comparison (before negation).
    #[inline]
    fn on_num(&self, n: &Number) -> bool {
        let x = || n.as_f64().unwrap_or(f64::NAN); // NaN compares false
        match self {
            Test::In(set) => set.contains_num(n),
            Test::Range(lo, hi) => {
                let x = x();
                *lo <= x && x <= *hi
            }
            Test::Before(b) => number_date(n).is_some_and(|x| x < *b),
            Test::After(b) => number_date(n).is_some_and(|x| x > *b),
            Test::Exists => true,
            _ => false,
        }
    }

    /// Whether a boolean satisfies the comparison (before negation).
    #[inline]
    fn on_bool(&self, b: bool) -> bool {
        match self {
            Test::In(set) => set.bools & (1 << u8::from(b)) != 0,
            Test::Exists => true,
            _ => false,
        }
    }
}

/// Epoch milliseconds from a number attribute, as `parse_date_millis` reads it.
fn number_date(n: &Number) -> Option<i64> {
    parse_date_millis(&Value::Number(n.clone()))
}

impl Test {
    /// Whether a version satisfies a `semver_*` comparison (before negation), the version
    /// given by how it compares to an operand (see [`compare_version`]).
    #[inline]
    pub(crate) fn on_version(&self, cmp: impl Fn(&Version) -> Ordering) -> bool {
        match self {
            Test::SemverEq(vs) => vs.iter().any(|o| cmp(o) == Ordering::Equal),
            Test::SemverLt(b) => cmp(b) == Ordering::Less,
            Test::SemverGt(b) => cmp(b) == Ordering::Greater,
            _ => false,
        }
    }
}

/// Reads the version in `s` once and gives `f` its SemVer precedence against any operand
/// (build metadata ignored): a plain release is compared without building a `Version`.
/// `None` if `s` is not a version (then no `semver_*` comparison holds).
#[inline]
pub(crate) fn compare_version<R>(
    s: &str,
    f: impl FnOnce(&dyn Fn(&Version) -> Ordering) -> R,
) -> Option<R> {
    if let Some(core) = quick_semver(s) {
        return Some(f(&|o| cmp_release(core, o)));
    }
    let version = parse_semver(s)?;
    Some(f(&|o| version.cmp_precedence(o)))
}

/// Parses the common plain form `v?MAJOR(.MINOR(.PATCH)?)?` (no pre-release, no build, no
/// leading zeros) without allocating; anything else is left to `parse_semver`. Gives the
/// same version `parse_semver` would (a property test checks it).
fn quick_semver(s: &str) -> Option<[u64; 3]> {
    let b = s.as_bytes();
    let b = b.strip_prefix(b"v").unwrap_or(b);
    let mut out = [0u64; 3];
    let (mut part, mut digits, mut first) = (0usize, 0usize, 0u8);
    for &c in b {
        if c == b'.' {
            // An empty part, or a leading zero in a part longer than one digit.
            if digits == 0 || (digits > 1 && first == b'0') || part == 2 {
                return None;
            }
            part += 1;
            digits = 0;
        } else if c.is_ascii_digit() {
            if digits == 0 {
                first = c;
            }
            digits += 1;
            if digits > 19 {
                return None;
            }
            let slot = out.get_mut(part)?;
            *slot = *slot * 10 + u64::from(c - b'0');
        } else {
            return None;
        }
    }
    if digits == 0 || (digits > 1 && first == b'0') {
        return None;
    }
    Some(out)
}

/// SemVer precedence of a plain release against a parsed version.
#[inline]
fn cmp_release(core: [u64; 3], other: &Version) -> Ordering {
    core.cmp(&[other.major, other.minor, other.patch])
        .then(if other.pre.is_empty() {
            Ordering::Equal
        } else {
            Ordering::Greater // a release ranks above its pre-releases
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::malformed::Malformation;
    use serde_json::json;
    use vexil_schema::model::{Clause, Operator};

    fn clause(attr: &str, op: Operator, values: Value, negate: bool) -> CClause {
        let c = Clause {
            attribute: attr.into(),
            op,
            values: serde_json::from_value(values).unwrap(),
            negate,
        };
        compile_clause(&c, "c", &mut AttrNames::default(), |_| 0).unwrap()
    }

    fn hit(c: &CClause, v: Value) -> bool {
        c.test(Found::Json(&v), |_| false) == Outcome::Match
    }

    #[test]
    fn in_compares_numbers_by_value_and_strings_exactly() {
        let c = clause("a", Operator::In, json!(["x", 1, 2.5, true]), false);
        assert!(hit(&c, json!("x")));
        assert!(!hit(&c, json!("X")));
        assert!(hit(&c, json!(1.0)));
        assert!(hit(&c, json!(2.5)));
        assert!(hit(&c, json!(true)));
        assert!(!hit(&c, json!(false)));
        assert!(!hit(&c, json!("1")));
        assert!(hit(&c, json!(["y", "x"])));
        assert!(!hit(&c, json!({"x": 1})));
    }

    #[test]
    fn long_in_lists_are_hashed() {
        let vals: Vec<Value> = (0..100).map(|i| json!(format!("v{i}"))).collect();
        let c = clause("a", Operator::In, Value::Array(vals), false);
        assert!(matches!(&c.test, Test::In(s) if !s.string_index.is_empty()));
        assert!(hit(&c, json!("v99")));
        assert!(!hit(&c, json!("v100")));
    }

    #[test]
    fn missing_never_matches_even_negated() {
        let c = clause("a", Operator::In, json!(["x"]), true);
        assert_eq!(c.test(Found::Missing, |_| false), Outcome::Missing);
        assert_eq!(
            c.test(Found::Json(&Value::Null), |_| false),
            Outcome::Missing
        );
        assert!(hit(&c, json!("y")));
        assert!(!hit(&c, json!("x")));
    }

    #[test]
    fn exists_and_its_negation() {
        let c = clause("a", Operator::Exists, json!([]), false);
        assert!(hit(&c, json!(0)));
        assert_eq!(c.test(Found::Missing, |_| false), Outcome::NoMatch);
        let n = clause("a", Operator::Exists, json!([]), true);
        assert_eq!(n.test(Found::Missing, |_| false), Outcome::Match);
        assert!(!hit(&n, json!("x")));
    }

    #[test]
    fn bounds_use_the_deciding_operand() {
        assert!(hit(
            &clause("a", Operator::Lt, json!([1, 10]), false),
            json!(5)
        ));
        assert!(!hit(
            &clause("a", Operator::Gt, json!([1, 10]), false),
            json!(1)
        ));
        assert!(hit(
            &clause("a", Operator::Gte, json!([1, 10]), false),
            json!(1)
        ));
        assert!(!hit(
            &clause("a", Operator::Lt, json!([1]), false),
            json!("0")
        ));
        assert!(hit(
            &clause("v", Operator::SemverLt, json!(["1.0.0", "2.0.0"]), false),
            json!("1.5")
        ));
        assert!(hit(
            &clause("v", Operator::SemverEq, json!(["1.2.3+build"]), false),
            json!("v1.2.3")
        ));
        assert!(hit(
            &clause(
                "d",
                Operator::Before,
                json!(["2026-01-01T00:00:00Z"]),
                false
            ),
            json!(0)
        ));
    }

    #[test]
    fn strict_bounds_are_exact() {
        let lt0 = clause("a", Operator::Lt, json!([0]), false);
        assert!(!hit(&lt0, json!(0)));
        assert!(!hit(&lt0, json!(-0.0)));
        assert!(hit(&lt0, json!(-1e-300)));
        let gt0 = clause("a", Operator::Gt, json!([0.0]), false);
        assert!(!hit(&gt0, json!(-0.0)));
        assert!(hit(&gt0, json!(5e-324)));
        let lte = clause("a", Operator::Lte, json!([1.5]), false);
        assert!(hit(&lte, json!(1.5)));
        assert!(!hit(&lte, json!(1.5000000000000002)));
    }

    #[test]
    fn regex_sets_and_bad_operands() {
        let c = clause("e", Operator::Matches, json!(["^a", "z$"]), false);
        assert!(matches!(c.test, Test::Matches(Matcher::Set(_))));
        assert!(hit(&c, json!("abc")));
        assert!(hit(&c, json!("xyz")));
        assert!(!hit(&c, json!("m")));
        let bad = Clause {
            attribute: "e".into(),
            op: Operator::Matches,
            values: vec![json!("ok"), json!("(")],
            negate: false,
        };
        let err = compile_clause(
            &bad,
            "rules[0].clauses[1]",
            &mut AttrNames::default(),
            |_| 0,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Malformation::Operand { path, .. } if path == "rules[0].clauses[1].values[1]"),
            "{err:?}"
        );
    }

    #[test]
    fn key_dates_agree_with_the_schema_parser() {
        for s in [
            "2026-01-31T12:00:00Z",
            "1970-01-01T01:00:00.5+01:00",
            "nope",
            "",
        ] {
            assert_eq!(date_millis_str(s), parse_date_millis(&json!(s)), "{s}");
        }
    }

    proptest::proptest! {
        /// The allocation-free semver fast path agrees with the schema's parser.
        #[test]
        fn quick_semver_agrees(s in "v?[0-9]{1,3}(\\.[0-9]{1,3}){0,3}[-+]?[a-z0-9.]{0,3}") {
            if let Some(core) = quick_semver(&s) {
                let v = parse_semver(&s).expect("parse_semver accepts the plain form");
                proptest::prop_assert_eq!(core, [v.major, v.minor, v.patch]);
                proptest::prop_assert!(v.pre.is_empty());
            }
        }
    }

    #[test]
    fn semver_precedence_of_releases() {
        let pre = parse_semver("2.0.0-rc.1").unwrap();
        assert_eq!(cmp_release([2, 0, 0], &pre), Ordering::Greater);
        assert_eq!(cmp_release([1, 9, 9], &pre), Ordering::Less);
        let build = parse_semver("2.0.0+b7").unwrap();
        assert_eq!(cmp_release([2, 0, 0], &build), Ordering::Equal);
        assert_eq!(quick_semver("v1.10"), Some([1, 10, 0]));
        assert_eq!(quick_semver("01.2.3"), None);
        assert_eq!(quick_semver("1.2.3.4"), None);
    }

    #[test]
    fn empty_value_lists_match_nothing() {
        let c = clause("a", Operator::In, json!([]), false);
        assert!(!hit(&c, json!("x")));
        let n = clause("a", Operator::StartsWith, json!([]), true);
        assert!(hit(&n, json!("x")));
    }
}
