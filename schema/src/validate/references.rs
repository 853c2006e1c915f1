//! Cross-document checks on an environment's reference graphs: flags through prerequisites,
//! segments through `segment_match` clauses.
//!
//! The rules match the evaluation engine's: a flag or segment is unusable if it lies on or
//! above a cycle, heads a chain longer than the depth limit, or expands into more evaluations
//! than the expansion limit. A write is rejected if it would make itself, or anything that
//! depends on it, unusable; a snapshot is rejected if anything in it is.

use std::collections::HashMap;

use super::graph::Graph;
use super::index::{EnvironmentIndex, segment_refs};
use super::path::Collector;
use super::rules;
use crate::key::FlagKey;
use crate::limits::{
    MAX_PREREQUISITE_DEPTH, MAX_PREREQUISITE_EXPANSION, MAX_SEGMENT_DEPTH, MAX_SEGMENT_EXPANSION,
};
use crate::model::{EnvironmentSnapshot, FlagConfig, Operator, Prerequisite, Segment};

/// The words and limits of one kind of reference graph.
struct Spec {
    /// "flag" or "segment".
    noun: &'static str,
    /// Rule code for cycles.
    cycle_rule: &'static str,
    /// What a cycle is, for messages.
    cycle_words: &'static str,
    /// What a chain is, for messages.
    chain_words: &'static str,
    /// What the references are, for messages.
    via: &'static str,
    max_depth: usize,
    max_expansion: usize,
    /// The field holding the references, where limit errors are reported.
    field: &'static str,
}

const FLAGS: Spec = Spec {
    noun: "flag",
    cycle_rule: rules::PREREQUISITE_CYCLE,
    cycle_words: "prerequisite cycle",
    chain_words: "prerequisite chain",
    via: "prerequisites",
    max_depth: MAX_PREREQUISITE_DEPTH,
    max_expansion: MAX_PREREQUISITE_EXPANSION,
    field: "prerequisites",
};

const SEGMENTS: Spec = Spec {
    noun: "segment",
    cycle_rule: rules::SEGMENT_CYCLE,
    cycle_words: "cycle of segments",
    chain_words: "chain of nested segments",
    via: "nested segments",
    max_depth: MAX_SEGMENT_DEPTH,
    max_expansion: MAX_SEGMENT_EXPANSION,
    field: "rules",
};

/// The prerequisite keys of flag `key`, without itself: a flag naming itself is reported by
/// the per-prerequisite checks, once.
fn prerequisite_edges<'a>(key: &str, prereqs: &'a [Prerequisite]) -> Vec<&'a str> {
    prereqs
        .iter()
        .map(|p| p.key.as_str())
        .filter(|k| *k != key)
        .collect()
}

/// Checks that flag `key` with configuration `cfg`, replacing whatever `env` holds for it,
/// leaves every flag evaluable.
pub(super) fn check_flag_references(
    c: &mut Collector,
    key: &FlagKey,
    cfg: &FlagConfig,
    env: &EnvironmentIndex,
) {
    // Without prerequisites the flag closes no cycle, and every chain and expansion through
    // it shrinks or stays as it is.
    if cfg.prerequisites.is_empty() {
        return;
    }
    let mut nodes: Vec<(&str, Vec<&str>)> = env
        .flags()
        .filter(|(k, _)| *k != key)
        .map(|(k, f)| (k.as_str(), prerequisite_edges(k, &f.prerequisites)))
        .collect();
    nodes.push((key.as_str(), prerequisite_edges(key, &cfg.prerequisites)));
    let g = Graph::new(nodes);
    let targets: Vec<&str> = prerequisite_edges(key, &cfg.prerequisites);
    check_write(c, &g, key, &targets, &FLAGS, |c, target, rule, message| {
        if let Some(i) = cfg.prerequisites.iter().position(|p| p.key == target) {
            c.field("prerequisites", |c| {
                c.index(i, |c| c.error_at("key", rule, message))
            });
        }
    });
}

/// Checks that segment `seg`, replacing whatever `env` holds for it, leaves every segment
/// evaluable.
pub(super) fn check_segment_references(c: &mut Collector, seg: &Segment, env: &EnvironmentIndex) {
    let refs = segment_refs(seg.rules.iter().flat_map(|r| &r.clauses));
    if refs.is_empty() {
        return;
    }
    let key = seg.key.as_str();
    let mut nodes: Vec<(&str, Vec<&str>)> = env
        .segments()
        .filter(|(k, _)| k.as_str() != key)
        .map(|(k, s)| (k.as_str(), s.segments.iter().map(|r| r.as_str()).collect()))
        .collect();
    let targets: Vec<&str> = refs.iter().map(|r| r.as_str()).collect();
    nodes.push((key, targets.clone()));
    let g = Graph::new(nodes);
    check_write(
        c,
        &g,
        key,
        &targets,
        &SEGMENTS,
        |c, target, rule, message| error_at_segment_ref(c, seg, target, rule, message),
    );
}

/// The checks of one write: node `key` now refers to `targets` in `g`. `at_ref` records an
/// error at the reference to a target.
fn check_write(
    c: &mut Collector,
    g: &Graph<'_>,
    key: &str,
    targets: &[&str],
    spec: &Spec,
    mut at_ref: impl FnMut(&mut Collector, &str, &'static str, String),
) {
    let Some(me) = g.id(key) else { return };
    let targets: Vec<usize> = targets.iter().filter_map(|t| g.id(t)).collect();

    // A cycle through this node is this write's doing: name it at the reference closing it.
    let mut failed = false;
    for &t in &targets {
        let closing = if t == me {
            Some(vec![me, me])
        } else {
            g.shortest_path(t, me).map(|path| {
                let mut cycle = vec![me];
                cycle.extend(path);
                cycle
            })
        };
        if let Some(cycle) = closing {
            failed = true;
            let message = format!(
                "this would close a {}: {}",
                spec.cycle_words,
                g.render(&cycle)
            );
            at_ref(c, g.names[t], spec.cycle_rule, message);
        }
    }
    if failed {
        return;
    }

    // A reference into an existing cycle would make this node unusable too.
    let b = g.bounds(spec.max_expansion);
    for &t in &targets {
        if let Some((path, cycle)) = g.cycle_below(&b, t) {
            failed = true;
            let message = format!(
                "{} {:?} leads into the {} {} ({}); break that cycle first",
                spec.noun,
                g.names[t],
                spec.cycle_words,
                g.render(&cycle),
                g.render(&path)
            );
            at_ref(c, g.names[t], spec.cycle_rule, message);
        }
    }
    if failed {
        return;
    }

    let chain = g.chain_through(me);
    if chain.len() > spec.max_depth {
        c.error_at(
            spec.field,
            rules::LIMIT_EXCEEDED,
            format!(
                "this would make a {} of {} {}s, at most {} allowed: {}",
                spec.chain_words,
                chain.len(),
                spec.noun,
                spec.max_depth,
                g.render(&chain)
            ),
        );
    }

    // This node's expansion grows, and so does that of everything depending on it.
    let worst = g
        .dependents(me)
        .into_iter()
        .filter(|&v| !b.tainted[v])
        .max_by_key(|&v| (b.size[v], v == me));
    if let Some(v) = worst.filter(|&v| b.size[v] > spec.max_expansion) {
        let who = if v == me {
            format!("this {}", spec.noun)
        } else {
            format!("{} {:?}, which depends on this one,", spec.noun, g.names[v])
        };
        c.error_at(
            spec.field,
            rules::LIMIT_EXCEEDED,
            format!(
                "evaluating {who} would take more than {max} {noun} evaluations through {via}, at most {max} allowed",
                max = spec.max_expansion,
                noun = spec.noun,
                via = spec.via,
            ),
        );
    }
}

/// Records an error at the first `segment_match` value of `seg` naming `target`.
fn error_at_segment_ref(
    c: &mut Collector,
    seg: &Segment,
    target: &str,
    rule: &'static str,
    message: String,
) {
    for (r, sr) in seg.rules.iter().enumerate() {
        for (ci, clause) in sr.clauses.iter().enumerate() {
            if clause.op != Operator::SegmentMatch {
                continue;
            }
            if let Some(vi) = clause
                .values
                .iter()
                .position(|v| v.as_str() == Some(target))
            {
                c.field("rules", |c| {
                    c.index(r, |c| {
                        c.field("clauses", |c| {
                            c.index(ci, |c| {
                                c.field("values", |c| c.index(vi, |c| c.error(rule, message)))
                            })
                        })
                    })
                });
                return;
            }
        }
    }
    // The reference came from this segment's own clauses, so it is always found above.
    c.field("rules", |c| c.error(rule, message));
}

/// Checks the reference graphs of a whole snapshot: every cycle once, at the member that comes
/// first; every over-long chain and over-large expansion once, at the flag or segment on top.
pub(super) fn check_snapshot_references(
    c: &mut Collector,
    s: &EnvironmentSnapshot,
    env: &EnvironmentIndex,
) {
    // Paths point at the entries the index kept: the last of any duplicated key.
    let flag_pos: HashMap<&str, usize> = s
        .flags
        .iter()
        .enumerate()
        .map(|(i, f)| (f.key.as_str(), i))
        .collect();
    let fg = Graph::new(
        env.flags()
            .map(|(k, f)| (k.as_str(), prerequisite_edges(k, &f.prerequisites)))
            .collect(),
    );
    c.field("flags", |c| {
        check_snapshot_graph(
            c,
            &fg,
            &flag_pos,
            &FLAGS,
            |c, pos, target, rule, message| {
                let j = s.flags[pos]
                    .config
                    .prerequisites
                    .iter()
                    .position(|p| p.key == target);
                c.index(pos, |c| {
                    c.field("prerequisites", |c| match j {
                        Some(j) => c.index(j, |c| c.error_at("key", rule, message)),
                        None => c.error(rule, message),
                    })
                });
            },
        );
    });

    let seg_pos: HashMap<&str, usize> = s
        .segments
        .iter()
        .enumerate()
        .map(|(i, x)| (x.key.as_str(), i))
        .collect();
    let sg = Graph::new(
        env.segments()
            .map(|(k, x)| (k.as_str(), x.segments.iter().map(|r| r.as_str()).collect()))
            .collect(),
    );
    c.field("segments", |c| {
        check_snapshot_graph(
            c,
            &sg,
            &seg_pos,
            &SEGMENTS,
            |c, pos, target, rule, message| {
                c.index(pos, |c| {
                    error_at_segment_ref(c, &s.segments[pos], target, rule, message)
                });
            },
        );
    });
}

/// The checks of one graph of a snapshot. `at_ref(position, target, rule, message)` records
/// an error at the reference from the node at `position` to `target`.
fn check_snapshot_graph(
    c: &mut Collector,
    g: &Graph<'_>,
    pos: &HashMap<&str, usize>,
    spec: &Spec,
    mut at_ref: impl FnMut(&mut Collector, usize, &str, &'static str, String),
) {
    let position = |v: usize| pos.get(g.names[v]).copied().unwrap_or(usize::MAX);
    let b = g.bounds(spec.max_expansion);
    let mut found: Vec<(usize, Found)> = Vec::new();

    // One cycle per strongly connected component, through its first member.
    for comp in g.sccs() {
        if !b.cyclic[comp[0]] {
            continue;
        }
        let Some(first) = comp.iter().copied().min_by_key(|&v| position(v)) else {
            continue;
        };
        if let Some(cycle) = g.cycle_at(first) {
            found.push((position(first), Found::Cycle(cycle)));
        }
    }

    // Limits, at the top of each offending chain: usable nodes that nothing usable depends on.
    let mut has_dependent = vec![false; g.adj.len()];
    for (v, edges) in g.adj.iter().enumerate() {
        if !b.tainted[v] {
            for &w in edges {
                has_dependent[w] = true;
            }
        }
    }
    let tops = has_dependent
        .iter()
        .enumerate()
        .filter(|&(v, &has)| !has && !b.tainted[v])
        .map(|(v, _)| v);
    for v in tops {
        if b.height[v] > spec.max_depth {
            let mut chain = vec![v];
            chain.extend(g.follow(v, &b.next));
            found.push((position(v), Found::Deep(chain)));
        }
        if b.size[v] > spec.max_expansion {
            found.push((position(v), Found::Wide));
        }
    }

    found.sort_by_key(|(p, _)| *p);
    for (p, f) in found {
        if p == usize::MAX {
            continue;
        }
        match f {
            Found::Cycle(cycle) => {
                let message = format!("{}: {}", capitalised(spec.cycle_words), g.render(&cycle));
                at_ref(c, p, g.names[cycle[1]], spec.cycle_rule, message);
            }
            Found::Deep(chain) => c.index(p, |c| {
                c.error_at(
                    spec.field,
                    rules::LIMIT_EXCEEDED,
                    format!(
                        "{} of {} {}s, at most {} allowed: {}",
                        capitalised(spec.chain_words),
                        chain.len(),
                        spec.noun,
                        spec.max_depth,
                        g.render(&chain)
                    ),
                )
            }),
            Found::Wide => c.index(p, |c| {
                c.error_at(
                    spec.field,
                    rules::LIMIT_EXCEEDED,
                    format!(
                        "evaluating this {noun} takes more than {max} {noun} evaluations through {via}, at most {max} allowed",
                        noun = spec.noun,
                        max = spec.max_expansion,
                        via = spec.via,
                    ),
                )
            }),
        }
    }
}

/// A problem found in a snapshot graph.
enum Found {
    Cycle(Vec<usize>),
    Deep(Vec<usize>),
    Wide,
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
#[path = "references_tests.rs"]
mod tests;
