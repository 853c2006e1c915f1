//! The stable rule codes a [`FieldError`](super::FieldError) carries.
//!
//! Codes are snake_case and never change meaning once published; clients may branch on them.
//! `docs/validation.md` describes each one.

/// A string that must be a key (`[A-Za-z0-9._-]{1,256}`) is not one, e.g. a segment key in a
/// `segment_match` clause.
pub const KEY_FORMAT: &str = "key_format";
/// A required value is missing or empty: a rule id, a clause attribute, a target key, a
/// flag's variations.
pub const REQUIRED: &str = "required";
/// A size limit from [`crate::limits`] is exceeded.
pub const LIMIT_EXCEEDED: &str = "limit_exceeded";
/// A variation value is not of the flag's kind.
pub const VALUE_KIND: &str = "value_kind";
/// A boolean flag does not have exactly two variations, `true` and `false`.
pub const BOOLEAN_VARIATIONS: &str = "boolean_variations";
/// Two variations of a flag have the same value.
pub const DUPLICATE_VARIATION_VALUE: &str = "duplicate_variation_value";
/// Two variations of a flag have the same name.
pub const DUPLICATE_VARIATION_NAME: &str = "duplicate_variation_name";
/// A tag holds a character outside `[A-Za-z0-9._:/-]` or is empty.
pub const TAG_FORMAT: &str = "tag_format";
/// A tag is listed twice.
pub const DUPLICATE_TAG: &str = "duplicate_tag";
/// A variation index is out of range for the flag it refers to.
pub const VARIATION_INDEX: &str = "variation_index";
/// A rollout or segment-rule weight is above 100,000.
pub const WEIGHT_RANGE: &str = "weight_range";
/// A rollout's weights do not sum to exactly 100,000.
pub const WEIGHTS_SUM: &str = "weights_sum";
/// A rollout lists the same variation twice.
pub const DUPLICATE_ROLLOUT_VARIATION: &str = "duplicate_rollout_variation";
/// A context key is targeted twice (in one flag's targets, or in one segment list).
pub const DUPLICATE_TARGET: &str = "duplicate_target";
/// Two target entries of a flag serve the same variation.
pub const DUPLICATE_TARGET_VARIATION: &str = "duplicate_target_variation";
/// Two rules of a flag or segment share an id.
pub const DUPLICATE_RULE_ID: &str = "duplicate_rule_id";
/// A clause value has the wrong JSON type for its operator.
pub const OPERAND_TYPE: &str = "operand_type";
/// A `before`/`after` value is neither an RFC 3339 date nor epoch milliseconds.
pub const DATE_INVALID: &str = "date_invalid";
/// A `semver_*` value is not a semantic version.
pub const SEMVER_INVALID: &str = "semver_invalid";
/// A `matches` value does not compile, or compiles past the size limit.
pub const REGEX_INVALID: &str = "regex_invalid";
/// A clause whose operator compares against values has none.
pub const VALUES_REQUIRED: &str = "values_required";
/// An `exists` clause has values.
pub const VALUES_NOT_ALLOWED: &str = "values_not_allowed";
/// A prerequisite names a flag that does not exist in the environment.
pub const UNKNOWN_FLAG: &str = "unknown_flag";
/// A `segment_match` clause names a segment that does not exist in the environment.
pub const UNKNOWN_SEGMENT: &str = "unknown_segment";
/// A flag lists the same prerequisite flag twice.
pub const DUPLICATE_PREREQUISITE: &str = "duplicate_prerequisite";
/// Prerequisites form a cycle (including a flag being its own prerequisite).
pub const PREREQUISITE_CYCLE: &str = "prerequisite_cycle";
/// Segments refer to each other in a cycle (including a segment matching itself).
pub const SEGMENT_CYCLE: &str = "segment_cycle";
/// Two flags or two segments of an environment share a key.
pub const DUPLICATE_KEY: &str = "duplicate_key";
/// More errors were found than [`crate::limits::MAX_REPORTED_ERRORS`]; the rest are omitted.
pub const TOO_MANY_ERRORS: &str = "too_many_errors";

/// Every rule code, for documentation and exhaustive tests.
pub const ALL: &[&str] = &[
    KEY_FORMAT,
    REQUIRED,
    LIMIT_EXCEEDED,
    VALUE_KIND,
    BOOLEAN_VARIATIONS,
    DUPLICATE_VARIATION_VALUE,
    DUPLICATE_VARIATION_NAME,
    TAG_FORMAT,
    DUPLICATE_TAG,
    VARIATION_INDEX,
    WEIGHT_RANGE,
    WEIGHTS_SUM,
    DUPLICATE_ROLLOUT_VARIATION,
    DUPLICATE_TARGET,
    DUPLICATE_TARGET_VARIATION,
    DUPLICATE_RULE_ID,
    OPERAND_TYPE,
    DATE_INVALID,
    SEMVER_INVALID,
    REGEX_INVALID,
    VALUES_REQUIRED,
    VALUES_NOT_ALLOWED,
    UNKNOWN_FLAG,
    UNKNOWN_SEGMENT,
    DUPLICATE_PREREQUISITE,
    PREREQUISITE_CYCLE,
    SEGMENT_CYCLE,
    DUPLICATE_KEY,
    TOO_MANY_ERRORS,
];
