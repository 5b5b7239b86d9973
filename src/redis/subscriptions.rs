//! The pub/sub layer's logic, with channels_redis.pubsub's names and bytes.
//!
//! A channel is a Redis pub/sub channel of the same name; a group `g` is the
//! pub/sub channel `<prefix>__group__g`, and each process fans a group's
//! messages out to its own members. Every message goes to every process
//! subscribed to its name, and one published while nobody listens is gone.
//!
//! Each shard has one subscriber connection for the whole process, shared
//! by every loop and thread, owned by a `listener` task started on first
//! use, which routes what arrives here and on into the inbox (bounded per
//! channel). Consumers can be told when that connection drops and when it is
//! back (`on_disconnect` / `on_reconnect`), since what was published in
//! between is lost.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use redis::RedisError;
use tokio::sync::{mpsc, oneshot};

use super::connections::{timed_out, unreachable, Shard};
use super::failure::Failure;
use super::inbox::{Buffered, Inbox};
use super::listener::{listen, Command, Subscriber};
use super::ring::consistent_hash;
use crate::codec::Serializer;
use crate::process::{Guard, PerProcess};
use crate::runtime;
use crate::stats::{Count, Reason, Stats};

/// What the layer holds for the process it runs in; a forked child starts
/// with none of the parent's subscriptions, buffers or tasks (see `process`).
pub struct Subscribed {
    /// This process's channels: made by new_channel, or being received on.
    pub channels: HashSet<String>,
    /// Group pub/sub name -> the channels of this process in that group.
    pub groups: HashMap<String, HashSet<String>>,
    /// Each shard's listener.
    pub subscribers: Vec<Subscriber>,
    /// Receivers and buffers of this process's channels.
    pub inbox: Arc<Inbox>,
}

impl Subscribed {
    pub fn new(shards: usize, inbox: Inbox) -> Self {
        Subscribed {
            channels: HashSet::new(),
            groups: HashMap::new(),
            subscribers: (0..shards).map(|_| Subscriber::default()).collect(),
            inbox: Arc::new(inbox),
        }
    }
}

/// The pub/sub layer under `PubSubCore`: its shards, and what each process
/// subscribes to there.
pub struct Subscriptions {
    pub prefix: String,
    pub shards: Vec<Shard>,
    pub serializer: Serializer,
    pub state: PerProcess<Subscribed>,
    /// Message types handed to every channel when a subscriber connection
    /// drops and when it is back.
    pub on_disconnect: Option<String>,
    pub on_reconnect: Option<String>,
    pub stats: Arc<Stats>,
}

impl Subscriptions {
    pub fn lock(&self) -> Guard<'_, Subscribed> {
        self.state.lock()
    }

    pub fn inbox(&self) -> Arc<Inbox> {
        Arc::clone(&self.lock().inbox)
    }

    pub fn group_name(&self, group: &str) -> String {
        format!("{}__group__{group}", self.prefix)
    }

    fn shard_of(&self, name: &str) -> usize {
        consistent_hash(name, self.shards.len())
    }

    /// The command channel of the task for `shard`, started on first use.
    fn commands(
        self: &Arc<Self>,
        state: &mut Subscribed,
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
    pub async fn subscribe(self: &Arc<Self>, name: String) -> Result<(), Failure> {
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
    pub fn unsubscribe(
        self: &Arc<Self>,
        state: &mut Subscribed,
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
    pub fn route(self: &Arc<Self>, name: &str, payload: &[u8]) {
        let opened = match self.serializer.open(payload) {
            Ok(opened) => opened,
            Err(problem) => {
                let why = format_args!("it cannot be read: {problem}");
                let place = format!("channel {name}");
                return self.stats.dropped(Reason::Unreadable, &place, 1, why);
            }
        };
        let (inbox, targets): (_, Vec<String>) = {
            let state = self.lock();
            let targets = if state.channels.contains(name) {
                vec![name.to_owned()]
            } else if let Some(members) = state.groups.get(name) {
                let members: Vec<String> = members
                    .iter()
                    .filter(|member| state.channels.contains(*member))
                    .cloned()
                    .collect();
                // Fanned out here, in each receiving process (see docs).
                let fanned = members.len() as u64;
                self.stats.add(Count::GroupDeliveries, fanned);
                members
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

    /// Ends, with `failure`, each receive of a channel that hears through
    /// `shard`: subscribed there itself, or a member of a group that is.
    pub fn fail_receivers(&self, shard: usize, failure: &Failure) {
        let (inbox, affected) = {
            let state = self.lock();
            let mut affected = HashSet::new();
            for name in &state.subscribers[shard].names {
                if state.channels.contains(name) {
                    affected.insert(name.clone());
                }
                affected.extend(state.groups.get(name).into_iter().flatten().cloned());
            }
            (Arc::clone(&state.inbox), affected)
        };
        inbox.fail_waiting(|channel| affected.contains(channel), failure);
    }

    /// Hands `{"type": message_type}` to every channel of this process.
    pub fn notify(self: &Arc<Self>, message_type: Option<&String>) {
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

    /// Publishes each of `bodies` on each of `names`, in that order, one
    /// pipeline per shard (per name on a cluster, whose pipelines keep to
    /// one slot), all at once.
    pub async fn publish(&self, names: &[String], bodies: &[Vec<u8>]) -> Result<(), Failure> {
        let mut pipelines: Vec<(usize, redis::Pipeline)> = Vec::new();
        for name in names {
            let shard = self.shard_of(name);
            let shared = !self.shards[shard].is_cluster();
            let pipeline = match pipelines.iter().position(|(s, _)| shared && *s == shard) {
                Some(at) => &mut pipelines[at].1,
                None => {
                    pipelines.push((shard, redis::pipe()));
                    &mut pipelines.last_mut().expect("just pushed").1
                }
            };
            for body in bodies {
                pipeline.cmd("PUBLISH").arg(name).arg(body).ignore();
            }
        }
        let sent = pipelines
            .iter()
            .filter(|(_, pipeline)| !pipeline.is_empty())
            .map(|(shard, pipeline)| self.shards[*shard].run::<()>(pipeline));
        futures_util::future::try_join_all(sent).await?;
        Ok(())
    }
}
