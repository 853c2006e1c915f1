//! Which flags a change can affect: [`CompiledSnapshot::flags_affected_since`].
//!
//! A per-context evaluated stream (a browser's) re-evaluates, on each change, only the
//! flags whose answer could differ. Snapshots share every unchanged compiled flag and
//! segment (`Arc`), so "changed" is a pointer comparison; what a changed item reaches is
//! followed through the reference graph:
//!
//! - a flag is affected when it is new or its compiled form is not the one of `prev`;
//! - a segment is affected when it is new, replaced or removed, or (transitively) nests an
//!   affected segment through `segment_match`; a flag referencing an affected segment is
//!   affected;
//! - a flag whose prerequisite is affected or removed is affected, transitively (which also
//!   covers cycles and depth faults the change creates: they run through the changed flag).
//!
//! The answer may include flags whose value does not move (a no-op edit recompiles the
//! flag): callers compare the evaluations. It never omits a flag whose value can move.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::snapshot::CompiledSnapshot;

/// The flags whose evaluation may differ between two snapshots (see
/// [`CompiledSnapshot::flags_affected_since`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AffectedFlags {
    /// Flags of the newer snapshot whose evaluation may differ, in its snapshot order.
    pub changed: Vec<Box<str>>,
    /// Flags of the older snapshot absent from the newer one, in the older one's order.
    pub removed: Vec<Box<str>>,
}

impl AffectedFlags {
    /// Whether nothing can have changed.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }
}

impl CompiledSnapshot {
    /// The flags whose evaluation for some context may differ between `prev` and this
    /// snapshot: changed flags, flags using a changed segment, and flags whose prerequisites
    /// are (transitively) affected; plus the flags removed. O(flags + segments + references);
    /// compute it once per change and share it between the streams that need it.
    pub fn flags_affected_since(&self, prev: &CompiledSnapshot) -> AffectedFlags {
        let segments = self.segments_affected_since(prev);

        let mut affected = vec![false; self.flags.len()];
        for (i, f) in self.flags.iter().enumerate() {
            let same = match prev.flags.get(i) {
                // Snapshots patched in place keep positions: the common case is O(1).
                Some(p) if Arc::ptr_eq(p, f) => true,
                _ => prev
                    .flag_position(&f.source.key)
                    .is_some_and(|p| Arc::ptr_eq(&prev.flags[p as usize], f)),
            };
            let uses_changed_segment = !segments.is_empty()
                && f.body
                    .as_ref()
                    .is_ok_and(|b| b.segment_refs.iter().any(|s| segments.contains(s.as_ref())));
            affected[i] = !same || uses_changed_segment;
        }
        let removed: Vec<Box<str>> = prev
            .flags
            .iter()
            .map(|f| f.source.key.as_str())
            .filter(|k| self.flag_position(k).is_none())
            .map(Box::from)
            .collect();

        // Prerequisites: walk from every affected or removed flag to its dependents.
        let mut frontier: Vec<&str> = removed.iter().map(AsRef::as_ref).collect();
        frontier.extend(
            self.flags
                .iter()
                .zip(&affected)
                .filter(|(_, a)| **a)
                .map(|(f, _)| f.source.key.as_str()),
        );
        if !frontier.is_empty() {
            let mut dependents: HashMap<&str, Vec<usize>> = HashMap::new();
            for (i, f) in self.flags.iter().enumerate() {
                for p in &f.source.config.prerequisites {
                    dependents.entry(p.key.as_str()).or_default().push(i);
                }
            }
            if !dependents.is_empty() {
                while let Some(key) = frontier.pop() {
                    for &i in dependents.get(key).map_or(&[][..], Vec::as_slice) {
                        if !affected[i] {
                            affected[i] = true;
                            frontier.push(self.flags[i].source.key.as_str());
                        }
                    }
                }
            }
        }

        AffectedFlags {
            changed: self
                .flags
                .iter()
                .zip(&affected)
                .filter(|(_, a)| **a)
                .map(|(f, _)| Box::from(f.source.key.as_str()))
                .collect(),
            removed,
        }
    }

    /// Keys of segments new, replaced or removed since `prev`, and of those nesting them.
    fn segments_affected_since<'a>(&'a self, prev: &'a CompiledSnapshot) -> HashSet<&'a str> {
        let mut out: HashSet<&str> = HashSet::new();
        for (i, s) in self.segments.iter().enumerate() {
            let same = match prev.segments.get(i) {
                Some(p) if Arc::ptr_eq(p, s) => true,
                _ => prev
                    .segment_position(&s.source.key)
                    .is_some_and(|p| Arc::ptr_eq(&prev.segments[p as usize], s)),
            };
            if !same {
                out.insert(s.source.key.as_str());
            }
        }
        for s in &prev.segments {
            if self.segment_position(&s.source.key).is_none() {
                out.insert(s.source.key.as_str());
            }
        }
        // Nesting: a segment referencing an affected one is affected. Segments are few and
        // nesting is bounded, so repeating the scan until nothing grows is cheap.
        while !out.is_empty() {
            let mut grew = false;
            for s in &self.segments {
                let key = s.source.key.as_str();
                if out.contains(key) {
                    continue;
                }
                if s.body
                    .as_ref()
                    .is_ok_and(|b| b.segment_refs.iter().any(|r| out.contains(r.as_ref())))
                {
                    out.insert(key);
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use vexil_schema::{EnvironmentSnapshot, Flag, Segment};

    use super::*;

    fn flag(key: &str, prereq: Option<&str>, segment: Option<&str>) -> Flag {
        let prerequisites = prereq.map_or(json!([]), |p| json!([{"key": p, "variation": 0}]));
        let rules = segment.map_or(json!([]), |s| {
            json!([{"id": "r", "clauses": [{"attribute": "", "op": "segment_match", "values": [s]}],
                    "serve": {"variation": 0}}])
        });
        serde_json::from_value(json!({
            "key": key, "kind": "boolean",
            "variations": [{"value": true}, {"value": false}],
            "on": true, "off_variation": 1, "fallthrough": {"variation": 1},
            "prerequisites": prerequisites, "rules": rules
        }))
        .unwrap()
    }

    fn segment(key: &str, included: &[&str], nested: Option<&str>) -> Segment {
        let rules = nested.map_or(json!([]), |s| {
            json!([{"id": "n", "clauses": [{"attribute": "", "op": "segment_match", "values": [s]}]}])
        });
        serde_json::from_value(json!({"key": key, "included": included, "rules": rules})).unwrap()
    }

    /// a ← b ← c (c requires b, b requires a); d uses segment "inner" through "outer";
    /// e uses nothing.
    fn base() -> CompiledSnapshot {
        CompiledSnapshot::compile(&EnvironmentSnapshot {
            version: 1,
            flags: vec![
                flag("a", None, None),
                flag("b", Some("a"), None),
                flag("c", Some("b"), None),
                flag("d", None, Some("outer")),
                flag("e", None, None),
            ],
            segments: vec![
                segment("inner", &["u1"], None),
                segment("outer", &[], Some("inner")),
            ],
        })
    }

    fn changed(a: &AffectedFlags) -> Vec<&str> {
        a.changed.iter().map(AsRef::as_ref).collect()
    }

    #[test]
    fn nothing_changed_affects_nothing() {
        let s = base();
        assert!(s.flags_affected_since(&s).is_empty());
        let same_flags = s.with_segment_delta(
            &serde_json::from_value(json!({"key": "unused", "version": 2})).unwrap(),
            2,
        );
        assert!(same_flags.is_none(), "no such segment");
    }

    #[test]
    fn a_changed_flag_affects_itself_and_its_dependents_transitively() {
        let s = base();
        let next = s.with_flag(flag("a", None, None), 2);
        assert_eq!(changed(&next.flags_affected_since(&s)), ["a", "b", "c"]);
        let next = s.with_flag(flag("c", Some("b"), None), 2);
        assert_eq!(changed(&next.flags_affected_since(&s)), ["c"]);
        let next = s.with_flag(flag("e", None, None), 2);
        assert_eq!(changed(&next.flags_affected_since(&s)), ["e"]);
    }

    #[test]
    fn a_changed_segment_affects_flags_using_it_even_through_nesting() {
        let s = base();
        let next = s.with_segment(segment("inner", &["u2"], None), 2);
        let a = next.flags_affected_since(&s);
        assert_eq!(changed(&a), ["d"]);
        let delta = serde_json::from_value(
            json!({"key": "inner", "version": 3, "included": {"add": ["u3"]}}),
        )
        .unwrap();
        let next = s.with_segment_delta(&delta, 3).unwrap();
        assert_eq!(changed(&next.flags_affected_since(&s)), ["d"]);
        let next = s.without_segment("inner", 4);
        assert_eq!(changed(&next.flags_affected_since(&s)), ["d"]);
    }

    #[test]
    fn removed_flags_are_listed_and_their_dependents_affected() {
        let s = base();
        let next = s.without_flag("b", 2);
        let a = next.flags_affected_since(&s);
        assert_eq!(a.removed, vec![Box::from("b")]);
        assert_eq!(changed(&a), ["c"]);
        // Added back: b is new, c depends on it.
        let back = next.with_flag(flag("b", Some("a"), None), 3);
        let a = back.flags_affected_since(&next);
        assert!(a.removed.is_empty());
        assert_eq!(changed(&a), ["c", "b"]);
    }

    #[test]
    fn a_full_recompile_affects_everything() {
        let s = base();
        let again = CompiledSnapshot::compile(&s.to_snapshot());
        assert_eq!(
            changed(&again.flags_affected_since(&s)),
            ["a", "b", "c", "d", "e"]
        );
    }

    #[test]
    fn a_cycle_made_elsewhere_reaches_the_flags_in_it() {
        let s = base();
        // a now requires c: a → c → b → a. Every flag of the cycle is affected.
        let next = s.with_flag(flag("a", Some("c"), None), 2);
        let a = next.flags_affected_since(&s);
        assert_eq!(changed(&a), ["a", "b", "c"]);
        assert!(next.malformation("b").is_some());
    }

    /// Whatever changes, every flag whose evaluation moved for some context is listed.
    #[test]
    fn no_flag_whose_value_moved_is_missed() {
        let contexts: Vec<vexil_schema::Context> = ["u1", "u2", "u3", "x"]
            .into_iter()
            .map(vexil_schema::Context::new)
            .collect();
        let s = base();
        let edits: Vec<CompiledSnapshot> = vec![
            s.with_flag(
                serde_json::from_value(json!({
                    "key": "a", "kind": "boolean",
                    "variations": [{"value": true}, {"value": false}],
                    "on": false, "off_variation": 1, "fallthrough": {"variation": 0}
                }))
                .unwrap(),
                2,
            ),
            s.with_segment(segment("inner", &["u2", "u3"], None), 2),
            s.without_flag("a", 2),
            s.without_segment("outer", 2),
            s.with_flag(flag("a", Some("c"), None), 2),
        ];
        for next in &edits {
            let a = next.flags_affected_since(&s);
            for key in next.flag_keys() {
                let moved = contexts
                    .iter()
                    .any(|c| next.evaluate(key, c) != s.evaluate(key, c));
                if moved {
                    assert!(
                        a.changed.iter().any(|k| &**k == key),
                        "{key} moved but is not listed: {a:?}"
                    );
                }
            }
        }
    }
}
