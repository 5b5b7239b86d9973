//! Receiving on this layer's process-local channels (`specific.<client>!<id>`).
//!
//! All of them share one Redis key. While anyone waits on one, a single pump
//! task pops that key (many messages per round trip when many are queued)
//! and routes each message by its `__asgi_channel__` to the receiver waiting
//! on that channel, or to a per-channel buffer of at most `capacity`
//! messages (the oldest is dropped). A message handed to a receiver that was
//! cancelled meanwhile goes back to the front of its channel.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::prelude::*;

use super::ring::non_local_name;
use crate::bridge::Queue;

/// A message waiting in this process: still bytes, or already a dict that a
/// cancelled receiver gave back.
pub enum Buffered {
    Body(Arc<Vec<u8>>),
    Message(Py<PyAny>),
}

struct Waiter {
    future: Py<PyAny>,
    queue: Arc<Queue>,
}

#[derive(Default)]
struct Channel {
    buffer: VecDeque<Buffered>,
    waiters: VecDeque<Waiter>,
}

impl Channel {
    fn is_idle(&self) -> bool {
        self.buffer.is_empty() && self.waiters.is_empty()
    }
}

#[derive(Default)]
struct State {
    channels: HashMap<String, Channel>,
    /// Waiting receivers per local name (`<prefix>.<client>!`), so a pump
    /// learns whether to go on without looking at every channel.
    waiting: HashMap<String, usize>,
}

impl State {
    fn count(&mut self, channel: &str, change: isize) {
        let name = non_local_name(channel);
        let count = self.waiting.entry(name.to_owned()).or_default();
        *count = count.saturating_add_signed(change);
        if *count == 0 {
            self.waiting.remove(name);
        }
    }
}

#[derive(Default)]
pub struct Local {
    state: Mutex<State>,
}

/// What `Local::route` did with a message.
pub enum Routed {
    /// Complete this waiter's future with the message.
    Waiter(Py<PyAny>, Arc<Queue>, Buffered),
    /// Buffered; the oldest message was dropped to make room, if any.
    Buffered(Option<Buffered>),
}

impl Local {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether anyone waits on a channel of `local_name`.
    pub fn has_waiters(&self, local_name: &str) -> bool {
        self.lock().waiting.contains_key(local_name)
    }

    /// The next buffered message of `channel`, if any.
    pub fn take(&self, channel: &str) -> Option<Buffered> {
        let channels = &mut self.lock().channels;
        let entry = channels.get_mut(channel)?;
        let taken = entry.buffer.pop_front();
        if entry.is_idle() {
            channels.remove(channel);
        }
        taken
    }

    /// Waits on `channel` unless a message arrived meanwhile (then returned).
    pub fn wait(&self, channel: &str, future: Py<PyAny>, queue: Arc<Queue>) -> Option<Buffered> {
        let mut state = self.lock();
        let entry = state.channels.entry(channel.to_owned()).or_default();
        if let Some(buffered) = entry.buffer.pop_front() {
            return Some(buffered);
        }
        entry.waiters.push_back(Waiter { future, queue });
        state.count(channel, 1);
        None
    }

    /// Stops waiting with `future` (cancelled), if it still waits.
    pub fn unwait(&self, channel: &str, future: &Bound<'_, PyAny>) {
        let mut state = self.lock();
        let Some(entry) = state.channels.get_mut(channel) else {
            return;
        };
        let Some(at) = entry
            .waiters
            .iter()
            .position(|waiter| waiter.future.is(future))
        else {
            return;
        };
        entry.waiters.remove(at);
        if entry.is_idle() {
            state.channels.remove(channel);
        }
        state.count(channel, -1);
    }

    /// Gives `message` to the first waiter of `channel`, else buffers it
    /// (at the front if `front`), keeping at most `capacity`. A dropped
    /// message comes back to be released after the lock.
    pub fn route(&self, channel: &str, message: Buffered, capacity: usize, front: bool) -> Routed {
        let mut state = self.lock();
        let entry = state.channels.entry(channel.to_owned()).or_default();
        if let Some(waiter) = entry.waiters.pop_front() {
            if entry.is_idle() {
                state.channels.remove(channel);
            }
            state.count(channel, -1);
            return Routed::Waiter(waiter.future, waiter.queue, message);
        }
        if front {
            entry.buffer.push_front(message);
        } else {
            entry.buffer.push_back(message);
        }
        if entry.buffer.len() <= capacity {
            return Routed::Buffered(None);
        }
        Routed::Buffered(if front {
            entry.buffer.pop_back()
        } else {
            entry.buffer.pop_front()
        })
    }
}
