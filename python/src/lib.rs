//! `kiln._kiln`: the native half of the kiln Python package. It wraps kiln-runtime: load
//! (paths, bytes, a Keras config with its weights, a frozen GraphDef), compile, run. The
//! pure-Python `kiln` package on top turns framework objects into these calls.
//!
//! Every kiln error arrives in Python as `kiln.KilnError` with kiln's own message. Work that
//! may take long runs with the GIL released, inside `catch_unwind`: a panic in kiln becomes
//! a `KilnError`, never a crashed interpreter.

mod convert;
mod model;

use pyo3::create_exception;
use pyo3::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

create_exception!(
    kiln,
    KilnError,
    pyo3::exceptions::PyException,
    "An error from kiln: the model, its inputs or a device."
);

pub(crate) fn kiln_err(e: kiln_runtime::Error) -> PyErr {
    KilnError::new_err(e.to_string())
}

/// Runs `f` with the GIL released; a panic becomes a `KilnError`.
pub(crate) fn detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> kiln_runtime::Result<T> + Send,
) -> PyResult<T> {
    let result = py.detach(|| catch_unwind(AssertUnwindSafe(f)));
    match result {
        Ok(r) => r.map_err(kiln_err),
        Err(panic) => Err(KilnError::new_err(format!(
            "internal error in kiln (a bug): {}",
            panic_message(&*panic)
        ))),
    }
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

#[pymodule]
fn _kiln(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("KilnError", m.py().get_type::<KilnError>())?;
    m.add_class::<model::Model>()?;
    m.add_class::<model::CompiledModel>()?;
    m.add_class::<model::Pending>()?;
    m.add_function(wrap_pyfunction!(model::load, m)?)?;
    m.add_function(wrap_pyfunction!(model::load_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(model::load_keras, m)?)?;
    m.add_function(wrap_pyfunction!(model::load_graphdef, m)?)?;
    m.add_function(wrap_pyfunction!(model::compile, m)?)?;
    m.add_function(wrap_pyfunction!(model::devices, m)?)?;
    Ok(())
}
