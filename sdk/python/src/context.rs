//! The evaluation context from Python: the `Context` class (built once, evaluated many times
//! without conversion) and the dict and str forms every evaluation method also accepts.
//!
//! Dict form: `{"key": "user-1", "kind": "user", "plan": "pro"}`: `key` (a str, or absent or
//! `None` for an anonymous context) and `kind` (a str) are reserved, every other item is an
//! attribute; a nested `"attributes": {...}` dict (the wire form, as in the shared fixtures)
//! is merged in as well. A str is a context with that key and no attributes; `None` is the
//! anonymous context.

use std::borrow::Cow;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use serde_json::{Map, Value};
use vexil_sdk::Context;

use crate::convert::{to_json, to_py, type_name};

/// Who or what flags are evaluated for: a targeting key (none for an anonymous context), an
/// optional kind and JSON attributes. Immutable; build it once per request and pass it to
/// every evaluation: it is then used without any conversion.
#[pyclass(frozen, module = "vexil._vexil", name = "Context")]
#[derive(Debug, Clone)]
pub(crate) struct PyContext {
    pub(crate) inner: Context,
}

#[pymethods]
impl PyContext {
    /// `Context(key, kind=None, attributes=None, **more_attributes)`.
    #[new]
    #[pyo3(signature = (key = None, kind = None, attributes = None, **more))]
    fn new(
        key: Option<String>,
        kind: Option<String>,
        attributes: Option<&Bound<'_, PyDict>>,
        more: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let mut map = Map::new();
        for dict in [attributes, more].into_iter().flatten() {
            collect_attributes(dict, &mut map).map_err(PyValueError::new_err)?;
        }
        // `key`/`kind` given explicitly win over attributes of those names.
        Ok(Self {
            inner: build(key, kind, map),
        })
    }

    /// Builds a context from its dict form (see the module's documentation).
    #[staticmethod]
    fn from_dict(d: &Bound<'_, PyDict>) -> PyResult<Self> {
        from_dict(d)
            .map(|inner| Self { inner })
            .map_err(PyValueError::new_err)
    }

    /// The targeting key, or `None` for an anonymous context.
    #[getter]
    fn key(&self) -> Option<&str> {
        self.inner.key()
    }

    /// The kind (e.g. `"user"`), if set.
    #[getter]
    fn kind(&self) -> Option<&str> {
        self.inner.kind()
    }

    /// The attributes, as a new dict.
    #[getter]
    fn attributes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, value) in self.inner.attributes() {
            dict.set_item(name, to_py(py, value)?)?;
        }
        Ok(dict)
    }

    /// An attribute's value, or `default`.
    #[pyo3(signature = (name, default = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.inner.attribute(name) {
            Some(v) => to_py(py, v),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    /// The wire form: `{"key": …, "kind": …, "attributes": {…}}` (absent parts left out).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value = serde_json::to_value(&self.inner).unwrap_or(Value::Null);
        to_py(py, &value)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyContext>()
            .is_ok_and(|o| o.get().inner == self.inner)
    }

    fn __repr__(&self) -> String {
        let attrs = serde_json::to_string(&serde_json::to_value(&self.inner).unwrap_or_default())
            .unwrap_or_default();
        format!("Context({attrs})")
    }
}

/// A context argument: borrowed from a `Context` object, or converted from a dict or str.
pub(crate) fn extract<'a>(obj: &'a Bound<'_, PyAny>) -> Result<Cow<'a, Context>, String> {
    if let Ok(c) = obj.cast::<PyContext>() {
        return Ok(Cow::Borrowed(&c.get().inner));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        return from_dict(d).map(Cow::Owned);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        let key = s.to_cow().map_err(|_| "a key that is not valid UTF-8")?;
        return Ok(Cow::Owned(Context::new(key.into_owned())));
    }
    if obj.is_none() {
        return Ok(Cow::Owned(Context::anonymous()));
    }
    Err(format!(
        "a context must be a vexil.Context, a dict, a str (its key) or None, not {}",
        type_name(obj)
    ))
}

fn from_dict(d: &Bound<'_, PyDict>) -> Result<Context, String> {
    let mut key = None;
    let mut kind = None;
    let mut map = Map::with_capacity(d.len());
    for (name, value) in d.iter() {
        let Ok(name) = name.cast::<PyString>() else {
            return Err("a context dict's keys must be str".to_owned());
        };
        let name = name
            .to_cow()
            .map_err(|_| "a name that is not valid UTF-8")?;
        match &*name {
            "key" => key = optional_str(&value, "key")?,
            "kind" => kind = optional_str(&value, "kind")?,
            "attributes" if value.is_instance_of::<PyDict>() => {
                if let Ok(nested) = value.cast::<PyDict>() {
                    collect_attributes(nested, &mut map)?;
                }
            }
            _ => {
                let json = to_json(&value).map_err(|e| format!("attribute {name:?} holds {e}"))?;
                map.insert(name.into_owned(), json);
            }
        }
    }
    Ok(build(key, kind, map))
}

fn optional_str(value: &Bound<'_, PyAny>, what: &str) -> Result<Option<String>, String> {
    if value.is_none() {
        return Ok(None);
    }
    value
        .cast::<PyString>()
        .ok()
        .and_then(|s| s.to_cow().ok().map(|s| s.into_owned()))
        .map(Some)
        .ok_or_else(|| {
            format!(
                "the context's {what} must be a str, not {}",
                type_name(value)
            )
        })
}

fn collect_attributes(
    dict: &Bound<'_, PyDict>,
    map: &mut Map<String, Value>,
) -> Result<(), String> {
    for (name, value) in dict.iter() {
        let Ok(name) = name.cast::<PyString>() else {
            return Err("attribute names must be str".to_owned());
        };
        let name = name
            .to_cow()
            .map_err(|_| "a name that is not valid UTF-8")?;
        let json = to_json(&value).map_err(|e| format!("attribute {name:?} holds {e}"))?;
        map.insert(name.into_owned(), json);
    }
    Ok(())
}

/// Builds the context in one pass (sorted and indexed once, not per attribute). Reserved
/// attribute names are left to the schema's rules; explicit `key`/`kind` win.
fn build(key: Option<String>, kind: Option<String>, attributes: Map<String, Value>) -> Context {
    let wire = serde_json::json!({ "attributes": attributes });
    let mut ctx: Context = serde_json::from_value(wire).unwrap_or_default();
    if key.is_some() {
        ctx.set_key(key);
    }
    if kind.is_some() {
        ctx.set_kind(kind);
    }
    ctx
}
