//! When a server answers "no": which refusals are its limits or its access
//! rules rather than an outage, the words and fix each is raised with, and
//! each logged once per shard, so no refusal passes in silence while none
//! floods the log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::{ErrorKind, RedisError};

use super::connections::settling;
use crate::stats::{Count, Stats};

/// How long a refusal's log line stands for the same refusal again: a
/// repeat within it is counted, and said with the next line.
const REPEAT: Duration = Duration::from_secs(60);

/// Refusals remembered per shard before the oldest are let go.
const REMEMBERED: usize = 64;

/// What kind of "no" a server said; each is raised as its own class of
/// `channels_rs.exceptions` and counted under its own `stats()` key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cause {
    /// maxmemory reached (OOM).
    Memory,
    /// No writes now: a read-only replica, a failed save, too few replicas.
    Writes,
    /// Credentials or the ACL: WRONGPASS, NOAUTH, NOPERM.
    Access,
    /// Any other error reply: a key of another type, a disabled command...
    Other,
}

impl Cause {
    /// The `channels_rs.exceptions` class raised for it.
    pub fn class(self) -> &'static str {
        match self {
            Cause::Memory => "OutOfMemory",
            Cause::Writes => "WritesRefused",
            Cause::Access => "AccessDenied",
            Cause::Other => "ServerRefused",
        }
    }

    fn count(self) -> Count {
        match self {
            Cause::Memory => Count::RefusedMemory,
            Cause::Writes => Count::RefusedWrites,
            Cause::Access => Count::RefusedAccess,
            Cause::Other => Count::RefusedOther,
        }
    }
}

/// The kind of refusal `err` is, if the server refused at all. Replies
/// that a retry mends (a cluster settling, a server loading, a lost
/// script) are not refusals: the layer rides them out.
pub fn cause(err: &RedisError) -> Option<Cause> {
    if err.kind() == ErrorKind::AuthenticationFailed || reported(err).is_some() {
        return Some(Cause::Access);
    }
    if settling(err) {
        return None;
    }
    let (code, _) = reply(err)?;
    Some(match code.as_str() {
        "OOM" => Cause::Memory,
        "READONLY" | "MISCONF" | "NOREPLICAS" => Cause::Writes,
        "NOPERM" | "WRONGPASS" | "NOAUTH" => Cause::Access,
        "NOSCRIPT" | "EXECABORT" | "UNBLOCKED" | "BUSY" => return None,
        _ => Cause::Other,
    })
}

/// A refused login a cluster client reported as text ("Failed to create
/// initial connections - Io: \"WRONGPASS\": invalid ..."): its code, and
/// the server's words from there on.
fn reported(err: &RedisError) -> Option<(&'static str, String)> {
    let detail = err.detail().filter(|_| err.kind() == ErrorKind::Io)?;
    ["WRONGPASS", "NOAUTH", "NOPERM", "AuthenticationFailed"]
        .into_iter()
        .find_map(|code| {
            let at = detail.find(code)?;
            let said = detail[at..].replacen(&format!("{code}\": "), &format!("{code} "), 1);
            Some((code, said))
        })
}

/// The code and text of the server's error reply in `err`: the first of
/// a pipeline's or an aborted transaction's.
fn reply(err: &RedisError) -> Option<(String, Option<String>)> {
    let errors = err.clone().into_server_errors()?;
    let (_, first) = errors.first()?;
    Some((first.code().to_owned(), first.details().map(str::to_owned)))
}

/// The server's reply as it sent it: "OOM command not allowed when ...".
pub fn words(err: &RedisError) -> String {
    match reply(err) {
        Some((code, Some(detail))) => format!("{code} {detail}"),
        Some((code, None)) => code,
        None => reported(err).map_or_else(|| err.to_string(), |(_, said)| said),
    }
}

/// What a refusal means and how to mend it, in a sentence naming `shard`
/// and quoting the server.
pub fn explain(shard: &str, err: &RedisError) -> String {
    let said = words(err);
    let code = reply(err)
        .map(|(code, _)| code)
        .or_else(|| reported(err).map(|(code, _)| code.to_owned()));
    let (what, fix) = match code.as_deref() {
        Some("OOM") => (
            "is at its maxmemory and refuses writes; nothing was written",
            "Messages pile up in Redis when nobody receives them: check that \
             consumers are running, lower expiry or capacity, or raise maxmemory.",
        ),
        Some("READONLY") => (
            "is a read-only replica",
            "Point hosts at the master, or at Sentinel.",
        ),
        Some("MISCONF") => (
            "refuses writes since it could not save to disk; nothing was written",
            "See the server's log for why the save failed (often a full disk).",
        ),
        Some("NOREPLICAS") => (
            "refuses writes until enough replicas are connected; nothing was written",
            "Bring its replicas back, or lower min-replicas-to-write.",
        ),
        Some("NOAUTH") => (
            "needs a password, and the layer sent none",
            "Give it in hosts: redis://:password@host:port (or user:password@).",
        ),
        Some("NOPERM") => (
            "denies the layer's user a command or key it needs",
            "Grant what the README's ACL line lists (keys ~<prefix>*).",
        ),
        _ if cause(err) == Some(Cause::Access) => (
            "refused the layer's credentials",
            "Check the user name and password in hosts (redis://user:password@host:port).",
        ),
        _ => ("refused the command", ""),
    };
    let text = format!("Redis at {shard} {what} (the server said \"{said}\"). {fix}");
    text.trim_end().to_owned()
}

/// The refusals one shard has logged, by the server's words.
#[derive(Default)]
pub struct Refusals {
    heard: Mutex<HashMap<String, Heard>>,
}

struct Heard {
    logged: Instant,
    /// Repeats since that line.
    since: u64,
}

impl Refusals {
    /// Counts `err` if it is a refusal, and logs it at ERROR unless the same
    /// words went out within REPEAT; the next line after that says how
    /// often they came meanwhile.
    pub fn note(&self, shard: &str, err: &RedisError, stats: &Stats) {
        let Some(cause) = cause(err) else {
            return;
        };
        stats.add(cause.count(), 1);
        let key = words(err);
        let now = Instant::now();
        let repeats = {
            let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
            if heard.len() >= REMEMBERED {
                heard.retain(|_, heard| now - heard.logged < REPEAT);
            }
            match heard.get_mut(&key) {
                Some(last) if now - last.logged < REPEAT => {
                    last.since += 1;
                    return;
                }
                Some(last) => std::mem::replace(last, Heard::at(now)).since,
                None => {
                    heard.insert(key, Heard::at(now));
                    0
                }
            }
        };
        let again = match repeats {
            0 => String::new(),
            n => format!(" ({n} more times in the last {} s)", REPEAT.as_secs()),
        };
        log::error!(target: "channels_rs", "{}{again}", explain(shard, err));
    }
}

impl Heard {
    fn at(logged: Instant) -> Self {
        Heard { logged, since: 0 }
    }
}
