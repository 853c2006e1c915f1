//! Size limits enforced by [`crate::validate`].
//!
//! Every limit bounds the memory a document takes and the work an evaluation does, and each
//! sits far above what a real flag needs. A document beyond one is rejected with the rule
//! `limit_exceeded` and the path of the field that is too big. Lengths are counted in
//! characters (Unicode scalar values) unless a constant says bytes.
//!
//! Key lengths are bounded by [`crate::key::MAX_KEY_LEN`] and regular-expression patterns by
//! [`crate::operand::MAX_REGEX_PATTERN_LEN`] and [`crate::operand::REGEX_SIZE_LIMIT`].

/// Most variations a flag may have.
pub const MAX_VARIATIONS: usize = 100;

/// Largest variation value, in bytes of compact JSON (a JSON flag's payload).
pub const MAX_VARIATION_VALUE_BYTES: usize = 64 * 1024;

/// Longest name of a flag, segment or variation.
pub const MAX_NAME_LEN: usize = 256;

/// Longest description of a flag, segment, variation or rule.
pub const MAX_DESCRIPTION_LEN: usize = 4_096;

/// Most tags on a flag.
pub const MAX_TAGS: usize = 50;

/// Longest tag.
pub const MAX_TAG_LEN: usize = 64;

/// Most targeting rules in a flag configuration.
pub const MAX_RULES: usize = 1_000;

/// Most rules in a segment.
pub const MAX_SEGMENT_RULES: usize = 1_000;

/// Most clauses in one rule (flag or segment).
pub const MAX_CLAUSES_PER_RULE: usize = 100;

/// Most values in one clause.
pub const MAX_VALUES_PER_CLAUSE: usize = 10_000;

/// Longest string value in a clause (a `matches` pattern is further bounded by
/// [`crate::operand::MAX_REGEX_PATTERN_LEN`]).
pub const MAX_CLAUSE_VALUE_LEN: usize = 4_096;

/// Longest attribute name in a clause or a rollout's `bucket_by`.
pub const MAX_ATTRIBUTE_LEN: usize = 256;

/// Most distinct attribute names one flag configuration, or one segment, may use in its
/// clauses and `bucket_by` attributes together. (The evaluation engine gives up past 65,535;
/// no real flag comes near either.)
pub const MAX_DISTINCT_ATTRIBUTES: usize = 1_000;

/// Longest rule id.
pub const MAX_RULE_ID_LEN: usize = 256;

/// Most individually targeted context keys in one flag configuration, over all variations.
pub const MAX_TARGET_KEYS: usize = 100_000;

/// Most context keys in a segment's `included` list, and separately in its `excluded` list.
/// Large customer lists are edited key by key (`delta` events), so their size costs memory
/// on receivers, not bandwidth per edit.
pub const MAX_SEGMENT_KEYS: usize = 1_000_000;

/// Most keys one incremental edit of key lists may name (added and removed, over every list
/// it edits): one request of the segment keys or flag targets edit operations.
pub const MAX_EDIT_KEYS: usize = 100_000;

/// Longest context key in a target list or a segment's `included`/`excluded` lists.
pub const MAX_CONTEXT_KEY_LEN: usize = 1_024;

/// Most prerequisites of one flag.
pub const MAX_PREREQUISITES: usize = 100;

/// Longest chain of flags linked by prerequisites, counting both ends: `a -> b -> c` (a
/// requires b, which requires c) is 3 flags. Bounds the recursion of an evaluation. Equal to
/// the evaluation engine's `vexil_eval::MAX_DEPTH`: a longer chain does not evaluate.
pub const MAX_PREREQUISITE_DEPTH: usize = 32;

/// Most flag evaluations one evaluation may expand into through prerequisites, counting the
/// flag itself and every repeat (a flag two prerequisites share counts twice). Bounds the work
/// a diamond-shaped dependency graph would otherwise multiply. Equal to the engine's
/// `vexil_eval::MAX_EXPANSION`.
pub const MAX_PREREQUISITE_EXPANSION: usize = 1024;

/// Longest chain of segments nested through `segment_match` clauses, counting both ends: a
/// segment matching segment `b`, which matches `c`, makes 3. Equal to the engine's
/// `vexil_eval::MAX_DEPTH`.
pub const MAX_SEGMENT_DEPTH: usize = 32;

/// Most segment evaluations one segment may expand into through nested segments, counting
/// itself and every repeat. Equal to the engine's `vexil_eval::MAX_EXPANSION`.
pub const MAX_SEGMENT_EXPANSION: usize = 1024;

/// Longest salt of a flag configuration or a segment.
pub const MAX_SALT_LEN: usize = 256;

/// Most errors reported for one document; past it the last entry says how many were left out
/// (rule `too_many_errors`), so a huge bad upload yields a readable answer.
pub const MAX_REPORTED_ERRORS: usize = 100;
