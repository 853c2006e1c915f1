//! Parsers for clause operands, shared by validation and the evaluation engine so that what
//! validation accepts is exactly what evaluation understands.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Longest regular-expression pattern accepted in a `matches` clause, in bytes.
pub const MAX_REGEX_PATTERN_LEN: usize = 1024;

/// Compiled-size limit for a `matches` regular expression, in bytes. Bounds both memory and
/// the time to build the automaton; matching time is linear in the input either way.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// Why a regular expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegexError {
    /// The pattern is longer than [`MAX_REGEX_PATTERN_LEN`].
    #[error("pattern is {0} bytes; at most {MAX_REGEX_PATTERN_LEN} allowed")]
    TooLong(usize),
    /// The pattern does not compile, or compiles past [`REGEX_SIZE_LIMIT`].
    #[error("invalid regular expression: {0}")]
    Invalid(String),
}

/// Compiles a `matches` pattern with Vexil's limits.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, RegexError> {
    if pattern.len() > MAX_REGEX_PATTERN_LEN {
        return Err(RegexError::TooLong(pattern.len()));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| RegexError::Invalid(e.to_string()))
}

/// Parses a date operand or attribute into milliseconds since the Unix epoch.
///
/// Accepts an RFC 3339 string (`2026-01-31T12:00:00Z`, any offset, fractional seconds) or a
/// number of epoch milliseconds. Anything else is `None`.
pub fn parse_date_millis(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i)
            } else {
                let f = n.as_f64()?;
                (f.is_finite() && f.abs() < 9.0e15).then_some(f as i64)
            }
        }
        Value::String(s) => {
            let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
            i64::try_from(dt.unix_timestamp_nanos() / 1_000_000).ok()
        }
        _ => None,
    }
}

/// Parses a semantic version, leniently: a leading `v` is dropped and a missing minor or
/// patch component counts as zero (`2` → `2.0.0`, `v1.4` → `1.4.0`). Pre-release tags
/// compare per SemVer 2.0; build metadata is ignored in comparisons.
pub fn parse_semver(s: &str) -> Option<semver::Version> {
    let s = s.strip_prefix('v').unwrap_or(s);
    if let Ok(v) = semver::Version::parse(s) {
        return Some(v);
    }
    // Split off any pre-release/build suffix, pad the numeric core to three parts.
    let core_end = s.find(['-', '+']).unwrap_or(s.len());
    let (core, rest) = s.split_at(core_end);
    let parts = core.split('.').count();
    if core.is_empty() || parts >= 3 || !core.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let padded = format!("{core}{}{rest}", ".0".repeat(3 - parts));
    semver::Version::parse(&padded).ok()
}

/// Reads a number operand or attribute as `f64`. Only JSON numbers count: the string `"5"`
/// is not a number.
pub fn parse_number(value: &Value) -> Option<f64> {
    value.as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates() {
        assert_eq!(
            parse_date_millis(&json!("1970-01-01T00:00:01Z")),
            Some(1000)
        );
        assert_eq!(
            parse_date_millis(&json!("1970-01-01T01:00:00.5+01:00")),
            Some(500)
        );
        assert_eq!(parse_date_millis(&json!(1234)), Some(1234));
        assert_eq!(parse_date_millis(&json!(12.9)), Some(12));
        assert_eq!(parse_date_millis(&json!("yesterday")), None);
        assert_eq!(parse_date_millis(&json!(true)), None);
    }

    #[test]
    fn semvers() {
        assert_eq!(parse_semver("1.2.3"), Some(semver::Version::new(1, 2, 3)));
        assert_eq!(parse_semver("v2"), Some(semver::Version::new(2, 0, 0)));
        assert_eq!(parse_semver("1.4"), Some(semver::Version::new(1, 4, 0)));
        assert_eq!(
            parse_semver("1.4-beta.1").map(|v| v.pre.to_string()),
            Some("beta.1".to_string())
        );
        assert!(parse_semver("1.2.3-rc.1").unwrap() < parse_semver("1.2.3").unwrap());
        assert_eq!(parse_semver("banana"), None);
        assert_eq!(parse_semver(""), None);
    }

    #[test]
    fn regexes_are_limited() {
        assert!(compile_regex("^[a-z]+@example\\.com$").is_ok());
        assert!(matches!(compile_regex("("), Err(RegexError::Invalid(_))));
        assert!(matches!(
            compile_regex(&"a".repeat(MAX_REGEX_PATTERN_LEN + 1)),
            Err(RegexError::TooLong(_))
        ));
        assert!(
            compile_regex("\\w{1000}\\w{1000}").is_err(),
            "size limit applies"
        );
    }

    #[test]
    fn numbers_are_json_numbers_only() {
        assert_eq!(parse_number(&json!(5)), Some(5.0));
        assert_eq!(parse_number(&json!("5")), None);
    }
}
