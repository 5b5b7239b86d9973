//! The exceptions layers raise for bad messages and full channels, as the
//! classes user code catches: channels' `ChannelFull`, and our
//! `InvalidMessage` (a TypeError that is also the AssertionError channels' own
//! layers raise for the same mistakes).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

/// The key a layer adds itself; a message arriving with it is refused.
pub const REPLY_CHANNEL_KEY: &str = "__asgi_channel__";

fn error(
    py: Python<'_>,
    cell: &'static PyOnceLock<Py<PyType>>,
    module: &str,
    class: &str,
    text: String,
) -> PyErr {
    match cell.import(py, module, class) {
        Ok(class) => PyErr::from_type(class.clone(), text),
        Err(err) => err,
    }
}

fn invalid_message(py: Python<'_>, text: String) -> PyErr {
    static INVALID_MESSAGE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    error(
        py,
        &INVALID_MESSAGE,
        "channels_rs.exceptions",
        "InvalidMessage",
        text,
    )
}

pub fn channel_full(py: Python<'_>, channel: &str) -> PyErr {
    static CHANNEL_FULL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    error(
        py,
        &CHANNEL_FULL,
        "channels.exceptions",
        "ChannelFull",
        channel.to_owned(),
    )
}

/// `channels_rs.exceptions.<class>` (a `ServerRefused`) with `text`, and
/// the `server` it names and its `reply` as attributes.
pub fn server_refused(
    py: Python<'_>,
    class: &str,
    text: String,
    server: &str,
    reply: &str,
) -> PyErr {
    let made = || -> PyResult<PyErr> {
        let class = py.import("channels_rs.exceptions")?.getattr(class)?;
        let error = class.call1((text,))?;
        error.setattr("server", server)?;
        error.setattr("reply", reply)?;
        Ok(PyErr::from_value(error))
    };
    made().unwrap_or_else(|err| err)
}

pub fn require_dict<'a, 'py>(message: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyDict>> {
    message.cast::<PyDict>().map_err(|_| {
        let kind = message
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |name| name.to_string());
        invalid_message(message.py(), format!("message must be a dict, not {kind}"))
    })
}

pub fn require_no_reply_channel(message: &Bound<'_, PyDict>) -> PyResult<()> {
    if message.contains(REPLY_CHANNEL_KEY)? {
        let text =
            format!("message must not contain the key {REPLY_CHANNEL_KEY:?}: the layer sets it");
        return Err(invalid_message(message.py(), text));
    }
    Ok(())
}

/// `messages` as dicts, none with a routing entry of its own: a bulk send
/// checks them all before it sends any.
pub fn require_messages<'a, 'py>(
    messages: &'a [Bound<'py, PyAny>],
) -> PyResult<Vec<&'a Bound<'py, PyDict>>> {
    messages
        .iter()
        .map(|message| {
            let message = require_dict(message)?;
            require_no_reply_channel(message)?;
            Ok(message)
        })
        .collect()
}
