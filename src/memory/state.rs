//! What the in-memory layer holds: queued messages and waiting receivers per
//! channel, group memberships both ways, and when to look for expired messages.
//!
//! Every cost is proportional to the work asked for: a receive touches one
//! channel plus whatever has expired since the last look, and a group_send
//! touches its members. The lock around this is never held while Python code
//! runs, so Python objects leave it (to be completed or dropped) through what
//! a call returns.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::clock::unix_now;

#[derive(Default)]
pub struct Channel {
    /// Messages nobody has asked for yet, oldest first, with their deadlines.
    queue: VecDeque<(Instant, Py<PyAny>)>,
    /// Receivers, first come first served, until a message is handed to them
    /// or they are cancelled.
    waiters: VecDeque<Waiter>,
}

impl Channel {
    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.waiters.is_empty()
    }
}

/// A `receive()` waiting on an asyncio future of the loop running on `thread`.
pub struct Waiter {
    pub future: Py<PyAny>,
    pub event_loop: Py<PyAny>,
    pub thread: ThreadId,
}

/// What was dropped under the lock, released after it: objects (a
/// message's last reference can run Python code, which must never run
/// under the lock), and how many messages of which channels expired, to
/// count and log.
#[derive(Default)]
pub struct Dropped {
    pub objects: Vec<Py<PyAny>>,
    pub expired: Vec<(String, u64)>,
}

/// Where `deliver` put a message.
pub enum Delivery {
    Queued,
    /// To complete outside the lock; the waiter is no longer listed.
    Handed(Waiter, Py<PyAny>),
    Full(Py<PyAny>),
}

/// A channel that is in groups.
struct Member {
    groups: HashSet<String>,
    /// When a receive of it last started or ended: whether it is alive,
    /// for renewal.
    heard: Option<Instant>,
}

#[derive(Default)]
pub struct State {
    channels: HashMap<String, Channel>,
    /// group -> channel -> when it joined (seconds since the epoch).
    groups: HashMap<String, HashMap<String, f64>>,
    /// channel -> the groups it is in, so an expiry can leave them all.
    memberships: HashMap<String, Member>,
    /// When to look at a channel for expired messages: at most one entry per
    /// channel (those in `armed`), due no later than its oldest message.
    checks: BinaryHeap<Reverse<(Instant, String)>>,
    armed: HashSet<String>,
}

impl State {
    /// Picks the first waiting receiver for `message`, else queues it if the
    /// channel has room. `front` puts back a message a cancelled receiver
    /// never took: first in line, whatever the capacity.
    pub fn deliver(
        &mut self,
        name: &str,
        message: Py<PyAny>,
        deadline: Instant,
        capacity: usize,
        front: bool,
    ) -> Delivery {
        if let Some(channel) = self.channels.get_mut(name) {
            if let Some(waiter) = channel.waiters.pop_front() {
                if channel.is_idle() {
                    self.channels.remove(name);
                }
                return Delivery::Handed(waiter, message);
            }
        }
        let channel = self.channels.entry(name.to_owned()).or_default();
        if front {
            channel.queue.push_front((deadline, message));
        } else if channel.queue.len() < capacity {
            channel.queue.push_back((deadline, message));
        } else {
            if channel.is_idle() {
                self.channels.remove(name);
            }
            return Delivery::Full(message);
        }
        self.arm(name, deadline);
        Delivery::Queued
    }

    /// The oldest unexpired message of `name`, if any.
    pub fn take(&mut self, name: &str, now: Instant, out: &mut Dropped) -> Option<Py<PyAny>> {
        let channel = self.channels.get_mut(name)?;
        let before = out.objects.len();
        let mut found = None;
        while let Some((deadline, message)) = channel.queue.pop_front() {
            if deadline < now {
                out.objects.push(message);
            } else {
                found = Some(message);
                break;
            }
        }
        if channel.is_idle() {
            self.channels.remove(name);
        }
        let expired = out.objects.len() - before;
        if expired > 0 {
            out.expired.push((name.to_owned(), expired as u64));
            self.leave_all_groups(name);
        }
        if found.is_some() {
            self.heard(name);
        }
        found
    }

    /// A receive of `name` started or ended.
    fn heard(&mut self, name: &str) {
        if let Some(member) = self.memberships.get_mut(name) {
            member.heard = Some(Instant::now());
        }
    }

    pub fn add_waiter(&mut self, name: &str, waiter: Waiter) {
        self.heard(name);
        self.channels
            .entry(name.to_owned())
            .or_default()
            .waiters
            .push_back(waiter);
    }

    /// Unlists the waiter on `future`, if it still waits.
    pub fn remove_waiter(&mut self, name: &str, future: &Bound<'_, PyAny>, out: &mut Dropped) {
        self.heard(name);
        if let Some(channel) = self.channels.get_mut(name) {
            if let Some(at) = channel
                .waiters
                .iter()
                .position(|waiter| waiter.future.is(future))
            {
                if let Some(waiter) = channel.waiters.remove(at) {
                    out.objects.extend([waiter.future, waiter.event_loop]);
                }
            }
            if channel.is_idle() {
                self.channels.remove(name);
            }
        }
    }

    fn arm(&mut self, name: &str, deadline: Instant) {
        if !self.armed.contains(name) {
            self.armed.insert(name.to_owned());
            self.checks.push(Reverse((deadline, name.to_owned())));
        }
    }

    /// Drops every message that expired by `now`; their channels leave all
    /// their groups.
    pub fn expire(&mut self, now: Instant, out: &mut Dropped) {
        while let Some(Reverse((due, _))) = self.checks.peek() {
            if *due >= now {
                break;
            }
            let Some(Reverse((_, name))) = self.checks.pop() else {
                break;
            };
            self.armed.remove(&name);
            let Some(channel) = self.channels.get_mut(&name) else {
                continue;
            };
            let before = channel.queue.len();
            while channel
                .queue
                .front()
                .is_some_and(|(deadline, _)| *deadline < now)
            {
                out.objects
                    .extend(channel.queue.pop_front().map(|(_, message)| message));
            }
            let expired = before - channel.queue.len();
            let next = channel.queue.front().map(|(deadline, _)| *deadline);
            if channel.is_idle() {
                self.channels.remove(&name);
            }
            if let Some(next) = next {
                self.arm(&name, next);
            }
            if expired > 0 {
                self.leave_all_groups(&name);
                out.expired.push((name, expired as u64));
            }
        }
    }

    pub fn group_add(&mut self, group: String, channel: String) {
        let member = self
            .memberships
            .entry(channel.clone())
            .or_insert_with(|| Member {
                groups: HashSet::new(),
                heard: None,
            });
        member.groups.insert(group.clone());
        self.groups
            .entry(group)
            .or_default()
            .insert(channel, unix_now());
    }

    pub fn group_discard(&mut self, group: &str, channel: &str) {
        if let Some(members) = self.groups.get_mut(group) {
            members.remove(channel);
            if members.is_empty() {
                self.groups.remove(group);
            }
        }
        if let Some(member) = self.memberships.get_mut(channel) {
            member.groups.remove(group);
            if member.groups.is_empty() {
                self.memberships.remove(channel);
            }
        }
    }

    fn leave_all_groups(&mut self, channel: &str) {
        let member = self.memberships.remove(channel);
        for group in member.map(|member| member.groups).unwrap_or_default() {
            if let Some(members) = self.groups.get_mut(&group) {
                members.remove(channel);
                if members.is_empty() {
                    self.groups.remove(&group);
                }
            }
        }
    }

    /// The members of `group` that joined after `joined_after`; older members
    /// are dropped from it, but with `renew`, those alive (a receive waits
    /// on them, or one started or ended within `renew`) join again now.
    pub fn group_members(
        &mut self,
        group: &str,
        joined_after: f64,
        renew: Option<Duration>,
    ) -> Vec<String> {
        let Some(members) = self.groups.get(group) else {
            return Vec::new();
        };
        let (mut current, mut stale) = (Vec::new(), Vec::new());
        for (name, joined) in members {
            let side = if *joined >= joined_after {
                &mut current
            } else {
                &mut stale
            };
            side.push(name.clone());
        }
        let alive = |name: &str| {
            renew.is_some_and(|lately| {
                self.channels
                    .get(name)
                    .is_some_and(|channel| !channel.waiters.is_empty())
                    || self
                        .memberships
                        .get(name)
                        .and_then(|member| member.heard)
                        .is_some_and(|heard| heard.elapsed() <= lately)
            })
        };
        let (renewed, gone): (Vec<String>, Vec<String>) =
            stale.into_iter().partition(|name| alive(name));
        if let Some(members) = self.groups.get_mut(group) {
            let now = unix_now();
            for name in &renewed {
                members.insert(name.clone(), now);
            }
        }
        for channel in gone {
            self.group_discard(group, &channel);
        }
        current.extend(renewed);
        current
    }

    /// Empties every queue and group. Receivers that are waiting keep waiting.
    pub fn flush(&mut self, out: &mut Dropped) {
        for channel in self.channels.values_mut() {
            out.objects
                .extend(channel.queue.drain(..).map(|(_, message)| message));
        }
        self.channels.retain(|_, channel| !channel.is_idle());
        self.groups.clear();
        self.memberships.clear();
        self.checks.clear();
        self.armed.clear();
    }

    /// In a forked child: the waiting receivers were the parent's, on event
    /// loops and threads the child does not have. They are forgotten (their
    /// objects are the parent's too); queued messages stay, as they would in
    /// channels' own layer.
    pub fn forget_waiters(&mut self) {
        for channel in self.channels.values_mut() {
            for waiter in channel.waiters.drain(..) {
                std::mem::forget(waiter);
            }
        }
        self.channels.retain(|_, channel| !channel.is_idle());
    }

    /// Shows Python's garbage collector every object held here, so a cycle
    /// through a waiting receiver (future -> task -> layer) can be freed.
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        for channel in self.channels.values() {
            for (_, message) in &channel.queue {
                visit.call(message)?;
            }
            for waiter in &channel.waiters {
                visit.call(&waiter.future)?;
                visit.call(&waiter.event_loop)?;
            }
        }
        Ok(())
    }

    // Inspection, for the `channels` and `groups` views.

    pub fn channel_names(&self) -> Vec<String> {
        self.channels.keys().cloned().collect()
    }

    pub fn has_channel(&self, name: &str) -> bool {
        self.channels.contains_key(name)
    }

    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    pub fn queued_count(&self, name: &str) -> usize {
        self.channels
            .get(name)
            .map_or(0, |channel| channel.queue.len())
    }

    pub fn waiter_count(&self) -> usize {
        self.channels.values().map(|c| c.waiters.len()).sum()
    }

    pub fn queued(&self, py: Python<'_>, name: &str) -> Option<Vec<Py<PyAny>>> {
        let channel = self.channels.get(name)?;
        Some(
            channel
                .queue
                .iter()
                .map(|(_, message)| message.clone_ref(py))
                .collect(),
        )
    }

    /// Drops the queued messages of `name`; its waiting receivers stay.
    pub fn discard_queue(&mut self, name: &str, out: &mut Dropped) {
        if let Some(channel) = self.channels.get_mut(name) {
            out.objects
                .extend(channel.queue.drain(..).map(|(_, message)| message));
            if channel.is_idle() {
                self.channels.remove(name);
            }
        }
    }

    pub fn group_names(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub fn group_snapshot(&self, group: &str) -> Option<HashMap<String, f64>> {
        self.groups.get(group).cloned()
    }

    pub fn remove_group(&mut self, group: &str) -> bool {
        let Some(members) = self.groups.get(group) else {
            return false;
        };
        let channels: Vec<String> = members.keys().cloned().collect();
        for channel in channels {
            self.group_discard(group, &channel);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pyo3::types::PyString;

    use super::*;

    fn message(py: Python<'_>, text: &str) -> Py<PyAny> {
        PyString::new(py, text).into_any().unbind()
    }

    fn text(py: Python<'_>, message: Option<Py<PyAny>>) -> Option<String> {
        message.map(|m| m.bind(py).extract().expect("a str"))
    }

    /// Runs `test` with the GIL, a fresh State and an hour from now.
    fn with_state(test: impl FnOnce(Python<'_>, &mut State, Instant)) {
        Python::initialize();
        Python::attach(|py| {
            test(
                py,
                &mut State::default(),
                Instant::now() + Duration::from_secs(3600),
            );
        });
    }

    #[test]
    fn a_full_channel_refuses_but_a_message_put_back_goes_first() {
        with_state(|py, state, later| {
            for n in ["one", "two"] {
                assert!(matches!(
                    state.deliver("c", message(py, n), later, 2, false),
                    Delivery::Queued
                ));
            }
            assert!(matches!(
                state.deliver("c", message(py, "three"), later, 2, false),
                Delivery::Full(_)
            ));
            // A cancelled receiver's message returns whatever the capacity.
            assert!(matches!(
                state.deliver("c", message(py, "zero"), later, 2, true),
                Delivery::Queued
            ));
            let mut out = Dropped::default();
            let now = Instant::now();
            let got: Vec<_> = (0..4)
                .map(|_| text(py, state.take("c", now, &mut out)))
                .collect();
            assert_eq!(
                got,
                [
                    Some("zero".into()),
                    Some("one".into()),
                    Some("two".into()),
                    None
                ]
            );
            assert!(out.objects.is_empty());
            assert_eq!(state.channel_count(), 0, "an empty channel is forgotten");
        });
    }

    #[test]
    fn a_waiting_receiver_gets_the_message_before_the_queue() {
        with_state(|py, state, later| {
            let waiter = Waiter {
                future: message(py, "future"),
                event_loop: message(py, "loop"),
                thread: std::thread::current().id(),
            };
            state.add_waiter("c", waiter);
            match state.deliver("c", message(py, "m"), later, 0, false) {
                Delivery::Handed(waiter, m) => {
                    assert_eq!(text(py, Some(waiter.future)).as_deref(), Some("future"));
                    assert_eq!(text(py, Some(m)).as_deref(), Some("m"));
                }
                _ => panic!("not handed to the waiter"),
            }
            assert!(!state.has_channel("c"));
        });
    }

    #[test]
    fn expired_messages_are_dropped_and_their_channel_leaves_its_groups() {
        with_state(|py, state, later| {
            let now = Instant::now();
            let past = now - Duration::from_secs(1);
            state.group_add("g".into(), "old".into());
            state.group_add("g".into(), "fresh".into());
            state.deliver("old", message(py, "stale"), past, 10, false);
            state.deliver("fresh", message(py, "kept"), later, 10, false);
            let mut out = Dropped::default();
            state.expire(now, &mut out);
            assert_eq!(out.objects.len(), 1);
            assert!(!state.has_channel("old"));
            assert_eq!(state.group_members("g", 0.0, None), ["fresh"]);
            assert_eq!(
                text(py, state.take("fresh", now, &mut out)).as_deref(),
                Some("kept")
            );
        });
    }

    #[test]
    fn take_skips_what_expired_since_the_last_look() {
        with_state(|py, state, later| {
            let now = Instant::now();
            state.group_add("g".into(), "c".into());
            state.deliver(
                "c",
                message(py, "stale"),
                now - Duration::from_secs(1),
                10,
                false,
            );
            state.deliver("c", message(py, "kept"), later, 10, false);
            let mut out = Dropped::default();
            assert_eq!(
                text(py, state.take("c", now, &mut out)).as_deref(),
                Some("kept")
            );
            assert_eq!(out.objects.len(), 1);
            assert!(state.group_members("g", 0.0, None).is_empty());
        });
    }

    #[test]
    fn members_that_joined_too_long_ago_are_dropped() {
        with_state(|_, state, _| {
            state.group_add("g".into(), "a".into());
            state.group_add("g".into(), "b".into());
            let mut members = state.group_members("g", 0.0, None);
            members.sort();
            assert_eq!(members, ["a", "b"]);
            assert!(state.group_members("g", unix_now() + 10.0, None).is_empty());
            assert_eq!(state.group_count(), 0);
        });
    }

    #[test]
    fn flush_empties_queues_and_groups_but_keeps_waiters() {
        with_state(|py, state, later| {
            state.deliver("queued", message(py, "m"), later, 10, false);
            state.group_add("g".into(), "queued".into());
            state.add_waiter(
                "waiting",
                Waiter {
                    future: message(py, "future"),
                    event_loop: message(py, "loop"),
                    thread: std::thread::current().id(),
                },
            );
            let mut out = Dropped::default();
            state.flush(&mut out);
            assert_eq!(out.objects.len(), 1);
            assert_eq!(state.channel_names(), ["waiting"]);
            assert_eq!(state.group_count(), 0);
        });
    }
}
