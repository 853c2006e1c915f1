//! Why a flag or segment cannot be evaluated.
//!
//! Compilation never fails: a flag with any of these problems compiles into a flag whose
//! every evaluation is `ERROR(MALFORMED)`, and the problem is kept for
//! [`crate::CompiledSnapshot::malformation`] and [`crate::Explanation`].

use serde::Serialize;
use vexil_schema::FlagKind;

/// The deepest prerequisite chain, and the deepest segment nesting, that evaluates: a flag
/// whose prerequisites (transitively) form a longer chain or a cycle is malformed.
pub const MAX_DEPTH: u32 = 32;

/// The most flag evaluations one evaluation may expand into through prerequisites (and the
/// most segment evaluations through nested segments). Bounds the work a diamond-shaped
/// dependency graph could otherwise multiply exponentially.
pub const MAX_EXPANSION: u64 = 1024;

/// A problem that makes a flag or segment impossible to evaluate.
///
/// `path` fields locate the problem inside the flag or segment, e.g.
/// `rules[2].clauses[0].values[1]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Malformation {
    /// The flag has no variations.
    #[error("the flag has no variations")]
    NoVariations,
    /// A variation's value is not of the flag's kind.
    #[error("variations[{index}]: value is not a {kind}")]
    VariationKind {
        /// Index of the variation.
        index: usize,
        /// The flag's kind, as on the wire.
        kind: &'static str,
    },
    /// A variation index points past the flag's variations.
    #[error("{path}: variation {index} does not exist (the flag has {count})")]
    VariationIndex {
        /// Where the index is.
        path: String,
        /// The index found.
        index: usize,
        /// How many variations the flag has.
        count: usize,
    },
    /// A rollout lists no variations.
    #[error("{path}: the rollout lists no variations")]
    EmptyRollout {
        /// Where the rollout is.
        path: String,
    },
    /// A rollout's weights do not sum to 100,000.
    #[error("{path}: rollout weights sum to {sum}, not 100000")]
    RolloutWeights {
        /// Where the rollout is.
        path: String,
        /// Their sum.
        sum: u64,
    },
    /// A segment rule's weight is above 100,000.
    #[error("{path}: weight {weight} is above 100000")]
    SegmentWeight {
        /// Where the weight is.
        path: String,
        /// The weight found.
        weight: u32,
    },
    /// A clause operand the operator cannot use (wrong type, bad regex, semver or date).
    #[error("{path}: {reason}")]
    Operand {
        /// Where the operand is.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The flag's prerequisites form a cycle, a chain deeper than [`MAX_DEPTH`], or expand
    /// into more than [`MAX_EXPANSION`] evaluations.
    #[error(
        "prerequisites form a cycle, a chain deeper than {MAX_DEPTH} or more than {MAX_EXPANSION} evaluations"
    )]
    PrerequisiteGraph,
    /// The segment's nested segments form a cycle, a chain deeper than [`MAX_DEPTH`], or
    /// expand into more than [`MAX_EXPANSION`] evaluations.
    #[error(
        "nested segments form a cycle, a chain deeper than {MAX_DEPTH} or more than {MAX_EXPANSION} evaluations"
    )]
    SegmentGraph,
    /// A `segment_match` clause refers to a segment that is itself malformed.
    #[error("segment {segment:?} is malformed")]
    MalformedSegment {
        /// The segment's key.
        segment: String,
    },
}

impl Malformation {
    /// A [`Malformation::VariationKind`] for a flag of `kind`.
    pub(crate) fn variation_kind(index: usize, kind: FlagKind) -> Self {
        Malformation::VariationKind {
            index,
            kind: kind.as_str(),
        }
    }
}
