//! The Redis channel layer: channels_redis's data layout and bytes, one
//! round trip per operation (server-side scripts run by SHA), connections
//! owned by the layer and the tokio runtime rather than by an event loop.
//!
//! A Python call validates and serializes with the GIL it holds, spawns the
//! Redis work on the runtime and returns an asyncio future; the result comes
//! back through the loop's bridge (see `bridge`).

mod backoff;
mod backup;
mod connections;
mod hosts;
mod local;
mod pubsub;
mod report;

pub use pubsub::PubSubCore;
mod ring;
mod scripts;
mod sentinel;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use pyo3::exceptions::{PyAssertionError, PyConnectionError, PyTimeoutError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyList;
use redis::RedisError;

use crate::bridge::{self, Completion, Outcome, Settle};
use crate::capacity::Capacities;
use crate::codec::Serializer;
use crate::errors::{self, REPLY_CHANNEL_KEY};
use crate::names;
use crate::process::{renew, Guard, PerProcess};
use crate::runtime;
use backup::{Backup, Receipt, Settled, GRACE};
use connections::{settling, stale, unreachable, Shard};
use hosts::{shard, HostSpec};
use local::{Buffered, Inbox, Received};
use report::ShardReport;
use ring::{consistent_hash, non_local_name};

/// Most messages the local pump takes per round trip.
const POP_BATCH: usize = 100;

/// A message popped from a normal channel.
struct Taken {
    /// The shard it came from, where it goes back if nobody takes it.
    shard: usize,
    member: Vec<u8>,
    score: f64,
    body: Vec<u8>,
    /// Whether a copy waits in the in-flight backup for `clear_backup`.
    backed_up: bool,
}

/// A member as popped: its shard, the member, its score, and whether a copy
/// waits in the in-flight backup.
type Member = (usize, Vec<u8>, f64, bool);

/// What BZPOPMIN returns: key, member, score.
type Popped = (String, Vec<u8>, f64);

/// Why an operation failed, turned into a Python exception on the loop thread.
enum Failure {
    Redis { shard: String, err: RedisError },
    Full(String),
    Data(String),
}

impl Failure {
    fn into_py(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Full(channel) => errors::channel_full(py, &channel),
            Failure::Data(text) => PyValueError::new_err(text),
            Failure::Redis { shard, err } if err.is_timeout() => {
                PyTimeoutError::new_err(format!("Redis at {shard} did not answer in time: {err}"))
            }
            Failure::Redis { shard, err } => {
                PyConnectionError::new_err(format!("Redis at {shard} failed: {err}"))
            }
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

struct Inner {
    prefix: String,
    expiry: u64,
    group_expiry: u64,
    /// How long one blocking pop waits before it is issued again; also how
    /// long an idle pump outlives its last waiter.
    block_seconds: f64,
    serializer: Serializer,
    shards: Vec<Shard>,
    local: PerProcess<Local>,
    next_send: AtomicUsize,
    next_receive: AtomicUsize,
    /// Set when the Python layer is gone (see `RedisCore`'s drop).
    closed: tokio::sync::watch::Sender<bool>,
}

/// What the layer holds for the process it runs in. A forked child starts
/// afresh (see `process`): a client prefix of its own, so that its
/// process-local channels are not the parent's or a sibling's, and no
/// pumps, buffers or receives of the parent's.
struct Local {
    client_prefix: String,
    /// `.<client_prefix>!`: how every process-local name of this layer ends
    /// (`<prefix>.<client_prefix>!`, one Redis key per new_channel prefix).
    client_suffix: String,
    /// Receivers and buffers of this layer's process-local channels.
    inbox: Arc<Inbox>,
    /// (local name, shard) pairs a pump is reading.
    pumps: HashSet<(String, usize)>,
    /// Receives of normal channels under way, by the address of their
    /// future, until their receiver has taken the message or given up.
    receiving: HashMap<usize, Arc<Receipt>>,
}

impl Local {
    fn new(capacity: usize, expiry: Duration, serializer: Serializer) -> Self {
        let client_prefix = names::client_prefix();
        Local {
            client_suffix: format!(".{client_prefix}!"),
            client_prefix,
            inbox: Arc::new(Inbox::new(capacity, expiry, serializer)),
            pumps: HashSet::new(),
            receiving: HashMap::new(),
        }
    }
}

impl Inner {
    fn local(&self) -> Guard<'_, Local> {
        self.local.lock()
    }

    fn inbox(&self) -> Arc<Inbox> {
        Arc::clone(&self.local().inbox)
    }

    fn key(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    fn backup(&self, shard: usize, key: &str) -> Backup {
        Backup::of(&self.prefix, key, self.shards[shard].is_cluster())
    }

    fn round_robin(&self, counter: &AtomicUsize) -> usize {
        counter.fetch_add(1, Ordering::Relaxed) % self.shards.len()
    }

    async fn send(
        &self,
        shard: usize,
        key: String,
        member: Vec<u8>,
        capacity: i64,
        channel: String,
    ) -> Result<(), Failure> {
        let mut invocation = scripts::SEND.prepare_invoke();
        invocation
            .key(key)
            .arg(unix_now())
            .arg(self.expiry)
            .arg(capacity)
            .arg(member);
        let added: i64 = self.shards[shard].run(&invocation).await?;
        if added == 0 {
            return Err(Failure::Full(channel));
        }
        Ok(())
    }

    /// Pops the next readable message of a normal channel, waiting as long
    /// as it takes, or until the receiver is `abandoned` (then `None`).
    /// Unreadable messages are dropped with a log line, so one bad message
    /// cannot stop a consumer.
    ///
    /// While Redis is out of reach or failing over it keeps trying: a
    /// receive waits out a restart or failover rather than failing.
    async fn pop(
        &self,
        mut shard: usize,
        key: &str,
        abandoned: &AtomicBool,
    ) -> Result<Option<Taken>, Failure> {
        while !abandoned.load(Ordering::Acquire) {
            let popped = match self.pop_member(shard, key).await {
                Err(Failure::Redis { err, .. }) if passing(&err) => {
                    if !abandoned.load(Ordering::Acquire) {
                        tokio::time::sleep(self.shards[shard].pause_after(&err)).await;
                    }
                    continue;
                }
                popped => popped?,
            };
            let Some((from, member, score, backed_up)) = popped else {
                // Nothing came in a whole block: wait on the next shard for a while.
                shard = (shard + 1) % self.shards.len();
                continue;
            };
            match self.serializer.open(&member) {
                Ok(opened) => {
                    return Ok(Some(Taken {
                        shard: from,
                        member,
                        score,
                        body: opened.body,
                        backed_up,
                    }));
                }
                Err(problem) => {
                    log::error!(target: "channels_rs", "dropped a message on {key} that cannot be read: {problem}");
                    if backed_up {
                        self.forget_backup(from, key, &member).await;
                    }
                }
            }
        }
        Ok(None)
    }

    /// The next member of a normal channel; `None` when a blocking pop on
    /// `shard` timed out.
    ///
    /// Senders take turns over the shards (and group_send writes to the
    /// shard of the name), so a queued message may be on any of them: each
    /// is asked once, `shard` first, without blocking. Only then does a
    /// connection of our own block on `shard`. BZPOPMIN cannot be combined
    /// with a write: its member is backed up right after (`hand_over`).
    async fn pop_member(&self, shard: usize, key: &str) -> Result<Option<Member>, Failure> {
        for offset in 0..self.shards.len() {
            let at = (shard + offset) % self.shards.len();
            match self.take_queued(at, key).await {
                Ok(Some((member, score, backed_up))) => {
                    return Ok(Some((at, member, score, backed_up)))
                }
                Ok(None) => {}
                // Another shard's trouble must not keep this one's messages.
                Err(failure) if at == shard => return Err(failure),
                Err(_) => {}
            }
        }
        let mut command = redis::cmd("BZPOPMIN");
        command.arg(key).arg(self.block_seconds);
        let blocked: Option<Popped> = self.shards[shard].run_blocking(&command).await?;
        Ok(blocked.map(|(_, member, score)| (shard, member, score, false)))
    }

    /// A queued member of `key` on `shard`, without waiting, popped and
    /// backed up in one script on the shared connection, pipelined with
    /// other callers' commands. A reply lost with the connection leaves the
    /// backup to lapse and come back (see `backup`).
    async fn take_queued(
        &self,
        shard: usize,
        key: &str,
    ) -> Result<Option<(Vec<u8>, f64, bool)>, Failure> {
        let taken = self
            .backup(shard, key)
            .take(&self.shards[shard], key, self.expiry)
            .await?;
        Ok(taken.map(|(member, score)| (member, score, true)))
    }

    /// Forgets the backup of a message that has reached its consumer (or
    /// could not be read).
    async fn forget_backup(&self, shard: usize, key: &str, member: &[u8]) {
        let backup = self.backup(shard, key);
        if let Err(Failure::Redis { shard, err }) =
            backup.clear(&self.shards[shard], key, member).await
        {
            log::warn!(target: "channels_rs", "Redis at {shard}: could not clear the backup of a message taken from {key}, which may come again: {err}");
        }
    }

    /// Until the receiver of a message popped from `key` settles it: keeps
    /// its backup (writing one first if the blocking pop could not, unless
    /// the consumer takes it within `GRACE`), then forgets it once taken,
    /// or puts the message back.
    async fn hand_over(&self, taken: Taken, key: &str, mut settled: oneshot::Receiver<Settled>) {
        let Taken {
            shard,
            member,
            score,
            mut backed_up,
            ..
        } = taken;
        let (backup, source) = (self.backup(shard, key), &self.shards[shard]);
        let mut how = None;
        if !backed_up {
            match tokio::time::timeout(GRACE, &mut settled).await {
                Ok(early) => how = Some(early.unwrap_or(Settled::Returned)),
                // Failing, the message is only in this process, as channels_redis's would be.
                Err(_) => {
                    backed_up = backup
                        .hold(source, &member, Some(score), self.expiry)
                        .await
                        .is_ok()
                }
            }
        }
        if how.is_none() {
            how = backup
                .hold_until_settled(source, &member, self.expiry, &mut settled)
                .await;
        }
        match how {
            None => {}
            Some(Settled::Taken) if backed_up => self.forget_backup(shard, key, &member).await,
            Some(Settled::Taken) => {}
            Some(Settled::Returned) => {
                let put_back = backup.put_back(source, key, &member, score, self.expiry);
                if let Err(Failure::Redis { shard, err }) = put_back.await {
                    log::warn!(target: "channels_rs", "Redis at {shard}: a message given back to {key} returns once its lease runs out, not at once: {err}");
                }
            }
        }
    }

    /// While anyone waits on a channel of `local_name`: pop its key on
    /// `shard` and route. Every shard has one: our senders use the shard of
    /// the non-local name, but channels_redis's use the shard of the full
    /// name (its bug #94), which can be any.
    ///
    /// It goes on after the last waiter until a pop finds nothing, so a
    /// consumer between two receives finds its next message already here.
    async fn pump(self: Arc<Self>, local_name: String, shard: usize) {
        let mut closed = self.closed.subscribe();
        tokio::select! {
            () = self.pump_until_idle(local_name, shard) => {}
            // Nobody can receive on the layer's local channels any more.
            _ = closed.wait_for(|closed| *closed) => {}
        }
    }

    async fn pump_until_idle(&self, local_name: String, shard: usize) {
        let key = self.key(&local_name);
        let inbox = self.inbox();
        let mut idle = false;
        loop {
            if idle {
                // Decided under the same lock receivers take to start pumps.
                let mut local = self.local();
                if !local.inbox.has_waiters(&local_name) {
                    local.pumps.remove(&(local_name, shard));
                    return;
                }
            }
            match self.pop_local(shard, &key).await {
                Ok(members) => {
                    idle = members.is_empty();
                    for member in members {
                        self.route(&inbox, member);
                    }
                }
                Err(failure) => {
                    // With nobody waiting, the check above ends the pump quietly.
                    idle = true;
                    if let (true, Failure::Redis { err, .. }) =
                        (inbox.has_waiters(&local_name), failure)
                    {
                        tokio::time::sleep(self.shards[shard].pause_after(&err)).await;
                    }
                }
            }
        }
    }

    /// Waits for the local key, then takes up to POP_BATCH members in the
    /// same round trip.
    async fn pop_local(&self, shard: usize, key: &str) -> Result<Vec<Vec<u8>>, Failure> {
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("BZPOPMIN")
            .arg(key)
            .arg(self.block_seconds)
            .cmd("ZPOPMIN")
            .arg(key)
            .arg(POP_BATCH - 1);
        let (first, rest): (Option<Popped>, Vec<(Vec<u8>, f64)>) =
            self.shards[shard].run_blocking(&pipeline).await?;
        let first = first.map(|(_, member, _)| member);
        Ok(first
            .into_iter()
            .chain(rest.into_iter().map(|(member, _)| member))
            .collect())
    }

    /// Hands a popped local message to its channels' receivers or buffers.
    fn route(&self, inbox: &Arc<Inbox>, member: Vec<u8>) {
        let opened = match self.serializer.open(&member) {
            Ok(opened) => opened,
            Err(problem) => {
                log::error!(target: "channels_rs", "dropped a message that cannot be read: {problem}");
                return;
            }
        };
        let Some(channels) = opened.reply else {
            log::error!(target: "channels_rs", "dropped a local message without {REPLY_CHANNEL_KEY}");
            return;
        };
        let body = Arc::new(opened.body);
        for channel in channels {
            inbox.deliver(channel, Buffered::Body(Arc::clone(&body)), false);
        }
    }

    fn group_key(&self, group: &str) -> String {
        format!("{}:group:{group}", self.prefix)
    }

    async fn group_add(&self, group: &str, channel: String) -> Result<(), Failure> {
        let shard = consistent_hash(group, self.shards.len());
        let mut invocation = scripts::GROUP_ADD.prepare_invoke();
        invocation
            .key(self.group_key(group))
            .arg(unix_now())
            .arg(self.group_expiry)
            .arg(channel);
        let _: redis::Value = self.shards[shard].run(&invocation).await?;
        Ok(())
    }

    async fn group_discard(&self, group: &str, channel: String) -> Result<(), Failure> {
        let shard = consistent_hash(group, self.shards.len());
        let mut command = redis::cmd("ZREM");
        command.arg(self.group_key(group)).arg(channel);
        let _: i64 = self.shards[shard].run(&command).await?;
        Ok(())
    }

    /// The members of `group`, stale ones dropped first.
    async fn group_members(&self, group: &str) -> Result<Vec<String>, Failure> {
        let shard = consistent_hash(group, self.shards.len());
        let mut invocation = scripts::GROUP_MEMBERS.prepare_invoke();
        invocation
            .key(self.group_key(group))
            .arg(unix_now())
            .arg(self.group_expiry);
        self.shards[shard].run(&invocation).await
    }

    async fn group_send(
        &self,
        group: String,
        body: Vec<u8>,
        members: Option<Vec<(String, i64)>>,
        default_capacity: i64,
    ) -> Result<(), Failure> {
        let one_server = self.shards.len() == 1 && !self.shards[0].is_cluster();
        if members.is_none() && one_server && self.serializer.is_plain_msgpack() {
            return self.group_send_all(&group, body, default_capacity).await;
        }
        let members = match members {
            Some(members) => members,
            None => {
                let names = self.group_members(&group).await?;
                names
                    .into_iter()
                    .map(|name| (name, default_capacity))
                    .collect()
            }
        };
        // One copy per queue key, naming every member on that key.
        let mut by_key: Vec<(String, usize, Vec<String>, i64)> = Vec::new();
        for (member, capacity) in &members {
            let queue_name = non_local_name(member);
            let key = self.key(queue_name);
            match by_key.iter_mut().find(|(existing, ..)| *existing == key) {
                Some((_, _, names, _)) => names.push(member.clone()),
                None => {
                    let shard = consistent_hash(queue_name, self.shards.len());
                    by_key.push((key, shard, vec![member.clone()], *capacity));
                }
            }
        }
        let mut full = 0;
        // One script per shard; on a cluster one per key (keys of a script
        // must share a slot), all sent at once, so each node gets its share
        // pipelined on its connection.
        let mut batches: Vec<(usize, Vec<_>)> = Vec::new();
        for shard in 0..self.shards.len() {
            let on_shard: Vec<_> = by_key.iter().filter(|(_, s, ..)| *s == shard).collect();
            if self.shards[shard].is_cluster() {
                batches.extend(on_shard.into_iter().map(|entry| (shard, vec![entry])));
            } else if !on_shard.is_empty() {
                batches.push((shard, on_shard));
            }
        }
        let now = unix_now();
        let mut invocations = Vec::with_capacity(batches.len());
        for (shard, batch) in &batches {
            let mut invocation = scripts::GROUP_SEND.prepare_invoke();
            for (key, ..) in batch {
                invocation.key(key);
            }
            for (_, _, names, _) in batch {
                invocation.arg(self.serializer.seal(&body, names).map_err(Failure::Data)?);
            }
            for (.., capacity) in batch {
                invocation.arg(*capacity);
            }
            invocation.arg(now).arg(self.expiry);
            invocations.push((*shard, invocation));
        }
        let sent = invocations
            .iter()
            .map(|(shard, invocation)| self.shards[*shard].run::<i64>(invocation));
        for over in futures_util::future::try_join_all(sent).await? {
            full += over;
        }
        log_full(full, members.len() as i64, &group);
        Ok(())
    }

    /// group_send in one round trip: see scripts::GROUP_SEND_ALL.
    async fn group_send_all(
        &self,
        group: &str,
        body: Vec<u8>,
        capacity: i64,
    ) -> Result<(), Failure> {
        let prefix = self.serializer.random_prefix().map_err(Failure::Data)?;
        let mut invocation = scripts::GROUP_SEND_ALL.prepare_invoke();
        invocation
            .key(self.group_key(group))
            .arg(unix_now())
            .arg(self.group_expiry)
            .arg(self.expiry)
            .arg(capacity)
            .arg(&self.prefix)
            .arg(prefix)
            .arg(body);
        let (full, members): (i64, i64) = self.shards[0].run(&invocation).await?;
        log_full(full, members, group);
        Ok(())
    }

    async fn flush(&self) -> Result<(), Failure> {
        let pattern = format!("{}*", glob_escape(&self.prefix));
        for shard in &self.shards {
            let keys = shard.keys_matching(&pattern).await?;
            // A cluster splits a DEL of many keys by slot itself.
            for some in keys.chunks(1000) {
                let _: i64 = shard.run(redis::cmd("DEL").arg(some)).await?;
            }
        }
        Ok(())
    }
}

/// Whether a receiver should wait and try again: Redis is out of reach, its
/// server changed role under it in a failover (which also ends blocked pops
/// with UNBLOCKED), or a cluster is still settling a slot's owner.
fn passing(err: &RedisError) -> bool {
    unreachable(err) || stale(err) || settling(err) || err.code() == Some("UNBLOCKED")
}

/// channels_redis's INFO line when group members were full.
fn log_full(full: i64, members: i64, group: &str) {
    if full > 0 {
        log::info!(target: "channels_rs", "{full} of {members} channels over capacity in group {group}");
    }
}

fn glob_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
            _ => vec![c],
        })
        .collect()
}

#[pyclass(frozen, module = "channels_rs._core")]
pub struct RedisCore {
    inner: Arc<Inner>,
    capacities: Capacities,
    default_capacity: i64,
    /// Set when `channel_capacity` has patterns: group_send then needs
    /// Python to work out each member's capacity.
    has_patterns: bool,
}

/// Runs `work` on the runtime; its result completes the returned future.
fn spawn<'py, T: Send + 'static>(
    py: Python<'py>,
    work: impl std::future::Future<Output = Result<T, Failure>> + Send + 'static,
    to_python: impl FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
) -> PyResult<Bound<'py, PyAny>> {
    let (future, queue) = bridge::pending(py)?;
    let target = future.clone().unbind();
    runtime::spawn(async move {
        let result = work.await;
        let outcome: Outcome = Box::new(move |py| match result {
            Ok(value) => to_python(py, value),
            Err(failure) => Err(failure.into_py(py)),
        });
        queue.push(Completion {
            future: target,
            outcome,
            settle: None,
        });
    })?;
    Ok(future)
}

/// Redis work for an operation, ready to run.
type Work<T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Failure>> + Send>>;

/// Runs `work` to completion on this thread, the GIL released meanwhile.
fn block<T: Send>(py: Python<'_>, work: Work<T>) -> PyResult<T> {
    let handle = runtime::handle()?;
    py.detach(|| handle.block_on(work))
        .map_err(|failure| failure.into_py(py))
}

fn none(py: Python<'_>, _: ()) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

#[pymethods]
impl RedisCore {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        hosts: Vec<HostSpec>,
        prefix: String,
        expiry: f64,
        group_expiry: f64,
        capacity: i64,
        channel_capacity: Vec<(Py<PyAny>, i64)>,
        serializer: &Bound<'_, Serializer>,
        block_seconds: f64,
    ) -> PyResult<Self> {
        let shards = hosts.into_iter().map(shard).collect::<PyResult<Vec<_>>>()?;
        let has_patterns = !channel_capacity.is_empty();
        let non_negative = |value: i64| usize::try_from(value).unwrap_or(0);
        let patterns = channel_capacity
            .into_iter()
            .map(|(p, c)| (p, non_negative(c)))
            .collect();
        let inner = Inner {
            prefix,
            expiry: expiry.max(0.0) as u64,
            group_expiry: group_expiry.max(0.0) as u64,
            block_seconds,
            serializer: serializer.get().clone(),
            shards,
            local: {
                let (capacity, serializer) = (non_negative(capacity), serializer.get().clone());
                let expiry = Duration::from_secs_f64(expiry.max(0.0));
                let fresh = move || Local::new(capacity, expiry, serializer.clone());
                PerProcess::new(fresh(), move |local| renew(local, fresh()))
            },
            next_send: AtomicUsize::new(0),
            next_receive: AtomicUsize::new(0),
            closed: tokio::sync::watch::Sender::new(false),
        };
        Ok(RedisCore {
            inner: Arc::new(inner),
            capacities: Capacities::new(non_negative(capacity), patterns),
            default_capacity: capacity,
            has_patterns,
        })
    }

    fn send<'py>(
        &self,
        py: Python<'py>,
        channel: &Bound<'py, PyAny>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.send_work(py, channel, message)?, none)
    }

    /// `send` for plain sync code: blocks this thread (not the GIL) until done.
    fn send_sync(
        &self,
        py: Python<'_>,
        channel: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        block(py, self.send_work(py, channel, message)?)
    }

    /// A message, or a future of one. Whoever awaits the future calls
    /// `finish` after it.
    fn receive<'py>(
        &self,
        py: Python<'py>,
        channel: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = names::channel(py, channel)?;
        let inner = &self.inner;
        if name.contains('!') {
            if !non_local_name(&name).ends_with(&inner.local().client_suffix) {
                return Err(PyAssertionError::new_err(format!(
                    "Wrong client prefix: {name:?} belongs to another layer instance"
                )));
            }
            return self.receive_local(py, name);
        }
        let shard = inner.round_robin(&inner.next_receive);
        let key = inner.key(&name);
        let (future, queue) = bridge::pending(py)?;
        let target = future.clone().unbind();
        let (receipt, settled) = Receipt::new();
        // The awaiting coroutine holds the future until `finish`, so its
        // address is not reused meanwhile.
        let id = future.as_ptr() as usize;
        inner.local().receiving.insert(id, Arc::clone(&receipt));
        let inner = Arc::clone(inner);
        runtime::spawn(async move {
            let mut taken = match inner.pop(shard, &key, &receipt.abandoned).await {
                Ok(Some(taken)) => taken,
                Ok(None) => return,
                Err(failure) => {
                    let outcome: Outcome = Box::new(move |py| Err(failure.into_py(py)));
                    queue.push(Completion {
                        future: target,
                        outcome,
                        settle: None,
                    });
                    return;
                }
            };
            let reader = inner.inbox();
            let body = std::mem::take(&mut taken.body);
            let outcome: Outcome =
                Box::new(move |py| reader.read_body(py, &body).map(Bound::unbind));
            // Cancelled before it arrived, or given up on meanwhile: it goes back.
            let returned = Arc::clone(&receipt);
            let settle: Settle = Box::new(move |_py, unused| {
                if unused.is_some() || returned.abandoned.load(Ordering::Acquire) {
                    returned.settle(Settled::Returned);
                }
            });
            queue.push(Completion {
                future: target,
                outcome,
                settle: Some(settle),
            });
            // Only the future's settle and `finish` can settle it now: once
            // both are gone unsaid, `settled` reports it.
            drop(receipt);
            inner.hand_over(taken, &key, settled).await;
        })?;
        Ok(future)
    }

    /// After an await of a `receive` future: whether the message was
    /// `taken`. If not, stop waiting, and put back a message that arrived.
    fn finish(
        &self,
        py: Python<'_>,
        channel: &str,
        future: &Bound<'_, PyAny>,
        taken: bool,
    ) -> PyResult<()> {
        if channel.contains('!') {
            return if taken {
                Ok(())
            } else {
                self.inner.inbox().abandon(channel, future)
            };
        }
        let id = future.as_ptr() as usize;
        let Some(receipt) = self.inner.local().receiving.remove(&id) else {
            return Ok(());
        };
        if taken {
            receipt.settle(Settled::Taken);
            return Ok(());
        }
        receipt.abandoned.store(true, Ordering::Release);
        // Cancelled after the message arrived (a cancelled future's settle
        // returns it already).
        let cancelled = future.call_method0(intern!(py, "cancelled"))?.is_truthy()?;
        if !cancelled && future.call_method0(intern!(py, "done"))?.is_truthy()? {
            receipt.settle(Settled::Returned);
        }
        Ok(())
    }

    fn group_add<'py>(
        &self,
        py: Python<'py>,
        group: &Bound<'py, PyAny>,
        channel: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let group = names::group(py, group)?;
        let channel = names::channel(py, channel)?;
        let inner = Arc::clone(&self.inner);
        spawn(
            py,
            async move { inner.group_add(&group, channel).await },
            none,
        )
    }

    fn group_discard<'py>(
        &self,
        py: Python<'py>,
        group: &Bound<'py, PyAny>,
        channel: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let group = names::group(py, group)?;
        let channel = names::channel(py, channel)?;
        let inner = Arc::clone(&self.inner);
        spawn(
            py,
            async move { inner.group_discard(&group, channel).await },
            none,
        )
    }

    /// Members of `group` (stale ones dropped): for group_send with
    /// capacity patterns, which Python must match.
    fn group_members<'py>(
        &self,
        py: Python<'py>,
        group: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.group_members_work(py, group)?, |py, names| {
            Ok(PyList::new(py, names)?.into_any().unbind())
        })
    }

    fn group_members_sync(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<String>> {
        block(py, self.group_members_work(py, group)?)
    }

    #[pyo3(signature = (group, message, members=None))]
    fn group_send<'py>(
        &self,
        py: Python<'py>,
        group: &Bound<'py, PyAny>,
        message: &Bound<'py, PyAny>,
        members: Option<Vec<(String, i64)>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.group_send_work(py, group, message, members)?, none)
    }

    /// `group_send` for plain sync code: blocks this thread (not the GIL).
    #[pyo3(signature = (group, message, members=None))]
    fn group_send_sync(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
        members: Option<Vec<(String, i64)>>,
    ) -> PyResult<()> {
        block(py, self.group_send_work(py, group, message, members)?)
    }

    #[getter]
    fn has_capacity_patterns(&self) -> bool {
        self.has_patterns
    }

    /// This process's client prefix: a forked child gets its own.
    #[getter]
    fn client_prefix(&self) -> String {
        self.inner.local().client_prefix.clone()
    }

    fn flush<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = Arc::clone(&self.inner);
        spawn(py, async move { inner.flush().await }, none)
    }

    /// For `python -m channels_rs check`: each shard's name, `INFO server`
    /// text and `pings` PING times in seconds.
    fn server_report_sync(&self, py: Python<'_>, pings: usize) -> PyResult<Vec<ShardReport>> {
        let inner = Arc::clone(&self.inner);
        block(py, Box::pin(async move { inner.report(pings).await }))
    }

    /// Drops this process's connections; the next operation reconnects.
    fn close(&self) {
        for shard in &self.inner.shards {
            shard.close();
        }
    }
}
/// A layer dropped without closing (`override_settings` in a test suite
/// makes a new one each time) lets go of its connections and pumps now,
/// not when their blocking pops time out. A receive of a normal channel
/// that its consumer gave up on keeps its blocking pop to the end, so that
/// a message the server hands it meanwhile goes back rather than being lost.
impl Drop for RedisCore {
    fn drop(&mut self) {
        self.inner.closed.send_replace(true);
        for shard in &self.inner.shards {
            shard.close();
        }
    }
}

impl RedisCore {
    fn send_work(
        &self,
        py: Python<'_>,
        channel: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<Work<()>> {
        let message = errors::require_dict(message)?;
        let name = names::channel(py, channel)?;
        errors::require_no_reply_channel(message)?;
        let inner = &self.inner;
        let (key, shard, member) = if name.contains('!') {
            let queue_name = non_local_name(&name);
            let shard = consistent_hash(queue_name, inner.shards.len());
            (
                inner.key(queue_name),
                shard,
                inner.serializer.encode(message, Some(channel))?,
            )
        } else {
            let shard = inner.round_robin(&inner.next_send);
            (
                inner.key(&name),
                shard,
                inner.serializer.encode(message, None)?,
            )
        };
        let capacity = self.capacity_of(py, &name)?;
        let inner = Arc::clone(inner);
        Ok(Box::pin(async move {
            inner.send(shard, key, member, capacity, name).await
        }))
    }

    fn group_members_work(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
    ) -> PyResult<Work<Vec<String>>> {
        let group = names::group(py, group)?;
        let inner = Arc::clone(&self.inner);
        Ok(Box::pin(async move { inner.group_members(&group).await }))
    }

    fn group_send_work(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
        members: Option<Vec<(String, i64)>>,
    ) -> PyResult<Work<()>> {
        let message = errors::require_dict(message)?;
        let group = names::group(py, group)?;
        errors::require_no_reply_channel(message)?;
        let body = self.inner.serializer.body(message)?;
        let inner = Arc::clone(&self.inner);
        let capacity = self.default_capacity;
        Ok(Box::pin(async move {
            inner.group_send(group, body, members, capacity).await
        }))
    }

    fn capacity_of(&self, py: Python<'_>, channel: &str) -> PyResult<i64> {
        if !self.has_patterns {
            return Ok(self.default_capacity);
        }
        Ok(i64::try_from(self.capacities.of(py, channel)?).unwrap_or(i64::MAX))
    }

    fn receive_local<'py>(&self, py: Python<'py>, channel: String) -> PyResult<Bound<'py, PyAny>> {
        let inner = &self.inner;
        let future = match inner.inbox().receive(py, &channel)? {
            Received::Ready(message) => return Ok(message),
            Received::Waiting(future) => future,
        };
        let local_name = non_local_name(&channel).to_owned();
        let mut local = inner.local();
        for shard in 0..inner.shards.len() {
            if local.pumps.insert((local_name.clone(), shard)) {
                runtime::spawn(Arc::clone(inner).pump(local_name.clone(), shard))?;
            }
        }
        Ok(future)
    }
}
