//! Message bytes as channels_redis stores them: random prefix, then the
//! msgpack (or json) body, Fernet-encrypted when keys are configured.
//!
//! Any other `serializer_format` is a Python serializer object from a
//! registry (channels_redis's, or ours): it makes and reads the whole stored
//! bytes, prefix and encryption included, so it runs with the GIL, and a
//! received message is read twice (once to route it, once for its receiver).

mod fernet;
mod json;
mod msgpack;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict};

use crate::errors::REPLY_CHANNEL_KEY;
use fernet::Fernet;

#[derive(Clone)]
enum Format {
    Msgpack,
    Json,
    /// An object with `serialize(dict) -> bytes` and `deserialize(bytes)`.
    Custom(Arc<Py<PyAny>>),
}

/// A group_send message before each copy is sealed: the plain body, or for
/// a custom serializer the message itself.
pub enum Body {
    Plain(Vec<u8>),
    Message(Py<PyDict>),
}

/// Turns messages into the bytes stored in Redis and back.
#[pyclass(frozen, from_py_object, module = "channels_rs._core")]
#[derive(Clone)]
pub struct Serializer {
    format: Format,
    /// Encrypt with the first, decrypt with any (key rotation).
    keys: Vec<Fernet>,
    prefix_length: usize,
    /// Oldest token accepted, in seconds (channels_redis: expiry + 10).
    max_age: Option<u64>,
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|err| err.to_string())?;
    Ok(bytes)
}

fn json<'py>(py: Python<'py>, function: &str) -> PyResult<Bound<'py, PyAny>> {
    static JSON: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    JSON.get_or_try_init(py, || Ok::<_, PyErr>(py.import("json")?.unbind()))?
        .bind(py)
        .getattr(function)
}

/// Whether the Redis layers' default serializer (msgpack) takes `message`:
/// if not, the error they would raise, naming the type and where it sits.
pub fn check_msgpack(message: &Bound<'_, PyDict>) -> PyResult<()> {
    msgpack::encode(message, &mut Vec::new())
}

impl Serializer {
    /// The stored form of `message`, with `__asgi_channel__: reply` added
    /// when given (as channels_redis does for process-local channels).
    pub fn encode(
        &self,
        message: &Bound<'_, PyDict>,
        reply: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<u8>> {
        let py = message.py();
        if let Format::Custom(custom) = &self.format {
            let message = match reply {
                Some(reply) => with_reply(message, reply)?,
                None => message.clone(),
            };
            return custom
                .bind(py)
                .call_method1("serialize", (message,))?
                .extract();
        }
        let mut out = self.random_prefix().map_err(PyOSError::new_err)?;
        let body_at = out.len();
        match (&self.format, reply) {
            (Format::Msgpack, None) => msgpack::encode(message, &mut out)?,
            (Format::Msgpack, Some(reply)) => {
                msgpack::encode_with_entry(message, REPLY_CHANNEL_KEY, reply, &mut out)?
            }
            (Format::Json, _) => {
                let message = match reply {
                    Some(reply) => with_reply(message, reply)?,
                    None => message.clone(),
                };
                let text: String = json(py, "dumps")?.call1((message,))?.extract()?;
                out.extend_from_slice(text.as_bytes());
            }
            (Format::Custom(_), _) => unreachable!("serialized above"),
        }
        self.encrypt_after(&mut out, body_at)
            .map_err(PyOSError::new_err)?;
        Ok(out)
    }

    /// Random bytes put before each stored message: they only keep equal
    /// messages apart in a sorted set.
    fn random_prefix(&self) -> Result<Vec<u8>, String> {
        let mut prefix = vec![0; self.prefix_length];
        getrandom::fill(&mut prefix).map_err(|err| err.to_string())?;
        Ok(prefix)
    }

    /// The plain body of `message` (no prefix, not encrypted), to be sealed
    /// later, possibly with a reply entry added (see `seal`).
    pub fn body(&self, message: &Bound<'_, PyDict>) -> PyResult<Body> {
        let mut out = Vec::new();
        match self.format {
            Format::Msgpack => msgpack::encode(message, &mut out)?,
            Format::Json => {
                let text: String = json(message.py(), "dumps")?.call1((message,))?.extract()?;
                out.extend_from_slice(text.as_bytes());
            }
            Format::Custom(_) => return Ok(Body::Message(message.clone().unbind())),
        }
        Ok(Body::Plain(out))
    }

    /// The stored form of a `body`, with `__asgi_channel__: [names]` added
    /// at the end: the same bytes as serializing the dict with that entry.
    /// Needs no GIL, but for a custom serializer.
    pub fn seal(&self, body: &Body, names: &[&str]) -> Result<Vec<u8>, String> {
        let body = match (body, &self.format) {
            (Body::Plain(body), _) => body,
            (Body::Message(message), _) => {
                let sealed = Python::attach(|py| {
                    let names = names.into_pyobject(py)?;
                    self.encode(message.bind(py), Some(&names))
                });
                return sealed.map_err(|err| err.to_string());
            }
        };
        let mut out = self.random_prefix()?;
        let body_at = out.len();
        match self.format {
            Format::Msgpack => msgpack::append_entry(body, REPLY_CHANNEL_KEY, names, &mut out)?,
            Format::Json => json::append_entry(body, REPLY_CHANNEL_KEY, names, &mut out)?,
            Format::Custom(_) => return Err("a custom serializer seals messages".into()),
        }
        self.encrypt_after(&mut out, body_at)?;
        Ok(out)
    }

    /// Replaces the body that starts at `body_at` with its Fernet token,
    /// when the layer encrypts.
    fn encrypt_after(&self, out: &mut Vec<u8>, body_at: usize) -> Result<(), String> {
        if let Some(key) = self.keys.first() {
            let token = key.encrypt(&out[body_at..], unix_seconds(), random_bytes()?);
            out.truncate(body_at);
            out.extend_from_slice(&token);
        }
        Ok(())
    }

    /// The body of a stored message: prefix removed, decrypted.
    fn plaintext<'b>(&self, bytes: &'b [u8]) -> Result<Cow<'b, [u8]>, String> {
        let body = bytes
            .get(self.prefix_length..)
            .ok_or("stored message is shorter than its random prefix")?;
        if self.keys.is_empty() {
            return Ok(Cow::Borrowed(body));
        }
        let now = unix_seconds();
        let found = self
            .keys
            .iter()
            .find_map(|key| key.decrypt(body, self.max_age, now).ok());
        found.map(Cow::Owned).ok_or_else(|| {
            "message could not be decrypted with any of symmetric_encryption_keys \
             (a different key, or older than expiry + 10 seconds)"
                .to_owned()
        })
    }

    /// Opens a stored message without Python: checks it decodes to a dict and
    /// finds the process-local channels it is for (`__asgi_channel__`).
    pub fn open(&self, bytes: &[u8]) -> Result<Opened, String> {
        let plaintext = self.plaintext(bytes)?;
        let reply = match &self.format {
            Format::Msgpack => {
                return msgpack::scan(&plaintext, REPLY_CHANNEL_KEY).map_err(|err| err.to_string())
            }
            Format::Json => json::scan(&plaintext, REPLY_CHANNEL_KEY)?,
            Format::Custom(custom) => Python::attach(|py| custom_reply(custom.bind(py), bytes))
                .map_err(|err| err.to_string())?,
        };
        // JSON keeps the entry: the receiver deletes it after decoding.
        Ok(Opened {
            body: plaintext.into_owned(),
            reply,
        })
    }

    /// The body of `{"type": message_type}`, as `read` reads it: the notice
    /// a pub/sub layer hands its consumers when its connection drops or
    /// comes back.
    pub fn notice(&self, message_type: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(message_type.len() + 16);
        match &self.format {
            Format::Msgpack => {
                out.push(0x81);
                for text in ["type", message_type] {
                    rmp::encode::write_str(&mut out, text).expect("writes to a Vec");
                }
            }
            Format::Json => {
                out.extend_from_slice(b"{\"type\": ");
                json::string(message_type, &mut out);
                out.push(b'}');
            }
            Format::Custom(_) => {
                let encoded = Python::attach(|py| {
                    let notice = PyDict::new(py);
                    notice.set_item("type", message_type)?;
                    self.encode(&notice, None)
                });
                // Unreadable then, and counted as such where it is read.
                return encoded.unwrap_or_default();
            }
        }
        out
    }

    /// The Python message an opened body holds.
    pub fn read<'py>(&self, py: Python<'py>, body: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        match &self.format {
            Format::Msgpack => msgpack::decode(py, body),
            Format::Json => json(py, "loads")?.call1((PyBytes::new(py, body),)),
            Format::Custom(custom) => custom
                .bind(py)
                .call_method1("deserialize", (PyBytes::new(py, body),)),
        }
    }

    /// The message stored as `bytes`.
    pub fn decode<'py>(&self, py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let body = self.plaintext(bytes).map_err(PyValueError::new_err)?;
        self.read(py, &body)
    }
}

/// A copy of `message` with `__asgi_channel__: reply`.
fn with_reply<'py>(
    message: &Bound<'py, PyDict>,
    reply: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let copy = message.copy()?;
    copy.set_item(REPLY_CHANNEL_KEY, reply)?;
    Ok(copy)
}

/// The process-local channels a custom serializer's `bytes` name: one
/// (from send) or a list (from group_send).
fn custom_reply(custom: &Bound<'_, PyAny>, bytes: &[u8]) -> PyResult<Option<Vec<String>>> {
    let py = custom.py();
    let message = custom.call_method1("deserialize", (PyBytes::new(py, bytes),))?;
    let message = crate::errors::require_dict(&message)?;
    let Some(reply) = message.get_item(REPLY_CHANNEL_KEY)? else {
        return Ok(None);
    };
    match reply.extract::<String>() {
        Ok(one) => Ok(Some(vec![one])),
        Err(_) => reply.extract().map(Some),
    }
}

/// A stored message, decrypted and checked.
pub struct Opened {
    /// The message; for msgpack without its `__asgi_channel__` entry.
    pub body: Vec<u8>,
    /// The process-local channels named in it, if any.
    pub reply: Option<Vec<String>>,
}

#[pymethods]
impl Serializer {
    /// `custom`, when given, is the serializer object of a registered
    /// format; it handles the keys, prefix and expiry itself.
    #[new]
    #[pyo3(signature = (format, keys, random_prefix_length, expiry, custom=None))]
    fn new(
        format: &str,
        keys: Vec<Vec<u8>>,
        random_prefix_length: usize,
        expiry: Option<f64>,
        custom: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        if let Some(custom) = custom {
            return Ok(Serializer {
                format: Format::Custom(Arc::new(custom)),
                keys: Vec::new(),
                prefix_length: 0,
                max_age: None,
            });
        }
        let format = match format {
            "msgpack" => Format::Msgpack,
            "json" => Format::Json,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown serializer_format '{other}': use 'msgpack' or 'json'"
                )))
            }
        };
        Ok(Serializer {
            format,
            keys: keys.iter().map(|key| Fernet::from_secret(key)).collect(),
            prefix_length: random_prefix_length,
            max_age: expiry.map(|expiry| (expiry + 10.0).ceil().max(0.0) as u64),
        })
    }

    fn serialize<'py>(&self, message: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let message = crate::errors::require_dict(message)?;
        Ok(PyBytes::new(message.py(), &self.encode(message, None)?))
    }

    fn deserialize<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        self.decode(py, data)
    }
}
