//! The copy a message gets on send, so the sender's later changes never reach
//! a receiver and every group member gets its own dicts.
//!
//! Dicts, lists and tuples of plain values are copied here; immutable scalars
//! are shared, and anything else goes to `copy.deepcopy`. Messages nested
//! deeper than `MAX_DEPTH` (or cyclic) are handed whole to `copy.deepcopy`,
//! which keeps their sharing and cycles.
//!
//! On the way the copy notes whether the message is plain: builtin types
//! all the way down, str or bytes keys, ints of 64 bits. The Redis layers'
//! msgpack surely takes a plain message; only another is worth the
//! encoder's look (`codec::check_msgpack`), so the check costs nearly
//! nothing on the common path.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

const MAX_DEPTH: usize = 32;

enum Failure {
    TooDeep,
    Python(PyErr),
}

/// A copy, and whether its message is plain (see above).
pub struct Copied<'py> {
    pub copy: Bound<'py, PyAny>,
    pub plain: bool,
}

impl From<PyErr> for Failure {
    fn from(err: PyErr) -> Self {
        Failure::Python(err)
    }
}

/// A deep copy of `value` with `copy.deepcopy` semantics for what it contains.
pub fn deep_copy<'py>(value: &Bound<'py, PyAny>) -> PyResult<Copied<'py>> {
    let mut plain = true;
    match copy_value(value, 0, &mut plain) {
        Ok(copy) => Ok(Copied { copy, plain }),
        Err(Failure::Python(err)) => Err(err),
        Err(Failure::TooDeep) => Ok(Copied {
            copy: python_deepcopy(value)?,
            plain: false,
        }),
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

fn copy_value<'py>(
    value: &Bound<'py, PyAny>,
    depth: usize,
    plain: &mut bool,
) -> Result<Bound<'py, PyAny>, Failure> {
    if is_immutable_scalar(value) {
        if *plain && value.is_exact_instance_of::<PyInt>() {
            *plain = value.extract::<i64>().is_ok() || value.extract::<u64>().is_ok();
        }
        return Ok(value.clone());
    }
    if depth >= MAX_DEPTH {
        return Err(Failure::TooDeep);
    }
    let py = value.py();
    if let Ok(dict) = value.cast_exact::<PyDict>() {
        let copy = PyDict::new(py);
        for (key, item) in dict.iter() {
            *plain &=
                key.is_exact_instance_of::<PyString>() || key.is_exact_instance_of::<PyBytes>();
            let key = copy_value(&key, depth + 1, plain)?;
            copy.set_item(key, copy_value(&item, depth + 1, plain)?)?;
        }
        return Ok(copy.into_any());
    }
    if let Ok(list) = value.cast_exact::<PyList>() {
        return Ok(PyList::new(py, copy_items(list.iter(), depth, plain)?)?.into_any());
    }
    if let Ok(tuple) = value.cast_exact::<PyTuple>() {
        return Ok(PyTuple::new(py, copy_items(tuple.iter(), depth, plain)?)?.into_any());
    }
    *plain = false;
    Ok(python_deepcopy(value)?)
}

fn copy_items<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    depth: usize,
    plain: &mut bool,
) -> Result<Vec<Bound<'py, PyAny>>, Failure> {
    items
        .map(|item| copy_value(&item, depth + 1, plain))
        .collect()
}
