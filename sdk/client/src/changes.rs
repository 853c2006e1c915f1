//! Which flags an update changed: the flags whose definition differs, plus every flag whose
//! result can differ because something it depends on changed (a prerequisite flag, a segment
//! it matches on, a segment nested in that segment).
//!
//! Computed by comparing definitions, not versions, so a full `put` that repeats what the
//! client already holds reports nothing.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use vexil_eval::CompiledSnapshot;
use vexil_schema::{Clause, Flag, FlagConfig, Operator, Segment};

/// Dependency chains deeper than this are malformed for the engine (its limit is 32); past
/// it a flag is conservatively reported as changed, which also bounds the recursion.
const MAX_DEPTH: usize = 64;

/// What an update replaced directly.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Touched<'a> {
    /// Everything may have changed (a full replacement): every definition is compared.
    All,
    /// One flag was created, replaced or deleted.
    Flag(&'a str),
    /// One segment was created, replaced or deleted.
    Segment(&'a str),
}

/// The keys of the flags whose evaluation may differ between `old` and `new`, sorted. With
/// no `old` (first data), every flag of `new`.
pub(crate) fn changed_flags(
    old: Option<&CompiledSnapshot>,
    new: &CompiledSnapshot,
    touched: Touched<'_>,
) -> Vec<String> {
    let Some(old) = old else {
        let mut keys: Vec<String> = new.flag_keys().map(str::to_owned).collect();
        keys.sort_unstable();
        return keys;
    };
    let mut walk = Walk {
        old,
        new,
        touched,
        flags: Memo::with_capacity_and_hasher(new.len(), Default::default()),
        segments: Memo::default(),
    };
    let mut out: Vec<String> = new
        .flag_keys()
        .filter(|k| walk.flag(k, 0))
        .map(str::to_owned)
        .collect();
    // Deleted flags.
    match touched {
        Touched::All => out.extend(
            old.flag_keys()
                .filter(|k| new.flag(k).is_none())
                .map(str::to_owned),
        ),
        Touched::Flag(k) if old.flag(k).is_some() && new.flag(k).is_none() => {
            out.push(k.to_owned());
        }
        _ => {}
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[derive(Debug, Clone, Copy)]
enum Mark {
    Visiting,
    Done(bool),
}

/// Memo of the walk, keyed by the address of the flag or segment in the new snapshot: one
/// identity per item whichever string named it, and hashing an address is one multiply
/// (hashing every key with SipHash made a patch among 10,000 flags cost milliseconds).
type Memo = HashMap<usize, Mark, BuildHasherDefault<AddressHasher>>;

/// Hashes a `usize` address; falls back to FNV-1a for anything else.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_usize(&mut self, n: usize) {
        // Addresses are aligned (low bits zero): mix the high bits down after multiplying.
        let x = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 29);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The identity of an item for the memo.
fn address<T>(item: &T) -> usize {
    std::ptr::from_ref(item) as usize
}

struct Walk<'a> {
    old: &'a CompiledSnapshot,
    new: &'a CompiledSnapshot,
    touched: Touched<'a>,
    flags: Memo,
    segments: Memo,
}

impl<'a> Walk<'a> {
    fn flag_differs(&self, key: &str) -> bool {
        match self.touched {
            Touched::All => !same_flag(self.old.flag(key), self.new.flag(key)),
            Touched::Flag(k) => k == key && !same_flag(self.old.flag(key), self.new.flag(key)),
            Touched::Segment(_) => false,
        }
    }

    fn segment_differs(&self, key: &str) -> bool {
        // Definitions (borrowed, without key lists) first; the key lists are compared as
        // compiled sets, in O(1) when shared, so a one-key `delta` to a list of a million
        // is not a comparison of two million strings.
        let differs = || {
            !same_segment(
                self.old.segment_definition(key),
                self.new.segment_definition(key),
            ) || !self.old.same_segment_keys(self.new, key)
        };
        match self.touched {
            Touched::All => differs(),
            Touched::Segment(k) => k == key && differs(),
            Touched::Flag(_) => false,
        }
    }

    fn flag(&mut self, key: &'a str, depth: usize) -> bool {
        let new = self.new;
        let Some(f) = new.flag(key) else {
            // Deleted (or never there): changed if it existed before.
            return self.flag_differs(key);
        };
        let mut segments = segment_refs(f.config.rules.iter().flat_map(|r| &r.clauses)).peekable();
        let has_dependencies = !f.config.prerequisites.is_empty() || segments.peek().is_some();
        // For a patch, a flag that depends on nothing needs no memo: its answer is one key
        // comparison. Skipping the memo keeps a patch among 10,000 flags cheap. A full
        // replacement compares definitions, which is worth remembering.
        if !has_dependencies && !matches!(self.touched, Touched::All) {
            return self.flag_differs(key);
        }
        let id = address(f);
        match self.flags.get(&id) {
            Some(Mark::Done(changed)) => return *changed,
            // A cycle: the engine reports such flags as malformed whatever changes.
            Some(Mark::Visiting) => return false,
            None => {}
        }
        if depth > MAX_DEPTH {
            return true;
        }
        self.flags.insert(id, Mark::Visiting);
        let changed = self.flag_differs(key)
            || f.config
                .prerequisites
                .iter()
                .any(|p| self.flag(p.key.as_str(), depth + 1))
            || segments.any(|s| self.segment(s, depth + 1));
        self.flags.insert(id, Mark::Done(changed));
        changed
    }

    fn segment(&mut self, key: &'a str, depth: usize) -> bool {
        let new = self.new;
        let Some(segment) = new.segment_definition(key) else {
            return self.segment_differs(key);
        };
        let id = address(segment);
        match self.segments.get(&id) {
            Some(Mark::Done(changed)) => return *changed,
            Some(Mark::Visiting) => return false,
            None => {}
        }
        if depth > MAX_DEPTH {
            return true;
        }
        self.segments.insert(id, Mark::Visiting);
        let changed = self.segment_differs(key)
            || segment_refs(segment.rules.iter().flat_map(|r| &r.clauses))
                .any(|s| self.segment(s, depth + 1));
        self.segments.insert(id, Mark::Done(changed));
        changed
    }
}

/// Whether two flags evaluate alike: equal in everything but their `version`, which the
/// server bumps on saves that may change nothing.
fn same_flag(a: Option<&Flag>, b: Option<&Flag>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return a.is_none() && b.is_none();
    };
    // Exhaustive, so that a new field cannot be forgotten here.
    let FlagConfig {
        on,
        off_variation,
        targets,
        rules,
        fallthrough,
        prerequisites,
        salt,
        version: _,
    } = &a.config;
    a.key == b.key
        && a.kind == b.kind
        && a.variations == b.variations
        && *on == b.config.on
        && *off_variation == b.config.off_variation
        && *targets == b.config.targets
        && *rules == b.config.rules
        && *fallthrough == b.config.fallthrough
        && *prerequisites == b.config.prerequisites
        && *salt == b.config.salt
}

/// Whether two segment definitions match alike (equal but for `version`; their key lists are
/// compared by [`CompiledSnapshot::same_segment_keys`]).
fn same_segment(a: Option<&Segment>, b: Option<&Segment>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return a.is_none() && b.is_none();
    };
    let Segment {
        key,
        name: _,
        description: _,
        included,
        excluded,
        rules,
        salt,
        version: _,
    } = a;
    *key == b.key
        && *included == b.included
        && *excluded == b.excluded
        && *rules == b.rules
        && *salt == b.salt
}

/// The segment keys named by `segment_match` clauses.
fn segment_refs<'a>(clauses: impl Iterator<Item = &'a Clause>) -> impl Iterator<Item = &'a str> {
    clauses
        .filter(|c| c.op == Operator::SegmentMatch)
        .flat_map(|c| c.values.iter().filter_map(|v| v.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vexil_schema::EnvironmentSnapshot;

    fn snapshot(v: serde_json::Value) -> CompiledSnapshot {
        let s: EnvironmentSnapshot = serde_json::from_value(v).unwrap();
        CompiledSnapshot::compile(&s)
    }

    fn flag(key: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut f = json!({
            "key": key, "kind": "boolean",
            "variations": [{"value": true}, {"value": false}],
            "on": true, "off_variation": 1, "fallthrough": {"variation": 0}
        });
        for (k, v) in extra.as_object().unwrap() {
            f[k] = v.clone();
        }
        f
    }

    fn base() -> CompiledSnapshot {
        snapshot(json!({
            "version": 1,
            "flags": [
                flag("a", json!({})),
                flag("b", json!({"prerequisites": [{"key": "a", "variation": 0}]})),
                flag("c", json!({"rules": [{"id": "r", "serve": {"variation": 1}, "clauses": [
                    {"attribute": "", "op": "segment_match", "values": ["outer"]}
                ]}]})),
                flag("d", json!({})),
            ],
            "segments": [
                {"key": "outer", "rules": [{"id": "o", "clauses": [
                    {"attribute": "", "op": "segment_match", "values": ["inner"]}
                ]}]},
                {"key": "inner", "included": ["u1"]},
            ]
        }))
    }

    #[test]
    fn first_data_reports_every_flag() {
        assert_eq!(
            changed_flags(None, &base(), Touched::All),
            ["a", "b", "c", "d"]
        );
    }

    #[test]
    fn identical_data_reports_nothing() {
        let old = base();
        let mut new = base();
        new = new.with_flag(old.flag("d").unwrap().clone(), 2);
        assert!(changed_flags(Some(&old), &base(), Touched::All).is_empty());
        assert!(changed_flags(Some(&old), &new, Touched::Flag("d")).is_empty());
    }

    #[test]
    fn a_prerequisite_change_reaches_its_dependents() {
        let old = base();
        let mut a = old.flag("a").unwrap().clone();
        a.config.on = false;
        let new = old.with_flag(a, 2);
        assert_eq!(
            changed_flags(Some(&old), &new, Touched::Flag("a")),
            ["a", "b"]
        );
        assert_eq!(changed_flags(Some(&old), &new, Touched::All), ["a", "b"]);
    }

    #[test]
    fn a_nested_segment_change_reaches_the_flags_matching_on_it() {
        let old = base();
        let mut inner = old.segment("inner").unwrap().clone();
        inner.included.push("u2");
        let new = old.with_segment(inner, 2);
        assert_eq!(
            changed_flags(Some(&old), &new, Touched::Segment("inner")),
            ["c"]
        );
        assert_eq!(changed_flags(Some(&old), &new, Touched::All), ["c"]);
    }

    #[test]
    fn deletions_report_the_flag_and_its_dependents() {
        let old = base();
        let new = old.without_flag("a", 2);
        assert_eq!(
            changed_flags(Some(&old), &new, Touched::Flag("a")),
            ["a", "b"]
        );
        assert_eq!(changed_flags(Some(&old), &new, Touched::All), ["a", "b"]);
        let new = old.without_segment("inner", 2);
        assert_eq!(
            changed_flags(Some(&old), &new, Touched::Segment("inner")),
            ["c"]
        );
    }

    #[test]
    fn version_bumps_and_cosmetic_edits_are_not_changes() {
        let old = base();
        let mut d = old.flag("d").unwrap().clone();
        d.config.version = 99;
        let new = old.with_flag(d, 2);
        assert!(changed_flags(Some(&old), &new, Touched::Flag("d")).is_empty());
        let mut inner = old.segment("inner").unwrap().clone();
        inner.name = "Renamed".into();
        inner.version = 5;
        let new = old.with_segment(inner, 2);
        assert!(changed_flags(Some(&old), &new, Touched::All).is_empty());
    }

    #[test]
    fn cycles_terminate() {
        let old = snapshot(json!({"version": 1, "flags": [
            flag("x", json!({"prerequisites": [{"key": "y", "variation": 0}]})),
            flag("y", json!({"prerequisites": [{"key": "x", "variation": 0}]})),
        ]}));
        let mut x = old.flag("x").unwrap().clone();
        x.config.salt = "new".into();
        let new = old.with_flag(x, 2);
        assert_eq!(
            changed_flags(Some(&old), &new, Touched::Flag("x")),
            ["x", "y"]
        );
    }
}
