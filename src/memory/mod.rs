//! The in-memory channel layer: plain data under one lock, no threads of its
//! own. A send completes inside the call; a receive returns a finished future
//! when a message is queued, else a pending one that the next send completes.

mod copy;
mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::capacity::{unbounded_if_not_positive, Capacities};
use crate::errors;
use crate::future::{Future, Owner};
use crate::names;
use state::{unix_now, Full, Leftovers, State};

struct Shared {
    state: Mutex<State>,
    expiry: Duration,
    group_expiry: f64,
    capacities: Capacities,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A receiver waiting on one channel.
struct Waiting {
    shared: Weak<Shared>,
    channel: String,
}

impl Owner for Waiting {
    fn release(&self, _py: Python<'_>, future: &Bound<'_, Future>) {
        if let Some(shared) = self.shared.upgrade() {
            shared.lock().remove_waiter(&self.channel, future);
        }
    }

    fn give_back(&self, py: Python<'_>, future: &Bound<'_, Future>, message: Py<PyAny>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut out = Leftovers::default();
        {
            let mut state = shared.lock();
            state.remove_waiter(&self.channel, future);
            let deadline = Instant::now() + shared.expiry;
            state.give_back(py, &self.channel, message, deadline, &mut out);
        }
        out.finish(py);
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
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Runs `f` on the state, then wakes and drops what it left, unlocked.
    fn with_state<R>(&self, py: Python<'_>, f: impl FnOnce(&mut State, &mut Leftovers) -> R) -> R {
        let mut out = Leftovers::default();
        let result = f(&mut self.lock(), &mut out);
        out.finish(py);
        result
    }
}

#[pymethods]
impl MemoryCore {
    #[new]
    fn new(
        expiry: f64,
        group_expiry: f64,
        capacity: i64,
        channel_capacity: Vec<(Py<PyAny>, i64)>,
    ) -> PyResult<Self> {
        let patterns = channel_capacity
            .into_iter()
            .map(|(pattern, capacity)| (pattern, unbounded_if_not_positive(capacity)))
            .collect();
        let shared = Shared {
            state: Mutex::new(State::default()),
            expiry: seconds("expiry", expiry)?,
            group_expiry,
            capacities: Capacities::new(unbounded_if_not_positive(capacity), patterns),
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
        let capacity = self.shared.capacities.of(py, &name)?;
        let copy = copy::deep_copy(message)?.unbind();
        let deadline = Instant::now() + self.shared.expiry;
        let result = self.with_state(py, |state, out| {
            state.deliver(py, &name, copy, deadline, capacity, out)
        });
        result.map_err(|Full(_)| errors::channel_full(py, &name))
    }

    fn receive(&self, py: Python<'_>, channel: &Bound<'_, PyAny>) -> PyResult<Py<Future>> {
        let name = names::channel(py, channel)?;
        let now = Instant::now();
        let queued = self.with_state(py, |state, out| {
            state.expire(now, out);
            state.take(&name, now, out)
        });
        if let Some(message) = queued {
            return Future::ready(py, message);
        }
        let owner = Waiting {
            shared: Arc::downgrade(&self.shared),
            channel: name.clone(),
        };
        let waiter = Future::pending(py, Box::new(owner))?;
        // A send from another thread may have landed while the future was made.
        let queued = self.with_state(py, |state, out| {
            let queued = state.take(&name, Instant::now(), out);
            if queued.is_none() {
                state.add_waiter(&name, waiter.clone_ref(py));
            }
            queued
        });
        match queued {
            Some(message) => Future::ready(py, message),
            None => Ok(waiter),
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
        let message = errors::require_dict(message)?;
        let group = names::group(py, group)?;
        errors::require_no_reply_channel(message)?;
        let now = Instant::now();
        let joined_after = unix_now() - self.shared.group_expiry;
        let members = self.with_state(py, |state, out| {
            state.expire(now, out);
            state.group_members(&group, joined_after)
        });
        let mut copies = Vec::with_capacity(members.len());
        for member in members {
            let capacity = self.shared.capacities.of(py, &member)?;
            copies.push((member, copy::deep_copy(message)?.unbind(), capacity));
        }
        let deadline = now + self.shared.expiry;
        self.with_state(py, |state, out| {
            for (member, copy, capacity) in copies {
                if let Err(Full(missed)) = state.deliver(py, &member, copy, deadline, capacity, out)
                {
                    out.dropped.push(missed);
                }
            }
        });
        Ok(())
    }

    fn flush(&self, py: Python<'_>) {
        self.with_state(py, |state, out| state.flush(out));
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

    fn discard_queue(&self, py: Python<'_>, name: &str) -> bool {
        self.with_state(py, |state, out| state.discard_queue(name, out))
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
