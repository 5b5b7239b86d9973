//! The in-memory channel layer: plain data under one lock, no threads of its
//! own. A send completes inside the call. A receive returns the message when
//! one is queued, else an asyncio future of the caller's loop that a later
//! send completes: directly on the same thread, through
//! `call_soon_threadsafe` from another.

mod copy;
mod state;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{PyTraverseError, PyVisit};

use crate::bridge;
use crate::capacity::{unbounded_if_not_positive, Capacities};
use crate::clock::unix_now;
use crate::codec;
use crate::errors;
use crate::names;
use crate::process::{Guard, PerProcess};
use crate::stats::{stats_dict, Count, Reason, Stats};
use state::{Delivery, Dropped, State, Waiter};

struct Shared {
    state: PerProcess<State>,
    expiry: Duration,
    group_expiry: f64,
    capacities: Capacities,
    stats: Stats,
    /// Whether a message the Redis layers could not send raises here too,
    /// rather than being warned of.
    require_serializable: bool,
    /// What was warned of: each type at each place once.
    warned: Mutex<HashSet<String>>,
    /// With `renew_groups`: how lately a member's channel must have
    /// received to stay in its groups past group_expiry (a quarter of it,
    /// as the Redis layer renews).
    renewal: Option<Duration>,
}

/// Kinds of unsendable message remembered, so each is warned of once.
const WARNED: usize = 1024;

fn is_done(future: &Bound<'_, PyAny>) -> PyResult<bool> {
    future
        .call_method0(intern!(future.py(), "done"))?
        .is_truthy()
}

impl Shared {
    fn lock(&self) -> Guard<'_, State> {
        self.state.lock()
    }

    /// Runs `f` on the state; what it drops is released (and what expired
    /// counted) after the lock.
    fn with_state<R>(&self, f: impl FnOnce(&mut State, &mut Dropped) -> R) -> R {
        let mut dropped = Dropped::default();
        let result = f(&mut self.lock(), &mut dropped);
        let why = format!("not received within {} s", self.expiry.as_secs());
        for (channel, count) in dropped.expired {
            let place = format!("channel {channel}");
            self.stats.dropped(Reason::Expired, &place, count, &why);
        }
        drop(dropped.objects);
        result
    }

    /// Gives `message` to the first receiver that can still take it, else
    /// queues it. Returns it back if the channel is full.
    fn deliver(
        self: &Arc<Self>,
        py: Python<'_>,
        name: &str,
        mut message: Py<PyAny>,
        capacity: usize,
        front: bool,
    ) -> PyResult<Result<(), Py<PyAny>>> {
        loop {
            let deadline = Instant::now() + self.expiry;
            let delivery = self
                .lock()
                .deliver(name, message, deadline, capacity, front);
            match delivery {
                Delivery::Queued => return Ok(Ok(())),
                Delivery::Full(message) => return Ok(Err(message)),
                Delivery::Handed(waiter, handed) => match self.hand(py, name, waiter, handed)? {
                    None => return Ok(Ok(())),
                    Some(refused) => message = refused,
                },
            }
        }
    }

    /// Completes the waiter's future with `message`, or returns the message
    /// if that receiver is gone (cancelled, or its loop closed).
    fn hand(
        self: &Arc<Self>,
        py: Python<'_>,
        name: &str,
        waiter: Waiter,
        message: Py<PyAny>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let future = waiter.future.bind(py);
        if waiter.thread == thread::current().id() {
            if is_done(future)? {
                return Ok(Some(message));
            }
            // It fails when the future's loop is closed: that receiver is gone.
            let set = future.call_method1(intern!(py, "set_result"), (message.clone_ref(py),));
            return Ok(set.err().map(|_| message));
        }
        let handoff = Handoff {
            shared: Arc::clone(self),
            channel: name.to_owned(),
            future: waiter.future.clone_ref(py),
            message: message.clone_ref(py),
        };
        let scheduled = waiter
            .event_loop
            .bind(py)
            .call_method1(intern!(py, "call_soon_threadsafe"), (handoff,));
        Ok(scheduled.err().map(|_| message))
    }

    /// Checks that `message` could cross Redis (msgpack, the Redis layers'
    /// default): where it could not, code that works here would fail in
    /// production. Raises as they would with `require_serializable`, else
    /// logs a WARNING once per type and place in the message.
    /// `plain` is what the message's copy found (see `copy`).
    fn require_sendable(
        &self,
        py: Python<'_>,
        message: &Bound<'_, PyDict>,
        plain: bool,
    ) -> PyResult<()> {
        if plain {
            return Ok(());
        }
        let Err(err) = codec::check_msgpack(message) else {
            return Ok(());
        };
        if self.require_serializable {
            return Err(err);
        }
        let problem = err.value(py).to_string();
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.len() < WARNED && warned.insert(problem.clone()) {
            drop(warned);
            log::warn!(target: "channels_rs", "InMemoryChannelLayer: the Redis layers could not send this message ({}: {problem}). Convert the value (str(), .isoformat(), list()) so that it works in production too; require_serializable=True raises this here", err.get_type(py).name()?);
        }
        Ok(())
    }

    /// Puts back a message its receiver never took, first in line.
    fn give_back(self: &Arc<Self>, py: Python<'_>, name: &str, message: Py<PyAny>) -> PyResult<()> {
        self.deliver(py, name, message, usize::MAX, true).map(drop)
    }
}

/// A message sent from another thread, completed on the receiver's own loop,
/// where checking that the receiver still waits cannot race with it.
#[pyclass(frozen, module = "channels_rs._core")]
struct Handoff {
    shared: Arc<Shared>,
    channel: String,
    future: Py<PyAny>,
    message: Py<PyAny>,
}

#[pymethods]
impl Handoff {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let future = self.future.bind(py);
        let message = self.message.clone_ref(py);
        if is_done(future)? {
            return self.shared.give_back(py, &self.channel, message);
        }
        future
            .call_method1(intern!(py, "set_result"), (message,))
            .map(drop)
    }
}

#[pyclass(frozen, module = "channels_rs._core")]
pub struct MemoryCore {
    shared: Arc<Shared>,
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a non-negative number of seconds, got {value}"
        ))
    })
}

impl MemoryCore {
    fn lock(&self) -> Guard<'_, State> {
        self.shared.lock()
    }

    /// The members of `group` that joined within group_expiry, after
    /// expired messages are dropped; older members leave the group.
    fn live_members(&self, group: &str) -> Vec<String> {
        let now = Instant::now();
        let joined_after = unix_now() - self.shared.group_expiry;
        self.shared.with_state(|state, dropped| {
            state.expire(now, dropped);
            state.group_members(group, joined_after, self.shared.renewal)
        })
    }
}

/// InMemoryChannelLayer's options, under their names in CONFIG
/// (`channel_capacity` compiled).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct Options {
    expiry: f64,
    group_expiry: f64,
    capacity: i64,
    channel_capacity: Vec<(Py<PyAny>, i64)>,
    require_serializable: bool,
    renew_groups: bool,
}

#[pymethods]
impl MemoryCore {
    #[new]
    fn new(options: Options) -> PyResult<Self> {
        let Options {
            expiry,
            group_expiry,
            capacity,
            channel_capacity,
            require_serializable,
            renew_groups,
        } = options;
        let patterns = channel_capacity
            .into_iter()
            .map(|(pattern, capacity)| (pattern, unbounded_if_not_positive(capacity)))
            .collect();
        let shared = Shared {
            state: PerProcess::new(State::default(), State::forget_waiters),
            expiry: seconds("expiry", expiry)?,
            group_expiry,
            capacities: Capacities::new(unbounded_if_not_positive(capacity), patterns),
            stats: Stats::default(),
            require_serializable,
            warned: Mutex::new(HashSet::new()),
            renewal: renew_groups
                .then(|| seconds("group_expiry", group_expiry.max(0.0) / 4.0))
                .transpose()?,
        };
        Ok(MemoryCore {
            shared: Arc::new(shared),
        })
    }

    fn send(
        &self,
        py: Python<'_>,
        channel: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let message = errors::require_dict(message)?;
        let name = names::channel(py, channel)?;
        errors::require_no_reply_channel(message)?;
        let copied = copy::deep_copy(message)?;
        self.shared.require_sendable(py, message, copied.plain)?;
        let capacity = self.shared.capacities.of(py, &name)?;
        let copy = copied.copy.unbind();
        let stats = &self.shared.stats;
        match self.shared.deliver(py, &name, copy, capacity, false)? {
            Ok(()) => {
                stats.add(Count::Sent, 1);
                Ok(())
            }
            Err(_) => {
                stats.add(Count::ChannelFull, 1);
                Err(errors::channel_full(py, &name))
            }
        }
    }

    /// The oldest queued message of `channel`, or an asyncio future that the
    /// next one completes. Whoever awaits that future calls `finish` after it.
    fn receive<'py>(
        &self,
        py: Python<'py>,
        channel: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = names::channel(py, channel)?;
        let now = Instant::now();
        let queued = self.shared.with_state(|state, dropped| {
            state.expire(now, dropped);
            state.take(&name, now, dropped)
        });
        if let Some(message) = queued {
            self.shared.stats.add(Count::Received, 1);
            return Ok(message.into_bound(py));
        }
        let event_loop = bridge::running_loop(py)?;
        let future = event_loop.call_method0(intern!(py, "create_future"))?;
        // A send from another thread may have landed while the future was made.
        let queued = self.shared.with_state(|state, dropped| {
            let queued = state.take(&name, Instant::now(), dropped);
            if queued.is_none() {
                let waiter = Waiter {
                    future: future.clone().unbind(),
                    event_loop: event_loop.unbind(),
                    thread: thread::current().id(),
                };
                state.add_waiter(&name, waiter);
            }
            queued
        });
        let Some(message) = queued else {
            return Ok(future);
        };
        self.shared.stats.add(Count::Received, 1);
        Ok(message.into_bound(py))
    }

    /// After an await of a `receive` future: whether the message was
    /// `taken`. If not (cancelled), stop waiting, and put back a message that
    /// was handed over but never taken.
    fn finish(
        &self,
        py: Python<'_>,
        channel: &str,
        future: &Bound<'_, PyAny>,
        taken: bool,
    ) -> PyResult<()> {
        if taken {
            self.shared.stats.add(Count::Received, 1);
            return Ok(());
        }
        self.shared
            .with_state(|state, dropped| state.remove_waiter(channel, future, dropped));
        match bridge::unclaimed(future)? {
            Some(message) => self.shared.give_back(py, channel, message.unbind()),
            None => Ok(()),
        }
    }

    fn group_add(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
        channel: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let group = names::group(py, group)?;
        let channel = names::channel(py, channel)?;
        self.lock().group_add(group, channel);
        Ok(())
    }

    fn group_discard(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
        channel: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let channel = names::channel(py, channel)?;
        let group = names::group(py, group)?;
        self.lock().group_discard(&group, &channel);
        Ok(())
    }

    /// Sends a copy of `message` to every member; full members miss it.
    fn group_send(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.group_send_each(py, vec![group.clone()], vec![message.clone()])
    }

    /// Each of `messages`, in order, to every member of each of `groups`;
    /// all are checked before any is sent.
    fn group_send_each(
        &self,
        py: Python<'_>,
        groups: Vec<Bound<'_, PyAny>>,
        messages: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let messages = errors::require_messages(&messages)?;
        let groups = groups
            .iter()
            .map(|group| names::group(py, group))
            .collect::<PyResult<Vec<_>>>()?;
        // Each message's first copy says whether it could cross Redis, all
        // before any is sent; it goes to the first member.
        let mut first_copies = Vec::with_capacity(messages.len());
        for message in &messages {
            let copied = copy::deep_copy(message)?;
            self.shared.require_sendable(py, message, copied.plain)?;
            first_copies.push(Some(copied.copy.unbind()));
        }
        for group in groups {
            let members = self.live_members(&group);
            let mut full = 0;
            for (message, first) in messages.iter().zip(&mut first_copies) {
                for member in &members {
                    let capacity = self.shared.capacities.of(py, member)?;
                    let copy = match first.take() {
                        Some(copy) => copy,
                        None => copy::deep_copy(message)?.copy.unbind(),
                    };
                    // A full member misses this message, as in channels.
                    let delivered = self.shared.deliver(py, member, copy, capacity, false)?;
                    full += usize::from(delivered.is_err());
                }
            }
            let stats = &self.shared.stats;
            let sent = members.len() * messages.len();
            stats.add(Count::GroupSends, messages.len() as u64);
            stats.add(Count::GroupDeliveries, (sent - full) as u64);
            let why = format_args!("{full} of {sent} channels over capacity");
            let place = format!("group {group}");
            stats.dropped(Reason::GroupFull, &place, full as u64, why);
        }
        Ok(())
    }

    /// Copies of `messages` queued on `channel` in order: all, or ChannelFull
    /// (and none) when they would not all fit.
    fn send_bulk(
        &self,
        py: Python<'_>,
        channel: &Bound<'_, PyAny>,
        messages: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let copies = errors::require_messages(&messages)?
            .into_iter()
            .map(|message| {
                let copied = copy::deep_copy(message)?;
                self.shared.require_sendable(py, message, copied.plain)?;
                Ok(copied.copy.unbind())
            })
            .collect::<PyResult<Vec<_>>>()?;
        let name = names::channel(py, channel)?;
        let capacity = self.shared.capacities.of(py, &name)?;
        let stats = &self.shared.stats;
        if self.lock().queued_count(&name) + copies.len() > capacity {
            stats.add(Count::ChannelFull, 1);
            return Err(errors::channel_full(py, &name));
        }
        stats.add(Count::Sent, copies.len() as u64);
        for copy in copies {
            // Room was made sure of above.
            let _queued = self.shared.deliver(py, &name, copy, usize::MAX, false)?;
        }
        Ok(())
    }

    /// The channels in `group` now: members that joined longer than
    /// group_expiry ago are left out (and dropped), in no set order.
    fn group_channels(&self, py: Python<'_>, group: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
        let group = names::group(py, group)?;
        Ok(self.live_members(&group))
    }

    /// The counters and gauges `layer.stats()` returns.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let state = self.lock();
        let gauges = [
            ("channels", state.channel_count()),
            ("groups", state.group_count()),
            ("waiting_receives", state.waiter_count()),
        ];
        drop(state);
        stats_dict(py, &self.shared.stats, gauges)
    }

    fn flush(&self) {
        self.shared
            .with_state(|state, dropped| state.flush(dropped));
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // The lock is never held while Python runs, so it is free here.
        match self.shared.state.try_lock() {
            Some(state) => state.traverse(&visit),
            None => Ok(()),
        }
    }

    fn __clear__(&self) {
        let state = std::mem::take(&mut *self.shared.lock());
        drop(state);
    }

    // For the `channels` view.

    fn channel_names(&self) -> Vec<String> {
        self.lock().channel_names()
    }

    fn has_channel(&self, name: &str) -> bool {
        self.lock().has_channel(name)
    }

    fn channel_count(&self) -> usize {
        self.lock().channel_count()
    }

    fn queued(&self, py: Python<'_>, name: &str) -> Option<Vec<Py<PyAny>>> {
        self.lock().queued(py, name)
    }

    fn discard_queue(&self, name: &str) {
        self.shared
            .with_state(|state, dropped| state.discard_queue(name, dropped))
    }

    // For the `groups` view.

    fn group_names(&self) -> Vec<String> {
        self.lock().group_names()
    }

    fn group_count(&self) -> usize {
        self.lock().group_count()
    }

    fn group_members<'py>(
        &self,
        py: Python<'py>,
        name: &str,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(members): Option<HashMap<String, f64>> = self.lock().group_snapshot(name) else {
            return Ok(None);
        };
        let dict = PyDict::new(py);
        for (channel, joined) in members {
            dict.set_item(channel, joined)?;
        }
        Ok(Some(dict))
    }

    fn remove_group(&self, name: &str) -> bool {
        self.lock().remove_group(name)
    }
}
