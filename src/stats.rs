//! What a layer counts: messages through it, what it gave up on and why,
//! and the connections it had to make again. `layer.stats()` reads these,
//! plus gauges each layer takes from its own state.
//!
//! A message given up on is counted and logged on the `channels_rs` logger,
//! at most once per place (a channel, or a group) every `QUIET` with the
//! count since the line before, so a flood of drops is a few lines, not a
//! flood of its own.
//!
//! Like the rest of a layer's state, the counts are per process: a forked
//! child starts from zero.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log::Level;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::process::{renew, PerProcess};

/// The shortest time between two log lines about one place and reason.
const QUIET: Duration = Duration::from_secs(5);

/// Places remembered for QUIET before old ones are let go.
const REMEMBERED: usize = 1024;

/// An event counted as it happens; the `stats()` keys are `Count::NAMES`.
#[derive(Clone, Copy)]
pub enum Count {
    Sent,
    Received,
    GroupSends,
    GroupDeliveries,
    ChannelFull,
    Reconnects,
    Failovers,
    /// Commands the server refused (see `redis::refusal`), by cause.
    RefusedMemory,
    RefusedWrites,
    RefusedAccess,
    RefusedOther,
}

impl Count {
    const NAMES: [&'static str; 11] = [
        "messages_sent",
        "messages_received",
        "group_sends",
        "group_deliveries",
        "channel_full",
        "reconnects",
        "failovers",
        "refused_out_of_memory",
        "refused_writes",
        "refused_access",
        "refused_other",
    ];
}

/// Why a message was given up on; the `stats()` keys are `dropped_<name>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A process-local buffer or queue was full: its oldest message made room.
    Capacity,
    /// Nobody received it within `expiry`.
    Expired,
    /// Bytes that no serializer here can read, or sealed with another key.
    Unreadable,
    /// A group member was at capacity, so group_send skipped it.
    GroupFull,
}

impl Reason {
    const NAMES: [&'static str; 4] = [
        "dropped_capacity",
        "dropped_expired",
        "dropped_unreadable",
        "dropped_group_full",
    ];

    fn level(self) -> Level {
        match self {
            Reason::Capacity => Level::Warn,
            Reason::Unreadable => Level::Error,
            // channels_redis logs a full member at INFO; expiry is routine
            // for a consumer that left without group_discard.
            Reason::Expired | Reason::GroupFull => Level::Info,
        }
    }
}

/// Drops of one place and reason since its last log line.
struct Quiet {
    /// When the last line went out; None before the first.
    logged: Option<Instant>,
    unlogged: u64,
}

type Places = HashMap<(Reason, String), Quiet>;

pub struct Stats {
    pid: AtomicU32,
    counts: [AtomicU64; Count::NAMES.len()],
    drops: [AtomicU64; Reason::NAMES.len()],
    places: PerProcess<Places>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            pid: AtomicU32::new(crate::process::id()),
            counts: Default::default(),
            drops: Default::default(),
            places: PerProcess::new(Places::new(), |places| renew(places, Places::new())),
        }
    }
}

impl Stats {
    /// Zeroes what a parent process counted, once in each child.
    fn own(&self) {
        let pid = crate::process::id();
        if self.pid.load(Ordering::Relaxed) != pid && self.pid.swap(pid, Ordering::AcqRel) != pid {
            for counter in self.counts.iter().chain(&self.drops) {
                counter.store(0, Ordering::Relaxed);
            }
        }
    }

    pub fn add(&self, count: Count, n: u64) {
        self.own();
        self.counts[count as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` messages given up on at `place` ("channel x", "group g")
    /// for `reason`, and logs `why` unless a line about it went out lately.
    ///
    /// Logging takes the GIL: call this with no lock held that a thread
    /// holding the GIL could wait for (see `Losses`).
    pub fn dropped(&self, reason: Reason, place: &str, n: u64, why: impl Display) {
        if n == 0 {
            return;
        }
        self.own();
        self.drops[reason as usize].fetch_add(n, Ordering::Relaxed);
        let now = Instant::now();
        let since = |quiet: &Quiet| quiet.logged.map(|at| now - at);
        let mut lines = Vec::new();
        {
            let mut places = self.places.lock();
            if places.len() >= REMEMBERED {
                places.retain(|(reason, place), quiet| {
                    let keep = since(quiet).is_some_and(|over| over < QUIET);
                    if !keep && quiet.unlogged > 0 {
                        lines.push((*reason, place.clone(), quiet.unlogged, since(quiet), false));
                    }
                    keep
                });
            }
            let quiet = places.entry((reason, place.to_owned())).or_insert(Quiet {
                logged: None,
                unlogged: 0,
            });
            quiet.unlogged += n;
            if since(quiet).is_none_or(|over| over >= QUIET) {
                lines.push((reason, place.to_owned(), quiet.unlogged, since(quiet), true));
                *quiet = Quiet {
                    logged: Some(now),
                    unlogged: 0,
                };
            }
        }
        for (reason, place, n, over, current) in lines {
            let what = match n {
                1 => "dropped a message".to_owned(),
                n => format!("dropped {n} messages"),
            };
            let since = over.map_or(String::new(), |over| {
                format!(" in the last {} s", over.as_secs())
            });
            // A place let go of has its count, and its reason as a key of stats().
            let why: &dyn Display = if current {
                &why
            } else {
                &Reason::NAMES[reason as usize]
            };
            log::log!(target: "channels_rs", reason.level(), "{what} on {place}{since}: {why}");
        }
    }

    /// Counts and logs what was noted under a lock, now that it is released.
    pub fn record(&self, losses: Losses) {
        for (reason, place, n, why) in losses.0 {
            self.dropped(reason, &place, n, why);
        }
    }

    /// Every counter by its `stats()` name.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        self.own();
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counts = Count::NAMES.into_iter().zip(self.counts.iter().map(read));
        let drops = Reason::NAMES.into_iter().zip(self.drops.iter().map(read));
        counts.chain(drops).collect()
    }
}

/// What `layer.stats()` returns: every counter, then the layer's `gauges`.
pub fn stats_dict<'py>(
    py: Python<'py>,
    stats: &Stats,
    gauges: impl IntoIterator<Item = (&'static str, usize)>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, value) in stats.counters() {
        dict.set_item(name, value)?;
    }
    for (name, value) in gauges {
        dict.set_item(name, value)?;
    }
    Ok(dict)
}

/// Drops noted while a lock is held, for `Stats::record` after it.
#[derive(Default)]
pub struct Losses(Vec<(Reason, String, u64, String)>);

impl Losses {
    pub fn note(&mut self, reason: Reason, place: String, n: u64, why: impl Display) {
        if n > 0 {
            self.0.push((reason, place, n, why.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(stats: &Stats, name: &str) -> u64 {
        let counters = stats.counters();
        counters.iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn drops_are_counted_by_reason_and_quiet_places_are_remembered() {
        let stats = Stats::default();
        for _ in 0..50 {
            stats.dropped(Reason::Capacity, "channel a", 2, "full");
        }
        stats.dropped(Reason::Expired, "channel a", 1, "old");
        stats.add(Count::Sent, 3);
        assert_eq!(value(&stats, "dropped_capacity"), 100);
        assert_eq!(value(&stats, "dropped_expired"), 1);
        assert_eq!(value(&stats, "messages_sent"), 3);
        let places = stats.places.lock();
        assert_eq!(places.len(), 2);
        // The first drop was logged; the 49 calls after it wait for the next line.
        assert_eq!(
            places[&(Reason::Capacity, "channel a".to_owned())].unlogged,
            98
        );
    }

    #[test]
    fn a_forked_child_counts_from_zero() {
        let stats = Stats::default();
        stats.add(Count::Received, 5);
        stats.pid.store(0, Ordering::Relaxed); // as if inherited from another pid
        stats.add(Count::Received, 1);
        assert_eq!(value(&stats, "messages_received"), 1);
    }
}
