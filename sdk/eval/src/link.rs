//! Resolving references between compiled flags and segments for one snapshot.
//!
//! Compiled flags and segments name their prerequisites and segments by key; linking turns
//! every key into a position in the snapshot (or [`MISSING`]) and decides, once per
//! snapshot, which flags and segments are unusable because of the graph they sit in:
//!
//! - a flag whose prerequisites (transitively) form a cycle, a chain deeper than
//!   [`MAX_DEPTH`], or expand into more than [`MAX_EXPANSION`] evaluations is malformed;
//! - the same for segments nested through `segment_match` clauses;
//! - a segment that references a malformed segment is malformed, and so is a flag that
//!   references a malformed segment. (A flag whose prerequisite is malformed is *not*: the
//!   prerequisite simply fails at evaluation time.)
//!
//! Linking costs O(flags + segments + references), hashing each reference once. Replacing one
//! flag re-links only that flag's references ([`relink_flag`]); other updates re-link
//! everything. Neither recompiles anything.

use std::sync::Arc;

use crate::compile::{CompiledFlag, CompiledSegment};
use crate::malformed::{MAX_DEPTH, MAX_EXPANSION, Malformation};
use crate::table::HashIndex;

/// A reference to a flag or segment absent from the snapshot.
pub(crate) const MISSING: u32 = u32::MAX;

/// A flag's resolved references.
#[derive(Debug, Clone)]
pub(crate) struct FlagLink {
    /// The first malformed segment it references, if any.
    segment_fault: Option<Box<Malformation>>,
    /// Whether its prerequisite graph exceeds the bounds (cycle, depth, expansion).
    graph_fault: bool,
    /// Start, in [`Links::targets`], of the flag positions of its prerequisites.
    pub(crate) prerequisites: u32,
    /// How many prerequisites were resolved (0 for a flag with a malformed body).
    prerequisite_count: u32,
    /// Start, in [`Links::targets`], of the segment positions of its segment references.
    pub(crate) segments: u32,
    /// How many segment references were resolved.
    segment_count: u32,
}

/// The fault reported for every flag whose prerequisite graph exceeds the bounds.
static PREREQUISITE_GRAPH: Malformation = Malformation::PrerequisiteGraph;

impl FlagLink {
    /// Why the flag is unusable in this snapshot, beyond its own body.
    #[inline]
    pub(crate) fn fault(&self) -> Option<&Malformation> {
        match &self.segment_fault {
            Some(m) => Some(m),
            None if self.graph_fault => Some(&PREREQUISITE_GRAPH),
            None => None,
        }
    }
}

/// A segment's resolved references.
#[derive(Debug, Clone)]
pub(crate) struct SegmentLink {
    /// Why the segment is unusable in this snapshot, beyond its own body.
    pub(crate) fault: Option<Malformation>,
    /// Start, in [`Links::targets`], of the segment positions of its nested references.
    pub(crate) segments: u32,
}

/// Every resolved reference of a snapshot.
#[derive(Debug, Clone, Default)]
pub(crate) struct Links {
    /// One per flag, in snapshot order.
    pub(crate) flags: Vec<FlagLink>,
    /// One per segment, in snapshot order.
    pub(crate) segments: Vec<SegmentLink>,
    /// Positions referred to, in runs starting at the `FlagLink`/`SegmentLink` offsets.
    pub(crate) targets: Vec<u32>,
    /// Per segment: unusable (malformed body, graph, or references an unusable segment).
    segment_bad: Vec<bool>,
    /// Entries of `targets` no longer referred to (left behind by [`relink_flag`]).
    garbage: usize,
}

/// Links `flags` and `segments`, whose keys are indexed by `flag_index` and `segment_index`.
pub(crate) fn link(
    flags: &[Arc<CompiledFlag>],
    flag_index: &HashIndex,
    segments: &[Arc<CompiledSegment>],
    segment_index: &HashIndex,
) -> Links {
    let find_flag = |key: &str| {
        flag_index
            .find(key, |p| flags[p as usize].source.key.as_str())
            .unwrap_or(MISSING)
    };
    let find_segment = |key: &str| {
        segment_index
            .find(key, |p| segments[p as usize].source.key.as_str())
            .unwrap_or(MISSING)
    };
    // Offsets are u32: a snapshot with four billion references is not a real input, and
    // evaluation reads targets with `get`, so an overflow could only fail to resolve.
    let mut targets = Vec::new();

    // Segments first: whether each is usable decides whether flags referencing it are.
    let mut segment_links = Vec::with_capacity(segments.len());
    let mut segment_children: Vec<&[u32]> = Vec::with_capacity(segments.len());
    let mut spans = Vec::with_capacity(segments.len());
    for s in segments {
        let start = targets.len();
        if let Ok(body) = &s.body {
            targets.extend(body.segment_refs.iter().map(|k| find_segment(k)));
        }
        spans.push(start..targets.len());
        segment_links.push(SegmentLink {
            fault: None,
            segments: start as u32,
        });
    }
    for span in &spans {
        segment_children.push(&targets[span.clone()]);
    }
    let over = bounds_exceeded(&segment_children);
    let mut bad: Vec<bool> = segments.iter().map(|s| s.body.is_err()).collect();
    for (i, link) in segment_links.iter_mut().enumerate() {
        if over[i] && !bad[i] {
            link.fault = Some(Malformation::SegmentGraph);
            bad[i] = true;
        }
    }
    // A segment referencing an unusable segment is unusable. Usable segments are at most
    // MAX_DEPTH deep, so this settles within that many rounds.
    loop {
        let mut changed = false;
        for i in 0..segments.len() {
            if bad[i] {
                continue;
            }
            if let Some(&c) = segment_children[i]
                .iter()
                .find(|&&c| c != MISSING && bad[c as usize])
            {
                segment_links[i].fault = Some(Malformation::MalformedSegment {
                    segment: segments[c as usize].source.key.to_string(),
                });
                bad[i] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    drop(segment_children);

    let mut flag_links = Vec::with_capacity(flags.len());
    for f in flags {
        flag_links.push(resolve_flag(
            f,
            &mut targets,
            &bad,
            &find_flag,
            &find_segment,
        ));
    }
    let mut links = Links {
        flags: flag_links,
        segments: segment_links,
        targets,
        segment_bad: bad,
        garbage: 0,
    };
    check_prerequisite_graph(&mut links, flags);
    links
}

/// Resolves one flag's references, appending them to `targets`.
fn resolve_flag(
    f: &CompiledFlag,
    targets: &mut Vec<u32>,
    segment_bad: &[bool],
    find_flag: &impl Fn(&str) -> u32,
    find_segment: &impl Fn(&str) -> u32,
) -> FlagLink {
    let p_start = targets.len();
    if f.body.is_ok() {
        targets.extend(
            f.source
                .config
                .prerequisites
                .iter()
                .map(|p| find_flag(&p.key)),
        );
    }
    let s_start = targets.len();
    let mut segment_fault = None;
    if let Ok(body) = &f.body {
        for key in &body.segment_refs {
            let s = find_segment(key);
            if segment_fault.is_none() && segment_bad.get(s as usize).copied().unwrap_or(false) {
                segment_fault = Some(Box::new(Malformation::MalformedSegment {
                    segment: key.to_string(),
                }));
            }
            targets.push(s);
        }
    }
    FlagLink {
        segment_fault,
        graph_fault: false,
        prerequisites: p_start as u32,
        prerequisite_count: (s_start - p_start) as u32,
        segments: s_start as u32,
        segment_count: (targets.len() - s_start) as u32,
    }
}

/// Sets every flag's `graph_fault` from the prerequisite graph in `links`.
fn check_prerequisite_graph(links: &mut Links, flags: &[Arc<CompiledFlag>]) {
    // Prerequisites on flags with a malformed body are leaves: they fail at once.
    let leaf = |c: u32| flags.get(c as usize).is_none_or(|f| f.body.is_err());
    let children: Vec<&[u32]> = links
        .flags
        .iter()
        .map(|l| {
            let start = l.prerequisites as usize;
            links
                .targets
                .get(start..start + l.prerequisite_count as usize)
                .unwrap_or(&[])
        })
        .collect();
    let over = bounds_exceeded_with(&children, leaf);
    for (link, over) in links.flags.iter_mut().zip(over) {
        link.graph_fault = over;
    }
}

/// Links after the flag at `pos` was replaced by one with the same key (`old` is the one it
/// replaced): only the new flag's references are resolved, appended to the shared targets,
/// and the prerequisite graph is re-checked only if either version has prerequisites or the
/// new one's body changed from valid to malformed or back. Falls back to a full [`link`]
/// when the abandoned entries outnumber the live ones.
pub(crate) fn relink_flag(
    prev: &Links,
    flags: &[Arc<CompiledFlag>],
    flag_index: &HashIndex,
    segments: &[Arc<CompiledSegment>],
    segment_index: &HashIndex,
    pos: usize,
    old: &CompiledFlag,
) -> Links {
    let (Some(new), Some(prev_link)) = (flags.get(pos), prev.flags.get(pos)) else {
        return link(flags, flag_index, segments, segment_index);
    };
    let abandoned = (prev_link.prerequisite_count + prev_link.segment_count) as usize;
    if (prev.garbage + abandoned) * 2 > prev.targets.len() + 64 {
        return link(flags, flag_index, segments, segment_index);
    }
    let find_flag = |key: &str| {
        flag_index
            .find(key, |p| flags[p as usize].source.key.as_str())
            .unwrap_or(MISSING)
    };
    let find_segment = |key: &str| {
        segment_index
            .find(key, |p| segments[p as usize].source.key.as_str())
            .unwrap_or(MISSING)
    };
    let mut links = prev.clone();
    links.garbage += abandoned;
    let resolved = resolve_flag(
        new,
        &mut links.targets,
        &links.segment_bad,
        &find_flag,
        &find_segment,
    );
    links.flags[pos] = resolved;
    let has_prerequisites =
        |f: &CompiledFlag| f.body.is_ok() && !f.source.config.prerequisites.is_empty();
    if has_prerequisites(old) || has_prerequisites(new) || old.body.is_ok() != new.body.is_ok() {
        check_prerequisite_graph(&mut links, flags);
    }
    links
}

/// For each node of a graph given as child lists (with [`MISSING`] entries ignored), whether
/// it reaches a cycle, a path longer than [`MAX_DEPTH`] nodes, or expands into a tree of
/// more than [`MAX_EXPANSION`] nodes.
///
/// Heights and tree sizes are relaxed round by round: after `MAX_DEPTH + 1` rounds every
/// node of true height ≤ `MAX_DEPTH` has converged, and every node on or above a cycle has
/// grown past `MAX_DEPTH`.
fn bounds_exceeded(children: &[&[u32]]) -> Vec<bool> {
    bounds_exceeded_with(children, |_| false)
}

/// [`bounds_exceeded`], where children for which `leaf` holds are not followed.
fn bounds_exceeded_with(children: &[&[u32]], leaf: impl Fn(u32) -> bool) -> Vec<bool> {
    let n = children.len();
    let mut height = vec![1u32; n];
    let mut size = vec![1u64; n];
    let follow = |c: u32| c != MISSING && (c as usize) < n && !leaf(c);
    let inner: Vec<usize> = (0..n)
        .filter(|&i| children[i].iter().any(|&c| follow(c)))
        .collect();
    for _ in 0..=MAX_DEPTH {
        let mut changed = false;
        for &i in &inner {
            let mut h = 0u32;
            let mut s = 1u64;
            for &c in children[i] {
                if follow(c) {
                    let c = c as usize;
                    h = h.max(height[c]);
                    s = s.saturating_add(size[c]);
                }
            }
            let h = (h + 1).min(MAX_DEPTH + 2);
            let s = s.min(MAX_EXPANSION + 1);
            if h != height[i] || s != size[i] {
                height[i] = h;
                size[i] = s;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    (0..n)
        .map(|i| height[i] > MAX_DEPTH || size[i] > MAX_EXPANSION)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_cycles_and_diamonds() {
        // 0 → 1 → 2 (fine); 3 ↔ 4 (cycle); 5 → 3 (above a cycle); 6 → 6 (self loop).
        let g: Vec<&[u32]> = vec![&[1], &[2], &[], &[4], &[3], &[3], &[6], &[MISSING]];
        assert_eq!(
            bounds_exceeded(&g),
            vec![false, false, false, true, true, true, true, false]
        );
    }

    #[test]
    fn depth_limit_is_exact() {
        // A chain of MAX_DEPTH nodes is fine; one more node on top is not.
        let n = MAX_DEPTH as usize + 1;
        let edges: Vec<Vec<u32>> = (0..n)
            .map(|i| {
                if i + 1 < n {
                    vec![i as u32 + 1]
                } else {
                    vec![]
                }
            })
            .collect();
        let g: Vec<&[u32]> = edges.iter().map(Vec::as_slice).collect();
        let over = bounds_exceeded(&g);
        assert!(over[0], "{n} levels");
        assert!(!over[1], "{} levels", n - 1);
    }

    #[test]
    fn exponential_diamonds_are_refused() {
        // Each level references the next one twice: 2^k evaluations.
        let n = 12;
        let edges: Vec<Vec<u32>> = (0..n)
            .map(|i| {
                if i + 1 < n {
                    vec![i as u32 + 1; 2]
                } else {
                    vec![]
                }
            })
            .collect();
        let g: Vec<&[u32]> = edges.iter().map(Vec::as_slice).collect();
        let over = bounds_exceeded(&g);
        assert!(over[0]); // 2^12 - 1 = 4095 evaluations
        assert!(!over[3]); // 2^9 - 1 = 511
    }
}
