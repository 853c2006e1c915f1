//! Vexil's evaluation engine beside LaunchDarkly's and Unleash's, on the same flags.
//!
//! The three benchmark flags of `schema/testdata/bench/` (a plain boolean, a 10-rule
//! targeting flag with a segment, a 33/33/34 experiment) are translated faithfully into each
//! peer's model (same rules, clauses, values, segment and weights) and evaluated with each
//! peer's own evaluator:
//!
//! - [`launchdarkly`]: `launchdarkly-server-sdk-evaluation` 2.2.1;
//! - [`unleash`]: `unleash-yggdrasil` 0.21.7 (the engine inside Unleash's SDKs).
//!
//! `tests/agreement.rs` proves every peer serves the same variation as Vexil for each
//! benchmark context; `benches/peers.rs` measures ns per evaluation and heap allocations
//! per evaluation, side by side, in one run:
//!
//! ```text
//! cargo bench --manifest-path loadtest/peers/Cargo.toml
//! ```
//!
//! The package stays outside the workspace (root `exclude`) so the peers' dependencies never
//! enter the product's build.

use vexil_eval::CompiledSnapshot;
use vexil_schema::fixture::BenchFixture;

pub mod launchdarkly;
pub mod unleash;

/// How many rollout seeds (or group ids) are tried to give a peer's bucketing the same
/// variation as Vexil's for the benchmark context; each try succeeds with probability about
/// a third, so running out means a broken translation.
pub const ALIGNMENT_TRIES: i64 = 1000;

/// Why a snapshot or context could not be expressed in a peer's model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranslateError {
    /// The peer's model has no faithful equivalent.
    #[error("{peer}: no faithful translation for {what}")]
    Unsupported {
        /// The peer.
        peer: &'static str,
        /// What could not be translated.
        what: String,
    },
    /// The peer refused the translated document.
    #[error("{peer} rejected the translated {item}: {message}")]
    Rejected {
        /// The peer.
        peer: &'static str,
        /// The flag, segment or document refused.
        item: String,
        /// The peer's message.
        message: String,
    },
    /// No seed made the peer's bucketing agree with Vexil's.
    #[error(
        "{peer}: no rollout seed in {ALIGNMENT_TRIES} tries buckets the context of `{flag}` as Vexil does"
    )]
    Alignment {
        /// The peer.
        peer: &'static str,
        /// The flag.
        flag: String,
    },
}

/// What Vexil serves for a fixture: the reference every peer is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VexilOutcome {
    /// The variation index served (`None` on error).
    pub variation: Option<usize>,
    /// Whether it was served by a weighted rollout.
    pub split: bool,
    /// Whether it counts as an experiment exposure.
    pub in_experiment: bool,
}

/// Evaluates the fixture with `vexil-eval`.
pub fn vexil_outcome(fixture: &BenchFixture) -> VexilOutcome {
    let compiled = CompiledSnapshot::compile(&fixture.snapshot);
    let eval = compiled.evaluate(&fixture.flag, &fixture.context);
    VexilOutcome {
        variation: eval.variation,
        split: eval.split,
        in_experiment: eval.in_experiment,
    }
}
