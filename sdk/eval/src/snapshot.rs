//! [`CompiledSnapshot`]: one environment's flags and segments, compiled for evaluation.

use std::fmt;
use std::sync::Arc;

use vexil_schema::delta::SegmentDelta;
use vexil_schema::{Context, EnvironmentSnapshot, ErrorKind, Flag, Segment};

use crate::compile::{CompiledFlag, CompiledSegment, compile_flag, compile_segment};
use crate::eval::NoTrace;
use crate::evaluation::Evaluation;
use crate::explain::{Explanation, explain};
use crate::link::{Links, link, relink_flag};
use crate::malformed::Malformation;
use crate::table::HashIndex;

/// One environment's flags and segments, compiled for evaluation.
///
/// Immutable: updates return a new snapshot that shares every unchanged compiled flag and
/// segment with the old one. `Send + Sync`; share it behind an `Arc` or `ArcSwap`.
///
/// ```
/// use vexil_eval::CompiledSnapshot;
/// use vexil_schema::{Context, EnvironmentSnapshot};
///
/// let snapshot: EnvironmentSnapshot = serde_json::from_value(serde_json::json!({
///     "version": 1,
///     "flags": [{
///         "key": "new-checkout", "kind": "boolean",
///         "variations": [{"value": true}, {"value": false}],
///         "on": true, "off_variation": 1, "fallthrough": {"variation": 0}
///     }]
/// })).unwrap();
/// let compiled = CompiledSnapshot::compile(&snapshot);
/// let eval = compiled.evaluate("new-checkout", &Context::new("user-1"));
/// assert!(eval.as_bool(false).value);
/// assert_eq!(eval.openfeature_reason(), "DEFAULT");
/// ```
#[derive(Clone, Default)]
pub struct CompiledSnapshot {
    /// The environment version.
    pub(crate) version: u64,
    /// Flags in snapshot order, one per key.
    pub(crate) flags: Vec<Arc<CompiledFlag>>,
    /// Flag key → position in `flags`; shared by snapshots with the same flag keys.
    pub(crate) flag_index: Arc<HashIndex>,
    /// Segments in snapshot order, one per key.
    pub(crate) segments: Vec<Arc<CompiledSegment>>,
    /// Segment key → position in `segments`; shared by snapshots with the same segment keys.
    pub(crate) segment_index: Arc<HashIndex>,
    /// References resolved against this snapshot's positions.
    pub(crate) links: Links,
}

impl fmt::Debug for CompiledSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledSnapshot")
            .field("version", &self.version)
            .field("flags", &self.flags.len())
            .field("segments", &self.segments.len())
            .finish()
    }
}

impl CompiledSnapshot {
    /// Compiles a snapshot. Never fails: a malformed flag compiles into a flag that
    /// evaluates to `ERROR(MALFORMED)`. When two flags (or segments) share a key, the later
    /// one wins.
    pub fn compile(snapshot: &EnvironmentSnapshot) -> Self {
        Self::compile_owned(snapshot.clone())
    }

    /// [`CompiledSnapshot::compile`] taking the snapshot by value: its flags and segments
    /// move into the compiled snapshot (which keeps each source definition) instead of
    /// being copied. Prefer it when the caller has no further use for the snapshot, e.g.
    /// one just decoded (for 10,000 flags the copy is tens of milliseconds).
    pub fn compile_owned(snapshot: EnvironmentSnapshot) -> Self {
        let flags = snapshot
            .flags
            .into_iter()
            .map(|f| Arc::new(compile_flag(f)))
            .collect();
        let segments = snapshot
            .segments
            .into_iter()
            .map(|s| Arc::new(compile_segment(s)))
            .collect();
        Self::assemble(snapshot.version, flags, segments)
    }

    /// Builds a snapshot from compiled parts: drops earlier duplicates, indexes, links.
    fn assemble(
        version: u64,
        mut flags: Vec<Arc<CompiledFlag>>,
        mut segments: Vec<Arc<CompiledSegment>>,
    ) -> Self {
        let flag_index = Arc::new(dedup_index(&mut flags, |f| f.source.key.as_str()));
        let segment_index = Arc::new(dedup_index(&mut segments, |s| s.source.key.as_str()));
        let links = link(&flags, &flag_index, &segments, &segment_index);
        Self {
            version,
            flags,
            flag_index,
            segments,
            segment_index,
            links,
        }
    }

    /// The environment version this snapshot reflects.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every flag key, in snapshot order.
    pub fn flag_keys(&self) -> impl Iterator<Item = &str> {
        self.flags.iter().map(|f| f.source.key.as_str())
    }

    /// The number of flags.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// Whether the snapshot has no flags.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// A flag's source definition.
    pub fn flag(&self, key: &str) -> Option<&Flag> {
        self.flag_position(key)
            .map(|p| &self.flags[p as usize].source)
    }

    /// A segment's source definition, key lists included (in list order). The lists are
    /// rebuilt from the compiled sets: O(keys). For the rest of the definition alone use
    /// [`CompiledSnapshot::segment_definition`].
    pub fn segment(&self, key: &str) -> Option<Segment> {
        self.segment_position(key)
            .map(|p| self.segments[p as usize].to_segment())
    }

    /// A segment's source definition *without* its `included` and `excluded` lists (empty
    /// here): name, rules, salt, version. Borrowed, O(1).
    pub fn segment_definition(&self, key: &str) -> Option<&Segment> {
        self.segment_position(key)
            .map(|p| &self.segments[p as usize].source)
    }

    /// Whether segment `key` has the same `included` and `excluded` lists (same keys, same
    /// order) here and in `other`, or is absent from both. O(1) when the lists are shared,
    /// as after a change to anything else.
    pub fn same_segment_keys(&self, other: &CompiledSnapshot, key: &str) -> bool {
        fn at<'s>(s: &'s CompiledSnapshot, key: &str) -> Option<&'s Arc<CompiledSegment>> {
            s.segment_position(key).map(|p| &s.segments[p as usize])
        }
        match (at(self, key), at(other, key)) {
            (Some(a), Some(b)) => {
                a.included.same_list(&b.included) && a.excluded.same_list(&b.excluded)
            }
            (a, b) => a.is_none() && b.is_none(),
        }
    }

    /// Why a flag evaluates to `ERROR(MALFORMED)` when it is on, or `None` if it evaluates
    /// (or is absent). An off flag still serves its off variation if that one is valid.
    pub fn malformation(&self, key: &str) -> Option<&Malformation> {
        let p = self.flag_position(key)? as usize;
        match &self.flags[p].body {
            Err(m) => Some(m),
            Ok(_) => self.links.flags.get(p)?.fault(),
        }
    }

    /// Every malformed flag and why, in snapshot order: for logs and dashboards.
    pub fn malformed_flags(&self) -> impl Iterator<Item = (&str, &Malformation)> {
        self.flags
            .iter()
            .zip(&self.links.flags)
            .filter_map(|(f, l)| {
                let m = f.body.as_ref().err().or(l.fault())?;
                Some((f.source.key.as_str(), m))
            })
    }

    /// Evaluates a flag for a context. Allocation-free; never fails or panics: errors are
    /// reported in the reason.
    #[inline]
    pub fn evaluate<'a>(&'a self, flag_key: &str, ctx: &Context) -> Evaluation<'a> {
        match self.flag_position(flag_key) {
            Some(pos) => self.eval_at(pos, ctx, &mut NoTrace, 0),
            None => Evaluation::error(ErrorKind::FlagNotFound),
        }
    }

    /// [`CompiledSnapshot::evaluate`], also returning the flag's position in this snapshot
    /// (`None` when the flag is absent), for callers that keep per-flag side tables such as
    /// evaluation counters: positions run from 0 to [`CompiledSnapshot::len`] in
    /// [`CompiledSnapshot::flag_keys`] order and are valid for this snapshot only.
    #[inline]
    pub fn evaluate_indexed<'a>(
        &'a self,
        flag_key: &str,
        ctx: &Context,
    ) -> (Option<u32>, Evaluation<'a>) {
        match self.flag_position(flag_key) {
            Some(pos) => (Some(pos), self.eval_at(pos, ctx, &mut NoTrace, 0)),
            None => (None, Evaluation::error(ErrorKind::FlagNotFound)),
        }
    }

    /// The source definition of the flag at `position` (see
    /// [`CompiledSnapshot::evaluate_indexed`]).
    pub fn flag_at(&self, position: u32) -> Option<&Flag> {
        self.flags.get(position as usize).map(|f| &f.source)
    }

    /// Evaluates a flag and records every step taken, for debugging tools and the
    /// "why did this user get this value" API. Allocates.
    pub fn explain(&self, flag_key: &str, ctx: &Context) -> Explanation {
        explain(self, flag_key, ctx)
    }

    /// A snapshot with `flag` added or replacing the flag with its key, at environment
    /// `version`. Only `flag` is compiled; references are re-linked.
    pub fn with_flag(&self, flag: Flag, version: u64) -> Self {
        let compiled = Arc::new(compile_flag(flag));
        let mut flags = self.flags.clone();
        match self.flag_position(&compiled.source.key) {
            Some(p) => {
                // Same keys at the same positions: the indexes stay valid, and only the new
                // flag's references need resolving.
                let old = std::mem::replace(&mut flags[p as usize], compiled);
                let links = relink_flag(
                    &self.links,
                    &flags,
                    &self.flag_index,
                    &self.segments,
                    &self.segment_index,
                    p as usize,
                    &old,
                );
                Self {
                    version,
                    flags,
                    flag_index: Arc::clone(&self.flag_index),
                    segments: self.segments.clone(),
                    segment_index: Arc::clone(&self.segment_index),
                    links,
                }
            }
            None => {
                flags.push(compiled);
                Self::assemble(version, flags, self.segments.clone())
            }
        }
    }

    /// A snapshot without the flag `key` (unchanged if absent), at environment `version`.
    pub fn without_flag(&self, key: &str, version: u64) -> Self {
        let mut flags = self.flags.clone();
        if let Some(p) = self.flag_position(key) {
            flags.remove(p as usize);
        }
        Self::assemble(version, flags, self.segments.clone())
    }

    /// A snapshot with `segment` added or replacing the segment with its key.
    pub fn with_segment(&self, segment: Segment, version: u64) -> Self {
        let compiled = Arc::new(compile_segment(segment));
        let mut segments = self.segments.clone();
        match self.segment_position(&compiled.source.key) {
            Some(p) => {
                segments[p as usize] = compiled;
                let links = link(
                    &self.flags,
                    &self.flag_index,
                    &segments,
                    &self.segment_index,
                );
                Self {
                    version,
                    flags: self.flags.clone(),
                    flag_index: Arc::clone(&self.flag_index),
                    segments,
                    segment_index: Arc::clone(&self.segment_index),
                    links,
                }
            }
            None => {
                segments.push(compiled);
                Self::assemble(version, self.flags.clone(), segments)
            }
        }
    }

    /// A snapshot with a segment's `included`/`excluded` lists edited by `delta` (the
    /// canonical list rules of [`vexil_schema::delta`]), at environment `version`; `None` if
    /// the snapshot has no such segment. The segment's rules and every reference are
    /// unchanged, so nothing is re-linked and no other item is touched.
    pub fn with_segment_delta(&self, delta: &SegmentDelta, version: u64) -> Option<Self> {
        let p = self.segment_position(delta.key.as_str())? as usize;
        let mut segments = self.segments.clone();
        segments[p] = Arc::new(self.segments[p].with_delta(delta));
        Some(Self {
            version,
            flags: self.flags.clone(),
            flag_index: Arc::clone(&self.flag_index),
            segments,
            segment_index: Arc::clone(&self.segment_index),
            links: self.links.clone(),
        })
    }

    /// A snapshot without the segment `key` (unchanged if absent).
    pub fn without_segment(&self, key: &str, version: u64) -> Self {
        let mut segments = self.segments.clone();
        if let Some(p) = self.segment_position(key) {
            segments.remove(p as usize);
        }
        Self::assemble(version, self.flags.clone(), segments)
    }

    /// The source data back, for persisting or serving: flags and segments in snapshot order.
    pub fn to_snapshot(&self) -> EnvironmentSnapshot {
        EnvironmentSnapshot {
            version: self.version,
            flags: self.flags.iter().map(|f| f.source.clone()).collect(),
            segments: self.segments.iter().map(|s| s.to_segment()).collect(),
        }
    }

    #[inline]
    pub(crate) fn flag_position(&self, key: &str) -> Option<u32> {
        self.flag_index
            .find(key, |p| self.flags[p as usize].source.key.as_str())
    }

    pub(crate) fn segment_position(&self, key: &str) -> Option<u32> {
        self.segment_index
            .find(key, |p| self.segments[p as usize].source.key.as_str())
    }
}

/// Drops all but the last item of each key (keeping the survivors' order) and indexes them.
fn dedup_index<T>(items: &mut Vec<T>, key: impl Fn(&T) -> &str) -> HashIndex {
    let index = HashIndex::build(items.len(), |p| key(&items[p as usize]));
    if index.len() == items.len() {
        return index;
    }
    let mut last = std::collections::HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        last.insert(key(item).to_owned(), i);
    }
    let mut i = 0;
    items.retain(|item| {
        i += 1;
        last.get(key(item)) == Some(&(i - 1))
    });
    HashIndex::build(items.len(), |p| key(&items[p as usize]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_keep_the_last() {
        let mut v = vec![("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)];
        let idx = dedup_index(&mut v, |x| x.0);
        assert_eq!(v, vec![("a", 3), ("c", 4), ("b", 5)]);
        assert_eq!(idx.find("b", |p| v[p as usize].0), Some(2));
    }

    fn flag(key: &str, prereq: Option<&str>) -> Flag {
        let prerequisites = prereq.map_or(
            serde_json::json!([]),
            |p| serde_json::json!([{"key": p, "variation": 0}]),
        );
        serde_json::from_value(serde_json::json!({
            "key": key, "kind": "boolean",
            "variations": [{"value": true}, {"value": false}],
            "on": true, "off_variation": 1, "fallthrough": {"variation": 0},
            "prerequisites": prerequisites
        }))
        .unwrap()
    }

    #[test]
    fn patches_that_close_and_open_a_cycle() {
        let ctx = Context::new("u");
        let snap = CompiledSnapshot::compile(&EnvironmentSnapshot {
            version: 1,
            flags: vec![flag("a", Some("b")), flag("b", None), flag("c", None)],
            segments: vec![],
        });
        assert_eq!(snap.evaluate("a", &ctx).variation, Some(0));
        let cyclic = snap.with_flag(flag("b", Some("a")), 2);
        assert_eq!(
            cyclic.malformation("a"),
            Some(&Malformation::PrerequisiteGraph)
        );
        assert_eq!(
            cyclic.malformation("b"),
            Some(&Malformation::PrerequisiteGraph)
        );
        let mut fixed = cyclic.with_flag(flag("b", None), 3);
        assert_eq!(fixed.malformation("a"), None);
        assert_eq!(fixed.evaluate("a", &ctx).variation, Some(0));
        // Many patches in a row stay consistent with a full compilation (and compact).
        for i in 0..200 {
            let prereq = if i % 3 == 0 { Some("a") } else { Some("c") };
            fixed = fixed.with_flag(flag("b", prereq), 4 + i);
            let full = CompiledSnapshot::compile(&fixed.to_snapshot());
            for key in ["a", "b", "c"] {
                assert_eq!(fixed.malformation(key), full.malformation(key), "{i} {key}");
                assert_eq!(
                    fixed.evaluate(key, &ctx),
                    full.evaluate(key, &ctx),
                    "{i} {key}"
                );
            }
        }
        assert!(
            fixed.links.targets.len() < 64,
            "abandoned references are compacted"
        );
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<CompiledSnapshot>();
    }
}
