//! [`Explanation`]: an evaluation with every step recorded, for debugging tools.
//!
//! It runs the very same algorithm as `evaluate` with a recording tracer, so an explanation
//! always agrees with the evaluation it explains.

use serde::Serialize;
use serde_json::Value;
use vexil_schema::{Context, ErrorKind, Operator, Reason};

use crate::clause::{Found, Outcome};
use crate::eval::{SegmentOutcome, Tracer};
use crate::evaluation::Evaluation;
use crate::malformed::Malformation;
use crate::snapshot::CompiledSnapshot;

/// An evaluation and the steps that led to it. Owned and serialisable.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Explanation {
    /// The flag evaluated.
    pub flag_key: String,
    /// The value served; `None` on error.
    pub value: Option<Value>,
    /// The variation served; `None` on error.
    pub variation: Option<usize>,
    /// Why, in wire form.
    pub reason: Reason,
    /// As [`Evaluation::in_experiment`].
    pub in_experiment: bool,
    /// As [`Evaluation::split`].
    pub split: bool,
    /// Why the flag cannot be evaluated, when the reason is `ERROR(MALFORMED)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub malformed: Option<Malformation>,
    /// Human-readable form of `malformed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub malformed_message: Option<String>,
    /// Prerequisites checked, in order, up to the first that failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<PrerequisiteCheck>,
    /// Rules tried, in order, up to the one that matched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleCheck>,
    /// The bucketing of the rollout served, if one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<BucketCheck>,
}

/// One prerequisite checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PrerequisiteCheck {
    /// The prerequisite flag.
    pub key: String,
    /// The variation it must serve.
    pub required_variation: usize,
    /// The variation it served, if any.
    pub variation: Option<usize>,
    /// Its reason; `None` if it is not in the snapshot.
    pub reason: Option<Reason>,
    /// Whether it was met.
    pub met: bool,
}

/// One rule tried.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RuleCheck {
    /// Zero-based index.
    pub index: usize,
    /// The rule's id.
    pub id: String,
    /// Whether every clause matched.
    pub matched: bool,
    /// Clauses evaluated, in order, up to the first that did not match.
    pub clauses: Vec<ClauseCheck>,
}

/// One clause evaluated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ClauseCheck {
    /// Zero-based index within the rule.
    pub index: usize,
    /// The attribute tested.
    pub attribute: String,
    /// The operator.
    pub op: Operator,
    /// Whether the result was inverted.
    pub negate: bool,
    /// The context's value for the attribute, if present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_value: Option<Value>,
    /// The result.
    pub outcome: ClauseOutcome,
    /// For `segment_match`: each segment tried, until one contained the context.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentCheck>,
}

/// The result of one clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClauseOutcome {
    /// The clause matched.
    Match,
    /// The clause did not match.
    NoMatch,
    /// The attribute is absent or null, so the clause did not match.
    MissingAttribute,
}

/// One segment tried by a `segment_match` clause.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SegmentCheck {
    /// The segment.
    pub key: String,
    /// What it concluded.
    pub result: SegmentResult,
}

/// What a segment concluded about the context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SegmentResult {
    /// The segment is not in the snapshot: not a member.
    NotFound,
    /// The context key is in the include list: a member.
    Included,
    /// The context key is in the exclude list: not a member.
    Excluded,
    /// A rule matched: a member.
    RuleMatch {
        /// Zero-based rule index.
        rule_index: usize,
        /// The rule's id.
        rule_id: String,
        /// The context's bucket, if the rule has a weight.
        #[serde(skip_serializing_if = "Option::is_none")]
        bucket: Option<u32>,
    },
    /// No rule matched: not a member.
    NoMatch,
    /// The segment is malformed (the flag then evaluates to an error).
    Malformed,
}

/// The bucketing of a served rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BucketCheck {
    /// The attribute hashed.
    pub bucket_by: String,
    /// The bucket in `[0, 100000)`; `None` when the attribute was missing or of a type that
    /// does not bucket (bucket 0 was used).
    pub bucket: Option<u32>,
}

/// Records the steps of the flag at depth 0.
struct Recorder<'s> {
    snapshot: &'s CompiledSnapshot,
    flag: &'s vexil_schema::Flag,
    flag_depth: u32,
    segment_depth: u32,
    prerequisites: Vec<PrerequisiteCheck>,
    rules: Vec<RuleCheck>,
    pending_segments: Vec<SegmentCheck>,
    bucket: Option<BucketCheck>,
}

impl Recorder<'_> {
    fn top(&self) -> bool {
        self.flag_depth == 0 && self.segment_depth == 0
    }
}

impl<'a> Tracer<'a> for Recorder<'_> {
    const RECORDS: bool = true;

    fn prerequisite(&mut self, index: usize, result: Option<&Evaluation<'a>>, met: bool) {
        if self.flag_depth != 0 {
            return;
        }
        let Some(p) = self.flag.config.prerequisites.get(index) else {
            return;
        };
        self.prerequisites.push(PrerequisiteCheck {
            key: p.key.to_string(),
            required_variation: p.variation,
            variation: result.and_then(|r| r.variation),
            reason: result.map(Evaluation::to_reason),
            met,
        });
    }

    fn nest_flag(&mut self, enter: bool) {
        if enter {
            self.flag_depth += 1;
        } else {
            self.flag_depth = self.flag_depth.saturating_sub(1);
        }
    }

    fn nest_segment(&mut self, enter: bool) {
        if enter {
            self.segment_depth += 1;
        } else {
            self.segment_depth = self.segment_depth.saturating_sub(1);
        }
    }

    fn rule(&mut self, index: usize) {
        if !self.top() {
            return;
        }
        self.rules.push(RuleCheck {
            index,
            id: self
                .flag
                .config
                .rules
                .get(index)
                .map_or_else(String::new, |r| r.id.clone()),
            matched: true,
            clauses: Vec::new(),
        });
    }

    fn clause(&mut self, index: usize, found: Found<'_>, outcome: Outcome) {
        if !self.top() {
            return;
        }
        let segments = std::mem::take(&mut self.pending_segments);
        let Some(rule) = self.rules.last_mut() else {
            return;
        };
        let Some(source) = self
            .flag
            .config
            .rules
            .get(rule.index)
            .and_then(|r| r.clauses.get(index))
        else {
            return;
        };
        let context_value = match found {
            Found::Missing => None,
            Found::Str(s) => Some(Value::String(s.to_owned())),
            Found::Json(v) => Some(v.clone()),
        };
        rule.matched &= outcome == Outcome::Match;
        rule.clauses.push(ClauseCheck {
            index,
            attribute: source.attribute.clone(),
            op: source.op,
            negate: source.negate,
            context_value: (source.op != Operator::SegmentMatch)
                .then_some(context_value)
                .flatten(),
            outcome: match outcome {
                Outcome::Match => ClauseOutcome::Match,
                Outcome::NoMatch => ClauseOutcome::NoMatch,
                Outcome::Missing => ClauseOutcome::MissingAttribute,
            },
            segments,
        });
    }

    fn segment(&mut self, key: &str, outcome: SegmentOutcome) {
        if !self.top() {
            return;
        }
        let result = match outcome {
            SegmentOutcome::NotFound => SegmentResult::NotFound,
            SegmentOutcome::Included => SegmentResult::Included,
            SegmentOutcome::Excluded => SegmentResult::Excluded,
            SegmentOutcome::Rule { index, bucket } => SegmentResult::RuleMatch {
                rule_index: index,
                rule_id: self
                    .snapshot
                    .segment_definition(key)
                    .and_then(|s| s.rules.get(index))
                    .map_or_else(String::new, |r| r.id.clone()),
                bucket,
            },
            SegmentOutcome::NoMatch => SegmentResult::NoMatch,
            SegmentOutcome::Malformed => SegmentResult::Malformed,
        };
        self.pending_segments.push(SegmentCheck {
            key: key.to_owned(),
            result,
        });
    }

    fn bucket(&mut self, attribute: &str, bucket: Option<u32>) {
        if self.flag_depth == 0 {
            self.bucket = Some(BucketCheck {
                bucket_by: attribute.to_owned(),
                bucket,
            });
        }
    }
}

/// Evaluates `flag_key` with a recorder.
pub(crate) fn explain(snapshot: &CompiledSnapshot, flag_key: &str, ctx: &Context) -> Explanation {
    let Some(pos) = snapshot.flag_position(flag_key) else {
        return Explanation {
            flag_key: flag_key.to_owned(),
            value: None,
            variation: None,
            reason: Reason::Error {
                error_kind: ErrorKind::FlagNotFound,
            },
            in_experiment: false,
            split: false,
            malformed: None,
            malformed_message: None,
            prerequisites: Vec::new(),
            rules: Vec::new(),
            bucket: None,
        };
    };
    let flag = &snapshot.flags[pos as usize].source;
    let mut recorder = Recorder {
        snapshot,
        flag,
        flag_depth: 0,
        segment_depth: 0,
        prerequisites: Vec::new(),
        rules: Vec::new(),
        pending_segments: Vec::new(),
        bucket: None,
    };
    let eval = snapshot.eval_at(pos, ctx, &mut recorder, 0);
    let malformed = match eval.reason.error_kind() {
        Some(ErrorKind::Malformed) => snapshot.malformation(flag_key).cloned(),
        _ => None,
    };
    Explanation {
        flag_key: flag_key.to_owned(),
        value: eval.value.cloned(),
        variation: eval.variation,
        reason: eval.to_reason(),
        in_experiment: eval.in_experiment,
        split: eval.split,
        malformed_message: malformed.as_ref().map(ToString::to_string),
        malformed,
        prerequisites: recorder.prerequisites,
        rules: recorder.rules,
        bucket: recorder.bucket,
    }
}
