//! `EvaluationDetail`: what the `*_detail` methods return: the value, the variation and why.

use pyo3::prelude::*;
use serde_json::{Value, json};
use vexil_sdk::{ErrorKind, EvaluationDetail, Reason};

use crate::convert::to_py;

/// Why a value was served: the SDK's reason, or a context that could not be converted
/// (the binding's own error, caught before the SDK is called).
#[derive(Debug, Clone)]
pub(crate) enum Why {
    /// The SDK's reason.
    Sdk(Reason),
    /// The context argument was not usable: the default was served.
    InvalidContext,
}

impl Why {
    fn wire(&self) -> Value {
        match self {
            Why::Sdk(r) => serde_json::to_value(r).unwrap_or(Value::Null),
            Why::InvalidContext => json!({"kind": "ERROR", "error_kind": "INVALID_CONTEXT"}),
        }
    }

    fn error_kind(&self) -> Option<ErrorKindName> {
        match self {
            Why::Sdk(Reason::Error { error_kind }) => Some(ErrorKindName::Sdk(*error_kind)),
            Why::Sdk(_) => None,
            Why::InvalidContext => Some(ErrorKindName::InvalidContext),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum ErrorKindName {
    Sdk(ErrorKind),
    InvalidContext,
}

impl ErrorKindName {
    fn name(self) -> String {
        match self {
            ErrorKindName::Sdk(k) => serde_json::to_value(k)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "UNKNOWN".to_owned()),
            ErrorKindName::InvalidContext => "INVALID_CONTEXT".to_owned(),
        }
    }

    fn openfeature_code(self) -> &'static str {
        match self {
            ErrorKindName::Sdk(k) => k.openfeature_code(),
            ErrorKindName::InvalidContext => "INVALID_CONTEXT",
        }
    }
}

/// A flag's value for a context, with the variation served and the reason.
#[pyclass(frozen, module = "vexil._vexil", name = "EvaluationDetail")]
#[derive(Debug)]
pub(crate) struct PyEvaluationDetail {
    value: Py<PyAny>,
    variation_index: Option<usize>,
    variation_name: Option<String>,
    why: Why,
    in_experiment: bool,
    split: bool,
}

impl PyEvaluationDetail {
    /// From the SDK's detail, its value already converted to Python.
    pub(crate) fn from_sdk<T>(value: Py<PyAny>, d: EvaluationDetail<T>) -> Self {
        Self {
            value,
            variation_index: d.variation,
            variation_name: d.variation_name,
            why: Why::Sdk(d.reason),
            in_experiment: d.in_experiment,
            split: d.split,
        }
    }

    /// The default, because the context could not be used.
    pub(crate) fn invalid_context(default: Py<PyAny>) -> Self {
        Self {
            value: default,
            variation_index: None,
            variation_name: None,
            why: Why::InvalidContext,
            in_experiment: false,
            split: false,
        }
    }
}

#[pymethods]
impl PyEvaluationDetail {
    /// The value served, or the caller's default when the evaluation failed.
    #[getter]
    fn value(&self, py: Python<'_>) -> Py<PyAny> {
        self.value.clone_ref(py)
    }

    /// Index of the variation served; `None` when the default was used.
    #[getter]
    fn variation_index(&self) -> Option<usize> {
        self.variation_index
    }

    /// Name of the variation served, if it has one.
    #[getter]
    fn variation_name(&self) -> Option<&str> {
        self.variation_name.as_deref()
    }

    /// The reason in wire form, e.g. `{"kind": "RULE_MATCH", "rule_index": 0, "rule_id": "beta"}`
    /// or `{"kind": "ERROR", "error_kind": "FLAG_NOT_FOUND"}`.
    #[getter]
    fn reason<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.why.wire())
    }

    /// The reason's kind: `OFF`, `PREREQUISITE_FAILED`, `TARGET_MATCH`, `RULE_MATCH`,
    /// `FALLTHROUGH` or `ERROR`.
    #[getter]
    fn reason_kind(&self) -> String {
        self.why.wire()["kind"]
            .as_str()
            .unwrap_or("ERROR")
            .to_owned()
    }

    /// What went wrong when the default was served (`FLAG_NOT_FOUND`, `WRONG_TYPE`,
    /// `MALFORMED`, `CLIENT_NOT_READY`, `INVALID_CONTEXT`), else `None`.
    #[getter]
    fn error_kind(&self) -> Option<String> {
        self.why.error_kind().map(ErrorKindName::name)
    }

    /// Whether the value came from an experiment and counts as an exposure.
    #[getter]
    fn in_experiment(&self) -> bool {
        self.in_experiment
    }

    /// Whether the value came from a weighted rollout.
    #[getter]
    fn split(&self) -> bool {
        self.split
    }

    /// Whether the caller's default was served (the evaluation failed).
    #[getter]
    fn is_default_value(&self) -> bool {
        self.why.error_kind().is_some()
    }

    /// The OpenFeature reason: `STATIC`, `DEFAULT`, `TARGETING_MATCH`, `SPLIT`, `DISABLED` or
    /// `ERROR`.
    #[getter]
    fn openfeature_reason(&self) -> &'static str {
        match &self.why {
            Why::Sdk(r) => r.openfeature_reason(self.split),
            Why::InvalidContext => "ERROR",
        }
    }

    /// The OpenFeature error code when the default was served (`FLAG_NOT_FOUND`,
    /// `TYPE_MISMATCH`, `PARSE_ERROR`, `PROVIDER_NOT_READY`, `INVALID_CONTEXT`), else `None`.
    #[getter]
    fn openfeature_error_code(&self) -> Option<&'static str> {
        self.why.error_kind().map(ErrorKindName::openfeature_code)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let value = self
            .value
            .bind(py)
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| "?".to_owned());
        format!(
            "EvaluationDetail(value={value}, variation_index={:?}, variation_name={:?}, reason={})",
            self.variation_index,
            self.variation_name,
            self.why.wire()
        )
    }
}
