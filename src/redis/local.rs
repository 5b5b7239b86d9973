//! Receiving on this layer's process-local channels (`specific.<client>!<id>`).
//!
//! All of them share one Redis key. While anyone waits on one, a single pump
//! task pops that key (many messages per round trip when many are queued)
//! and routes each message by its `__asgi_channel__` to the receiver waiting
//! on that channel, or to a per-channel buffer of at most `capacity`
//! messages (the oldest is dropped). A message handed to a receiver that was
//! cancelled meanwhile goes back to the front of its channel.
//!
//! Buffered messages expire after `expiry` seconds, as they would have in
//! Redis, so channels nobody receives on any more (a consumer that left
//! without group_discard) do not hold memory for ever.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
    /// Messages and when they arrived, oldest first.
    buffer: VecDeque<(Instant, Buffered)>,
    waiters: VecDeque<Waiter>,
}

impl Channel {
    fn is_idle(&self) -> bool {
        self.buffer.is_empty() && self.waiters.is_empty()
    }

    fn drop_expired(&mut self, oldest: Instant) {
        // Given-back messages go to the front with a newer time: look at all.
        self.buffer.retain(|(arrived, _)| *arrived >= oldest);
    }

    fn next(&mut self, oldest: Instant) -> Option<Buffered> {
        self.drop_expired(oldest);
        self.buffer.pop_front().map(|(_, message)| message)
    }
}

struct State {
    channels: HashMap<String, Channel>,
    /// Waiting receivers per local name (`<prefix>.<client>!`), so a pump
    /// learns whether to go on without looking at every channel.
    waiting: HashMap<String, usize>,
    /// When every channel's buffer was last cleared of expired messages.
    swept: Instant,
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

pub struct Local {
    state: Mutex<State>,
    expiry: Duration,
}

/// What `Local::route` did with a message.
pub enum Routed {
    /// Complete this waiter's future with the message.
    Waiter(Py<PyAny>, Arc<Queue>, Buffered),
    /// Buffered; the oldest message was dropped to make room, if any.
    Buffered(Option<Buffered>),
}

impl Local {
    pub fn new(expiry: Duration) -> Self {
        let state = State {
            channels: HashMap::new(),
            waiting: HashMap::new(),
            swept: Instant::now(),
        };
        Local {
            state: Mutex::new(state),
            expiry,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Arrival time of the oldest message still worth delivering.
    fn oldest(&self) -> Instant {
        Instant::now()
            .checked_sub(self.expiry)
            .unwrap_or_else(Instant::now)
    }

    /// Whether anyone waits on a channel of `local_name`.
    pub fn has_waiters(&self, local_name: &str) -> bool {
        self.lock().waiting.contains_key(local_name)
    }

    /// The next buffered message of `channel`, if any.
    pub fn take(&self, channel: &str) -> Option<Buffered> {
        let channels = &mut self.lock().channels;
        let entry = channels.get_mut(channel)?;
        let taken = entry.next(self.oldest());
        if entry.is_idle() {
            channels.remove(channel);
        }
        taken
    }

    /// Waits on `channel` unless a message arrived meanwhile (then returned).
    pub fn wait(&self, channel: &str, future: Py<PyAny>, queue: Arc<Queue>) -> Option<Buffered> {
        let mut state = self.lock();
        let entry = state.channels.entry(channel.to_owned()).or_default();
        if let Some(buffered) = entry.next(self.oldest()) {
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
        self.sweep(&mut state);
        let entry = state.channels.entry(channel.to_owned()).or_default();
        if let Some(waiter) = entry.waiters.pop_front() {
            if entry.is_idle() {
                state.channels.remove(channel);
            }
            state.count(channel, -1);
            return Routed::Waiter(waiter.future, waiter.queue, message);
        }
        let arrived = (Instant::now(), message);
        if front {
            entry.buffer.push_front(arrived);
        } else {
            entry.buffer.push_back(arrived);
        }
        if entry.buffer.len() <= capacity {
            return Routed::Buffered(None);
        }
        let dropped = if front {
            entry.buffer.pop_back()
        } else {
            entry.buffer.pop_front()
        };
        Routed::Buffered(dropped.map(|(_, message)| message))
    }

    /// Once per expiry period: drops expired messages of every channel, and
    /// the channels left with nothing.
    fn sweep(&self, state: &mut State) {
        if state.swept.elapsed() < self.expiry {
            return;
        }
        state.swept = Instant::now();
        let oldest = self.oldest();
        state.channels.retain(|_, channel| {
            channel.drop_expired(oldest);
            !channel.is_idle()
        });
    }
}
