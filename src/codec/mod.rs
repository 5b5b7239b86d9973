//! Message bytes as channels_redis stores them: random prefix, then the
//! msgpack (or json) body, Fernet-encrypted when keys are configured.

mod fernet;
mod msgpack;

use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict};

use crate::errors::REPLY_CHANNEL_KEY;
use fernet::Fernet;

enum Format {
    Msgpack,
    Json,
}

/// Turns messages into the bytes stored in Redis and back.
#[pyclass(frozen, module = "channels_rs._core")]
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

fn random_bytes<const N: usize>() -> PyResult<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|err| PyOSError::new_err(err.to_string()))?;
    Ok(bytes)
}

fn json<'py>(py: Python<'py>, function: &str) -> PyResult<Bound<'py, PyAny>> {
    static JSON: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    JSON.get_or_try_init(py, || Ok::<_, PyErr>(py.import("json")?.unbind()))?
        .bind(py)
        .getattr(function)
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
        // The prefix only keeps equal messages apart in the sorted set.
        let mut out = vec![0; self.prefix_length];
        getrandom::fill(&mut out).map_err(|err| PyOSError::new_err(err.to_string()))?;
        let body_at = out.len();
        match (&self.format, reply) {
            (Format::Msgpack, None) => msgpack::encode(message, &mut out)?,
            (Format::Msgpack, Some(reply)) => {
                msgpack::encode_with_entry(message, REPLY_CHANNEL_KEY, reply, &mut out)?
            }
            (Format::Json, _) => {
                let message = match reply {
                    Some(reply) => {
                        let copy = message.copy()?;
                        copy.set_item(REPLY_CHANNEL_KEY, reply)?;
                        copy
                    }
                    None => message.clone(),
                };
                let text: String = json(py, "dumps")?.call1((message,))?.extract()?;
                out.extend_from_slice(text.as_bytes());
            }
        }
        if let Some(key) = self.keys.first() {
            let token = key.encrypt(&out[body_at..], unix_seconds(), random_bytes()?);
            out.truncate(body_at);
            out.extend_from_slice(&token);
        }
        Ok(out)
    }

    /// The message stored as `bytes`.
    pub fn decode<'py>(&self, py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let body = bytes.get(self.prefix_length..).ok_or_else(|| {
            PyValueError::new_err("stored message is shorter than its random prefix")
        })?;
        let plaintext;
        let body = if self.keys.is_empty() {
            body
        } else {
            let now = unix_seconds();
            plaintext = self
                .keys
                .iter()
                .find_map(|key| key.decrypt(body, self.max_age, now).ok())
                .ok_or_else(|| {
                    PyValueError::new_err(
                        "message could not be decrypted with any of symmetric_encryption_keys \
                         (a different key, or older than expiry + 10 seconds)",
                    )
                })?;
            &plaintext
        };
        match self.format {
            Format::Msgpack => msgpack::decode(py, body),
            Format::Json => json(py, "loads")?.call1((PyBytes::new(py, body),)),
        }
    }
}

#[pymethods]
impl Serializer {
    #[new]
    #[pyo3(signature = (format, keys, random_prefix_length, expiry))]
    fn new(
        format: &str,
        keys: Vec<Vec<u8>>,
        random_prefix_length: usize,
        expiry: Option<f64>,
    ) -> PyResult<Self> {
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
