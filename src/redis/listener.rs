//! The task that owns one shard's subscriber connection for the pub/sub
//! layer. It applies SUBSCRIBE and UNSUBSCRIBE as they come, routes what is
//! published to `Subscriptions`, and when the connection drops connects
//! again and subscribes to everything again by itself. With nothing
//! subscribed it holds no connection; it ends with the layer.

use std::collections::HashSet;
use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::RedisError;
use tokio::sync::{mpsc, oneshot};

use super::connections::{unreachable, within};
use super::refusal;
use super::subscriptions::Subscriptions;
use crate::stats::Count;

/// How long a listener the server refused waits before it asks again.
const REFUSED_PAUSE: Duration = Duration::from_secs(5);

pub enum Command {
    Subscribe(String, oneshot::Sender<Result<(), RedisError>>),
    /// Told once Redis confirmed, if anyone waits.
    Unsubscribe(String, Option<oneshot::Sender<()>>),
}

/// One shard's listener, as this process knows it.
#[derive(Default)]
pub struct Subscriber {
    /// The names subscribed on this shard: what a new connection subscribes to.
    pub names: HashSet<String>,
    /// Commands to the task; made with the task.
    pub commands: Option<mpsc::UnboundedSender<Command>>,
}

/// A connection the listener holds.
struct Session {
    sink: PubSubSink,
    stream: PubSubStream,
    /// The shard's name, for logs.
    name: String,
    /// A pub/sub connection has no reply timeout of its own: a dead peer
    /// would hold the listener for ever.
    reply: Duration,
    /// How long it may stay quiet before a PING checks it (see `serve`).
    health_check: Option<Duration>,
    /// When it last heard anything.
    heard: tokio::time::Instant,
}

/// Why a session ended.
enum Ended {
    /// The connection closed or stopped answering.
    Lost,
    /// Nothing is subscribed any more: the connection is let go.
    Idle,
}

struct Listener {
    layer: Weak<Subscriptions>,
    shard: usize,
    commands: mpsc::UnboundedReceiver<Command>,
    /// A command that came while nothing was subscribed, to apply once connected.
    waiting: Option<Command>,
    /// Whether the last connection was lost: channels hear when one is back.
    dropped: bool,
}

pub async fn listen(
    layer: Weak<Subscriptions>,
    shard: usize,
    commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut listener = Listener {
        layer,
        shard,
        commands,
        waiting: None,
        dropped: false,
    };
    // Each round is one connection's life, or the wait for a first command.
    while listener.round().await.is_some() {}
}

/// What the listener was woken by.
enum Event {
    Command(Command),
    /// A published message, or None once the connection closed.
    Message(Option<redis::Msg>),
    /// Nothing for the health check interval.
    Quiet,
}

impl Listener {
    /// None once the layer is gone.
    async fn round(&mut self) -> Option<()> {
        let names = self.subscribed()?;
        if names.is_empty() && self.waiting.is_none() {
            return self.idle().await;
        }
        let Some(mut session) = self.connect(&names).await? else {
            return Some(());
        };
        self.dropped = false;
        let mut ended = match self.waiting.take() {
            Some(command) => self.apply(&mut session, command).await,
            None => None,
        };
        while ended.is_none() {
            ended = self.serve(&mut session).await?;
        }
        if let Some(Ended::Lost) = ended {
            log::warn!(target: "channels_rs", "pub/sub connection to Redis at {} dropped: reconnecting", session.name);
            self.dropped = true;
            let layer = self.layer.upgrade()?;
            layer.notify(layer.on_disconnect.as_ref());
            drop(layer);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(())
    }

    /// The names subscribed on this shard, or None once the layer is gone.
    fn subscribed(&self) -> Option<Vec<String>> {
        let layer = self.layer.upgrade()?;
        let state = layer.lock();
        Some(
            state.subscribers[self.shard]
                .names
                .iter()
                .cloned()
                .collect(),
        )
    }

    /// With nothing subscribed: waits for a command, holding no connection.
    async fn idle(&mut self) -> Option<()> {
        match self.commands.recv().await? {
            // Nothing is subscribed on a connection not held.
            Command::Unsubscribe(_, done) => {
                done.map(|done| done.send(()));
            }
            command => self.waiting = Some(command),
        }
        Some(())
    }

    /// A new connection subscribed to `names`; else, after a pause, None.
    async fn connect(&mut self, names: &[String]) -> Option<Option<Session>> {
        let (connected, name, timeouts) = {
            let layer = self.layer.upgrade()?;
            let source = &layer.shards[self.shard];
            let connected = source.subscriber().await;
            (connected, source.name.clone(), source.timeouts)
        };
        let reply = timeouts.reply;
        let err = match connected {
            Ok(pubsub) => {
                let (mut sink, stream) = pubsub.split();
                match resubscribe(&mut sink, names, reply).await {
                    Ok(()) => {
                        let session = Session {
                            sink,
                            stream,
                            name,
                            reply,
                            health_check: timeouts.health_check,
                            heard: tokio::time::Instant::now(),
                        };
                        return self
                            .back(&session, !names.is_empty())
                            .map(|()| Some(session));
                    }
                    // Out of reach, those waiting wait on; refused (an ACL,
                    // say), they hear why.
                    Err(err) if unreachable(&err) => err,
                    Err(err) => self.refuse_all(err),
                }
            }
            Err(err) => self.refuse_all(err),
        };
        let layer = self.layer.upgrade()?;
        let source = &layer.shards[self.shard];
        let pause = if refusal::cause(&err).is_some() {
            // Refused (credentials, the ACL), not out of reach: those
            // receiving hear why, and it is asked again now and then.
            let failure = source.failed(err);
            layer.fail_receivers(self.shard, &failure);
            REFUSED_PAUSE
        } else {
            source.note_trouble(&err);
            source.outage.failed(&name, &err);
            source.outage.pause()
        };
        drop(layer);
        tokio::time::sleep(pause).await;
        Some(None)
    }

    /// On a new connection that subscribed to what there was: the outage is
    /// over, and after a lost connection every channel hears it is back.
    fn back(&self, session: &Session, resubscribed: bool) -> Option<()> {
        if resubscribed {
            let layer = self.layer.upgrade()?;
            layer.shards[self.shard].outage.over(&session.name);
            if self.dropped {
                layer.shards[self.shard].stats.add(Count::Reconnects, 1);
                layer.notify(layer.on_reconnect.as_ref());
            }
        }
        Some(())
    }

    /// Handles what comes next: a command or a message. None once the
    /// layer is gone.
    ///
    /// A connection that stays quiet for the health check interval is
    /// PINGed: a peer that vanished without closing it (a firewall's idle
    /// timeout) would otherwise leave every subscription deaf for ever.
    async fn serve(&mut self, session: &mut Session) -> Option<Option<Ended>> {
        let quiet = async {
            match session.health_check {
                Some(every) => tokio::time::sleep_until(session.heard + every).await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            command = self.commands.recv() => Event::Command(command?),
            message = session.stream.next() => Event::Message(message),
            () = quiet => Event::Quiet,
        };
        session.heard = tokio::time::Instant::now();
        match event {
            Event::Quiet => {
                let answered = within(session.reply, session.sink.ping::<redis::Value>()).await;
                Some(answered.is_err().then_some(Ended::Lost))
            }
            Event::Command(command) => Some(self.apply(session, command).await),
            Event::Message(None) => Some(Some(Ended::Lost)),
            Event::Message(Some(message)) => {
                let layer = self.layer.upgrade()?;
                layer.route(message.get_channel_name(), message.get_payload_bytes());
                Some(None)
            }
        }
    }

    /// Applies `command` on the connection; whether that ended the session.
    async fn apply(&self, session: &mut Session, command: Command) -> Option<Ended> {
        let reply = session.reply;
        match command {
            Command::Subscribe(name, done) => {
                let layer = self.layer.upgrade();
                // Its caller may have given up while we reconnected.
                let wanted = layer.as_ref().is_some_and(|layer| {
                    layer.lock().subscribers[self.shard].names.contains(&name)
                });
                let result = if wanted {
                    within(reply, session.sink.subscribe(&name)).await
                } else {
                    Ok(())
                };
                if let (Some(layer), true) = (layer, wanted && result.is_ok()) {
                    layer.shards[self.shard].outage.over(&session.name);
                }
                let lost = result.as_ref().is_err_and(unreachable);
                done.send(result).ok();
                lost.then_some(Ended::Lost)
            }
            Command::Unsubscribe(name, done) => {
                let result = within(reply, session.sink.unsubscribe(&name)).await;
                if let Some(done) = done {
                    done.send(()).ok();
                }
                if result.is_err_and(|err| unreachable(&err)) {
                    return Some(Ended::Lost);
                }
                let idle = self
                    .layer
                    .upgrade()
                    .is_some_and(|layer| layer.lock().subscribers[self.shard].names.is_empty());
                idle.then_some(Ended::Idle)
            }
        }
    }

    /// Without a connection, tells those waiting to subscribe why at once
    /// rather than leave them waiting; what is subscribed already is kept.
    fn refuse_all(&mut self, err: RedisError) -> RedisError {
        refuse(self.waiting.take(), &err);
        while let Ok(command) = self.commands.try_recv() {
            refuse(Some(command), &err);
        }
        err
    }
}

/// Subscribes a new connection to `names`, if any.
async fn resubscribe(
    sink: &mut PubSubSink,
    names: &[String],
    reply: Duration,
) -> Result<(), RedisError> {
    if names.is_empty() {
        return Ok(());
    }
    within(reply, sink.subscribe(names)).await
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
