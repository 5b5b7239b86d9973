//! `RedisCore`, the class `channels_rs.RedisChannelLayer` calls: it checks and
//! serializes with the GIL it holds, hands the work to `Queues` on the
//! runtime and returns an asyncio future that the bridge completes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyAssertionError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tokio::sync::oneshot;

use super::backup::{Receipt, Settled};
use super::connections::Shard;
use super::failure::Work;
use super::hosts::{shard, HostSpec};
use super::inbox::{Inbox, Received};
use super::queues::{CapacityOf, ProcessState, Queues};
use super::report::ShardReport;
use super::ring::consistent_hash;
use crate::bridge::{self, block, none, spawn, Completion, Failed, Outcome, Queue, Settle};
use crate::capacity::Capacities;
use crate::codec::Serializer;
use crate::errors;
use crate::names;
use crate::names::non_local_name;
use crate::process::{renew, PerProcess};
use crate::runtime;
use crate::stats::{stats_dict, Count, Stats};

#[pyclass(frozen, module = "channels_rs._core")]
pub struct RedisCore {
    queues: Arc<Queues>,
    capacities: Arc<Capacities>,
    default_capacity: i64,
    /// Set when `channel_capacity` has patterns, which only Python's regex
    /// module can match.
    has_patterns: bool,
}

/// RedisChannelLayer's options, under their names in CONFIG (`hosts` as
/// core.py has read them, `channel_capacity` compiled, and the class's
/// `brpop_timeout`).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct Options {
    hosts: Vec<HostSpec>,
    prefix: String,
    expiry: f64,
    group_expiry: f64,
    capacity: i64,
    channel_capacity: Vec<(Py<PyAny>, i64)>,
    serializer: Serializer,
    brpop_timeout: f64,
    renew_groups: bool,
}

#[pymethods]
impl RedisCore {
    #[new]
    fn new(options: Options) -> PyResult<Self> {
        let Options {
            hosts,
            prefix,
            expiry,
            group_expiry,
            capacity,
            channel_capacity,
            serializer,
            brpop_timeout,
            renew_groups,
        } = options;
        let stats = Arc::new(Stats::default());
        let shards = hosts
            .into_iter()
            .map(|spec| shard(spec, &stats))
            .collect::<PyResult<Vec<_>>>()?;
        let has_patterns = !channel_capacity.is_empty();
        let non_negative = |value: i64| usize::try_from(value).unwrap_or(0);
        let patterns = channel_capacity
            .into_iter()
            .map(|(p, c)| (p, non_negative(c)))
            .collect();
        let queues = Queues {
            prefix,
            expiry: expiry.max(0.0) as u64,
            group_expiry: group_expiry.max(0.0) as u64,
            renews: renew_groups,
            block_seconds: brpop_timeout,
            serializer: serializer.clone(),
            shards,
            process: {
                let (capacity, serializer) = (non_negative(capacity), serializer);
                let expiry = Duration::from_secs_f64(expiry.max(0.0));
                let stats = Arc::clone(&stats);
                let fresh = move || {
                    let inbox =
                        Inbox::new(capacity, expiry, serializer.clone(), Arc::clone(&stats));
                    ProcessState::new(inbox)
                };
                PerProcess::new(fresh(), move |state| renew(state, fresh()))
            },
            next_send: AtomicUsize::new(0),
            next_receive: AtomicUsize::new(0),
            closed: tokio::sync::watch::Sender::new(false),
            stats,
        };
        Ok(RedisCore {
            queues: Arc::new(queues),
            capacities: Arc::new(Capacities::new(non_negative(capacity), patterns)),
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
        spawn(
            py,
            self.send_work(py, channel, std::slice::from_ref(message))?,
            none,
        )
    }

    /// Many messages to one channel in one round trip: all, or ChannelFull
    /// when they would not all fit (channels_redis #400's `send_bulk`).
    fn send_bulk<'py>(
        &self,
        py: Python<'py>,
        channel: &Bound<'py, PyAny>,
        messages: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.send_work(py, channel, &messages)?, none)
    }

    /// `send` for plain sync code: blocks this thread (not the GIL) until done.
    fn send_sync(
        &self,
        py: Python<'_>,
        channel: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        block(
            py,
            self.send_work(py, channel, std::slice::from_ref(message))?,
        )
    }

    /// A message, or a future of one. Whoever awaits the future calls
    /// `finish` after it.
    fn receive<'py>(
        &self,
        py: Python<'py>,
        channel: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = names::channel(py, channel)?;
        let queues = &self.queues;
        if name.contains('!') {
            if !non_local_name(&name).ends_with(&queues.process().client_suffix) {
                return Err(PyAssertionError::new_err(format!(
                    "Wrong client prefix: {name:?} belongs to another layer instance"
                )));
            }
            return self.receive_local(py, name);
        }
        let shard = queues.round_robin(&queues.next_receive);
        let (future, queue) = bridge::pending(py)?;
        let (receipt, settled) = Receipt::new();
        // The awaiting coroutine holds the future until `finish`, so its
        // address is not reused meanwhile.
        let id = future.as_ptr() as usize;
        let mut process = queues.process();
        process.receiving.insert(id, Arc::clone(&receipt));
        process.memberships.touched(&name);
        *process.waiting.entry(name.clone()).or_default() += 1;
        drop(process);
        let receive = Receive {
            future: future.clone().unbind(),
            queue,
            receipt,
        };
        runtime::spawn(pop_for(
            Arc::clone(queues),
            shard,
            queues.key(&name),
            receive,
            settled,
        ))?;
        Ok(future)
    }

    /// After an await of a `receive` future: whether the message was
    /// `taken`. If not, stop waiting, and put back a message that arrived.
    fn finish(&self, channel: &str, future: &Bound<'_, PyAny>, taken: bool) -> PyResult<()> {
        if taken {
            self.queues.stats.add(Count::Received, 1);
        }
        let mut process = self.queues.process();
        process.memberships.touched(channel);
        if channel.contains('!') {
            drop(process);
            return if taken {
                Ok(())
            } else {
                self.queues.inbox().abandon(channel, future)
            };
        }
        let id = future.as_ptr() as usize;
        let receipt = process.receiving.remove(&id);
        if let Some(count) = process.waiting.get_mut(channel) {
            *count -= 1;
            if *count == 0 {
                process.waiting.remove(channel);
            }
        }
        drop(process);
        let Some(receipt) = receipt else {
            return Ok(());
        };
        if taken {
            receipt.settle(Settled::Taken);
            return Ok(());
        }
        receipt.abandoned.store(true, Ordering::Release);
        // Cancelled after the message arrived (a cancelled future's settle
        // returns it already).
        if bridge::unclaimed(future)?.is_some() {
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
        let (queues, group, channel) = self.membership(py, group, channel)?;
        let mut process = queues.process();
        if queues.renews && !process.renewing {
            process.renewing = true;
            runtime::spawn(Arc::clone(&queues).keep_memberships())?;
        }
        drop(process);
        spawn(
            py,
            async move { queues.group_add(&group, channel).await },
            none,
        )
    }

    fn group_discard<'py>(
        &self,
        py: Python<'py>,
        group: &Bound<'py, PyAny>,
        channel: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (queues, group, channel) = self.membership(py, group, channel)?;
        spawn(
            py,
            async move { queues.group_discard(&group, channel).await },
            none,
        )
    }

    fn group_send<'py>(
        &self,
        py: Python<'py>,
        group: &Bound<'py, PyAny>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let work = self.group_send_work(
            py,
            std::slice::from_ref(group),
            std::slice::from_ref(message),
        )?;
        spawn(py, work, none)
    }

    /// Many messages to every member of `group`: a member under capacity
    /// gets them all (channels_redis #400's `group_send_bulk`).
    fn group_send_bulk<'py>(
        &self,
        py: Python<'py>,
        group: &Bound<'py, PyAny>,
        messages: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        spawn(
            py,
            self.group_send_work(py, std::slice::from_ref(group), &messages)?,
            none,
        )
    }

    /// One message to every member of each of `groups`, as a group_send to
    /// each would, in two round trips per shard.
    fn group_send_many<'py>(
        &self,
        py: Python<'py>,
        groups: Vec<Bound<'py, PyAny>>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        spawn(
            py,
            self.group_send_work(py, &groups, std::slice::from_ref(message))?,
            none,
        )
    }

    /// `group_send` for plain sync code: blocks this thread (not the GIL).
    fn group_send_sync(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        block(
            py,
            self.group_send_work(
                py,
                std::slice::from_ref(group),
                std::slice::from_ref(message),
            )?,
        )
    }

    /// The channels in `group` now, members past group_expiry left out.
    fn group_channels<'py>(
        &self,
        py: Python<'py>,
        group: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        spawn(py, self.members_work(py, group)?, |py, members| {
            Ok(PyList::new(py, members)?.into_any().unbind())
        })
    }

    /// `group_channels` for plain sync code.
    fn group_channels_sync(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<String>> {
        block(py, self.members_work(py, group)?)
    }

    /// This process's client prefix: a forked child gets its own.
    #[getter]
    fn client_prefix(&self) -> String {
        self.queues.process().client_prefix.clone()
    }

    fn flush<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let queues = Arc::clone(&self.queues);
        spawn(py, async move { queues.flush().await }, none)
    }

    /// For `python -m channels_rs check`: each shard's name, `INFO server`
    /// text and `pings` PING times in seconds.
    fn server_report_sync(&self, py: Python<'_>, pings: usize) -> PyResult<Vec<ShardReport>> {
        let queues = Arc::clone(&self.queues);
        block(py, Box::pin(async move { queues.report(pings).await }))
    }

    /// Why each failing server failed last, if it has not answered since.
    fn troubles(&self) -> Vec<String> {
        self.queues
            .shards
            .iter()
            .filter_map(Shard::trouble)
            .collect()
    }

    /// The counters and gauges `layer.stats()` returns.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let queues = &self.queues;
        let process = queues.process();
        let (channels, waiting) = process.inbox.gauges();
        let gauges = [
            ("channels", channels),
            ("groups", process.memberships.group_count()),
            ("waiting_receives", waiting + process.receiving.len()),
        ];
        drop(process);
        stats_dict(py, &queues.stats, gauges)
    }

    /// Drops this process's connections; the next operation reconnects.
    fn close(&self) {
        for shard in &self.queues.shards {
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
        self.queues.closed.send_replace(true);
        for shard in &self.queues.shards {
            shard.close();
        }
    }
}

impl RedisCore {
    /// What a group_add or group_discard works on: the queues, the group and
    /// the channel, both names checked.
    fn membership(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
        channel: &Bound<'_, PyAny>,
    ) -> PyResult<(Arc<Queues>, String, String)> {
        let group = names::group(py, group)?;
        let channel = names::channel(py, channel)?;
        Ok((Arc::clone(&self.queues), group, channel))
    }

    fn members_work(
        &self,
        py: Python<'_>,
        group: &Bound<'_, PyAny>,
    ) -> PyResult<Work<Vec<String>>> {
        let group = names::group(py, group)?;
        let queues = Arc::clone(&self.queues);
        Ok(Box::pin(async move {
            Ok(queues.group_members(&group).await?.names.clone())
        }))
    }

    /// Sends `messages` to `channel` in one script: all, or ChannelFull.
    fn send_work(
        &self,
        py: Python<'_>,
        channel: &Bound<'_, PyAny>,
        messages: &[Bound<'_, PyAny>],
    ) -> PyResult<Work<()>> {
        let messages = errors::require_messages(messages)?;
        let name = names::channel(py, channel)?;
        let queues = &self.queues;
        let local = name.contains('!');
        let (key, shard) = if local {
            let queue_name = non_local_name(&name);
            let shard = consistent_hash(queue_name, queues.shards.len());
            (queues.key(queue_name), shard)
        } else {
            (queues.key(&name), queues.round_robin(&queues.next_send))
        };
        let reply = local.then_some(channel);
        let members = messages
            .iter()
            .map(|message| queues.serializer.encode(message, reply))
            .collect::<PyResult<_>>()?;
        let capacity = self.capacity_of(py, &name)?;
        let queues = Arc::clone(queues);
        Ok(Box::pin(async move {
            queues.send(shard, key, members, capacity, name).await
        }))
    }

    /// Sends each of `messages` to every member of each of `groups`.
    fn group_send_work(
        &self,
        py: Python<'_>,
        groups: &[Bound<'_, PyAny>],
        messages: &[Bound<'_, PyAny>],
    ) -> PyResult<Work<()>> {
        let messages = errors::require_messages(messages)?;
        let groups = groups
            .iter()
            .map(|group| names::group(py, group))
            .collect::<PyResult<Vec<_>>>()?;
        let serializer = &self.queues.serializer;
        let bodies = messages
            .iter()
            .map(|message| serializer.body(message))
            .collect::<PyResult<_>>()?;
        let queues = Arc::clone(&self.queues);
        let (capacity, capacity_of) = (self.default_capacity, self.capacity_of_members());
        Ok(Box::pin(async move {
            queues
                .group_send(groups, bodies, capacity, capacity_of)
                .await
        }))
    }

    /// With `channel_capacity` patterns, what each group member's capacity
    /// is: the patterns are Python regexes, so the GIL is taken once per
    /// group_send, after Redis named the members.
    fn capacity_of_members(&self) -> Option<CapacityOf> {
        if !self.has_patterns {
            return None;
        }
        let (capacities, default) = (Arc::clone(&self.capacities), self.default_capacity);
        Some(Arc::new(move |members: &[String]| {
            Python::attach(|py| {
                let of = |member: &String| capacities.of(py, member).ok();
                let known = |capacity: usize| i64::try_from(capacity).unwrap_or(i64::MAX);
                members
                    .iter()
                    .map(|m| of(m).map_or(default, known))
                    .collect()
            })
        }))
    }

    fn capacity_of(&self, py: Python<'_>, channel: &str) -> PyResult<i64> {
        if !self.has_patterns {
            return Ok(self.default_capacity);
        }
        Ok(i64::try_from(self.capacities.of(py, channel)?).unwrap_or(i64::MAX))
    }

    fn receive_local<'py>(&self, py: Python<'py>, channel: String) -> PyResult<Bound<'py, PyAny>> {
        let queues = &self.queues;
        let received = queues.inbox().receive(py, &channel)?;
        let mut local = queues.process();
        local.memberships.touched(&channel);
        let future = match received {
            Received::Ready(message) => return Ok(message),
            Received::Waiting(future) => future,
        };
        let local_name = non_local_name(&channel).to_owned();
        for shard in 0..queues.shards.len() {
            if local.pumps.insert((local_name.clone(), shard)) {
                runtime::spawn(Arc::clone(queues).pump(local_name.clone(), shard))?;
            }
        }
        Ok(future)
    }
}

/// A receive of a normal channel: its future, the queue of the loop that
/// awaits it, and what `finish` tells.
struct Receive {
    future: Py<PyAny>,
    queue: Arc<Queue>,
    receipt: Arc<Receipt>,
}

/// Pops the next message of `key` for `receive` and hands it over: it goes
/// back if the receiver was cancelled before taking it (`settled`).
async fn pop_for(
    queues: Arc<Queues>,
    shard: usize,
    key: String,
    receive: Receive,
    settled: oneshot::Receiver<Settled>,
) {
    let mut taken = match queues.pop(shard, &key, &receive.receipt.abandoned).await {
        Ok(Some(taken)) => taken,
        Ok(None) => return,
        Err(failure) => {
            let outcome: Outcome = Box::new(move |py| Err(failure.into_py(py)));
            receive.queue.push(Completion {
                future: receive.future,
                outcome,
                settle: None,
            });
            return;
        }
    };
    let reader = queues.inbox();
    let body = std::mem::take(&mut taken.body);
    let outcome: Outcome = Box::new(move |py| reader.read_body(py, &body).map(Bound::unbind));
    // Cancelled before it arrived, or given up on meanwhile: it goes back.
    let returned = receive.receipt;
    let settle: Settle = Box::new(move |_py, unused| {
        if unused.is_some() || returned.abandoned.load(Ordering::Acquire) {
            returned.settle(Settled::Returned);
        }
    });
    // Only the future's settle and `finish` can settle it now: once both
    // are gone unsaid, `settled` reports it.
    receive.queue.push(Completion {
        future: receive.future,
        outcome,
        settle: Some(settle),
    });
    queues.hand_over(taken, &key, settled).await;
}
