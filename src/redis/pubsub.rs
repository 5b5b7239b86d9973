//! `PubSubCore`, the class `channels_rs.RedisPubSubChannelLayer` calls: it
//! checks names and serializes with the GIL it holds, hands the work to
//! `Subscriptions` and returns an asyncio future that the bridge completes.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::connections::Shard;
use super::failure::{Failure, Work};
use super::hosts::{shard, HostSpec};
use super::inbox::{Inbox, Received};
use super::subscriptions::{Subscribed, Subscriptions};
use crate::bridge::{block, none, spawn};
use crate::codec::Serializer;
use crate::process::{renew, PerProcess};
use crate::stats::{stats_dict, Count, Stats};
use crate::{errors, names, runtime};

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

#[pyclass(frozen, module = "channels_rs._core")]
pub struct PubSubCore {
    subscriptions: Arc<Subscriptions>,
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
        let stats = Arc::new(Stats::default());
        let shards = hosts
            .into_iter()
            .map(|spec| shard(spec, &stats))
            .collect::<PyResult<Vec<_>>>()?;
        let expiry = Duration::from_secs_f64(expiry.max(0.0));
        let state = {
            let (count, serializer, stats) = (shards.len(), serializer.clone(), Arc::clone(&stats));
            let fresh = move || {
                let inbox = Inbox::new(capacity, expiry, serializer.clone(), Arc::clone(&stats));
                Subscribed::new(count, inbox)
            };
            PerProcess::new(fresh(), move |state| renew(state, fresh()))
        };
        let subscriptions = Subscriptions {
            prefix,
            shards,
            serializer,
            state,
            on_disconnect,
            on_reconnect,
            stats,
        };
        Ok(PubSubCore {
            subscriptions: Arc::new(subscriptions),
        })
    }

    /// Makes `channel` one of this process's and subscribes to it.
    fn subscribe<'py>(
        &self,
        py: Python<'py>,
        channel: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let channel = names::channel(py, channel)?;
        let subscriptions = Arc::clone(&self.subscriptions);
        subscriptions.lock().channels.insert(channel.clone());
        spawn(
            py,
            async move { subscriptions.subscribe(channel).await },
            none,
        )
    }

    fn publish<'py>(
        &self,
        py: Python<'py>,
        channel: &Bound<'py, PyAny>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let work = self.publish_work(
            py,
            std::slice::from_ref(channel),
            std::slice::from_ref(message),
            false,
        )?;
        spawn(py, work, none)
    }

    /// Publishes `messages` to each of `targets`, channels or (if `group`)
    /// groups, in order: one pipeline per shard.
    fn publish_bulk<'py>(
        &self,
        py: Python<'py>,
        targets: Vec<Bound<'py, PyAny>>,
        messages: Vec<Bound<'py, PyAny>>,
        group: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.publish_work(py, &targets, &messages, group)?, none)
    }

    fn publish_sync(
        &self,
        py: Python<'_>,
        channel: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        block(
            py,
            self.publish_work(
                py,
                std::slice::from_ref(channel),
                std::slice::from_ref(message),
                false,
            )?,
        )
    }

    fn group_publish<'py>(
        &self,
        py: Python<'py>,
        group: &Bound<'py, PyAny>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let work = self.publish_work(
            py,
            std::slice::from_ref(group),
            std::slice::from_ref(message),
            true,
        )?;
        spawn(py, work, none)
    }

    fn group_publish_sync(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        block(
            py,
            self.publish_work(
                py,
                std::slice::from_ref(group),
                std::slice::from_ref(message),
                true,
            )?,
        )
    }

    /// A message, or a future of one. Subscribes to `channel` first if
    /// this process is not yet. Whoever awaits the future calls `finish` after it.
    fn receive<'py>(
        &self,
        py: Python<'py>,
        channel: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = names::channel(py, channel)?;
        let subscriptions = &self.subscriptions;
        if subscriptions.lock().channels.insert(name.clone()) {
            let subscriber = Arc::clone(subscriptions);
            let channel = name.clone();
            runtime::spawn(async move {
                if let Err(Failure::Redis { shard, err }) = subscriber.subscribe(channel).await {
                    log::error!(target: "channels_rs", "subscribing on Redis at {shard} failed: {err}");
                }
            })?;
        }
        match subscriptions.inbox().receive(py, &name)? {
            Received::Ready(message) | Received::Waiting(message) => Ok(message),
        }
    }

    /// After an await of a `receive` future: whether the message was
    /// `taken`. If not, the consumer is gone, as channels_redis assumes, so
    /// the channel is unsubscribed and what was buffered for it dropped.
    fn finish(&self, channel: &str, future: &Bound<'_, PyAny>, taken: bool) {
        if taken {
            self.subscriptions.stats.add(Count::Received, 1);
            return;
        }
        let subscriptions = &self.subscriptions;
        let mut state = subscriptions.lock();
        state.inbox.unwait(channel, future);
        if state.channels.remove(channel) {
            // Nobody waits for the confirmation: a receive is being cancelled.
            subscriptions.unsubscribe(&mut state, channel);
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
        let subscriptions = Arc::clone(&self.subscriptions);
        let name = subscriptions.group_name(&group);
        {
            let mut state = subscriptions.lock();
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
        spawn(py, async move { subscriptions.subscribe(name).await }, none)
    }

    fn group_discard(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
        channel: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let group = names::group(py, group)?;
        let channel = names::channel(py, channel)?;
        let subscriptions = &self.subscriptions;
        let name = subscriptions.group_name(&group);
        let mut state = subscriptions.lock();
        let Some(members) = state.groups.get_mut(&name) else {
            return Ok(());
        };
        if members.remove(&channel) && members.is_empty() {
            state.groups.remove(&name);
            subscriptions.unsubscribe(&mut state, &name);
        }
        Ok(())
    }

    /// Why each failing server failed last, if it has not answered since.
    fn troubles(&self) -> Vec<String> {
        self.subscriptions
            .shards
            .iter()
            .filter_map(Shard::trouble)
            .collect()
    }

    /// The counters and gauges `layer.stats()` returns.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let subscriptions = &self.subscriptions;
        let state = subscriptions.lock();
        let gauges = [
            ("channels", state.channels.len()),
            ("groups", state.groups.len()),
            ("waiting_receives", state.inbox.gauges().1),
        ];
        drop(state);
        stats_dict(py, &subscriptions.stats, gauges)
    }

    /// Forgets every channel and group of this process and unsubscribes;
    /// the future completes once Redis confirmed.
    fn flush<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let subscriptions = &self.subscriptions;
        let mut confirmations = Vec::new();
        {
            let mut state = subscriptions.lock();
            let names: Vec<String> = state.channels.drain().collect();
            let groups: Vec<String> = state.groups.drain().map(|(name, _)| name).collect();
            for name in names.iter().chain(&groups) {
                confirmations.extend(subscriptions.unsubscribe(&mut state, name));
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
    /// Publishes each of `messages` to each of `targets` (channels, or
    /// groups if `group`), in order, one pipeline per shard.
    fn publish_work(
        &self,
        py: Python<'_>,
        targets: &[Bound<'_, PyAny>],
        messages: &[Bound<'_, PyAny>],
        group: bool,
    ) -> PyResult<Work<()>> {
        let messages = messages
            .iter()
            .map(errors::require_dict)
            .collect::<PyResult<Vec<_>>>()?;
        let subscriptions = Arc::clone(&self.subscriptions);
        let names = targets
            .iter()
            .map(|target| match group {
                true => Ok(subscriptions.group_name(&names::group(py, target)?)),
                false => names::channel(py, target),
            })
            .collect::<PyResult<Vec<_>>>()?;
        let bodies = messages
            .iter()
            .map(|message| subscriptions.serializer.encode(message, None))
            .collect::<PyResult<Vec<_>>>()?;
        let counted = if group {
            Count::GroupSends
        } else {
            Count::Sent
        };
        let published = (names.len() * bodies.len()) as u64;
        Ok(Box::pin(async move {
            subscriptions.publish(&names, &bodies).await?;
            subscriptions.stats.add(counted, published);
            Ok(())
        }))
    }
}
