//! Vexil's Python SDK: the extension module `vexil._vexil`, a thin binding over the Rust SDK
//! ([`vexil_sdk`]), so that evaluation, streaming, backoff, the last-known-good file and
//! events are the one implementation every Vexil SDK shares.
//!
//! Layout: `client` (the `Client` class: options, initialisation with the GIL released,
//! typed evaluations, `track`, listeners, `close`), `context` (the `Context` class and the
//! dict/str forms), `detail` (`EvaluationDetail`), `convert` (JSON ↔ Python values). The
//! Python package around it (`python/vexil/`) adds the typing stubs, clean shutdown at
//! interpreter exit and the OpenFeature provider. The SDK runs its network work on its own
//! thread and Tokio runtime: nothing runs on the caller's threads or holds the GIL while idle.
//!
//! Built with maturin (`pyproject.toml`); `docs/sdk-python.md` is the user guide.

mod client;
mod context;
mod convert;
mod detail;

use pyo3::prelude::*;

/// The native part of the `vexil` package.
#[pymodule]
fn _vexil(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::PyClient>()?;
    m.add_class::<client::PyFlagChange>()?;
    m.add_class::<context::PyContext>()?;
    m.add_class::<detail::PyEvaluationDetail>()?;
    m.add("SDK_VERSION", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
