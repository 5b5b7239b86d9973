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

use super::Opened;

/// msgpack-python refuses to nest deeper than this.
const MAX_DEPTH: usize = 512;

/// Why a value could not be encoded, and where in the message: the steps
/// from the value up to the message, innermost first, gathered only as an
/// error unwinds.
struct Unencodable {
    err: PyErr,
    within: Vec<String>,
}

impl From<PyErr> for Unencodable {
    fn from(err: PyErr) -> Self {
        Unencodable {
            err,
            within: Vec::new(),
        }
    }
}

impl Unencodable {
    /// The same error one level up, under the subscript `step` (`['key']`, `[2]`).
    fn under(mut self, step: impl FnOnce() -> String) -> Self {
        self.within.push(step());
        self
    }

    /// The error, its text ending with where in the message it is: "can not
    /// serialize 'datetime.datetime' object at message['when']".
    fn into_err(self, py: Python<'_>) -> PyErr {
        let path: String = self.within.iter().rev().map(String::as_str).collect();
        let text = format!("{} at message{path}", self.err.value(py));
        let kind = self.err.get_type(py);
        if kind.is(py.get_type::<PyTypeError>()) {
            PyTypeError::new_err(text)
        } else if kind.is(py.get_type::<PyOverflowError>()) {
            PyOverflowError::new_err(text)
        } else if kind.is(py.get_type::<PyValueError>()) {
            PyValueError::new_err(text)
        } else {
            self.err
        }
    }
}

type Encoded = Result<(), Unencodable>;

fn too_deep() -> PyErr {
    PyValueError::new_err("message nests deeper than 512 levels")
}

/// Appends the msgpack form of `message`.
pub fn encode(message: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    encode_value(message, out, 0).map_err(|err| err.into_err(message.py()))
}

/// Appends `dict` as a map with one more entry, `key: extra`, at the end, as
/// `dict(message); message[key] = extra` would be packed.
pub fn encode_with_entry(
    dict: &Bound<'_, PyDict>,
    key: &str,
    extra: &Bound<'_, PyAny>,
    out: &mut Vec<u8>,
) -> PyResult<()> {
    let mut encoded = || -> Encoded {
        write(rmp::encode::write_map_len(out, len_u32(dict.len() + 1)?))?;
        encode_entries(dict, out, 1)?;
        write(rmp::encode::write_str(out, key))?;
        encode_value(extra, out, 1)
    };
    encoded().map_err(|err| err.into_err(dict.py()))
}

/// Copies the packed map `body` with one more entry, `key: [names]`, at the
/// end: the same bytes `packb` gives for the dict with that entry added.
pub fn append_entry(
    body: &[u8],
    key: &str,
    names: &[&str],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let (count, rest) = match body.split_first() {
        Some((&marker @ 0x80..=0x8f, rest)) => (usize::from(marker & 0x0f), rest),
        Some((0xde, rest)) if rest.len() >= 2 => (
            usize::from(u16::from_be_bytes([rest[0], rest[1]])),
            &rest[2..],
        ),
        Some((0xdf, rest)) if rest.len() >= 4 => {
            let count = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            (
                usize::try_from(count).map_err(|err| err.to_string())?,
                &rest[4..],
            )
        }
        _ => return Err("the message body is not a msgpack map".to_owned()),
    };
    let count = u32::try_from(count + 1).map_err(|err| err.to_string())?;
    // At most 5 bytes of header per string: one allocation for a big group's copy.
    let names_len: usize = names.iter().map(|name| name.len() + 5).sum();
    out.reserve(10 + rest.len() + key.len() + names_len);
    let fail = |err: rmp::encode::ValueWriteError| err.to_string();
    rmp::encode::write_map_len(out, count).map_err(fail)?;
    out.extend_from_slice(rest);
    rmp::encode::write_str(out, key).map_err(fail)?;
    rmp::encode::write_array_len(
        out,
        u32::try_from(names.len()).map_err(|err| err.to_string())?,
    )
    .map_err(fail)?;
    for name in names {
        rmp::encode::write_str(out, name).map_err(fail)?;
    }
    Ok(())
}

fn write<E: std::fmt::Display>(result: Result<impl Sized, E>) -> Encoded {
    result
        .map(drop)
        .map_err(|err| PyValueError::new_err(err.to_string()).into())
}

fn len_u32(len: usize) -> PyResult<u32> {
    u32::try_from(len).map_err(|_| PyValueError::new_err("message part too large for msgpack"))
}

fn encode_value(value: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> Encoded {
    if depth > MAX_DEPTH {
        return Err(too_deep().into());
    }
    if value.is_none() {
        write(rmp::encode::write_nil(out))?;
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
        encode_items(list.iter(), out, depth)?;
    } else if let Ok(tuple) = value.cast::<PyTuple>() {
        write(rmp::encode::write_array_len(out, len_u32(tuple.len())?))?;
        encode_items(tuple.iter(), out, depth)?;
    } else if value.is_instance_of::<PyMemoryView>() {
        let bytes: Vec<u8> = value.call_method0("tobytes")?.extract()?;
        encode_bin(&bytes, out)?;
    } else {
        let kind = value.get_type().fully_qualified_name()?;
        let text = format!("can not serialize '{kind}' object");
        return Err(PyTypeError::new_err(text).into());
    }
    Ok(())
}

fn encode_items<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    out: &mut Vec<u8>,
    depth: usize,
) -> Encoded {
    for (at, item) in items.enumerate() {
        encode_value(&item, out, depth + 1).map_err(|err| err.under(|| format!("[{at}]")))?;
    }
    Ok(())
}

fn encode_entries(dict: &Bound<'_, PyDict>, out: &mut Vec<u8>, depth: usize) -> Encoded {
    for (key, item) in dict.iter() {
        if !(key.is_instance_of::<PyString>() || key.is_instance_of::<PyBytes>()) {
            let kind = key.get_type().name()?;
            return Err(PyTypeError::new_err(format!(
                "message keys must be str, not {kind} ({}): receivers cannot decode other keys",
                key.repr()?
            ))
            .into());
        }
        encode_value(&key, out, depth)?;
        let step = || {
            key.repr()
                .map_or_else(|_| "[?]".to_owned(), |r| format!("[{r}]"))
        };
        encode_value(&item, out, depth).map_err(|err| err.under(step))?;
    }
    Ok(())
}

fn encode_int(value: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> Encoded {
    if let Ok(unsigned) = value.extract::<u64>() {
        write(rmp::encode::write_uint(out, unsigned))
    } else if let Ok(signed) = value.extract::<i64>() {
        write(rmp::encode::write_sint(out, signed))
    } else {
        Err(PyOverflowError::new_err("Integer value out of range").into())
    }
}

fn encode_bin(bytes: &[u8], out: &mut Vec<u8>) -> Encoded {
    write(rmp::encode::write_bin(out, bytes))
}

/// Why bytes could not be decoded.
pub enum Invalid {
    Data(String),
    Python(PyErr),
}

impl From<PyErr> for Invalid {
    fn from(err: PyErr) -> Self {
        Invalid::Python(err)
    }
}

impl From<Invalid> for PyErr {
    fn from(invalid: Invalid) -> Self {
        match invalid {
            Invalid::Data(text) => PyValueError::new_err(text),
            Invalid::Python(err) => err,
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Data(text) => f.write_str(text),
            Invalid::Python(err) => write!(f, "{err}"),
        }
    }
}

fn invalid(text: &str) -> Invalid {
    Invalid::Data(text.to_owned())
}

/// What the reader makes of each msgpack value.
trait Build {
    type Value;
    fn nil(&mut self) -> Result<Self::Value, Invalid>;
    fn boolean(&mut self, value: bool) -> Result<Self::Value, Invalid>;
    fn int(&mut self, value: i128) -> Result<Self::Value, Invalid>;
    fn float(&mut self, value: f64) -> Result<Self::Value, Invalid>;
    fn text(&mut self, value: &str) -> Result<Self::Value, Invalid>;
    fn bin(&mut self, value: &[u8]) -> Result<Self::Value, Invalid>;
    fn array(&mut self, items: Vec<Self::Value>) -> Result<Self::Value, Invalid>;
    /// Keys were checked to be str or bytes.
    fn map(
        &mut self,
        entries: Vec<(Self::Value, Self::Value)>,
        depth: usize,
    ) -> Result<Self::Value, Invalid>;
    fn is_key(value: &Self::Value) -> bool;
}

/// Builds Python objects, as `msgpack.unpackb` would.
struct Objects<'py>(Python<'py>);

impl<'py> Build for Objects<'py> {
    type Value = Bound<'py, PyAny>;
    fn nil(&mut self) -> Result<Self::Value, Invalid> {
        Ok(self.0.None().into_bound(self.0))
    }
    fn boolean(&mut self, value: bool) -> Result<Self::Value, Invalid> {
        Ok(PyBool::new(self.0, value).to_owned().into_any())
    }
    fn int(&mut self, value: i128) -> Result<Self::Value, Invalid> {
        Ok(PyInt::new(self.0, value).into_any())
    }
    fn float(&mut self, value: f64) -> Result<Self::Value, Invalid> {
        Ok(PyFloat::new(self.0, value).into_any())
    }
    fn text(&mut self, value: &str) -> Result<Self::Value, Invalid> {
        Ok(PyString::new(self.0, value).into_any())
    }
    fn bin(&mut self, value: &[u8]) -> Result<Self::Value, Invalid> {
        Ok(PyBytes::new(self.0, value).into_any())
    }
    fn array(&mut self, items: Vec<Self::Value>) -> Result<Self::Value, Invalid> {
        Ok(PyList::new(self.0, items)?.into_any())
    }
    fn map(
        &mut self,
        entries: Vec<(Self::Value, Self::Value)>,
        _depth: usize,
    ) -> Result<Self::Value, Invalid> {
        let dict = PyDict::new(self.0);
        for (key, value) in entries {
            dict.set_item(key, value)?;
        }
        Ok(dict.into_any())
    }
    fn is_key(value: &Self::Value) -> bool {
        value.is_exact_instance_of::<PyString>() || value.is_exact_instance_of::<PyBytes>()
    }
}

/// Checks bytes without Python, keeping what routing needs: the strings
/// and lists of strings.
struct Scan;

/// What `Scan` keeps of a value: strings and lists of strings.
enum Seen {
    Key(String),
    Bytes,
    Texts(Vec<String>),
    Other,
}

impl Build for Scan {
    type Value = Seen;
    fn nil(&mut self) -> Result<Seen, Invalid> {
        Ok(Seen::Other)
    }
    fn boolean(&mut self, _: bool) -> Result<Seen, Invalid> {
        Ok(Seen::Other)
    }
    fn int(&mut self, _: i128) -> Result<Seen, Invalid> {
        Ok(Seen::Other)
    }
    fn float(&mut self, _: f64) -> Result<Seen, Invalid> {
        Ok(Seen::Other)
    }
    fn text(&mut self, value: &str) -> Result<Seen, Invalid> {
        Ok(Seen::Key(value.to_owned()))
    }
    fn bin(&mut self, _: &[u8]) -> Result<Seen, Invalid> {
        Ok(Seen::Bytes)
    }
    fn array(&mut self, items: Vec<Seen>) -> Result<Seen, Invalid> {
        let texts: Option<Vec<String>> = items
            .into_iter()
            .map(|item| match item {
                Seen::Key(text) => Some(text),
                _ => None,
            })
            .collect();
        Ok(texts.map_or(Seen::Other, Seen::Texts))
    }
    fn map(&mut self, _: Vec<(Seen, Seen)>, _: usize) -> Result<Seen, Invalid> {
        Ok(Seen::Other)
    }
    fn is_key(value: &Seen) -> bool {
        matches!(value, Seen::Key(_) | Seen::Bytes)
    }
}

/// The Python object `bytes` holds, which must be exactly one msgpack value.
pub fn decode<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    Ok(read_whole(bytes, &mut Objects(py))?)
}

/// Checks that `bytes` is one message `decode` accepts (a map) and splits
/// off its top-level `reply_key` entry, so each receiver of a group message
/// decodes only its own part. Needs no GIL.
pub fn scan(bytes: &[u8], reply_key: &str) -> Result<Opened, Invalid> {
    let mut reader = Reader { bytes, at: 0 };
    let len = match Marker::from_u8(reader.array::<1>()?[0]) {
        Marker::FixMap(len) => len.into(),
        Marker::Map16 => reader.len16()?,
        Marker::Map32 => reader.len32()?,
        _ => return Err(invalid("the message is not a msgpack map")),
    };
    reader.check_entries(len)?;
    let mut kept = Vec::with_capacity(bytes.len());
    let mut reply = None;
    let mut dropped = 0;
    let mut from = reader.at;
    for _ in 0..len {
        let start = reader.at;
        let (key, value) = reader.entry(&mut Scan, 1)?;
        if matches!(&key, Seen::Key(name) if name == reply_key) {
            kept.extend_from_slice(&bytes[from..start]);
            from = reader.at;
            dropped += 1;
            reply = match value {
                Seen::Key(one) => Some(vec![one]),
                Seen::Texts(many) => Some(many),
                _ => None,
            };
        }
    }
    if reader.at != bytes.len() {
        return Err(invalid("extra bytes after the msgpack message"));
    }
    if dropped == 0 {
        return Ok(Opened {
            body: bytes.to_vec(),
            reply,
        });
    }
    kept.extend_from_slice(&bytes[from..]);
    let mut body = Vec::with_capacity(kept.len() + 5);
    let count = u32::try_from(len - dropped).map_err(|_| truncated())?;
    rmp::encode::write_map_len(&mut body, count).map_err(|err| invalid(&err.to_string()))?;
    body.extend_from_slice(&kept);
    Ok(Opened { body, reply })
}

fn read_whole<B: Build>(bytes: &[u8], build: &mut B) -> Result<B::Value, Invalid> {
    let mut reader = Reader { bytes, at: 0 };
    let value = reader.value(build, 0)?;
    if reader.at != bytes.len() {
        return Err(invalid("extra bytes after the msgpack message"));
    }
    Ok(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn truncated() -> Invalid {
    invalid("msgpack data ends in the middle of a value")
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], Invalid> {
        let end = self
            .at
            .checked_add(count)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(truncated)?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Invalid> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn len8(&mut self) -> Result<usize, Invalid> {
        Ok(self.array::<1>()?[0].into())
    }

    fn len16(&mut self) -> Result<usize, Invalid> {
        Ok(u16::from_be_bytes(self.array()?).into())
    }

    fn len32(&mut self) -> Result<usize, Invalid> {
        usize::try_from(u32::from_be_bytes(self.array()?)).map_err(|_| truncated())
    }

    fn value<B: Build>(&mut self, build: &mut B, depth: usize) -> Result<B::Value, Invalid> {
        if depth > MAX_DEPTH {
            return Err(invalid("message nests deeper than 512 levels"));
        }
        match Marker::from_u8(self.array::<1>()?[0]) {
            Marker::Null => build.nil(),
            Marker::True => build.boolean(true),
            Marker::False => build.boolean(false),
            Marker::FixPos(n) => build.int(n.into()),
            Marker::FixNeg(n) => build.int(n.into()),
            Marker::U8 => build.int(u8::from_be_bytes(self.array()?).into()),
            Marker::U16 => build.int(u16::from_be_bytes(self.array()?).into()),
            Marker::U32 => build.int(u32::from_be_bytes(self.array()?).into()),
            Marker::U64 => build.int(u64::from_be_bytes(self.array()?).into()),
            Marker::I8 => build.int(i8::from_be_bytes(self.array()?).into()),
            Marker::I16 => build.int(i16::from_be_bytes(self.array()?).into()),
            Marker::I32 => build.int(i32::from_be_bytes(self.array()?).into()),
            Marker::I64 => build.int(i64::from_be_bytes(self.array()?).into()),
            Marker::F32 => build.float(f32::from_be_bytes(self.array()?).into()),
            Marker::F64 => build.float(f64::from_be_bytes(self.array()?)),
            Marker::FixStr(len) => self.text(build, len.into()),
            Marker::Str8 => self.len8().and_then(|len| self.text(build, len)),
            Marker::Str16 => self.len16().and_then(|len| self.text(build, len)),
            Marker::Str32 => self.len32().and_then(|len| self.text(build, len)),
            Marker::Bin8 => self.len8().and_then(|len| build.bin(self.take(len)?)),
            Marker::Bin16 => self.len16().and_then(|len| build.bin(self.take(len)?)),
            Marker::Bin32 => self.len32().and_then(|len| build.bin(self.take(len)?)),
            Marker::FixArray(len) => self.list(build, len.into(), depth),
            Marker::Array16 => self.len16().and_then(|len| self.list(build, len, depth)),
            Marker::Array32 => self.len32().and_then(|len| self.list(build, len, depth)),
            Marker::FixMap(len) => self.map(build, len.into(), depth),
            Marker::Map16 => self.len16().and_then(|len| self.map(build, len, depth)),
            Marker::Map32 => self.len32().and_then(|len| self.map(build, len, depth)),
            Marker::Reserved => Err(invalid("invalid msgpack byte 0xc1")),
            _ => Err(invalid("msgpack extension types are not messages")),
        }
    }

    fn text<B: Build>(&mut self, build: &mut B, len: usize) -> Result<B::Value, Invalid> {
        let bytes = self.take(len)?;
        let text = std::str::from_utf8(bytes)
            .map_err(|err| Invalid::Data(format!("msgpack string is not UTF-8: {err}")))?;
        build.text(text)
    }

    fn list<B: Build>(
        &mut self,
        build: &mut B,
        len: usize,
        depth: usize,
    ) -> Result<B::Value, Invalid> {
        // Every element takes at least one byte: a longer count is a lie.
        if len > self.bytes.len() - self.at {
            return Err(truncated());
        }
        let items = (0..len)
            .map(|_| self.value(build, depth + 1))
            .collect::<Result<_, _>>()?;
        build.array(items)
    }

    fn map<B: Build>(
        &mut self,
        build: &mut B,
        len: usize,
        depth: usize,
    ) -> Result<B::Value, Invalid> {
        self.check_entries(len)?;
        let entries = (0..len)
            .map(|_| self.entry(build, depth + 1))
            .collect::<Result<_, _>>()?;
        build.map(entries, depth)
    }

    /// Every entry takes at least two bytes: a longer count is a lie.
    fn check_entries(&self, len: usize) -> Result<(), Invalid> {
        if len > (self.bytes.len() - self.at) / 2 {
            return Err(truncated());
        }
        Ok(())
    }

    fn entry<B: Build>(
        &mut self,
        build: &mut B,
        depth: usize,
    ) -> Result<(B::Value, B::Value), Invalid> {
        let key = self.value(build, depth)?;
        if !B::is_key(&key) {
            return Err(invalid("map keys must be str or bytes"));
        }
        Ok((key, self.value(build, depth)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = "__asgi_channel__";

    /// A packed map of `count` entries "k0": 0, "k1": 1, ...
    fn map_of(count: u32) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, count).unwrap();
        for n in 0..count {
            rmp::encode::write_str(&mut out, &format!("k{n}")).unwrap();
            rmp::encode::write_uint(&mut out, u64::from(n)).unwrap();
        }
        out
    }

    fn scanned(bytes: &[u8]) -> Result<Opened, String> {
        scan(bytes, REPLY).map_err(|err| err.to_string())
    }

    #[test]
    fn an_entry_appended_at_each_map_size_boundary() {
        // fixmap 15 -> map16, map16 65535 -> map32: the marker grows as packb's would.
        for (count, marker) in [(0, 0x81), (14, 0x8f), (15, 0xde), (65_535, 0xdf)] {
            let mut out = Vec::new();
            append_entry(&map_of(count), REPLY, &["a!1"], &mut out).unwrap();
            assert_eq!(out[0], marker, "{count} entries");
            let opened = scanned(&out).unwrap();
            assert_eq!(opened.reply, Some(vec!["a!1".to_owned()]));
            assert_eq!(opened.body, map_of(count), "{count} entries");
        }
    }

    #[test]
    fn appending_to_what_is_not_a_map_is_refused() {
        for body in [&[0x90][..], &[], &[0xde, 0x00]] {
            assert!(append_entry(body, REPLY, &[], &mut Vec::new()).is_err());
        }
    }

    #[test]
    fn the_reply_entry_comes_out_wherever_it_is() {
        let mut first = Vec::new();
        rmp::encode::write_map_len(&mut first, 3).unwrap();
        rmp::encode::write_str(&mut first, REPLY).unwrap();
        rmp::encode::write_str(&mut first, "one!x").unwrap();
        first.extend_from_slice(&map_of(2)[1..]);
        let opened = scanned(&first).unwrap();
        assert_eq!(opened.reply, Some(vec!["one!x".to_owned()]));
        assert_eq!(opened.body, map_of(2));
        let plain = scanned(&map_of(3)).unwrap();
        assert_eq!((plain.body, plain.reply), (map_of(3), None));
    }

    #[test]
    fn bad_bytes_are_refused_with_a_reason() {
        let mut extra = map_of(1);
        extra.push(0xc0);
        let mut cut = map_of(2);
        cut.pop();
        let int_key = [0x81, 0x01, 0x02];
        for (bytes, reason) in [
            (&extra[..], "extra bytes"),
            (&cut[..], "ends in the middle"),
            (&[0x92, 0x01, 0x02][..], "not a msgpack map"),
            (&int_key[..], "keys must be str or bytes"),
            (&[][..], "ends in the middle"),
        ] {
            let err = scanned(bytes).err().expect("refused");
            assert!(err.contains(reason), "{bytes:?}: {err}");
        }
    }
}
