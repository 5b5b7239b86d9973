//! Channel and group name rules, matching `channels.layers.BaseChannelLayer`
//! exactly, quirks included.
//!
//! ASCII names (nearly all of them) are checked here; a name with any
//! non-ASCII character goes to channels' own regex, because Python's `\d` and
//! `\w` follow Python's Unicode tables, which Rust's do not match exactly.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;

/// `BaseChannelLayer.MAX_NAME_LENGTH`: a name must be shorter than this.
const MAX_NAME_LENGTH: usize = 100;

const CHANNEL_ERROR: &str = "Channel name must be a valid unicode string with length < 100 \
     containing only ASCII alphanumerics, hyphens, underscores, or periods.";
const GROUP_ERROR: &str = "Group name must be a valid unicode string with length < 100 \
     containing only ASCII alphanumerics, hyphens, underscores, or periods.";

#[derive(Clone, Copy)]
enum Kind {
    Channel,
    Group,
}

/// `[a-zA-Z\d\-_.]` restricted to ASCII.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// The regexes' ASCII behaviour. `$` also matches before one trailing newline.
fn ascii_matches(name: &str, kind: Kind) -> bool {
    let body = name.strip_suffix('\n').unwrap_or(name).as_bytes();
    let (head, tail) = match (kind, body.iter().position(|&b| b == b'!')) {
        (Kind::Channel, Some(bang)) => (&body[..bang], &body[bang + 1..]),
        _ => (body, &body[..0]),
    };
    // After the `!`, `[\d\w\-_.]` is the same set as before it in ASCII.
    !head.is_empty()
        && head.iter().all(|&b| is_name_byte(b))
        && tail.iter().all(|&b| is_name_byte(b))
}

/// channels' own compiled regex, for names with non-ASCII characters.
fn python_matches(py: Python<'_>, name: &Bound<'_, PyString>, kind: Kind) -> PyResult<bool> {
    static CHANNEL_RE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static GROUP_RE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let (cell, attr) = match kind {
        Kind::Channel => (&CHANNEL_RE, "channel_name_regex"),
        Kind::Group => (&GROUP_RE, "group_name_regex"),
    };
    let base = cell.get_or_try_init(py, || {
        let cls = py.import("channels.layers")?.getattr("BaseChannelLayer")?;
        Ok::<_, PyErr>(cls.getattr(attr)?.unbind())
    })?;
    Ok(!base.bind(py).call_method1("match", (name,))?.is_none())
}

fn validate(py: Python<'_>, name: &Bound<'_, PyAny>, kind: Kind) -> PyResult<String> {
    let message = match kind {
        Kind::Channel => CHANNEL_ERROR,
        Kind::Group => GROUP_ERROR,
    };
    let Ok(text) = name.cast::<PyString>() else {
        return Err(PyTypeError::new_err(message));
    };
    let owned = text.to_str()?.to_owned();
    let valid = if owned.is_ascii() {
        owned.len() < MAX_NAME_LENGTH && ascii_matches(&owned, kind)
    } else {
        owned.chars().count() < MAX_NAME_LENGTH && python_matches(py, text, kind)?
    };
    if valid {
        Ok(owned)
    } else {
        Err(PyTypeError::new_err(message))
    }
}

/// Checks a channel name as `require_valid_channel_name` does and returns it
/// as a Rust string.
pub fn channel(py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<String> {
    validate(py, name, Kind::Channel)
}

/// Checks a group name as `require_valid_group_name` does.
pub fn group(py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<String> {
    validate(py, name, Kind::Group)
}

const LETTERS: &[u8; 52] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// A client prefix, as channels_redis's `uuid4().hex`: 32 hex digits from
/// the OS's generator (or, if it fails, from the clock and the pid).
pub fn client_prefix() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ u128::from(crate::process::id()) << 96).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `count` random ASCII letters from the OS's generator: unaffected by
/// `random.seed()` and different in every forked child.
#[pyfunction]
pub fn random_letters(count: usize) -> PyResult<String> {
    let mut letters = String::with_capacity(count);
    let mut bytes = [0u8; 32];
    while letters.len() < count {
        getrandom::fill(&mut bytes)
            .map_err(|err| pyo3::exceptions::PyOSError::new_err(err.to_string()))?;
        // Bytes at or above 208 (4 * 52) would favour some letters: skip them.
        let usable = bytes
            .iter()
            .filter(|&&b| b < 208)
            .map(|&b| LETTERS[usize::from(b) % 52] as char);
        letters.extend(usable.take(count - letters.len()));
    }
    Ok(letters)
}

/// The part of a channel name up to and including its `!`, or all of it:
/// the queue a process-local channel's messages wait in.
pub fn non_local_name(name: &str) -> &str {
    name.find('!').map_or(name, |bang| &name[..=bang])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_local_names() {
        assert_eq!(non_local_name("specific.abc!def"), "specific.abc!");
        assert_eq!(non_local_name("plain"), "plain");
    }

    #[test]
    fn ascii_channel_rules() {
        for ok in ["a", "a.b-c_d", "x!", "x!abc", "x!a.b", "abc\n", "x!\n"] {
            assert!(ascii_matches(ok, Kind::Channel), "{ok:?}");
        }
        for bad in ["", "!x", "x!y!z", "a b", "a\n\n", "\n", "a/b", "a!b c"] {
            assert!(!ascii_matches(bad, Kind::Channel), "{bad:?}");
        }
    }

    #[test]
    fn ascii_group_rules() {
        assert!(ascii_matches("room-1.a_b", Kind::Group));
        assert!(ascii_matches("room\n", Kind::Group));
        assert!(!ascii_matches("room!", Kind::Group));
        assert!(!ascii_matches("", Kind::Group));
    }
}
