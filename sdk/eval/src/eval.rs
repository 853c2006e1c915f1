//! The evaluation algorithm, shared by `evaluate` (no tracing, compiled away) and `explain`
//! (recording every step), so the two can never disagree.
//!
//! Order: off → prerequisites → individual targets → rules (first match) → fallthrough.
//! Everything that can be checked ahead was checked at compile and link time, so this code
//! only reads: it parses no operand, allocates nothing and indexes defensively (`get`), so
//! even a broken invariant degrades into `ERROR(MALFORMED)` instead of a panic.

use serde_json::Value;
use vexil_schema::{Context, ErrorKind, Flag};

use crate::bucket::{bucket_bytes, bucket_json};
use crate::clause::{Attr, AttrTable, Bits, CACHED, CClause, Found, Outcome, RulePlan};
use crate::compile::{CServe, FlagBody};
use crate::evaluation::{EvalReason, Evaluation};
use crate::link::{FlagLink, MISSING};
use crate::malformed::MAX_DEPTH;
use crate::snapshot::CompiledSnapshot;
use crate::table::HashIndex;
use vexil_schema::AttributeName;

/// What a segment evaluation concluded, for explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegmentOutcome {
    /// The segment is not in the snapshot.
    NotFound,
    /// The context key is in the include list.
    Included,
    /// The context key is in the exclude list.
    Excluded,
    /// A rule matched (and its weight, if any, admitted the context's bucket).
    Rule { index: usize, bucket: Option<u32> },
    /// No rule matched.
    NoMatch,
    /// The segment cannot be evaluated (never reached for a linked flag).
    Malformed,
}

/// Observes an evaluation. Every method defaults to doing nothing, so the untraced path
/// compiles to the bare algorithm.
pub(crate) trait Tracer<'a> {
    /// Whether this tracer records anything. If not, rules are answered through their plans
    /// ([`crate::clause::SlotPlan`]), which reach the same result with fewer steps, and what
    /// only a record needs (names, for one) is not computed.
    const RECORDS: bool = false;
    /// A prerequisite of the flag at depth 0 was checked; `result` is `None` if it is missing.
    fn prerequisite(&mut self, _index: usize, _result: Option<&Evaluation<'a>>, _met: bool) {}
    /// Evaluation enters (`true`) or leaves (`false`) a prerequisite flag.
    fn nest_flag(&mut self, _enter: bool) {}
    /// Evaluation enters or leaves a segment.
    fn nest_segment(&mut self, _enter: bool) {}
    /// A rule of the flag at depth 0 starts.
    fn rule(&mut self, _index: usize) {}
    /// A clause of the current rule concluded.
    fn clause(&mut self, _index: usize, _found: Found<'_>, _outcome: Outcome) {}
    /// A segment named by a clause concluded.
    fn segment(&mut self, _key: &str, _outcome: SegmentOutcome) {}
    /// The flag at depth 0 served a rollout, bucketing on `attribute`.
    fn bucket(&mut self, _attribute: &str, _bucket: Option<u32>) {}
}

/// The tracer of plain evaluation.
pub(crate) struct NoTrace;

impl Tracer<'_> for NoTrace {}

/// Reads context attributes for one flag or segment, each at most once.
struct Attrs<'c, 'n> {
    ctx: &'c Context,
    table: &'n AttrTable,
    /// By slot.
    cache: [Option<&'c Value>; CACHED],
    /// Bit `i` set: `cache[i]` holds the lookup result for slot `i`.
    filled: u32,
    /// Bits of the planned clauses that match, for the slots in `planned`.
    truth: Bits,
    /// Bit `i` set: the bits of slot `i`'s planned clauses are in `truth`.
    planned: u32,
}

impl<'c, 'n> Attrs<'c, 'n> {
    fn new(ctx: &'c Context, table: &'n AttrTable) -> Self {
        Self {
            ctx,
            table,
            cache: [None; CACHED],
            filled: 0,
            truth: 0,
            planned: 0,
        }
    }

    /// Reads the clause's attribute and tests the clause.
    #[inline]
    fn test(
        &mut self,
        clause: &CClause,
        in_segment: impl FnMut(u32) -> bool,
    ) -> (Found<'c>, Outcome) {
        let found = self.get(clause.attr);
        (found, clause.test(found, in_segment))
    }

    /// Whether a rule matches, through its plan: its planned clauses' bits (computed per
    /// attribute slot the first time a rule needs them), then its other clauses in order.
    #[inline]
    fn rule_matches(
        &mut self,
        plan: &RulePlan,
        clauses: &[CClause],
        mut in_segment: impl FnMut(u32) -> bool,
    ) -> bool {
        let unplanned = plan.slots & !self.planned;
        if unplanned != 0 {
            self.plan_slots(unplanned);
        }
        if self.truth & plan.need != plan.need {
            return false;
        }
        let mut test = |clause: &CClause| {
            let found = self.get(clause.attr);
            clause.test(found, &mut in_segment) == Outcome::Match
        };
        match &plan.rest {
            None => clauses.iter().all(test),
            Some(rest) => rest
                .iter()
                .all(|&i| clauses.get(i as usize).is_some_and(&mut test)),
        }
    }

    /// Adds the bits of the planned clauses of every slot in `slots` to `truth`.
    fn plan_slots(&mut self, slots: u32) {
        // First every lookup, then every slot's bits: two short loops keep their state in
        // registers where one long one spilled it.
        let (names, ctx) = (&self.table.names, self.ctx);
        let mut missing = slots & !self.filled;
        while missing != 0 {
            // Planned slots are below CACHED.
            let slot = missing.trailing_zeros() as usize % CACHED;
            missing &= missing - 1;
            self.cache[slot] = names.get(slot).and_then(|n| ctx.attribute_by(n));
        }
        self.filled |= slots;
        let plans = &self.table.plans;
        let mut truth = self.truth;
        let mut rest = slots;
        while rest != 0 {
            let slot = rest.trailing_zeros() as usize % CACHED;
            rest &= rest - 1;
            if let Some(plan) = plans.get(slot) {
                truth |= plan.truth(self.cache[slot]);
            }
        }
        self.truth = truth;
        self.planned |= slots;
    }

    #[inline]
    fn get(&mut self, attr: Attr) -> Found<'c> {
        let found = |v: Option<&'c Value>| v.map_or(Found::Missing, Found::Json);
        match attr {
            Attr::Key => self.ctx.key().map_or(Found::Missing, Found::Str),
            Attr::Kind => self.ctx.kind().map_or(Found::Missing, Found::Str),
            Attr::Slot(slot) => {
                let slot = usize::from(slot);
                if slot < CACHED {
                    if self.filled & (1 << slot) == 0 {
                        self.fill(slot);
                    }
                    found(self.cache[slot])
                } else {
                    found(self.lookup(slot))
                }
            }
        }
    }

    /// Looks up a cached slot for the first time. Out of line, so that `get` stays small
    /// enough to inline.
    #[inline(never)]
    fn fill(&mut self, slot: usize) {
        let value = self.lookup(slot);
        if let Some(cached) = self.cache.get_mut(slot) {
            *cached = value;
        }
        self.filled |= 1 << slot;
    }

    /// One probe of the context's attribute index.
    #[inline]
    fn lookup(&self, slot: usize) -> Option<&'c Value> {
        self.ctx.attribute_by(self.table.names.get(slot)?)
    }

    /// The attribute's name, for explanations.
    fn name(&self, attr: Attr) -> &'n str {
        match attr {
            Attr::Key => "key",
            Attr::Kind => "kind",
            Attr::Slot(s) => self
                .table
                .names
                .get(usize::from(s))
                .map_or("", AttributeName::as_str),
        }
    }
}

/// The bucket of a found value, if its type buckets.
fn bucket_of(seed: u64, found: Found<'_>) -> Option<u32> {
    match found {
        Found::Missing => None,
        Found::Str(s) => Some(bucket_bytes(seed, s.as_bytes())),
        Found::Json(v) => bucket_json(seed, v),
    }
}

impl CompiledSnapshot {
    /// Evaluates the flag at position `pos`. `depth` counts prerequisite nesting.
    pub(crate) fn eval_at<'a, T: Tracer<'a>>(
        &'a self,
        pos: u32,
        ctx: &Context,
        tracer: &mut T,
        depth: u32,
    ) -> Evaluation<'a> {
        let malformed = Evaluation::error(ErrorKind::Malformed);
        let (Some(flag), Some(link)) = (
            self.flags.get(pos as usize),
            self.links.flags.get(pos as usize),
        ) else {
            return Evaluation::error(ErrorKind::FlagNotFound);
        };
        let source = &flag.source;
        let serve = |variation: u32, reason: EvalReason<'a>| match source
            .variations
            .get(variation as usize)
        {
            Some(v) => Evaluation {
                value: Some(&v.value),
                variation: Some(variation as usize),
                reason,
                in_experiment: false,
                split: false,
            },
            None => malformed,
        };
        let config = &source.config;
        if !config.on {
            return match flag.off {
                Ok(off) => serve(off, EvalReason::Off),
                Err(_) => malformed,
            };
        }
        let (Ok(body), None) = (&flag.body, link.fault()) else {
            return malformed;
        };
        if depth > MAX_DEPTH {
            return malformed; // excluded by linking; a guard against unbounded recursion
        }

        if !config.prerequisites.is_empty()
            && let Some(prerequisite_key) =
                self.unmet_prerequisite(link, source, ctx, tracer, depth)
        {
            return serve(
                body.off,
                EvalReason::PrerequisiteFailed { prerequisite_key },
            );
        }

        if !body.targets.is_empty()
            && let Some(key) = ctx.key()
            && let Some(p) = body.targets.find(key, |p| target_key(body, source, p))
            && let Some(&(t, _)) = body.target_entries.get(p as usize)
            && let Some(target) = config.targets.get(t as usize)
        {
            return serve(target.variation as u32, EvalReason::TargetMatch);
        }

        if body.rules.is_empty()
            && let CServe::Variation(v) = body.fallthrough
        {
            return serve(v, EvalReason::Fallthrough);
        }
        let mut attrs = Attrs::new(ctx, &body.attrs);
        let seg_base = link.segments as usize;
        for (index, rule) in body.rules.iter().enumerate() {
            tracer.rule(index);
            let matched = if T::RECORDS {
                self.clauses_match(&rule.clauses, &mut attrs, seg_base, tracer)
            } else {
                let ctx = attrs.ctx;
                attrs.rule_matches(&rule.plan, &rule.clauses, |r| {
                    self.in_segment(self.segment_at(seg_base, r), ctx, tracer, 0)
                })
            };
            if matched {
                let rule_id = config.rules.get(index).map_or("", |r| r.id.as_str());
                return self.serve(
                    &rule.serve,
                    body,
                    source,
                    &mut attrs,
                    EvalReason::RuleMatch {
                        rule_index: index,
                        rule_id,
                    },
                    tracer,
                );
            }
        }
        self.serve(
            &body.fallthrough,
            body,
            source,
            &mut attrs,
            EvalReason::Fallthrough,
            tracer,
        )
    }

    /// The key of the first prerequisite of a flag that is not met, evaluating each in turn
    /// (nested one level deeper); `None` when all are.
    #[inline]
    fn unmet_prerequisite<'a, T: Tracer<'a>>(
        &'a self,
        link: &FlagLink,
        source: &'a Flag,
        ctx: &Context,
        tracer: &mut T,
        depth: u32,
    ) -> Option<&'a str> {
        for (i, prerequisite) in source.config.prerequisites.iter().enumerate() {
            let target = self
                .links
                .targets
                .get(link.prerequisites as usize + i)
                .copied()
                .unwrap_or(MISSING);
            let met = if target == MISSING {
                tracer.prerequisite(i, None, false);
                false
            } else {
                tracer.nest_flag(true);
                let result = self.eval_at(target, ctx, tracer, depth + 1);
                tracer.nest_flag(false);
                let met = matches!(
                    result.reason,
                    EvalReason::TargetMatch
                        | EvalReason::RuleMatch { .. }
                        | EvalReason::Fallthrough
                ) && result.variation == Some(prerequisite.variation);
                tracer.prerequisite(i, Some(&result), met);
                met
            };
            if !met {
                return Some(&prerequisite.key);
            }
        }
        None
    }

    /// Serves a variation or a rollout of a flag.
    #[inline]
    fn serve<'a, T: Tracer<'a>>(
        &'a self,
        serve: &CServe,
        body: &FlagBody,
        source: &'a vexil_schema::Flag,
        attrs: &mut Attrs<'_, '_>,
        reason: EvalReason<'a>,
        tracer: &mut T,
    ) -> Evaluation<'a> {
        let (variation, in_experiment, split) = match serve {
            CServe::Variation(v) => (*v, false, false),
            CServe::Rollout(rollout) => {
                let bucket = bucket_of(body.seed, attrs.get(rollout.bucket_by));
                if T::RECORDS {
                    tracer.bucket(attrs.name(rollout.bucket_by), bucket);
                }
                (
                    rollout.variation(bucket.unwrap_or(0)),
                    rollout.experiment && bucket.is_some(),
                    true,
                )
            }
        };
        match source.variations.get(variation as usize) {
            Some(v) => Evaluation {
                value: Some(&v.value),
                variation: Some(variation as usize),
                reason,
                in_experiment,
                split,
            },
            None => Evaluation::error(ErrorKind::Malformed),
        }
    }

    /// Whether every clause matches. `seg_base` is where the owner's segment references
    /// start in the link targets.
    #[inline]
    fn clauses_match<'a, T: Tracer<'a>>(
        &'a self,
        clauses: &[CClause],
        attrs: &mut Attrs<'_, '_>,
        seg_base: usize,
        tracer: &mut T,
    ) -> bool {
        let ctx = attrs.ctx;
        for (index, clause) in clauses.iter().enumerate() {
            let (found, outcome) = attrs.test(clause, |r| {
                self.in_segment(self.segment_at(seg_base, r), ctx, tracer, 0)
            });
            tracer.clause(index, found, outcome);
            if outcome != Outcome::Match {
                return false;
            }
        }
        true
    }

    /// The position of an owner's `r`-th segment reference, whose references start at
    /// `seg_base` in the link targets; [`MISSING`] if unresolved.
    #[inline]
    fn segment_at(&self, seg_base: usize, r: u32) -> u32 {
        self.links
            .targets
            .get(seg_base + r as usize)
            .copied()
            .unwrap_or(MISSING)
    }

    /// Whether the context is in the segment at position `pos`.
    fn in_segment<'a, T: Tracer<'a>>(
        &'a self,
        pos: u32,
        ctx: &Context,
        tracer: &mut T,
        depth: u32,
    ) -> bool {
        let outcome = self.segment_outcome(pos, ctx, tracer, depth);
        if T::RECORDS {
            let key = self
                .segments
                .get(pos as usize)
                .map_or("", |s| s.source.key.as_str());
            tracer.segment(key, outcome);
        }
        matches!(
            outcome,
            SegmentOutcome::Included | SegmentOutcome::Rule { .. }
        )
    }

    fn segment_outcome<'a, T: Tracer<'a>>(
        &'a self,
        pos: u32,
        ctx: &Context,
        tracer: &mut T,
        depth: u32,
    ) -> SegmentOutcome {
        let (Some(segment), Some(link)) = (
            self.segments.get(pos as usize),
            self.links.segments.get(pos as usize),
        ) else {
            return SegmentOutcome::NotFound;
        };
        let (Ok(body), None) = (&segment.body, &link.fault) else {
            return SegmentOutcome::Malformed;
        };
        if depth > MAX_DEPTH {
            return SegmentOutcome::Malformed;
        }
        if let Some(key) = ctx.key()
            && !(segment.included.is_empty() && segment.excluded.is_empty())
        {
            let hash = HashIndex::hash(key);
            if segment.included.contains_hashed(hash, key) {
                return SegmentOutcome::Included;
            }
            if segment.excluded.contains_hashed(hash, key) {
                return SegmentOutcome::Excluded;
            }
        }
        let mut attrs = Attrs::new(ctx, &body.attrs);
        let seg_base = link.segments as usize;
        tracer.nest_segment(true);
        let mut outcome = SegmentOutcome::NoMatch;
        for (index, rule) in body.rules.iter().enumerate() {
            let mut in_segment =
                |r| self.in_segment(self.segment_at(seg_base, r), ctx, tracer, depth + 1);
            let matched = if T::RECORDS {
                rule.clauses
                    .iter()
                    .all(|clause| attrs.test(clause, &mut in_segment).1 == Outcome::Match)
            } else {
                attrs.rule_matches(&rule.plan, &rule.clauses, in_segment)
            };
            if !matched {
                continue;
            }
            match rule.weight {
                None => {
                    outcome = SegmentOutcome::Rule {
                        index,
                        bucket: None,
                    };
                    break;
                }
                Some(weight) => {
                    let bucket = bucket_of(body.seed, attrs.get(rule.bucket_by));
                    if bucket.unwrap_or(0) < weight {
                        outcome = SegmentOutcome::Rule { index, bucket };
                        break;
                    }
                }
            }
        }
        tracer.nest_segment(false);
        outcome
    }
}

/// The key at position `p` of a flag's flattened target list.
fn target_key<'s>(body: &FlagBody, source: &'s vexil_schema::Flag, p: u32) -> &'s str {
    body.target_entries
        .get(p as usize)
        .and_then(|&(t, v)| {
            source
                .config
                .targets
                .get(t as usize)?
                .values
                .get(v as usize)
        })
        .map_or("", |s| s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clause::AttrNames;
    use serde_json::json;

    /// Cached lookups agree with `Context::attribute`, for a context built attribute by
    /// attribute and one read from JSON, including names that differ only past 8 bytes or
    /// by a trailing NUL.
    #[test]
    fn attribute_lookups_agree_with_the_context() {
        let present = [
            "a",
            "ab",
            "ab\0",
            "abcdefgh",
            "abcdefghi",
            "abcdefghz",
            "b",
            "zz",
            "é",
            "key2",
        ];
        let mut ctx = Context::new("k");
        for (i, n) in present.iter().enumerate() {
            ctx.set(*n, json!(i));
        }
        let wanted = [
            "abcdefghz",
            "a",
            "missing",
            "ab\0",
            "abcdefgh",
            "ab",
            "zzz",
            "é",
            "",
            "abcdefghi",
        ];
        let mut names = AttrNames::default();
        let attrs: Vec<Attr> = wanted.iter().map(|n| names.intern(n).unwrap()).collect();
        let table = names.into_table();
        let wire: Context = serde_json::from_value(serde_json::to_value(&ctx).unwrap()).unwrap();
        assert_eq!(wire, ctx);
        for ctx in [&ctx, &wire] {
            let mut a = Attrs::new(ctx, &table);
            for _ in 0..2 {
                for (attr, name) in attrs.iter().zip(wanted) {
                    let got = match a.get(*attr) {
                        Found::Json(v) => Some(v),
                        _ => None,
                    };
                    assert_eq!(got, ctx.attribute(name), "{name:?}");
                }
            }
        }
    }
}
