//! [`EnvironmentIndex`]: what exists in one environment, as far as validation needs to know.

use std::collections::HashMap;

use crate::key::{FlagKey, SegmentKey};
use crate::model::{
    Clause, EnvironmentSnapshot, Flag, FlagConfig, FlagDefinition, FlagKind, Operator,
    Prerequisite, Segment,
};

/// What validation knows of one flag of an environment.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct IndexedFlag {
    /// The flag's kind.
    pub kind: FlagKind,
    /// How many variations the flag has; valid indexes are `0..variation_count`.
    pub variation_count: usize,
    /// The flag's prerequisites in this environment, in configuration order.
    pub prerequisites: Vec<Prerequisite>,
    /// Segments the flag's rules refer to through `segment_match`, sorted, without duplicates.
    pub segments: Vec<SegmentKey>,
}

/// What validation knows of one segment of an environment.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct IndexedSegment {
    /// Segments this segment's rules refer to through `segment_match`, sorted, without
    /// duplicates.
    pub segments: Vec<SegmentKey>,
}

/// What exists in one environment: its flags (kind, variation count, prerequisites, segments
/// used) and its segments (segments they use).
///
/// Build it from a snapshot with [`EnvironmentIndex::from_snapshot`], or incrementally with the
/// `insert_*` and `remove_*` methods, and keep it current as writes are committed. The
/// `*_using_*` and [`flags_requiring`](Self::flags_requiring) queries tell whether a flag or
/// segment can be deleted without leaving a dangling reference.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvironmentIndex {
    flags: HashMap<FlagKey, IndexedFlag>,
    segments: HashMap<SegmentKey, IndexedSegment>,
}

impl EnvironmentIndex {
    /// An empty environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Indexes every flag and segment of a snapshot. If a key appears twice the last entry
    /// wins ([`super::validate_snapshot`] reports the duplicate).
    pub fn from_snapshot(s: &EnvironmentSnapshot) -> Self {
        let mut index = Self {
            flags: HashMap::with_capacity(s.flags.len()),
            segments: HashMap::with_capacity(s.segments.len()),
        };
        for flag in &s.flags {
            index.insert_flag(flag);
        }
        for seg in &s.segments {
            index.insert_segment(seg);
        }
        index
    }

    /// Adds or replaces a flag as a snapshot carries it.
    pub fn insert_flag(&mut self, flag: &Flag) {
        self.flags.insert(
            flag.key.clone(),
            indexed_flag(flag.kind, flag.variations.len(), &flag.config),
        );
    }

    /// Adds or replaces a flag from its definition and its configuration in this environment.
    pub fn insert_flag_config(&mut self, def: &FlagDefinition, cfg: &FlagConfig) {
        self.flags.insert(
            def.key.clone(),
            indexed_flag(def.kind, def.variations.len(), cfg),
        );
    }

    /// Adds a flag known only by its definition (no configuration in this environment yet), or
    /// updates an indexed flag's kind and variation count while keeping its references.
    pub fn insert_definition(&mut self, def: &FlagDefinition) {
        self.flags
            .entry(def.key.clone())
            .and_modify(|f| {
                f.kind = def.kind;
                f.variation_count = def.variations.len();
            })
            .or_insert_with(|| IndexedFlag {
                kind: def.kind,
                variation_count: def.variations.len(),
                prerequisites: Vec::new(),
                segments: Vec::new(),
            });
    }

    /// Removes a flag, returning what was known of it.
    pub fn remove_flag(&mut self, key: &str) -> Option<IndexedFlag> {
        self.flags.remove(key)
    }

    /// Adds or replaces a segment.
    pub fn insert_segment(&mut self, seg: &Segment) {
        let refs = segment_refs(seg.rules.iter().flat_map(|r| &r.clauses));
        self.segments
            .insert(seg.key.clone(), IndexedSegment { segments: refs });
    }

    /// Removes a segment, returning what was known of it.
    pub fn remove_segment(&mut self, key: &str) -> Option<IndexedSegment> {
        self.segments.remove(key)
    }

    /// The flag called `key`, if it exists.
    pub fn flag(&self, key: &str) -> Option<&IndexedFlag> {
        self.flags.get(key)
    }

    /// The segment called `key`, if it exists.
    pub fn segment(&self, key: &str) -> Option<&IndexedSegment> {
        self.segments.get(key)
    }

    /// Every flag, in no particular order.
    pub fn flags(&self) -> impl Iterator<Item = (&FlagKey, &IndexedFlag)> {
        self.flags.iter()
    }

    /// Every segment, in no particular order.
    pub fn segments(&self) -> impl Iterator<Item = (&SegmentKey, &IndexedSegment)> {
        self.segments.iter()
    }

    /// Flags that list `key` as a prerequisite, sorted by key.
    pub fn flags_requiring(&self, key: &str) -> Vec<&FlagKey> {
        let mut out: Vec<&FlagKey> = self
            .flags
            .iter()
            .filter(|(_, f)| f.prerequisites.iter().any(|p| p.key == key))
            .map(|(k, _)| k)
            .collect();
        out.sort();
        out
    }

    /// Flags whose rules match segment `key`, sorted by key.
    pub fn flags_using_segment(&self, key: &str) -> Vec<&FlagKey> {
        let mut out: Vec<&FlagKey> = self
            .flags
            .iter()
            .filter(|(_, f)| f.segments.iter().any(|s| s == key))
            .map(|(k, _)| k)
            .collect();
        out.sort();
        out
    }

    /// Other segments whose rules match segment `key`, sorted by key.
    pub fn segments_using_segment(&self, key: &str) -> Vec<&SegmentKey> {
        let mut out: Vec<&SegmentKey> = self
            .segments
            .iter()
            .filter(|(k, s)| *k != key && s.segments.iter().any(|r| r == key))
            .map(|(k, _)| k)
            .collect();
        out.sort();
        out
    }

    /// Number of flags.
    pub fn flag_count(&self) -> usize {
        self.flags.len()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

fn indexed_flag(kind: FlagKind, variation_count: usize, cfg: &FlagConfig) -> IndexedFlag {
    IndexedFlag {
        kind,
        variation_count,
        prerequisites: cfg.prerequisites.clone(),
        segments: segment_refs(cfg.rules.iter().flat_map(|r| &r.clauses)),
    }
}

/// The segment keys named by `segment_match` clauses, sorted and deduplicated. Values that are
/// not valid keys cannot name a segment and are skipped (validation reports them).
pub(crate) fn segment_refs<'a>(clauses: impl Iterator<Item = &'a Clause>) -> Vec<SegmentKey> {
    let mut refs: Vec<SegmentKey> = clauses
        .filter(|c| c.op == Operator::SegmentMatch)
        .flat_map(|c| &c.values)
        .filter_map(|v| v.as_str())
        .filter_map(|s| SegmentKey::parse(s).ok())
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot() -> EnvironmentSnapshot {
        serde_json::from_value(json!({
            "flags": [
                {"key": "a", "kind": "boolean", "variations": [{"value": true}, {"value": false}],
                 "off_variation": 1, "fallthrough": {"variation": 0},
                 "prerequisites": [{"key": "b", "variation": 0}],
                 "rules": [{"id": "r", "clauses": [
                    {"attribute": "", "op": "segment_match", "values": ["beta", "beta", "bad key"]}
                 ], "serve": {"variation": 0}}]},
                {"key": "b", "kind": "string", "variations": [{"value": "x"}],
                 "off_variation": 0, "fallthrough": {"variation": 0}}
            ],
            "segments": [
                {"key": "beta", "rules": [{"id": "r", "clauses": [
                    {"attribute": "", "op": "segment_match", "values": ["staff"]}]}]},
                {"key": "staff"}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn indexes_flags_and_segments() {
        let idx = EnvironmentIndex::from_snapshot(&snapshot());
        let a = idx.flag("a").unwrap();
        assert_eq!(a.variation_count, 2);
        assert_eq!(a.prerequisites[0].key, "b");
        assert_eq!(a.segments, vec![SegmentKey::parse("beta").unwrap()]);
        assert_eq!(idx.flag("b").unwrap().kind, FlagKind::String);
        assert_eq!(idx.segment("beta").unwrap().segments.len(), 1);
        assert!(idx.segment("staff").unwrap().segments.is_empty());
        assert_eq!((idx.flag_count(), idx.segment_count()), (2, 2));
    }

    #[test]
    fn answers_who_uses_what() {
        let idx = EnvironmentIndex::from_snapshot(&snapshot());
        assert_eq!(idx.flags_requiring("b"), vec!["a"]);
        assert!(idx.flags_requiring("a").is_empty());
        assert_eq!(idx.flags_using_segment("beta"), vec!["a"]);
        assert_eq!(idx.segments_using_segment("staff"), vec!["beta"]);
    }

    #[test]
    fn insert_and_remove() {
        let mut idx = EnvironmentIndex::from_snapshot(&snapshot());
        assert!(idx.remove_flag("a").is_some());
        assert!(idx.flag("a").is_none());
        assert!(idx.flags_requiring("b").is_empty());
        assert!(idx.remove_segment("staff").is_some());
        assert!(idx.remove_segment("staff").is_none());

        let def: FlagDefinition = serde_json::from_value(json!({
            "key": "b", "kind": "string", "variations": [{"value": "x"}, {"value": "y"}]
        }))
        .unwrap();
        idx.insert_definition(&def);
        assert_eq!(idx.flag("b").unwrap().variation_count, 2);
        let cfg = FlagConfig {
            prerequisites: vec![Prerequisite {
                key: FlagKey::parse("c").unwrap(),
                variation: 0,
            }],
            ..FlagConfig::serving(0)
        };
        idx.insert_flag_config(&def, &cfg);
        assert_eq!(idx.flags_requiring("c"), vec!["b"]);
        // Updating the definition keeps the references.
        idx.insert_definition(&def);
        assert_eq!(idx.flags_requiring("c"), vec!["b"]);
    }
}
