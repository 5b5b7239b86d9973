//! The receivers and buffers of a process's channels: the Redis core layer's
//! process-local channels (`specific.<client>!<id>`), and every channel of
//! the pub/sub layer, whose listener routes each published message here.
//!
//! The core layer's local channels all share one Redis key. While anyone waits on one, a single pump
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
use pyo3::types::PyDict;

use super::failure::Failure;
use crate::bridge::{self, Completion, Failed, Outcome, Queue, Settle};
use crate::codec::Serializer;
use crate::errors::REPLY_CHANNEL_KEY;
use crate::names::non_local_name;
use crate::stats::{Count, Losses, Reason, Stats};

/// A message waiting in this process: still bytes, or already a dict that a
/// cancelled receiver gave back.
pub enum Buffered {
    Body(Arc<Vec<u8>>),
    Message(Py<PyAny>),
}

/// A receive waiting on an asyncio future, completed through `queue`.
struct Receiver {
    future: Py<PyAny>,
    queue: Arc<Queue>,
}

/// One channel's messages and receivers.
#[derive(Default)]
struct Mailbox {
    /// Messages and when they arrived, oldest first.
    buffer: VecDeque<(Instant, Buffered)>,
    waiters: VecDeque<Receiver>,
}

impl Mailbox {
    fn is_idle(&self) -> bool {
        self.buffer.is_empty() && self.waiters.is_empty()
    }

    /// How many expired messages it let go of.
    fn drop_expired(&mut self, oldest: Instant) -> u64 {
        let before = self.buffer.len();
        // Given-back messages go to the front with a newer time: look at all.
        self.buffer.retain(|(arrived, _)| *arrived >= oldest);
        (before - self.buffer.len()) as u64
    }
}

/// Every channel of the process, behind the inbox's lock.
struct Mailboxes {
    channels: HashMap<String, Mailbox>,
    /// Waiting receivers per local name (`<prefix>.<client>!`), so a pump
    /// learns whether to go on without looking at every channel.
    waiting: HashMap<String, usize>,
    /// When every channel's buffer was last cleared of expired messages.
    swept: Instant,
}

impl Mailboxes {
    fn count(&mut self, channel: &str, change: isize) {
        let name = non_local_name(channel);
        let count = self.waiting.entry(name.to_owned()).or_default();
        *count = count.saturating_add_signed(change);
        if *count == 0 {
            self.waiting.remove(name);
        }
    }
}

/// What `Inbox::receive` found.
pub enum Received<'py> {
    /// A message that was already here.
    Ready(Bound<'py, PyAny>),
    /// A future of the next one; if awaiting it fails, call `unwait` (and
    /// give back what it may hold).
    Waiting(Bound<'py, PyAny>),
}

/// A process's channels: their buffers and receivers, how long and how many
/// messages a buffer keeps, and the serializer that reads what arrives.
pub struct Inbox {
    mailboxes: Mutex<Mailboxes>,
    expiry: Duration,
    capacity: usize,
    serializer: Serializer,
    /// The layer's: what this inbox delivers and drops is counted there.
    pub stats: Arc<Stats>,
}

impl Inbox {
    pub fn new(
        capacity: usize,
        expiry: Duration,
        serializer: Serializer,
        stats: Arc<Stats>,
    ) -> Self {
        let mailboxes = Mailboxes {
            channels: HashMap::new(),
            waiting: HashMap::new(),
            swept: Instant::now(),
        };
        Inbox {
            mailboxes: Mutex::new(mailboxes),
            expiry,
            capacity,
            serializer,
            stats,
        }
    }

    /// How many channels hold messages or receivers, and how many receivers wait.
    pub fn gauges(&self) -> (usize, usize) {
        let state = self.lock();
        (state.channels.len(), state.waiting.values().sum())
    }

    /// After its receiver gave up on `future`: stop waiting, and put back
    /// at the front a message it was handed but never took.
    pub fn abandon(self: &Arc<Self>, channel: &str, future: &Bound<'_, PyAny>) -> PyResult<()> {
        self.unwait(channel, future);
        if let Some(message) = bridge::unclaimed(future)? {
            self.deliver(
                channel.to_owned(),
                Buffered::Message(message.unbind()),
                true,
            );
        }
        Ok(())
    }

    /// Drops what is buffered for `channel`.
    pub fn forget(&self, channel: &str) {
        let mut losses = Losses::default();
        while self.take(channel, &mut losses).is_some() {}
        self.stats.record(losses);
    }

    /// The next message of `channel`, or a future of it.
    pub fn receive<'py>(&self, py: Python<'py>, channel: &str) -> PyResult<Received<'py>> {
        let mut losses = Losses::default();
        let mut buffered = self.take(channel, &mut losses);
        let mut waiting = None;
        if buffered.is_none() {
            let (future, queue) = bridge::pending(py)?;
            buffered = self.wait(channel, future.clone().unbind(), queue, &mut losses);
            waiting = Some(future);
        }
        self.stats.record(losses);
        match (buffered, waiting) {
            (Some(buffered), _) => {
                self.stats.add(Count::Received, 1);
                self.materialize(py, buffered).map(Received::Ready)
            }
            (None, Some(future)) => Ok(Received::Waiting(future)),
            (None, None) => unreachable!("a receive that found nothing waits"),
        }
    }

    /// Gives `message` to the first receiver waiting on `channel`, or
    /// buffers it (at the front if `front`: one a cancelled receiver gave
    /// back). A receiver cancelled before it took the message gives it back.
    pub fn deliver(self: &Arc<Self>, channel: String, message: Buffered, front: bool) {
        let mut losses = Losses::default();
        let routed = self.place(&channel, message, front, &mut losses);
        self.stats.record(losses);
        let (future, queue, message) = match routed {
            Routed::Waiter(future, queue, message) => (future, queue, message),
            // One pushed out of a full buffer is freed here, out of the lock.
            Routed::Buffered(_released) => return,
        };
        let outcome: Outcome = match message {
            Buffered::Body(body) => {
                let reader = Arc::clone(self);
                Box::new(move |py| reader.read_body(py, &body).map(Bound::unbind))
            }
            Buffered::Message(dict) => Box::new(move |_py| Ok(dict)),
        };
        let inbox = Arc::clone(self);
        let settle: Settle = Box::new(move |_py, unused| {
            if let Some(unused) = unused {
                inbox.deliver(channel, Buffered::Message(unused), true);
            }
        });
        queue.push(Completion {
            future,
            outcome,
            settle: Some(settle),
        });
    }

    /// The Python message of an opened body, without its routing entry.
    pub fn read_body<'py>(&self, py: Python<'py>, body: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let message = self.serializer.read(py, body)?;
        if let Ok(dict) = message.cast::<PyDict>() {
            // Still there in json bodies (see codec::Opened).
            dict.del_item(REPLY_CHANNEL_KEY).ok();
        }
        Ok(message)
    }

    fn materialize<'py>(&self, py: Python<'py>, buffered: Buffered) -> PyResult<Bound<'py, PyAny>> {
        match buffered {
            Buffered::Body(body) => self.read_body(py, &body),
            Buffered::Message(message) => Ok(message.into_bound(py)),
        }
    }
}

/// What `Inbox::place` did with a message.
enum Routed {
    /// Complete this waiter's future with the message.
    Waiter(Py<PyAny>, Arc<Queue>, Buffered),
    /// Buffered; the oldest message was dropped to make room, if any.
    Buffered(Option<Buffered>),
}

/// Each of these takes the lock once.
impl Inbox {
    fn lock(&self) -> MutexGuard<'_, Mailboxes> {
        self.mailboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Arrival time of the oldest message still worth delivering.
    fn oldest(&self) -> Instant {
        Instant::now()
            .checked_sub(self.expiry)
            .unwrap_or_else(Instant::now)
    }

    /// Whether anyone waits on `channel`.
    pub fn waits_on(&self, channel: &str) -> bool {
        self.lock()
            .channels
            .get(channel)
            .is_some_and(|mailbox| !mailbox.waiters.is_empty())
    }

    /// Whether anyone waits on a channel of `local_name`.
    pub fn has_waiters(&self, local_name: &str) -> bool {
        self.lock().waiting.contains_key(local_name)
    }

    /// The oldest unexpired message of `channel`'s `mailbox`.
    fn next(&self, channel: &str, mailbox: &mut Mailbox, losses: &mut Losses) -> Option<Buffered> {
        self.expired(channel, mailbox.drop_expired(self.oldest()), losses);
        mailbox.buffer.pop_front().map(|(_, message)| message)
    }

    fn expired(&self, channel: &str, count: u64, losses: &mut Losses) {
        let why = format_args!("not received within {} s", self.expiry.as_secs());
        losses.note(Reason::Expired, format!("channel {channel}"), count, why);
    }

    /// The next buffered message of `channel`, if any.
    fn take(&self, channel: &str, losses: &mut Losses) -> Option<Buffered> {
        let channels = &mut self.lock().channels;
        let entry = channels.get_mut(channel)?;
        let taken = self.next(channel, entry, losses);
        if entry.is_idle() {
            channels.remove(channel);
        }
        taken
    }

    /// Waits on `channel` unless a message arrived meanwhile (then returned).
    fn wait(
        &self,
        channel: &str,
        future: Py<PyAny>,
        queue: Arc<Queue>,
        losses: &mut Losses,
    ) -> Option<Buffered> {
        let mut state = self.lock();
        let entry = state.channels.entry(channel.to_owned()).or_default();
        if let Some(buffered) = self.next(channel, entry, losses) {
            return Some(buffered);
        }
        entry.waiters.push_back(Receiver { future, queue });
        state.count(channel, 1);
        None
    }

    /// Ends every receive waiting on a channel that `affected` names with
    /// the error of `failure`: a server that refuses the layer will not
    /// serve them by waiting.
    pub fn fail_waiting(&self, affected: impl Fn(&str) -> bool, failure: &Failure) {
        let failed: Vec<Receiver> = {
            let mut state = self.lock();
            let mut failed = Vec::new();
            let mut names = Vec::new();
            for (name, mailbox) in state.channels.iter_mut().filter(|(n, _)| affected(n)) {
                names.extend(mailbox.waiters.iter().map(|_| name.clone()));
                failed.extend(mailbox.waiters.drain(..));
            }
            state.channels.retain(|_, mailbox| !mailbox.is_idle());
            for name in names {
                state.count(&name, -1);
            }
            failed
        };
        for receiver in failed {
            let failure = failure.clone();
            receiver.queue.push(Completion {
                future: receiver.future,
                outcome: Box::new(move |py| Err(failure.into_py(py))),
                settle: None,
            });
        }
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
    fn place(&self, channel: &str, message: Buffered, front: bool, losses: &mut Losses) -> Routed {
        let mut state = self.lock();
        self.sweep(&mut state, losses);
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
        if entry.buffer.len() <= self.capacity {
            return Routed::Buffered(None);
        }
        let dropped = if front {
            entry.buffer.pop_back()
        } else {
            entry.buffer.pop_front()
        };
        let why = format_args!(
            "not received, and this process buffers {} per channel",
            self.capacity
        );
        losses.note(Reason::Capacity, format!("channel {channel}"), 1, why);
        Routed::Buffered(dropped.map(|(_, message)| message))
    }

    /// Once per expiry period: drops expired messages of every channel, and
    /// the channels left with nothing.
    fn sweep(&self, state: &mut Mailboxes, losses: &mut Losses) {
        if state.swept.elapsed() < self.expiry {
            return;
        }
        state.swept = Instant::now();
        let oldest = self.oldest();
        state.channels.retain(|name, channel| {
            self.expired(name, channel.drop_expired(oldest), losses);
            !channel.is_idle()
        });
    }
}
