//! The result of an evaluation: a borrowed, allocation-free value and reason, converted to
//! the owned wire form ([`vexil_schema::Reason`]) only at the edges.

use serde_json::Value;
use vexil_schema::{ErrorKind, Reason};

/// Why an evaluation produced its value; the borrowed twin of [`vexil_schema::Reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EvalReason<'a> {
    /// The flag is off: the off variation was served.
    Off,
    /// A prerequisite was missing, off, failed its own checks or served another variation:
    /// the off variation was served.
    PrerequisiteFailed {
        /// The first prerequisite that failed.
        prerequisite_key: &'a str,
    },
    /// The context key is an individual target.
    TargetMatch,
    /// A rule matched.
    RuleMatch {
        /// Zero-based index of the rule.
        rule_index: usize,
        /// The rule's id.
        rule_id: &'a str,
    },
    /// No target or rule matched: the fallthrough was served.
    Fallthrough,
    /// The evaluation failed; the caller's default applies.
    Error {
        /// What went wrong.
        error_kind: ErrorKind,
    },
}

impl EvalReason<'_> {
    /// The owned wire form.
    pub fn to_reason(&self) -> Reason {
        match *self {
            EvalReason::Off => Reason::Off,
            EvalReason::PrerequisiteFailed { prerequisite_key } => Reason::PrerequisiteFailed {
                prerequisite_key: prerequisite_key.to_owned(),
            },
            EvalReason::TargetMatch => Reason::TargetMatch,
            EvalReason::RuleMatch {
                rule_index,
                rule_id,
            } => Reason::RuleMatch {
                rule_index,
                rule_id: rule_id.to_owned(),
            },
            EvalReason::Fallthrough => Reason::Fallthrough,
            EvalReason::Error { error_kind } => Reason::Error { error_kind },
        }
    }

    /// The OpenFeature resolution reason, through [`Reason::openfeature_reason`] (the one
    /// mapping) without allocating: string fields do not influence it and are left empty.
    pub fn openfeature_reason(&self, split: bool) -> &'static str {
        let shape = match *self {
            EvalReason::Off => Reason::Off,
            EvalReason::PrerequisiteFailed { .. } => Reason::PrerequisiteFailed {
                prerequisite_key: String::new(),
            },
            EvalReason::TargetMatch => Reason::TargetMatch,
            EvalReason::RuleMatch { rule_index, .. } => Reason::RuleMatch {
                rule_index,
                rule_id: String::new(),
            },
            EvalReason::Fallthrough => Reason::Fallthrough,
            EvalReason::Error { error_kind } => Reason::Error { error_kind },
        };
        shape.openfeature_reason(split)
    }

    /// The error, if the evaluation failed.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        match *self {
            EvalReason::Error { error_kind } => Some(error_kind),
            _ => None,
        }
    }
}

/// The result of evaluating one flag for one context. Borrows from the compiled snapshot;
/// building it allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation<'a> {
    /// The value served; `None` on error (the caller's default applies).
    pub value: Option<&'a Value>,
    /// Index of the variation served; `None` on error.
    pub variation: Option<usize>,
    /// Why.
    pub reason: EvalReason<'a>,
    /// Whether the value came from a rollout marked `experiment` and the context was
    /// actually bucketed (it had the bucket-by attribute), so the exposure counts.
    pub in_experiment: bool,
    /// Whether the value came from a weighted rollout (OpenFeature's `SPLIT`).
    pub split: bool,
}

impl<'a> Evaluation<'a> {
    /// A failed evaluation.
    pub fn error(error_kind: ErrorKind) -> Self {
        Self {
            value: None,
            variation: None,
            reason: EvalReason::Error { error_kind },
            in_experiment: false,
            split: false,
        }
    }

    /// The owned wire form of the reason.
    pub fn to_reason(&self) -> Reason {
        self.reason.to_reason()
    }

    /// The OpenFeature resolution reason (`STATIC`… `ERROR`), via
    /// [`Reason::openfeature_reason`].
    pub fn openfeature_reason(&self) -> &'static str {
        self.reason.openfeature_reason(self.split)
    }

    /// The value as a boolean, or `default` (with `ERROR(WRONG_TYPE)` if a value of another
    /// type was served).
    pub fn as_bool(&self, default: bool) -> TypedEvaluation<'a, bool> {
        self.typed(default, Value::as_bool)
    }

    /// The value as a string, or `default`.
    pub fn as_str<'b>(&self, default: &'b str) -> TypedEvaluation<'b, &'b str>
    where
        'a: 'b,
    {
        self.typed(default, Value::as_str)
    }

    /// The value as a float (any JSON number), or `default`.
    pub fn as_f64(&self, default: f64) -> TypedEvaluation<'a, f64> {
        self.typed(default, Value::as_f64)
    }

    /// The value as an integer (a JSON number with no fractional part that fits an `i64`),
    /// or `default`.
    pub fn as_i64(&self, default: i64) -> TypedEvaluation<'a, i64> {
        self.typed(default, |v| {
            v.as_i64().or_else(|| {
                let f = v.as_f64()?;
                // The range check keeps the cast exact.
                (f.fract() == 0.0 && (-9.2e18..=9.2e18).contains(&f)).then_some(f as i64)
            })
        })
    }

    /// The value as any JSON value (never a type mismatch), or `default` on error.
    pub fn as_json<'b>(&self, default: &'b Value) -> TypedEvaluation<'b, &'b Value>
    where
        'a: 'b,
    {
        self.typed(default, Some)
    }

    fn typed<'b, T>(
        &self,
        default: T,
        read: impl FnOnce(&'b Value) -> Option<T>,
    ) -> TypedEvaluation<'b, T>
    where
        'a: 'b,
    {
        let Some(value) = self.value else {
            return TypedEvaluation::fallback(default, self.reason);
        };
        match read(value) {
            Some(v) => TypedEvaluation {
                value: v,
                variation: self.variation,
                reason: self.reason,
                in_experiment: self.in_experiment,
                split: self.split,
            },
            None => TypedEvaluation::fallback(
                default,
                EvalReason::Error {
                    error_kind: ErrorKind::WrongType,
                },
            ),
        }
    }
}

/// An evaluation read as one type: the served value, or the caller's default with an error
/// reason.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TypedEvaluation<'a, T> {
    /// The served value, or the caller's default on error.
    pub value: T,
    /// Index of the variation served; `None` when the default was used.
    pub variation: Option<usize>,
    /// Why; `ERROR(WRONG_TYPE)` when the served value had another type.
    pub reason: EvalReason<'a>,
    /// As [`Evaluation::in_experiment`]; `false` when the default was used.
    pub in_experiment: bool,
    /// As [`Evaluation::split`]; `false` when the default was used.
    pub split: bool,
}

impl<'a, T> TypedEvaluation<'a, T> {
    fn fallback(default: T, reason: EvalReason<'a>) -> Self {
        Self {
            value: default,
            variation: None,
            reason,
            in_experiment: false,
            split: false,
        }
    }

    /// The owned wire form of the reason.
    pub fn to_reason(&self) -> Reason {
        self.reason.to_reason()
    }

    /// The OpenFeature resolution reason.
    pub fn openfeature_reason(&self) -> &'static str {
        self.reason.openfeature_reason(self.split)
    }

    /// The error, if the caller's default was used.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        self.reason.error_kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn served(v: &Value) -> Evaluation<'_> {
        Evaluation {
            value: Some(v),
            variation: Some(1),
            reason: EvalReason::RuleMatch {
                rule_index: 0,
                rule_id: "r",
            },
            in_experiment: true,
            split: true,
        }
    }

    #[test]
    fn typed_accessors() {
        let t = json!(true);
        let e = served(&t);
        assert!(e.as_bool(false).value);
        assert_eq!(e.as_bool(false).variation, Some(1));
        let wrong = e.as_str("dflt");
        assert_eq!(wrong.value, "dflt");
        assert_eq!(wrong.error_kind(), Some(ErrorKind::WrongType));
        assert_eq!(wrong.variation, None);
        assert!(!wrong.in_experiment);
        assert_eq!(wrong.openfeature_reason(), "ERROR");
        assert_eq!(e.as_json(&json!(null)).value, &t);

        let n = json!(3.0);
        assert_eq!(served(&n).as_i64(0).value, 3);
        assert_eq!(served(&json!(3.5)).as_i64(7).value, 7);
        assert_eq!(served(&n).as_f64(0.0).value, 3.0);
    }

    #[test]
    fn errors_keep_their_kind() {
        let e = Evaluation::error(ErrorKind::FlagNotFound);
        let t = e.as_bool(true);
        assert!(t.value);
        assert_eq!(t.error_kind(), Some(ErrorKind::FlagNotFound));
        assert_eq!(
            e.to_reason(),
            Reason::Error {
                error_kind: ErrorKind::FlagNotFound
            }
        );
    }

    #[test]
    fn openfeature_reasons_follow_the_schema_mapping() {
        let v = json!(1);
        let mut e = served(&v);
        assert_eq!(e.openfeature_reason(), "SPLIT");
        e.split = false;
        assert_eq!(e.openfeature_reason(), "TARGETING_MATCH");
        e.reason = EvalReason::Off;
        assert_eq!(e.openfeature_reason(), "DISABLED");
        for r in [
            EvalReason::Off,
            EvalReason::PrerequisiteFailed {
                prerequisite_key: "p",
            },
            EvalReason::TargetMatch,
            EvalReason::Fallthrough,
        ] {
            for split in [false, true] {
                assert_eq!(
                    r.openfeature_reason(split),
                    r.to_reason().openfeature_reason(split)
                );
            }
        }
    }
}
