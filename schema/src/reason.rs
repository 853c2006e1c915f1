//! Evaluation reasons in their owned, serialisable wire form.
//!
//! The engine (`vexil-eval`) produces a borrowed, allocation-free reason on its hot path and
//! converts it into this type at the edges (HTTP answers, fixtures, SDK details).

use serde::{Deserialize, Serialize};

/// Why an evaluation produced its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum Reason {
    /// The flag is off: the off variation was served.
    Off,
    /// A prerequisite was off or served another variation: the off variation was served.
    PrerequisiteFailed {
        /// The first prerequisite that failed.
        prerequisite_key: String,
    },
    /// The context key is an individual target.
    TargetMatch,
    /// A rule matched.
    RuleMatch {
        /// Zero-based index of the rule.
        rule_index: usize,
        /// The rule's id.
        rule_id: String,
    },
    /// No target or rule matched: the fallthrough was served.
    Fallthrough,
    /// The evaluation failed; the caller's default is served.
    Error {
        /// What went wrong.
        error_kind: ErrorKind,
    },
}

/// What went wrong in a failed evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ErrorKind {
    /// No flag with that key in the environment.
    FlagNotFound,
    /// The flag's configuration is invalid (index out of range, cycle, bad regex…).
    Malformed,
    /// The flag's value is not of the type the caller asked for.
    WrongType,
    /// The SDK has no data yet (not initialised and no last-known-good snapshot).
    ClientNotReady,
}

impl ErrorKind {
    /// The OpenFeature error code this maps to.
    pub fn openfeature_code(self) -> &'static str {
        match self {
            ErrorKind::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorKind::Malformed => "PARSE_ERROR",
            ErrorKind::WrongType => "TYPE_MISMATCH",
            ErrorKind::ClientNotReady => "PROVIDER_NOT_READY",
        }
    }
}

impl Reason {
    /// The OpenFeature resolution reason: `STATIC`, `TARGETING_MATCH`, `SPLIT`, `DISABLED`,
    /// `DEFAULT` or `ERROR`. `split` says whether the value came from a weighted rollout.
    ///
    /// This is the one place Vexil's reasons are mapped to OpenFeature's.
    pub fn openfeature_reason(&self, split: bool) -> &'static str {
        match self {
            Reason::Off | Reason::PrerequisiteFailed { .. } => "DISABLED",
            Reason::Error { .. } => "ERROR",
            _ if split => "SPLIT",
            Reason::TargetMatch | Reason::RuleMatch { .. } => "TARGETING_MATCH",
            Reason::Fallthrough => "DEFAULT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_form() {
        let r = Reason::RuleMatch {
            rule_index: 2,
            rule_id: "beta".into(),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"kind": "RULE_MATCH", "rule_index": 2, "rule_id": "beta"})
        );
        let e: Reason =
            serde_json::from_value(json!({"kind": "ERROR", "error_kind": "FLAG_NOT_FOUND"}))
                .unwrap();
        assert_eq!(
            e,
            Reason::Error {
                error_kind: ErrorKind::FlagNotFound
            }
        );
    }

    #[test]
    fn openfeature_mapping() {
        assert_eq!(Reason::Off.openfeature_reason(false), "DISABLED");
        assert_eq!(Reason::Fallthrough.openfeature_reason(false), "DEFAULT");
        assert_eq!(Reason::Fallthrough.openfeature_reason(true), "SPLIT");
        assert_eq!(
            Reason::TargetMatch.openfeature_reason(false),
            "TARGETING_MATCH"
        );
    }
}
