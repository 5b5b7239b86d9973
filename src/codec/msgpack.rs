//! msgpack straight from Python objects to bytes and back, byte for byte what
//! Python's `msgpack.packb` / `msgpack.unpackb` (1.x defaults) give, so
//! channels_redis processes read what we write and the other way round.
//!
//! Encoding follows msgpack-python's type order (None, bool, int, float,
//! bytes, str, dict, list/tuple, memoryview) and its smallest-family choice.
//! One rule is stricter: map keys must be str or bytes, because `unpackb`
//! refuses any other key and the receiver would fail instead of the sender.

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple,
};
use rmp::Marker;

/// msgpack-python refuses to nest deeper than this.
const MAX_DEPTH: usize = 512;

fn too_deep() -> PyErr {
    PyValueError::new_err("message nests deeper than 512 levels")
}

/// Appends the msgpack form of `value`.
pub fn encode(value: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    encode_value(value, out, 0)
}

/// Appends `dict` as a map with one more entry, `key: extra`, at the end, as
/// `dict(message); message[key] = extra` would be packed.
pub fn encode_with_entry(
    dict: &Bound<'_, PyDict>,
    key: &str,
    extra: &Bound<'_, PyAny>,
    out: &mut Vec<u8>,
) -> PyResult<()> {
    write(rmp::encode::write_map_len(out, len_u32(dict.len() + 1)?))?;
    encode_entries(dict, out, 1)?;
    write(rmp::encode::write_str(out, key))?;
    encode_value(extra, out, 1)
}

fn write<E: std::fmt::Display>(result: Result<impl Sized, E>) -> PyResult<()> {
    result
        .map(drop)
        .map_err(|err| PyValueError::new_err(err.to_string()))
}

fn len_u32(len: usize) -> PyResult<u32> {
    u32::try_from(len).map_err(|_| PyValueError::new_err("message part too large for msgpack"))
}

fn encode_value(value: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> PyResult<()> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    if value.is_none() {
        rmp::encode::write_nil(out).map_err(|err| PyValueError::new_err(err.to_string()))?;
    } else if let Ok(flag) = value.cast::<PyBool>() {
        write(rmp::encode::write_bool(out, flag.is_true()))?;
    } else if value.is_instance_of::<PyInt>() {
        encode_int(value, out)?;
    } else if let Ok(float) = value.cast::<PyFloat>() {
        write(rmp::encode::write_f64(out, float.value()))?;
    } else if let Ok(bytes) = value.cast::<PyBytes>() {
        encode_bin(bytes.as_bytes(), out)?;
    } else if let Ok(array) = value.cast::<PyByteArray>() {
        encode_bin(&array.to_vec(), out)?;
    } else if let Ok(text) = value.cast::<PyString>() {
        write(rmp::encode::write_str(out, text.to_str()?))?;
    } else if let Ok(dict) = value.cast::<PyDict>() {
        write(rmp::encode::write_map_len(out, len_u32(dict.len())?))?;
        encode_entries(dict, out, depth + 1)?;
    } else if let Ok(list) = value.cast::<PyList>() {
        write(rmp::encode::write_array_len(out, len_u32(list.len())?))?;
        for item in list.iter() {
            encode_value(&item, out, depth + 1)?;
        }
    } else if let Ok(tuple) = value.cast::<PyTuple>() {
        write(rmp::encode::write_array_len(out, len_u32(tuple.len())?))?;
        for item in tuple.iter() {
            encode_value(&item, out, depth + 1)?;
        }
    } else if value.is_instance_of::<PyMemoryView>() {
        let bytes: Vec<u8> = value.call_method0("tobytes")?.extract()?;
        encode_bin(&bytes, out)?;
    } else {
        let kind = value.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "can not serialize {kind:?} object"
        )));
    }
    Ok(())
}

fn encode_entries(dict: &Bound<'_, PyDict>, out: &mut Vec<u8>, depth: usize) -> PyResult<()> {
    for (key, item) in dict.iter() {
        if !(key.is_instance_of::<PyString>() || key.is_instance_of::<PyBytes>()) {
            let kind = key.get_type().name()?;
            return Err(PyTypeError::new_err(format!(
                "message keys must be str, not {kind} ({}): receivers cannot decode other keys",
                key.repr()?
            )));
        }
        encode_value(&key, out, depth)?;
        encode_value(&item, out, depth)?;
    }
    Ok(())
}

fn encode_int(value: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    if let Ok(unsigned) = value.extract::<u64>() {
        write(rmp::encode::write_uint(out, unsigned))
    } else if let Ok(signed) = value.extract::<i64>() {
        write(rmp::encode::write_sint(out, signed))
    } else {
        Err(PyOverflowError::new_err("Integer value out of range"))
    }
}

fn encode_bin(bytes: &[u8], out: &mut Vec<u8>) -> PyResult<()> {
    write(rmp::encode::write_bin(out, bytes))
}

/// The Python object `bytes` holds, which must be exactly one msgpack value.
pub fn decode<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let mut reader = Reader { bytes, at: 0 };
    let value = reader.value(py, 0)?;
    if reader.at != bytes.len() {
        return Err(PyValueError::new_err(
            "extra bytes after the msgpack message",
        ));
    }
    Ok(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn truncated() -> PyErr {
    PyValueError::new_err("msgpack data ends in the middle of a value")
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> PyResult<&'a [u8]> {
        let end = self
            .at
            .checked_add(count)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(truncated)?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> PyResult<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn u8(&mut self) -> PyResult<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> PyResult<usize> {
        Ok(u16::from_be_bytes(self.array()?).into())
    }

    fn u32(&mut self) -> PyResult<usize> {
        usize::try_from(u32::from_be_bytes(self.array()?)).map_err(|_| truncated())
    }

    fn value<'py>(&mut self, py: Python<'py>, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        let object = match Marker::from_u8(self.u8()?) {
            Marker::Null => py.None().into_bound(py),
            Marker::True => PyBool::new(py, true).to_owned().into_any(),
            Marker::False => PyBool::new(py, false).to_owned().into_any(),
            Marker::FixPos(n) => n.into_pyobject(py)?.into_any(),
            Marker::FixNeg(n) => n.into_pyobject(py)?.into_any(),
            Marker::U8 => self.u8()?.into_pyobject(py)?.into_any(),
            Marker::U16 => u16::from_be_bytes(self.array()?)
                .into_pyobject(py)?
                .into_any(),
            Marker::U32 => u32::from_be_bytes(self.array()?)
                .into_pyobject(py)?
                .into_any(),
            Marker::U64 => u64::from_be_bytes(self.array()?)
                .into_pyobject(py)?
                .into_any(),
            Marker::I8 => i8::from_be_bytes(self.array()?)
                .into_pyobject(py)?
                .into_any(),
            Marker::I16 => i16::from_be_bytes(self.array()?)
                .into_pyobject(py)?
                .into_any(),
            Marker::I32 => i32::from_be_bytes(self.array()?)
                .into_pyobject(py)?
                .into_any(),
            Marker::I64 => i64::from_be_bytes(self.array()?)
                .into_pyobject(py)?
                .into_any(),
            Marker::F32 => PyFloat::new(py, f32::from_be_bytes(self.array()?).into()).into_any(),
            Marker::F64 => PyFloat::new(py, f64::from_be_bytes(self.array()?)).into_any(),
            Marker::FixStr(len) => self.text(py, len.into())?,
            Marker::Str8 => {
                let len = self.u8()?.into();
                self.text(py, len)?
            }
            Marker::Str16 => {
                let len = self.u16()?;
                self.text(py, len)?
            }
            Marker::Str32 => {
                let len = self.u32()?;
                self.text(py, len)?
            }
            Marker::Bin8 => {
                let len = self.u8()?.into();
                PyBytes::new(py, self.take(len)?).into_any()
            }
            Marker::Bin16 => {
                let len = self.u16()?;
                PyBytes::new(py, self.take(len)?).into_any()
            }
            Marker::Bin32 => {
                let len = self.u32()?;
                PyBytes::new(py, self.take(len)?).into_any()
            }
            Marker::FixArray(len) => self.list(py, len.into(), depth)?,
            Marker::Array16 => {
                let len = self.u16()?;
                self.list(py, len, depth)?
            }
            Marker::Array32 => {
                let len = self.u32()?;
                self.list(py, len, depth)?
            }
            Marker::FixMap(len) => self.dict(py, len.into(), depth)?,
            Marker::Map16 => {
                let len = self.u16()?;
                self.dict(py, len, depth)?
            }
            Marker::Map32 => {
                let len = self.u32()?;
                self.dict(py, len, depth)?
            }
            Marker::FixExt1
            | Marker::FixExt2
            | Marker::FixExt4
            | Marker::FixExt8
            | Marker::FixExt16
            | Marker::Ext8
            | Marker::Ext16
            | Marker::Ext32 => {
                return Err(PyValueError::new_err(
                    "msgpack extension types are not messages",
                ))
            }
            Marker::Reserved => return Err(PyValueError::new_err("invalid msgpack byte 0xc1")),
        };
        Ok(object)
    }

    fn text<'py>(&mut self, py: Python<'py>, len: usize) -> PyResult<Bound<'py, PyAny>> {
        let bytes = self.take(len)?;
        let text = std::str::from_utf8(bytes)
            .map_err(|err| PyValueError::new_err(format!("msgpack string is not UTF-8: {err}")))?;
        Ok(PyString::new(py, text).into_any())
    }

    fn list<'py>(
        &mut self,
        py: Python<'py>,
        len: usize,
        depth: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        // Every element takes at least one byte: a longer count is a lie.
        if len > self.bytes.len() - self.at {
            return Err(truncated());
        }
        let list = PyList::empty(py);
        for _ in 0..len {
            list.append(self.value(py, depth + 1)?)?;
        }
        Ok(list.into_any())
    }

    fn dict<'py>(
        &mut self,
        py: Python<'py>,
        len: usize,
        depth: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        if len > (self.bytes.len() - self.at) / 2 {
            return Err(truncated());
        }
        let dict = PyDict::new(py);
        for _ in 0..len {
            let key = self.value(py, depth + 1)?;
            if !(key.is_exact_instance_of::<PyString>() || key.is_exact_instance_of::<PyBytes>()) {
                let kind = key.get_type().name()?;
                return Err(PyValueError::new_err(format!(
                    "{kind} is not allowed for map key"
                )));
            }
            dict.set_item(key, self.value(py, depth + 1)?)?;
        }
        Ok(dict.into_any())
    }
}
