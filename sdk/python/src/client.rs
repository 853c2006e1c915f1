//! The `Client` class: configuration, initialisation, evaluation, events, listeners and
//! shutdown, each a thin call into [`vexil_sdk::Client`].
//!
//! Threading: the class is `frozen` and the SDK client is `Sync`, so any Python thread may
//! evaluate at any time without a lock. Evaluations run with the GIL held (they take well
//! under a microsecond and never block); the calls that wait (initialisation, `close`, a
//! `flush` that the SDK completes synchronously) release it, so that the SDK's own thread,
//! which calls flag-change listeners with the GIL, can never deadlock against them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use pyo3::IntoPyObjectExt;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use serde_json::Value;
use vexil_sdk::{
    Client, Context, DataOrigin, EvaluationDetail, EventsConfig, FlagChange, ListenerId,
    PollingConfig, Status, StreamingConfig,
};

use crate::context;
use crate::convert::to_py;
use crate::detail::PyEvaluationDetail;

/// A Vexil client: evaluates flags in process, kept current over the server's (or a
/// relay's) stream by the SDK's own background thread.
#[pyclass(frozen, subclass, weakref, module = "vexil._vexil", name = "Client")]
#[derive(Debug)]
pub(crate) struct PyClient {
    inner: Client,
    closed: AtomicBool,
    /// Listener handles by the number given to Python.
    listeners: Mutex<HashMap<u64, ListenerId>>,
    next_listener: AtomicU64,
}

/// Seconds from Python as a duration (negative or NaN: zero; huge: capped at a year).
fn seconds(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(s.min(365.0 * 86_400.0))
    }
}

/// Reports a context that could not be used, on the `vexil` logger (the evaluation then
/// serves the default: it never raises).
fn warn_invalid_context(py: Python<'_>, what: &str, error: &str) {
    let message = format!("vexil: {what}: invalid context, using the default: {error}");
    let logged = py
        .import("logging")
        .and_then(|logging| logging.call_method1("getLogger", ("vexil",)))
        .and_then(|logger| logger.call_method1("warning", (message,)));
    if let Err(e) = logged {
        e.write_unraisable(py, None);
    }
}

/// `state`, `origin`, `version` and `last_error` of `s`, as `status()` gives them.
fn status_dict<'py>(py: Python<'py>, s: &Status) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("state", s.state.as_str())?;
    d.set_item("origin", s.origin.map(origin_name))?;
    d.set_item("version", s.version)?;
    d.set_item("last_error", s.last_error.as_ref().map(ToString::to_string))?;
    Ok(d)
}

fn origin_name(origin: DataOrigin) -> &'static str {
    match origin {
        DataOrigin::Upstream => "upstream",
        DataOrigin::LastKnownGood => "last_known_good",
        DataOrigin::File => "file",
        DataOrigin::TestData => "test_data",
        _ => "custom",
    }
}

/// Evaluates with the context converted, or logs and returns `$default` when it cannot be.
macro_rules! with_context {
    ($py:expr, $what:expr, $context:expr, $default:expr, |$ctx:ident| $body:expr) => {
        match context::extract($context) {
            Ok(c) => {
                let $ctx: &Context = &c;
                $body
            }
            Err(e) => {
                warn_invalid_context($py, $what, &e);
                $default
            }
        }
    };
}

/// The typed evaluations whose values cross into Python as they are (`bool`, `float`,
/// `int`): each Python method passes the SDK method it stands for.
impl PyClient {
    /// Hands out the number Python knows listener `handle` by.
    fn remember(&self, handle: ListenerId) -> u64 {
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, handle);
        id
    }

    /// `evaluate`'s value, or `default` when the context cannot be converted.
    fn value_of<T: Copy>(
        &self,
        py: Python<'_>,
        flag_key: &str,
        context: &Bound<'_, PyAny>,
        default: T,
        evaluate: fn(&Client, &str, &Context, T) -> T,
    ) -> T {
        with_context!(py, flag_key, context, default, |ctx| evaluate(
            &self.inner,
            flag_key,
            ctx,
            default
        ))
    }

    /// `evaluate`'s detail with its value as a Python object, or an `INVALID_CONTEXT`
    /// detail holding `default` when the context cannot be converted.
    fn detail_of<T>(
        &self,
        py: Python<'_>,
        flag_key: &str,
        context: &Bound<'_, PyAny>,
        default: T,
        evaluate: fn(&Client, &str, &Context, T) -> EvaluationDetail<T>,
    ) -> PyResult<PyEvaluationDetail>
    where
        T: for<'py> IntoPyObject<'py> + Copy,
    {
        let default_obj = default.into_py_any(py)?;
        Ok(with_context!(
            py,
            flag_key,
            context,
            PyEvaluationDetail::invalid_context(default_obj),
            |ctx| {
                let d = evaluate(&self.inner, flag_key, ctx, default);
                let value = d.value.into_py_any(py)?;
                PyEvaluationDetail::from_sdk(value, d)
            }
        ))
    }
}

#[pymethods]
impl PyClient {
    /// Creates the client and starts its background work; then waits up to `start_wait`
    /// seconds (the GIL released) for flags. See the package documentation for every option.
    #[new]
    #[pyo3(signature = (
        sdk_key,
        *,
        base_url = None,
        last_known_good = None,
        start_wait = 5.0,
        offline = false,
        file = None,
        polling_interval = None,
        init_timeout = 5.0,
        connect_timeout = 10.0,
        close_timeout = 5.0,
        events = true,
        events_flush_interval = 5.0,
        reconnect_delay = 1.0,
        max_reconnect_delay = 30.0,
        read_timeout = 45.0,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        sdk_key: String,
        base_url: Option<String>,
        last_known_good: Option<PathBuf>,
        start_wait: f64,
        offline: bool,
        file: Option<PathBuf>,
        polling_interval: Option<f64>,
        init_timeout: f64,
        connect_timeout: f64,
        close_timeout: f64,
        events: bool,
        events_flush_interval: f64,
        reconnect_delay: f64,
        max_reconnect_delay: f64,
        read_timeout: f64,
    ) -> PyResult<Self> {
        let mut b = Client::builder(sdk_key)
            // Events and the User-Agent name this package, not the Rust SDK it wraps.
            .sdk_identity("vexil-python", env!("CARGO_PKG_VERSION"))
            .init_timeout(seconds(init_timeout))
            .connect_timeout(seconds(connect_timeout))
            .close_timeout(seconds(close_timeout))
            .events(if events {
                EventsConfig::default().flush_interval(seconds(events_flush_interval))
            } else {
                EventsConfig::disabled()
            });
        if let Some(url) = base_url {
            b = b.base_url(url);
        }
        if let Some(path) = last_known_good {
            b = b.last_known_good(path);
        }
        b = match (offline, file, polling_interval) {
            (true, _, _) => b.offline(),
            (false, Some(path), _) => b.file(path),
            (false, None, Some(interval)) => {
                b.polling(PollingConfig::default().interval(seconds(interval)))
            }
            (false, None, None) => b.streaming(
                StreamingConfig::default()
                    .reconnect_delay(seconds(reconnect_delay), seconds(max_reconnect_delay))
                    .read_timeout(seconds(read_timeout)),
            ),
        };
        let inner = b
            .build()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let wait = seconds(start_wait);
        if !wait.is_zero() {
            let probe = inner.clone();
            // The outcome is in `status()`; the client keeps trying in the background.
            let _ = py.detach(move || probe.wait_for_initialization_blocking(wait));
        }
        Ok(Self {
            inner,
            closed: AtomicBool::new(false),
            listeners: Mutex::new(HashMap::new()),
            next_listener: AtomicU64::new(1),
        })
    }

    /// Waits up to `timeout` seconds (the GIL released) until flags are served; `True` once
    /// ready. On timeout the last-known-good file, if any, is served from then on.
    #[pyo3(signature = (timeout = 5.0))]
    fn wait_for_initialization(&self, py: Python<'_>, timeout: f64) -> bool {
        let client = self.inner.clone();
        let wait = seconds(timeout);
        py.detach(move || client.wait_for_initialization_blocking(wait).is_ok())
    }

    /// Whether flags are being served (from upstream or a fallback).
    fn is_initialized(&self) -> bool {
        self.inner.is_initialized()
    }

    /// The environment version of the flags served, or `None`.
    #[getter]
    fn version(&self) -> Option<u64> {
        self.inner.version()
    }

    /// The client's status: `state` (`initializing`, `ready`, `stale`, `offline`,
    /// `failed`), `origin` of the flags served, `version`, `last_error` and event counters.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.status();
        let d = status_dict(py, &s)?;
        let ev = PyDict::new(py);
        ev.set_item("recorded", s.events.recorded)?;
        ev.set_item("queued", s.events.queued)?;
        ev.set_item("dropped", s.events.dropped)?;
        ev.set_item("sent", s.events.sent)?;
        ev.set_item("failed", s.events.failed)?;
        ev.set_item("invalid", s.events.invalid)?;
        d.set_item("events", ev)?;
        Ok(d)
    }

    /// A boolean flag's value, or `default` (missing flag, other type, not ready, bad
    /// context…). Never raises.
    fn bool_variation(
        &self,
        py: Python<'_>,
        flag_key: &str,
        context: &Bound<'_, PyAny>,
        default: bool,
    ) -> bool {
        self.value_of(py, flag_key, context, default, Client::bool_variation)
    }

    /// A string flag's value, or `default`. Never raises.
    fn string_variation(
        &self,
        py: Python<'_>,
        flag_key: &str,
        context: &Bound<'_, PyAny>,
        default: &Bound<'_, PyString>,
    ) -> Py<PyAny> {
        let fallback = || default.clone().into_any().unbind();
        let Ok(default_str) = default.to_cow() else {
            return fallback();
        };
        with_context!(py, flag_key, context, fallback(), |ctx| {
            let d = self
                .inner
                .string_variation_detail(flag_key, ctx, &default_str);
            if d.variation.is_none() {
                fallback()
            } else {
                PyString::new(py, &d.value).into_any().unbind()
            }
        })
    }

    /// A number flag's value as a float, or `default`. Never raises.
    fn number_variation(
        &self,
        py: Python<'_>,
        flag_key: &str,
        context: &Bound<'_, PyAny>,
        default: f64,
    ) -> f64 {
        self.value_of(py, flag_key, context, default, Client::number_variation)
    }

    /// A number flag's value as an int, or `default` (also when the value has a fraction or
    /// does not fit 64 bits). Never raises.
    fn int_variation(
        &self,
        py: Python<'_>,
        flag_key: &str,
        context: &Bound<'_, PyAny>,
        default: i64,
    ) -> i64 {
        self.value_of(py, flag_key, context, default, Client::int_variation)
    }

    /// Any flag's value as Python data (dict, list, str, int, float, bool, None), or
    /// `default` itself when the evaluation fails. Never raises.
    fn json_variation<'py>(
        &self,
        py: Python<'py>,
        flag_key: &str,
        context: &Bound<'py, PyAny>,
        default: Bound<'py, PyAny>,
    ) -> Bound<'py, PyAny> {
        with_context!(py, flag_key, context, default, |ctx| {
            let d = self.inner.json_variation_detail(flag_key, ctx, Value::Null);
            if d.variation.is_none() {
                default
            } else {
                to_py(py, &d.value).unwrap_or(default)
            }
        })
    }

    /// [`bool_variation`] with the variation and reason.
    fn bool_variation_detail(
        &self,
        py: Python<'_>,
        flag_key: &str,
        context: &Bound<'_, PyAny>,
        default: bool,
    ) -> PyResult<PyEvaluationDetail> {
        self.detail_of(
            py,
            flag_key,
            context,
            default,
            Client::bool_variation_detail,
        )
    }

    /// [`string_variation`] with the variation and reason.
    fn string_variation_detail(
        &self,
        py: Python<'_>,
        flag_key: &str,
        context: &Bound<'_, PyAny>,
        default: &Bound<'_, PyString>,
    ) -> PyEvaluationDetail {
        let default_obj = || default.clone().into_any().unbind();
        let default_str = default.to_cow().unwrap_or_default();
        with_context!(
            py,
            flag_key,
            context,
            PyEvaluationDetail::invalid_context(default_obj()),
            |ctx| {
                let d = self
                    .inner
                    .string_variation_detail(flag_key, ctx, &default_str);
                let value = if d.variation.is_none() {
                    default_obj()
                } else {
                    PyString::new(py, &d.value).into_any().unbind()
                };
                PyEvaluationDetail::from_sdk(value, d)
            }
        )
    }

    /// [`number_variation`] with the variation and reason.
    fn number_variation_detail(
        &self,
        py: Python<'_>,
        flag_key: &str,
        context: &Bound<'_, PyAny>,
        default: f64,
    ) -> PyResult<PyEvaluationDetail> {
        self.detail_of(
            py,
            flag_key,
            context,
            default,
            Client::number_variation_detail,
        )
    }

    /// [`int_variation`] with the variation and reason.
    fn int_variation_detail(
        &self,
        py: Python<'_>,
        flag_key: &str,
        context: &Bound<'_, PyAny>,
        default: i64,
    ) -> PyResult<PyEvaluationDetail> {
        self.detail_of(py, flag_key, context, default, Client::int_variation_detail)
    }

    /// [`json_variation`] with the variation and reason.
    fn json_variation_detail<'py>(
        &self,
        py: Python<'py>,
        flag_key: &str,
        context: &Bound<'py, PyAny>,
        default: Bound<'py, PyAny>,
    ) -> PyResult<PyEvaluationDetail> {
        let default_obj = default.unbind();
        Ok(with_context!(
            py,
            flag_key,
            context,
            PyEvaluationDetail::invalid_context(default_obj),
            |ctx| {
                let d = self.inner.json_variation_detail(flag_key, ctx, Value::Null);
                let value = if d.variation.is_none() {
                    default_obj
                } else {
                    to_py(py, &d.value)?.unbind()
                };
                PyEvaluationDetail::from_sdk(value, d)
            }
        ))
    }

    /// Every flag's value for `context`, as a dict (empty before initialisation). A flag
    /// whose evaluation fails maps to `None`.
    fn all_flags<'py>(
        &self,
        py: Python<'py>,
        context: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        with_context!(py, "all_flags", context, (), |ctx| {
            for (key, detail) in self.inner.all_flags(ctx).iter() {
                out.set_item(key, to_py(py, &detail.value)?)?;
            }
        });
        Ok(out)
    }

    /// Records a custom event (e.g. `"purchase"`, with an optional numeric `value`) for
    /// `context`, sent in the background; experiments count it towards their metrics.
    /// Never raises: an invalid event is dropped and counted (`status()["events"]`).
    #[pyo3(signature = (event_key, context, value = None))]
    fn track(
        &self,
        py: Python<'_>,
        event_key: &str,
        context: &Bound<'_, PyAny>,
        value: Option<f64>,
    ) {
        with_context!(py, event_key, context, (), |ctx| match value {
            Some(v) => self.inner.track_value(event_key, ctx, v),
            None => self.inner.track(event_key, ctx),
        });
    }

    /// Sends pending events now rather than at the next interval (returns at once).
    fn flush(&self, py: Python<'_>) {
        let client = self.inner.clone();
        py.detach(move || client.flush());
    }

    /// Calls `listener(change)` after every update that changed some flags' possible
    /// results, on the SDK's background thread; `change` has `version`, `keys` and
    /// `origin`. Returns an id for [`remove_flag_change_listener`]. Exceptions raised by the
    /// listener are reported through `sys.unraisablehook` and otherwise ignored.
    fn on_flag_change(&self, listener: Py<PyAny>) -> u64 {
        let handle = self.inner.on_flag_change(move |change: &FlagChange| {
            // Nothing to call into once the interpreter is shutting down.
            Python::try_attach(|py| {
                let arg = PyFlagChange {
                    version: change.version,
                    keys: change.keys.to_vec(),
                    origin: origin_name(change.origin),
                };
                if let Err(e) = listener.call1(py, (arg,)) {
                    e.write_unraisable(py, Some(listener.bind(py)));
                }
            });
        });
        self.remember(handle)
    }

    /// Calls `listener(status)` each time the client's state changes (`ready` → `stale`
    /// when the stream is lost, back to `ready`, `failed` when the SDK key is refused,
    /// `offline` once closed), on the SDK's background thread; `status` is the dict
    /// `status()` returns, without the event counters. Quick successive changes may be
    /// coalesced into the latest. Returns an id for [`remove_flag_change_listener`], which
    /// removes either kind. Exceptions are reported through `sys.unraisablehook`.
    fn on_status_change(&self, listener: Py<PyAny>) -> u64 {
        let handle = self.inner.on_status_change(move |status: &Status| {
            Python::try_attach(|py| {
                let called = status_dict(py, status).and_then(|d| listener.call1(py, (d,)));
                if let Err(e) = called {
                    e.write_unraisable(py, Some(listener.bind(py)));
                }
            });
        });
        self.remember(handle)
    }

    /// Removes a flag-change or status listener; `False` if it was not registered.
    fn remove_flag_change_listener(&self, listener_id: u64) -> bool {
        let handle = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&listener_id);
        // The SDK's ids are unique across both kinds: at most one of these finds it.
        handle.is_some_and(|h| {
            self.inner.remove_flag_change_listener(h) || self.inner.remove_status_listener(h)
        })
    }

    /// Stops the background work, writing the last-known-good file and sending pending
    /// events first (up to `close_timeout`), with the GIL released. Evaluations keep serving
    /// the flags held. Idempotent; also run at interpreter exit.
    fn close(&self, py: Python<'_>) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let client = self.inner.clone();
        py.detach(move || client.close());
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn __repr__(&self) -> String {
        let s = self.inner.status();
        format!(
            "Client(state={}, version={:?}, origin={:?})",
            s.state.as_str(),
            s.version,
            s.origin.map(origin_name)
        )
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        // Dropped with the GIL held: closing here could wait on a listener that waits for the
        // GIL. Hand the last reference to a thread of its own, which closes without the GIL.
        if !self.closed.load(Ordering::SeqCst) {
            let client = self.inner.clone();
            let _ = std::thread::Builder::new()
                .name("vexil-close".into())
                .spawn(move || client.close());
        }
    }
}

/// What changed in one update, passed to flag-change listeners.
#[pyclass(frozen, module = "vexil._vexil", name = "FlagChange")]
#[derive(Debug)]
pub(crate) struct PyFlagChange {
    version: u64,
    keys: Vec<String>,
    origin: &'static str,
}

#[pymethods]
impl PyFlagChange {
    /// The environment version after the update.
    #[getter]
    fn version(&self) -> u64 {
        self.version
    }

    /// The keys of the flags whose possible results changed, sorted.
    #[getter]
    fn keys(&self) -> Vec<String> {
        self.keys.clone()
    }

    /// Where the update came from (`upstream`, `last_known_good`, `file`…).
    #[getter]
    fn origin(&self) -> &'static str {
        self.origin
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> bool {
        key.cast::<PyString>()
            .ok()
            .and_then(|k| k.to_cow().ok().map(|k| self.keys.iter().any(|x| *x == *k)))
            .unwrap_or(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "FlagChange(version={}, keys={:?}, origin={:?})",
            self.version, self.keys, self.origin
        )
    }
}
