//! The copy a message gets on send, so the sender's later changes never reach
//! a receiver and every group member gets its own dicts.
//!
//! Dicts, lists and tuples of plain values are copied here; immutable scalars
//! are shared, and anything else goes to `copy.deepcopy`. Messages nested
//! deeper than `MAX_DEPTH` (or cyclic) are handed whole to `copy.deepcopy`,
//! which keeps their sharing and cycles.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

const MAX_DEPTH: usize = 32;

enum Failure {
    TooDeep,
    Python(PyErr),
}

impl From<PyErr> for Failure {
    fn from(err: PyErr) -> Self {
        Failure::Python(err)
    }
}

/// A deep copy of `value` with `copy.deepcopy` semantics for what it contains.
pub fn deep_copy<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    match copy_value(value, 0) {
        Ok(copy) => Ok(copy),
        Err(Failure::Python(err)) => Err(err),
        Err(Failure::TooDeep) => python_deepcopy(value),
    }
}

fn python_deepcopy<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    static DEEPCOPY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    DEEPCOPY
        .import(value.py(), "copy", "deepcopy")?
        .call1((value,))
}

fn is_immutable_scalar(value: &Bound<'_, PyAny>) -> bool {
    value.is_exact_instance_of::<PyString>()
        || value.is_exact_instance_of::<PyInt>()
        || value.is_exact_instance_of::<PyFloat>()
        || value.is_exact_instance_of::<PyBool>()
        || value.is_exact_instance_of::<PyBytes>()
        || value.is_none()
}

fn copy_value<'py>(value: &Bound<'py, PyAny>, depth: usize) -> Result<Bound<'py, PyAny>, Failure> {
    if is_immutable_scalar(value) {
        return Ok(value.clone());
    }
    if depth >= MAX_DEPTH {
        return Err(Failure::TooDeep);
    }
    let py = value.py();
    if let Ok(dict) = value.cast_exact::<PyDict>() {
        let copy = PyDict::new(py);
        for (key, item) in dict.iter() {
            copy.set_item(copy_value(&key, depth + 1)?, copy_value(&item, depth + 1)?)?;
        }
        return Ok(copy.into_any());
    }
    if let Ok(list) = value.cast_exact::<PyList>() {
        return Ok(PyList::new(py, copy_items(list.iter(), depth)?)?.into_any());
    }
    if let Ok(tuple) = value.cast_exact::<PyTuple>() {
        return Ok(PyTuple::new(py, copy_items(tuple.iter(), depth)?)?.into_any());
    }
    Ok(python_deepcopy(value)?)
}

fn copy_items<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    depth: usize,
) -> Result<Vec<Bound<'py, PyAny>>, Failure> {
    items.map(|item| copy_value(&item, depth + 1)).collect()
}
