//! The json serializer's bytes, as Python's `json.dumps` (default
//! separators, ASCII escapes) writes them and `json.loads` reads them.

use serde_json::Value;

/// `json.dumps` of an object with one more entry, from `json.dumps` of the
/// object (Python's default separators and ASCII escapes).
pub fn append_entry(
    body: &[u8],
    key: &str,
    names: &[&str],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let open = body
        .strip_suffix(b"}")
        .ok_or("the JSON body is not an object")?;
    out.extend_from_slice(open);
    if open != b"{" {
        out.extend_from_slice(b", ");
    }
    string(key, out);
    out.extend_from_slice(b": [");
    for (at, name) in names.iter().enumerate() {
        if at > 0 {
            out.extend_from_slice(b", ");
        }
        string(name, out);
    }
    out.extend_from_slice(b"]}");
    Ok(())
}

pub fn string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            ' '..='~' => out.push(c as u8),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.extend_from_slice(format!("\\u{unit:04x}").as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

/// Checks that `body` is a JSON object `json.loads` reads and returns its
/// top-level `reply_key` channel names, if any. Needs no GIL.
///
/// `json.dumps` writes NaN, Infinity and -Infinity, which are not JSON:
/// serde_json checks a copy where those tokens are blanked to 0.
pub fn scan(body: &[u8], reply_key: &str) -> Result<Option<Vec<String>>, String> {
    let value: Value = serde_json::from_slice(&python_numbers_blanked(body))
        .map_err(|err| format!("not JSON: {err}"))?;
    let map = value
        .as_object()
        .ok_or("the message is not a JSON object")?;
    Ok(match map.get(reply_key) {
        Some(Value::String(one)) => Some(vec![one.clone()]),
        Some(Value::Array(many)) => many
            .iter()
            .map(|one| one.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    })
}

/// `body` with NaN, Infinity and -Infinity outside strings replaced by a 0
/// and spaces of the same length.
fn python_numbers_blanked(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    let (mut in_string, mut escaped) = (false, false);
    let mut at = 0;
    while at < out.len() {
        let byte = out[at];
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if let Some(token) = [&b"NaN"[..], b"Infinity"]
            .into_iter()
            .find(|token| out[at..].starts_with(token))
        {
            out[at] = b'0';
            out[at + 1..at + token.len()].fill(b' ');
            at += token.len();
            continue;
        }
        at += 1;
    }
    out
}
