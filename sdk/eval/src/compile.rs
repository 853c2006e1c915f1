//! Compiling one flag or one segment on its own, independent of the snapshot around it.
//!
//! A compiled flag holds its source definition (for `flag()` and `to_snapshot()`) and
//! either an evaluable body or the [`Malformation`] that prevents evaluating it. References
//! to other flags (prerequisites) and segments are kept by key here and resolved per
//! snapshot by [`crate::link`], so an unchanged compiled flag is reused as is when another
//! flag or segment changes.

use std::collections::HashMap;
use std::sync::Arc;

use vexil_schema::delta::SegmentDelta;
use vexil_schema::model::{Clause, Flag, Segment, Serve};

use crate::bucket::{effective_salt, salt_seed};
use crate::clause::{Attr, AttrNames, AttrTable, CACHED, CClause, RulePlan, compile_clause, plan};
use crate::keyset::KeySet;
use crate::malformed::Malformation;
use crate::table::HashIndex;

/// A flag compiled on its own.
#[derive(Debug)]
pub(crate) struct CompiledFlag {
    /// The definition it was compiled from.
    pub(crate) source: Flag,
    /// The off variation, checked in range: all an off flag needs, so a kill switch keeps
    /// working on a flag whose targeting is broken.
    pub(crate) off: Result<u32, Malformation>,
    /// What evaluation of an on flag runs, or why it cannot.
    pub(crate) body: Result<FlagBody, Malformation>,
}

/// The evaluable part of a flag.
#[derive(Debug)]
pub(crate) struct FlagBody {
    /// The off variation, checked in range.
    pub(crate) off: u32,
    /// Individual-target keys: positions into `target_entries`.
    pub(crate) targets: HashIndex,
    /// `(target index, value index)` into `source.config.targets`, flattened.
    pub(crate) target_entries: Box<[(u32, u32)]>,
    /// Rules, in order.
    pub(crate) rules: Box<[CRule]>,
    /// What contexts matching no target or rule get.
    pub(crate) fallthrough: CServe,
    /// Attribute names read by clauses and rollouts, by slot.
    pub(crate) attrs: AttrTable,
    /// Segment keys referenced by `segment_match` clauses, by reference index.
    pub(crate) segment_refs: Box<[Box<str>]>,
    /// Bucketing seed from the flag's effective salt.
    pub(crate) seed: u64,
}

/// A compiled rule.
#[derive(Debug)]
pub(crate) struct CRule {
    /// All must match.
    pub(crate) clauses: Box<[CClause]>,
    /// How evaluation answers them (see [`crate::clause::SlotPlan`]).
    pub(crate) plan: RulePlan,
    /// What a match serves.
    pub(crate) serve: CServe,
}

/// What a rule or the fallthrough serves.
#[derive(Debug)]
pub(crate) enum CServe {
    /// One variation, checked in range.
    Variation(u32),
    /// A weighted split.
    Rollout(CRollout),
}

/// A compiled rollout.
#[derive(Debug)]
pub(crate) struct CRollout {
    /// `(exclusive cumulative end, variation)` for each slice with a non-zero weight; the
    /// last end is 100,000.
    pub(crate) slices: Box<[(u32, u32)]>,
    /// The attribute hashed.
    pub(crate) bucket_by: Attr,
    /// Whether this rollout is an experiment.
    pub(crate) experiment: bool,
}

impl CRollout {
    /// The variation for a bucket in `[0, 100_000)`.
    #[inline]
    pub(crate) fn variation(&self, bucket: u32) -> u32 {
        for &(end, variation) in &*self.slices {
            if bucket < end {
                return variation;
            }
        }
        // Unreachable for a bucket below 100,000: the slices end at 100,000 (checked at
        // compile time). The last slice is the safe answer all the same.
        self.slices.last().map_or(0, |s| s.1)
    }
}

/// A segment compiled on its own.
#[derive(Debug)]
pub(crate) struct CompiledSegment {
    /// The definition it was compiled from, without its key lists (held in `included` and
    /// `excluded`, once).
    pub(crate) source: Segment,
    /// The `included` list.
    pub(crate) included: KeySet,
    /// The `excluded` list.
    pub(crate) excluded: KeySet,
    /// What evaluation runs, or why it cannot. Shared by the versions of the segment that
    /// differ only in their key lists.
    pub(crate) body: Result<Arc<SegmentBody>, Malformation>,
}

impl CompiledSegment {
    /// The source definition with its key lists, in list order.
    pub(crate) fn to_segment(&self) -> Segment {
        let mut s = self.source.clone();
        s.included = self.included.to_list();
        s.excluded = self.excluded.to_list();
        s
    }

    /// This segment with its key lists edited by `delta` (rules untouched, shared).
    pub(crate) fn with_delta(&self, delta: &SegmentDelta) -> Self {
        let mut source = self.source.clone();
        source.version = delta.version;
        Self {
            source,
            included: self.included.apply(&delta.included),
            excluded: self.excluded.apply(&delta.excluded),
            body: self.body.clone(),
        }
    }
}

/// The evaluable part of a segment.
#[derive(Debug)]
pub(crate) struct SegmentBody {
    /// Rules; any match includes the context.
    pub(crate) rules: Box<[CSegmentRule]>,
    /// Attribute names read, by slot.
    pub(crate) attrs: AttrTable,
    /// Nested segment keys, by reference index.
    pub(crate) segment_refs: Box<[Box<str>]>,
    /// Bucketing seed from the segment's effective salt.
    pub(crate) seed: u64,
}

/// A compiled segment rule.
#[derive(Debug)]
pub(crate) struct CSegmentRule {
    /// All must match.
    pub(crate) clauses: Box<[CClause]>,
    /// How evaluation answers them.
    pub(crate) plan: RulePlan,
    /// If set, only contexts bucketed below this are included.
    pub(crate) weight: Option<u32>,
    /// The attribute hashed for `weight`.
    pub(crate) bucket_by: Attr,
}

/// Collects the names and references a flag or segment body uses while compiling.
#[derive(Default)]
struct Refs {
    attrs: AttrNames,
    segments: Vec<Box<str>>,
    segment_ids: HashMap<Box<str>, u32>,
}

impl Refs {
    fn clauses(&mut self, clauses: &[Clause], path: &str) -> Result<Box<[CClause]>, Malformation> {
        let Refs {
            attrs,
            segments,
            segment_ids,
        } = self;
        clauses
            .iter()
            .enumerate()
            .map(|(i, c)| {
                compile_clause(c, &format!("{path}.clauses[{i}]"), attrs, |key| {
                    *segment_ids.entry(key.into()).or_insert_with(|| {
                        segments.push(key.into());
                        (segments.len() - 1) as u32
                    })
                })
            })
            .collect()
    }

    fn bucket_by(&mut self, name: Option<&str>, path: &str) -> Result<Attr, Malformation> {
        self.attrs
            .intern(name.unwrap_or("key"))
            .ok_or_else(|| Malformation::Operand {
                path: format!("{path}.bucket_by"),
                reason: "more than 65535 distinct attributes".to_owned(),
            })
    }
}

/// Flags with fewer cheap clauses than this are not planned: testing a few clauses one by
/// one costs about the same, and an SDK compiling 10,000 such flags at start-up would pay
/// the plans' allocations (+70 % compile time). Segments are few and shared by many flags,
/// so they are always planned.
const PLAN_FLAGS_FROM: usize = 8;

impl AttrNames {
    /// The finished table for an owner whose rules' clauses are `rules` (in order), with the
    /// plan of each attribute slot, and the plan of each rule (see
    /// [`crate::clause::SlotPlan`]); owners with fewer than `min_planned` cheap clauses get
    /// none.
    fn table_for<'r>(
        self,
        rules: impl Iterator<Item = &'r [CClause]>,
        min_planned: usize,
    ) -> (AttrTable, Vec<RulePlan>) {
        let slots = self.names.len().min(CACHED);
        let mut table = self.into_table();
        let (slot_plans, rule_plans) = plan(rules, slots, min_planned);
        table.plans = slot_plans;
        (table, rule_plans)
    }
}

/// Compiles a flag. Never fails: problems end up in `body`.
pub(crate) fn compile_flag(source: Flag) -> CompiledFlag {
    let off = off_variation(&source);
    let body = match &off {
        Ok(off) => flag_body(&source, *off),
        Err(e) => Err(e.clone()),
    };
    CompiledFlag { source, off, body }
}

fn off_variation(flag: &Flag) -> Result<u32, Malformation> {
    let count = flag.variations.len();
    if count == 0 {
        return Err(Malformation::NoVariations);
    }
    if let Some(i) = flag
        .variations
        .iter()
        .position(|v| !flag.kind.accepts(&v.value))
    {
        return Err(Malformation::variation_kind(i, flag.kind));
    }
    let index = flag.config.off_variation;
    if index < count {
        Ok(index as u32)
    } else {
        Err(Malformation::VariationIndex {
            path: "off_variation".to_owned(),
            index,
            count,
        })
    }
}

fn flag_body(flag: &Flag, off: u32) -> Result<FlagBody, Malformation> {
    let count = flag.variations.len();
    let variation = |index: usize, path: &dyn Fn() -> String| -> Result<u32, Malformation> {
        if index < count {
            Ok(index as u32)
        } else {
            Err(Malformation::VariationIndex {
                path: path(),
                index,
                count,
            })
        }
    };
    let config = &flag.config;

    let mut target_entries = Vec::new();
    for (t, target) in config.targets.iter().enumerate() {
        variation(target.variation, &|| format!("targets[{t}].variation"))?;
        target_entries.extend((0..target.values.len()).map(|v| (t as u32, v as u32)));
    }
    let targets = HashIndex::build(target_entries.len(), |p| {
        let (t, v) = target_entries[p as usize];
        &config.targets[t as usize].values[v as usize]
    });

    let mut refs = Refs::default();
    let serve = |s: &Serve, path: &str, refs: &mut Refs| -> Result<CServe, Malformation> {
        match s {
            Serve::Variation(v) => Ok(CServe::Variation(variation(*v, &|| {
                format!("{path}.variation")
            })?)),
            Serve::Rollout(r) => {
                let path = format!("{path}.rollout");
                if r.variations.is_empty() {
                    return Err(Malformation::EmptyRollout { path });
                }
                let mut end = 0u64;
                let mut slices = Vec::with_capacity(r.variations.len());
                for (i, wv) in r.variations.iter().enumerate() {
                    let v = variation(wv.variation, &|| {
                        format!("{path}.variations[{i}].variation")
                    })?;
                    end += u64::from(wv.weight);
                    if wv.weight > 0 {
                        // Bounded by the sum check below before use.
                        slices.push((end.min(u64::from(u32::MAX)) as u32, v));
                    }
                }
                if end != u64::from(crate::bucket::BUCKETS) {
                    return Err(Malformation::RolloutWeights { path, sum: end });
                }
                Ok(CServe::Rollout(CRollout {
                    slices: slices.into(),
                    bucket_by: refs.bucket_by(r.bucket_by.as_deref(), &path)?,
                    experiment: r.experiment,
                }))
            }
        }
    };

    let mut rules = Vec::with_capacity(config.rules.len());
    for (i, rule) in config.rules.iter().enumerate() {
        let path = format!("rules[{i}]");
        let clauses = refs.clauses(&rule.clauses, &path)?;
        let serve = serve(&rule.serve, &format!("{path}.serve"), &mut refs)?;
        rules.push(CRule {
            clauses,
            plan: RulePlan::default(),
            serve,
        });
    }
    let fallthrough = serve(&config.fallthrough, "fallthrough", &mut refs)?;
    let (attrs, plans) = refs
        .attrs
        .table_for(rules.iter().map(|r| &*r.clauses), PLAN_FLAGS_FROM);
    for (rule, plan) in rules.iter_mut().zip(plans) {
        rule.plan = plan;
    }

    Ok(FlagBody {
        off,
        targets,
        target_entries: target_entries.into(),
        rules: rules.into(),
        fallthrough,
        attrs,
        segment_refs: refs.segments.into(),
        seed: salt_seed(effective_salt(&config.salt, &flag.key)),
    })
}

/// Compiles a segment. Never fails: problems end up in `body`.
pub(crate) fn compile_segment(mut source: Segment) -> CompiledSegment {
    let body = segment_body(&source).map(Arc::new);
    let included = KeySet::build(&std::mem::take(&mut source.included));
    let excluded = KeySet::build(&std::mem::take(&mut source.excluded));
    CompiledSegment {
        source,
        included,
        excluded,
        body,
    }
}

fn segment_body(segment: &Segment) -> Result<SegmentBody, Malformation> {
    let mut refs = Refs::default();
    let mut rules = Vec::with_capacity(segment.rules.len());
    for (i, rule) in segment.rules.iter().enumerate() {
        let path = format!("rules[{i}]");
        if let Some(weight) = rule.weight.filter(|w| *w > crate::bucket::BUCKETS) {
            return Err(Malformation::SegmentWeight {
                path: format!("{path}.weight"),
                weight,
            });
        }
        let clauses = refs.clauses(&rule.clauses, &path)?;
        rules.push(CSegmentRule {
            clauses,
            plan: RulePlan::default(),
            weight: rule.weight,
            bucket_by: refs.bucket_by(rule.bucket_by.as_deref(), &path)?,
        });
    }
    let (attrs, plans) = refs.attrs.table_for(rules.iter().map(|r| &*r.clauses), 1);
    for (rule, plan) in rules.iter_mut().zip(plans) {
        rule.plan = plan;
    }
    Ok(SegmentBody {
        rules: rules.into(),
        attrs,
        segment_refs: refs.segments.into(),
        seed: salt_seed(effective_salt(&segment.salt, &segment.key)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flag(j: serde_json::Value) -> CompiledFlag {
        compile_flag(serde_json::from_value(j).unwrap())
    }

    #[test]
    fn problems_are_located() {
        let base = json!({"key": "f", "kind": "boolean",
            "variations": [{"value": true}, {"value": false}],
            "off_variation": 1, "fallthrough": {"variation": 0}});
        assert!(flag(base.clone()).body.is_ok());

        let mut j = base.clone();
        j["fallthrough"] = json!({"rollout": {"variations": [
            {"variation": 0, "weight": 50000}, {"variation": 1, "weight": 40000}]}});
        assert_eq!(
            flag(j).body.unwrap_err(),
            Malformation::RolloutWeights {
                path: "fallthrough.rollout".into(),
                sum: 90000
            }
        );

        let mut j = base.clone();
        j["rules"] = json!([{"id": "r", "clauses": [], "serve": {"variation": 2}}]);
        assert_eq!(
            flag(j).body.unwrap_err(),
            Malformation::VariationIndex {
                path: "rules[0].serve.variation".into(),
                index: 2,
                count: 2
            }
        );

        let mut j = base.clone();
        j["variations"] = json!([{"value": true}, {"value": "no"}]);
        assert_eq!(
            flag(j).body.unwrap_err(),
            Malformation::variation_kind(1, vexil_schema::FlagKind::Boolean)
        );

        let mut j = base;
        j["variations"] = json!([]);
        assert_eq!(flag(j).body.unwrap_err(), Malformation::NoVariations);
    }

    /// Flags are planned only from `PLAN_FLAGS_FROM` cheap clauses; segments always.
    #[test]
    fn small_flags_are_not_planned() {
        let with_rules = |n: usize| {
            let rules: Vec<serde_json::Value> = (0..n)
                .map(|i| {
                    json!({"id": format!("r{i}"), "serve": {"variation": 0}, "clauses": [
                    {"attribute": "country", "op": "in", "values": ["FR"]},
                    {"attribute": "age", "op": "gte", "values": [i]}]})
                })
                .collect();
            flag(json!({"key": "f", "kind": "boolean",
                "variations": [{"value": true}, {"value": false}], "off_variation": 1,
                "rules": rules, "fallthrough": {"variation": 1}}))
            .body
            .unwrap()
        };
        let small = with_rules(PLAN_FLAGS_FROM / 2 - 1);
        assert!(small.attrs.plans.is_empty());
        assert!(
            small
                .rules
                .iter()
                .all(|r| r.plan.rest.is_none() && r.plan.need == 0)
        );
        let large = with_rules(PLAN_FLAGS_FROM / 2);
        assert_eq!(large.attrs.plans.len(), 2);
        assert!(large.rules.iter().all(|r| r.plan.need.count_ones() == 2));
        let segment = compile_segment(
            serde_json::from_value(json!({"key": "s", "rules": [{"id": "r", "clauses": [
                {"attribute": "org", "op": "in", "values": ["acme"]}]}]}))
            .unwrap(),
        );
        assert_eq!(segment.body.unwrap().attrs.plans.len(), 1);
    }

    #[test]
    fn rollout_slices_skip_zero_weights() {
        let f = flag(json!({"key": "f", "kind": "string",
            "variations": [{"value": "a"}, {"value": "b"}, {"value": "c"}],
            "off_variation": 0, "fallthrough": {"rollout": {"variations": [
                {"variation": 0, "weight": 0}, {"variation": 1, "weight": 30000},
                {"variation": 2, "weight": 70000}]}}}));
        let CServe::Rollout(r) = &f.body.unwrap().fallthrough else {
            panic!("rollout expected")
        };
        assert_eq!(&*r.slices, &[(30000, 1), (100000, 2)]);
        assert_eq!(r.variation(0), 1);
        assert_eq!(r.variation(29999), 1);
        assert_eq!(r.variation(30000), 2);
        assert_eq!(r.variation(99999), 2);
    }
}
