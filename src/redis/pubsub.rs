//! The pub/sub channel layer: channels_redis.pubsub's names and bytes.
//!
//! A channel is a Redis pub/sub channel of the same name; a group `g` is the
//! pub/sub channel `<prefix>__group__g`, and each process fans a group's
//! messages out to its own members. Every message goes to every process
//! subscribed to its name, and one published while nobody listens is gone.
//!
//! Each shard has one subscriber connection for the whole process, shared
//! by every loop and thread, and one task that owns it: it applies
//! SUBSCRIBE and UNSUBSCRIBE, routes what arrives into the inbox (bounded
//! per channel), and when the connection drops, connects again and
//! subscribes to everything again by itself. Consumers can be told of both
//! moments (`on_disconnect` / `on_reconnect`), since what was published in
//! between is lost.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use redis::aio::PubSubSink;
use redis::RedisError;
use tokio::sync::{mpsc, oneshot};

use super::connections::{timed_out, unreachable, within, Shard};
use super::failure::{Failure, Work};
use super::hosts::{shard, HostSpec};
use super::inbox::{Buffered, Inbox, Received};
use super::ring::consistent_hash;
use crate::bridge::{block, none, spawn};
use crate::codec::Serializer;
use crate::process::{renew, Guard, PerProcess};
use crate::{errors, names, runtime};

enum Command {
    Subscribe(String, oneshot::Sender<Result<(), RedisError>>),
    /// Told once Redis confirmed, if anyone waits.
    Unsubscribe(String, Option<oneshot::Sender<()>>),
}

/// One shard's subscriber task, as this process knows it.
#[derive(Default)]
struct Subscriber {
    /// The names subscribed on this shard: what a new connection subscribes to.
    names: HashSet<String>,
    /// Commands to the task; made with the task.
    commands: Option<mpsc::UnboundedSender<Command>>,
}

/// What the layer holds for the process it runs in; a forked child starts
/// with none of the parent's subscriptions, buffers or tasks (see `process`).
struct Subscriptions {
    /// This process's channels: made by new_channel, or being received on.
    channels: HashSet<String>,
    /// Group pub/sub name -> the channels of this process in that group.
    groups: HashMap<String, HashSet<String>>,
    subscribers: Vec<Subscriber>,
    /// Receivers and buffers of this process's channels.
    inbox: Arc<Inbox>,
}

impl Subscriptions {
    fn new(shards: usize, inbox: Inbox) -> Self {
        Subscriptions {
            channels: HashSet::new(),
            groups: HashMap::new(),
            subscribers: (0..shards).map(|_| Subscriber::default()).collect(),
            inbox: Arc::new(inbox),
        }
    }
}

/// RedisPubSubChannelLayer's options, under their names in CONFIG (`hosts`
/// as pubsub.py has read them).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct Options {
    hosts: Vec<HostSpec>,
    prefix: String,
    serializer: Serializer,
    capacity: usize,
    expiry: f64,
    on_disconnect: Option<String>,
    on_reconnect: Option<String>,
}

struct Inner {
    prefix: String,
    shards: Vec<Shard>,
    serializer: Serializer,
    state: PerProcess<Subscriptions>,
    /// Message types handed to every channel when a subscriber connection
    /// drops and when it is back.
    on_disconnect: Option<String>,
    on_reconnect: Option<String>,
}

impl Inner {
    fn lock(&self) -> Guard<'_, Subscriptions> {
        self.state.lock()
    }

    fn inbox(&self) -> Arc<Inbox> {
        Arc::clone(&self.lock().inbox)
    }

    fn group_name(&self, group: &str) -> String {
        format!("{}__group__{group}", self.prefix)
    }

    fn shard_of(&self, name: &str) -> usize {
        consistent_hash(name, self.shards.len())
    }

    /// The command channel of the task for `shard`, started on first use.
    fn commands(
        self: &Arc<Self>,
        state: &mut Subscriptions,
        shard: usize,
    ) -> mpsc::UnboundedSender<Command> {
        let subscriber = &mut state.subscribers[shard];
        if let Some(sender) = subscriber.commands.as_ref().filter(|s| !s.is_closed()) {
            return sender.clone();
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        subscriber.commands = Some(sender.clone());
        let task = listen(Arc::downgrade(self), shard, receiver);
        if let Err(err) = runtime::spawn(task) {
            log::error!(target: "channels_rs", "cannot start the pub/sub listener: {err}");
        }
        sender
    }

    /// Subscribes to `name` unless already; completes once Redis confirmed.
    async fn subscribe(self: &Arc<Self>, name: String) -> Result<(), Failure> {
        let shard = self.shard_of(&name);
        if !self.lock().subscribers[shard].names.insert(name.clone()) {
            return Ok(());
        }
        let timeouts = self.shards[shard].timeouts;
        let deadline = Instant::now() + timeouts.connect;
        let failed = loop {
            let (done, confirmed) = oneshot::channel();
            {
                let mut state = self.lock();
                let commands = self.commands(&mut state, shard);
                commands.send(Command::Subscribe(name.clone(), done)).ok();
            }
            // A listener that connects but gets no answer gives up after a
            // connect and a reply timeout, as other commands do.
            let err = match tokio::time::timeout(timeouts.connect + timeouts.reply, confirmed).await
            {
                Ok(Ok(Ok(()))) => return Ok(()),
                Ok(Ok(Err(err))) => err,
                Ok(Err(_)) => {
                    RedisError::from((redis::ErrorKind::Io, "the pub/sub listener stopped"))
                }
                Err(_) => timed_out(),
            };
            // While the server cannot be reached, ask again until the connect
            // timeout has passed, as other operations do.
            let left = deadline.saturating_duration_since(Instant::now());
            let pause = self.shards[shard].outage.pause();
            if !unreachable(&err) || left.is_zero() {
                break err;
            }
            tokio::time::sleep(pause.min(left)).await;
        };
        self.lock().subscribers[shard].names.remove(&name);
        Err(self.shards[shard].failed(failed))
    }

    /// Unsubscribes from `name`; the receiver, if any, hears when Redis
    /// has confirmed.
    fn unsubscribe(
        self: &Arc<Self>,
        state: &mut Subscriptions,
        name: &str,
    ) -> Option<oneshot::Receiver<()>> {
        let shard = self.shard_of(name);
        if !state.subscribers[shard].names.remove(name) {
            return None;
        }
        let (done, confirmed) = oneshot::channel();
        let commands = self.commands(state, shard);
        commands
            .send(Command::Unsubscribe(name.to_owned(), Some(done)))
            .ok();
        Some(confirmed)
    }

    /// Hands a published message to this process's receivers of `name`.
    fn route(self: &Arc<Self>, name: &str, payload: &[u8]) {
        let opened = match self.serializer.open(payload) {
            Ok(opened) => opened,
            Err(problem) => {
                log::error!(target: "channels_rs", "dropped a message on {name} that cannot be read: {problem}");
                return;
            }
        };
        let (inbox, targets): (_, Vec<String>) = {
            let state = self.lock();
            let targets = if state.channels.contains(name) {
                vec![name.to_owned()]
            } else if let Some(members) = state.groups.get(name) {
                members
                    .iter()
                    .filter(|member| state.channels.contains(*member))
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            };
            (Arc::clone(&state.inbox), targets)
        };
        let body = Arc::new(opened.body);
        for channel in targets {
            inbox.deliver(channel, Buffered::Body(Arc::clone(&body)), false);
        }
    }

    /// Hands `{"type": message_type}` to every channel of this process.
    fn notify(self: &Arc<Self>, message_type: Option<&String>) {
        let Some(message_type) = message_type else {
            return;
        };
        let body = Arc::new(self.serializer.notice(message_type));
        let (inbox, channels): (_, Vec<String>) = {
            let state = self.lock();
            (
                Arc::clone(&state.inbox),
                state.channels.iter().cloned().collect(),
            )
        };
        for channel in channels {
            inbox.deliver(channel, Buffered::Body(Arc::clone(&body)), false);
        }
    }

    async fn publish(&self, name: String, body: Vec<u8>) -> Result<(), Failure> {
        let mut command = redis::cmd("PUBLISH");
        command.arg(&name).arg(body);
        let _: i64 = self.shards[self.shard_of(&name)].run(&command).await?;
        Ok(())
    }
}

/// A shard's subscriber task: owns the connection, applies commands,
/// routes messages, and reconnects (subscribing to everything again) when
/// the connection drops. With nothing subscribed it holds no connection.
/// Ends with the layer.
async fn listen(inner: Weak<Inner>, shard: usize, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut dropped = false;
    // A command that came while nothing was subscribed, to apply once connected.
    let mut waiting = None;
    loop {
        let Some(names) = subscribed(&inner, shard) else {
            return;
        };
        if names.is_empty() && waiting.is_none() {
            match commands.recv().await {
                None => return,
                // Nothing is subscribed on a connection not held.
                Some(Command::Unsubscribe(_, done)) => {
                    done.map(|done| done.send(()));
                }
                Some(command) => waiting = Some(command),
            }
            continue;
        }
        let connected = {
            let Some(layer) = inner.upgrade() else {
                return;
            };
            let source = &layer.shards[shard];
            match source.subscriber().await {
                Ok(pubsub) => Ok((pubsub, source.name.clone(), source.timeouts.reply)),
                Err(err) => {
                    source.outage.failed(&source.name, &err);
                    Err((err, source.outage.pause()))
                }
            }
        };
        let (pubsub, shard_name, reply) = match connected {
            Ok(connected) => connected,
            Err((err, pause)) => {
                refuse(waiting.take(), &err);
                refuse_pending(&mut commands, &err);
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        // A pub/sub connection has no reply timeout of its own: a dead peer
        // would hold the listener for ever.
        if !names.is_empty() {
            if let Err(err) = within(reply, sink.subscribe(&names)).await {
                if !unreachable(&err) {
                    // Refused (an ACL, say): those waiting hear why.
                    refuse(waiting.take(), &err);
                    refuse_pending(&mut commands, &err);
                }
                let Some(layer) = inner.upgrade() else {
                    return;
                };
                layer.shards[shard].outage.failed(&shard_name, &err);
                let pause = layer.shards[shard].outage.pause();
                drop(layer);
                tokio::time::sleep(pause).await;
                continue;
            }
            let Some(layer) = inner.upgrade() else {
                return;
            };
            layer.shards[shard].outage.over(&shard_name);
            if dropped {
                layer.notify(layer.on_reconnect.as_ref());
            }
        }
        dropped = false;
        let mut lost = match waiting.take() {
            Some(command) => apply(&inner, shard, &mut sink, reply, command).await,
            None => false,
        };
        while !lost {
            tokio::select! {
                command = commands.recv() => match command {
                    None => return,
                    Some(command) => {
                        let unsubscribing = matches!(command, Command::Unsubscribe(..));
                        lost = apply(&inner, shard, &mut sink, reply, command).await;
                        if unsubscribing && !lost && nothing_subscribed(&inner, shard) {
                            // Nothing left to listen for: let the connection go.
                            break;
                        }
                    }
                },
                message = stream.next() => {
                    let Some(layer) = inner.upgrade() else {
                        return;
                    };
                    let Some(message) = message else {
                        lost = true;
                        continue;
                    };
                    layer.route(message.get_channel_name(), message.get_payload_bytes());
                }
            }
        }
        if lost {
            // The connection closed or stopped answering.
            log::warn!(target: "channels_rs", "pub/sub connection to Redis at {shard_name} dropped: reconnecting");
            dropped = true;
            if let Some(layer) = inner.upgrade() {
                layer.notify(layer.on_disconnect.as_ref());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The names subscribed on `shard`, or None once the layer is gone.
fn subscribed(inner: &Weak<Inner>, shard: usize) -> Option<Vec<String>> {
    let layer = inner.upgrade()?;
    let names = layer.lock().subscribers[shard]
        .names
        .iter()
        .cloned()
        .collect();
    Some(names)
}

/// Whether the layer, if it is still there, has nothing subscribed on `shard`.
fn nothing_subscribed(inner: &Weak<Inner>, shard: usize) -> bool {
    inner
        .upgrade()
        .is_some_and(|layer| layer.lock().subscribers[shard].names.is_empty())
}

/// Applies `command` on the connection; whether the connection was lost.
async fn apply(
    inner: &Weak<Inner>,
    shard: usize,
    sink: &mut PubSubSink,
    reply: Duration,
    command: Command,
) -> bool {
    match command {
        Command::Subscribe(name, done) => {
            let layer = inner.upgrade();
            let wanted = layer
                .as_ref()
                .is_some_and(|layer| layer.lock().subscribers[shard].names.contains(&name));
            // Its caller may have given up while we reconnected.
            let result = if wanted {
                within(reply, sink.subscribe(&name)).await
            } else {
                Ok(())
            };
            if let (Some(layer), true) = (layer, wanted && result.is_ok()) {
                let source = &layer.shards[shard];
                source.outage.over(&source.name);
            }
            let lost = result.as_ref().is_err_and(unreachable);
            done.send(result).ok();
            lost
        }
        Command::Unsubscribe(name, done) => {
            let result = within(reply, sink.unsubscribe(&name)).await;
            if let Some(done) = done {
                done.send(()).ok();
            }
            result.is_err_and(|err| unreachable(&err))
        }
    }
}

/// Tells the caller of a command that could not be applied why.
fn refuse(command: Option<Command>, err: &RedisError) {
    match command {
        Some(Command::Subscribe(_, done)) => {
            done.send(Err(err.clone())).ok();
        }
        Some(Command::Unsubscribe(_, Some(done))) => {
            done.send(()).ok();
        }
        _ => {}
    }
}

/// Without a connection, tells those waiting to subscribe why at once
/// rather than leave them waiting; what is subscribed already is kept.
fn refuse_pending(commands: &mut mpsc::UnboundedReceiver<Command>, err: &RedisError) {
    while let Ok(command) = commands.try_recv() {
        refuse(Some(command), err);
    }
}

#[pyclass(frozen, module = "channels_rs._core")]
pub struct PubSubCore {
    inner: Arc<Inner>,
}

#[pymethods]
impl PubSubCore {
    #[new]
    fn new(options: Options) -> PyResult<Self> {
        let Options {
            hosts,
            prefix,
            serializer,
            capacity,
            expiry,
            on_disconnect,
            on_reconnect,
        } = options;
        let shards = hosts.into_iter().map(shard).collect::<PyResult<Vec<_>>>()?;
        let expiry = Duration::from_secs_f64(expiry.max(0.0));
        let state = {
            let (count, serializer) = (shards.len(), serializer.clone());
            let fresh =
                move || Subscriptions::new(count, Inbox::new(capacity, expiry, serializer.clone()));
            PerProcess::new(fresh(), move |state| renew(state, fresh()))
        };
        let inner = Inner {
            prefix,
            shards,
            serializer,
            state,
            on_disconnect,
            on_reconnect,
        };
        Ok(PubSubCore {
            inner: Arc::new(inner),
        })
    }

    /// Makes `channel` one of this process's and subscribes to it.
    fn subscribe<'py>(
        &self,
        py: Python<'py>,
        channel: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let channel = names::channel(py, channel)?;
        let inner = Arc::clone(&self.inner);
        inner.lock().channels.insert(channel.clone());
        spawn(py, async move { inner.subscribe(channel).await }, none)
    }

    fn publish<'py>(
        &self,
        py: Python<'py>,
        channel: &Bound<'py, PyAny>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.publish_work(py, channel, message, false)?, none)
    }

    fn publish_sync(
        &self,
        py: Python<'_>,
        channel: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        block(py, self.publish_work(py, channel, message, false)?)
    }

    fn group_publish<'py>(
        &self,
        py: Python<'py>,
        group: &Bound<'py, PyAny>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.publish_work(py, group, message, true)?, none)
    }

    fn group_publish_sync(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        block(py, self.publish_work(py, group, message, true)?)
    }

    /// A message, or a future of one. Subscribes to `channel` first if
    /// this process is not yet. Whoever awaits the future calls `finish` after it.
    fn receive<'py>(
        &self,
        py: Python<'py>,
        channel: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = names::channel(py, channel)?;
        let inner = &self.inner;
        if inner.lock().channels.insert(name.clone()) {
            let subscriber = Arc::clone(inner);
            let channel = name.clone();
            runtime::spawn(async move {
                if let Err(Failure::Redis { shard, err }) = subscriber.subscribe(channel).await {
                    log::error!(target: "channels_rs", "subscribing on Redis at {shard} failed: {err}");
                }
            })?;
        }
        match inner.inbox().receive(py, &name)? {
            Received::Ready(message) | Received::Waiting(message) => Ok(message),
        }
    }

    /// After an await of a `receive` future: whether the message was
    /// `taken`. If not, the consumer is gone, as channels_redis assumes, so
    /// the channel is unsubscribed and what was buffered for it dropped.
    fn finish(&self, channel: &str, future: &Bound<'_, PyAny>, taken: bool) {
        if taken {
            return;
        }
        let inner = &self.inner;
        let mut state = inner.lock();
        state.inbox.unwait(channel, future);
        if state.channels.remove(channel) {
            // Nobody waits for the confirmation: a receive is being cancelled.
            inner.unsubscribe(&mut state, channel);
        }
        state.inbox.forget(channel);
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
        let name = inner.group_name(&group);
        {
            let mut state = inner.lock();
            if !state.channels.contains(&channel) {
                return Err(PyRuntimeError::new_err(format!(
                    "You can only call group_add() on channels that exist in-process.\n\
                     Consumers are encouraged to use the common pattern:\n   \
                     self.channel_layer.group_add({group:?}, self.channel_name)"
                )));
            }
            state
                .groups
                .entry(name.clone())
                .or_default()
                .insert(channel);
        }
        spawn(py, async move { inner.subscribe(name).await }, none)
    }

    fn group_discard(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
        channel: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let group = names::group(py, group)?;
        let channel = names::channel(py, channel)?;
        let inner = &self.inner;
        let name = inner.group_name(&group);
        let mut state = inner.lock();
        let Some(members) = state.groups.get_mut(&name) else {
            return Ok(());
        };
        if members.remove(&channel) && members.is_empty() {
            state.groups.remove(&name);
            inner.unsubscribe(&mut state, &name);
        }
        Ok(())
    }

    /// Forgets every channel and group of this process and unsubscribes;
    /// the future completes once Redis confirmed.
    fn flush<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = &self.inner;
        let mut confirmations = Vec::new();
        {
            let mut state = inner.lock();
            let names: Vec<String> = state.channels.drain().collect();
            let groups: Vec<String> = state.groups.drain().map(|(name, _)| name).collect();
            for name in names.iter().chain(&groups) {
                confirmations.extend(inner.unsubscribe(&mut state, name));
                state.inbox.forget(name);
            }
        }
        let all = async move {
            for confirmed in confirmations {
                // A listener that stopped has no subscriptions left either.
                confirmed.await.ok();
            }
            Ok::<_, Failure>(())
        };
        spawn(py, all, none)
    }
}

impl PubSubCore {
    fn publish_work(
        &self,
        py: Python<'_>,
        target: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
        group: bool,
    ) -> PyResult<Work<()>> {
        let message = errors::require_dict(message)?;
        let name = if group {
            self.inner.group_name(&names::group(py, target)?)
        } else {
            names::channel(py, target)?
        };
        let body = self.inner.serializer.encode(message, None)?;
        let inner = Arc::clone(&self.inner);
        Ok(Box::pin(async move { inner.publish(name, body).await }))
    }
}
