//! Vexil's flag evaluation engine: pure (no I/O, no logging, no async), deterministic,
//! allocation-free on the evaluation path, and buildable for `wasm32-unknown-unknown`.
//!
//! Every part of Vexil evaluates through this crate. A [`CompiledSnapshot`] is built once
//! per environment snapshot (or updated incrementally) and then answers
//! [`CompiledSnapshot::evaluate`] with an [`Evaluation`]: a borrowed value, variation and
//! [`EvalReason`]. Nothing here returns `Result` or panics on bad data: a malformed flag
//! evaluates to `ERROR(MALFORMED)`.
//!
//! Layout:
//! - [`snapshot`](CompiledSnapshot): the public entry point, incremental updates;
//! - `compile`, `clause`: turning one flag or segment into its evaluable form (operands
//!   parsed, lists hashed, regexes built), recording a [`Malformation`] instead of failing;
//! - `link`: resolving prerequisite and segment references per snapshot, cycle and depth
//!   checks;
//! - `affected`: which flags a change can affect ([`CompiledSnapshot::flags_affected_since`]),
//!   for streams that re-evaluate per context;
//! - `eval`: the algorithm itself; [`explain`](CompiledSnapshot::explain) runs it with a
//!   recording tracer ([`Explanation`]);
//! - [`bucket`]: the percentage bucketing every implementation must reproduce;
//! - `evaluation`: result types and typed accessors; `table`: the string hash index;
//!   `needle`: integer shortcuts for comparing short strings.
//!
//! Semantics are specified in `docs/design.md`; `schema/testdata/eval/` holds the fixtures
//! every implementation runs.
#![deny(missing_docs)]

mod affected;
mod apply;
pub mod bucket;
mod clause;
mod compile;
mod eval;
mod evaluation;
mod explain;
mod keyset;
mod link;
mod malformed;
mod needle;
mod snapshot;
mod table;

pub use affected::AffectedFlags;
pub use apply::ApplyError;
pub use bucket::bucket;
pub use evaluation::{EvalReason, Evaluation, TypedEvaluation};
pub use explain::{
    BucketCheck, ClauseCheck, ClauseOutcome, Explanation, PrerequisiteCheck, RuleCheck,
    SegmentCheck, SegmentResult,
};
pub use malformed::{MAX_DEPTH, MAX_EXPANSION, Malformation};
pub use snapshot::CompiledSnapshot;
