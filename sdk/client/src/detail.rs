//! Owned evaluation results: [`EvaluationDetail`] (a value with its reason, for the
//! `*_detail` methods) and [`AllFlags`] (every flag for one context).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use vexil_eval::{CompiledSnapshot, EvalReason, TypedEvaluation};
use vexil_schema::{ErrorKind, Reason};

/// A flag's value for a context, and why it is that value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EvaluationDetail<T> {
    /// The value served, or the caller's default when the evaluation failed.
    pub value: T,
    /// Index of the variation served; `None` when the default was used.
    pub variation: Option<usize>,
    /// Name of the variation served, if it has one (e.g. `"treatment"`).
    pub variation_name: Option<String>,
    /// Why. `ERROR` reasons say what went wrong (`FLAG_NOT_FOUND`, `WRONG_TYPE`,
    /// `MALFORMED`, `CLIENT_NOT_READY`).
    pub reason: Reason,
    /// Whether the value came from an experiment rollout and counts as an exposure.
    pub in_experiment: bool,
    /// Whether the value came from a weighted rollout.
    pub split: bool,
}

impl<T> EvaluationDetail<T> {
    /// The error, if the caller's default was used.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        match self.reason {
            Reason::Error { error_kind } => Some(error_kind),
            _ => None,
        }
    }

    /// The OpenFeature resolution reason (`STATIC`, `DEFAULT`, `TARGETING_MATCH`, `SPLIT`,
    /// `DISABLED` or `ERROR`), through the schema's single mapping.
    pub fn openfeature_reason(&self) -> &'static str {
        self.reason.openfeature_reason(self.split)
    }

    /// The default, with an error reason.
    pub(crate) fn error(default: T, error_kind: ErrorKind) -> Self {
        Self {
            value: default,
            variation: None,
            variation_name: None,
            reason: Reason::Error { error_kind },
            in_experiment: false,
            split: false,
        }
    }

    /// Builds a detail from the engine's result for `flag_key`.
    pub(crate) fn from_parts(
        value: T,
        variation: Option<usize>,
        reason: EvalReason<'_>,
        in_experiment: bool,
        split: bool,
        snapshot: &CompiledSnapshot,
        flag_key: &str,
    ) -> Self {
        let variation_name =
            variation.and_then(|i| snapshot.flag(flag_key)?.variations.get(i)?.name.clone());
        Self {
            value,
            variation,
            variation_name,
            reason: reason.to_reason(),
            in_experiment,
            split,
        }
    }

    /// Builds a detail from a typed accessor's result for `flag_key`, its value turned into
    /// the owned `T` by `own`.
    pub(crate) fn from_typed<U>(
        t: TypedEvaluation<'_, U>,
        own: impl FnOnce(U) -> T,
        snapshot: &CompiledSnapshot,
        flag_key: &str,
    ) -> Self {
        Self::from_parts(
            own(t.value),
            t.variation,
            t.reason,
            t.in_experiment,
            t.split,
            snapshot,
            flag_key,
        )
    }
}

/// Every flag evaluated for one context: for bootstrapping front ends, debugging pages and
/// exports. Serialises as `{"valid": …, "version": …, "flags": {key: detail}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AllFlags {
    valid: bool,
    version: Option<u64>,
    flags: BTreeMap<String, EvaluationDetail<Value>>,
}

impl AllFlags {
    pub(crate) fn new(
        version: Option<u64>,
        flags: BTreeMap<String, EvaluationDetail<Value>>,
    ) -> Self {
        Self {
            valid: version.is_some(),
            version,
            flags,
        }
    }

    /// Whether the client had flags to evaluate (`false`: not initialised, so empty).
    pub fn is_valid(&self) -> bool {
        self.valid
    }

    /// The environment version evaluated.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// A flag's value (`Null` for a flag whose evaluation failed, e.g. malformed).
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.flags.get(key).map(|d| &d.value)
    }

    /// A flag's detail.
    pub fn detail(&self, key: &str) -> Option<&EvaluationDetail<Value>> {
        self.flags.get(key)
    }

    /// Every flag and its detail, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &EvaluationDetail<Value>)> {
        self.flags.iter().map(|(k, d)| (k.as_str(), d))
    }

    /// Every flag's value, sorted by key.
    pub fn values(&self) -> BTreeMap<&str, &Value> {
        self.iter().map(|(k, d)| (k, &d.value)).collect()
    }

    /// The number of flags.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// Whether there are no flags.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }
}
