//! The Redis layer's queues and groups: channels_redis's keys and bytes, one
//! round trip per operation (server-side scripts run by SHA), on connections
//! that the layer and the tokio runtime own rather than an event loop.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use redis::ToRedisArgs;
use tokio::sync::oneshot;

use super::atomic::transaction;
use super::backup::{Backup, Receipt, Settled, GRACE};
use super::connections::Shard;
use super::failure::{passing, Failure};
use super::inbox::{Buffered, Inbox};
use super::memberships::Memberships;
use super::ring::consistent_hash;
use super::scripts;
use super::tracking::{Members, Written};
use crate::clock::unix_now;
use crate::codec::{Body, Serializer};
use crate::errors::REPLY_CHANNEL_KEY;
use crate::names;
use crate::names::non_local_name;
use crate::process::{Guard, PerProcess};
use crate::stats::{Count, Reason, Stats};

/// Most messages the local pump takes per round trip.
const POP_BATCH: usize = 100;
/// Above this many bytes of copies, a shard's group_send skips Lua.
const SCRIPT_BYTES: usize = 16 * 1024;

/// A message popped from a normal channel.
pub(super) struct Taken {
    /// The shard it came from, where it goes back if nobody takes it.
    pub(super) shard: usize,
    pub(super) member: Vec<u8>,
    pub(super) score: f64,
    pub(super) body: Vec<u8>,
    /// Whether a copy waits in the in-flight backup for `clear_backup`.
    pub(super) backed_up: bool,
}

/// A member as popped: its shard, the member, its score, and whether a copy
/// waits in the in-flight backup.
type Member = (usize, Vec<u8>, f64, bool);

/// The capacity of each of a group's members, when `channel_capacity` has
/// patterns: the user's Python regexes decide (see `layer`).
pub(super) type CapacityOf = Arc<dyn Fn(&[String]) -> Vec<i64> + Send + Sync>;

/// One group_send copy: for the members whose messages wait in `key`.
struct GroupCopy<'m> {
    key: String,
    shard: usize,
    members: Vec<&'m str>,
    capacity: i64,
}

/// One shard's share of a group_send, written at once: its copies, and
/// each copy's messages (one per body), sealed.
struct Batch<'m> {
    shard: usize,
    copies: Vec<GroupCopy<'m>>,
    sealed: Vec<Vec<Vec<u8>>>,
}

impl Batch<'_> {
    fn bytes(&self) -> usize {
        self.sealed.iter().flatten().map(Vec::len).sum()
    }
}

/// A batch's GROUP_SEND call: its KEYS, then its ARGV as the messages and
/// the numbers after them.
type ScriptArgs<'b> = (Vec<&'b str>, Vec<&'b [u8]>, Vec<Vec<u8>>);

/// What BZPOPMIN returns: key, member, score.
type Popped = (String, Vec<u8>, f64);

pub(super) struct Queues {
    pub(super) prefix: String,
    pub(super) expiry: u64,
    pub(super) group_expiry: u64,
    /// Whether live memberships are renewed and added back (`renewal`).
    pub(super) renews: bool,
    /// How long one blocking pop waits before it is issued again; also how
    /// long an idle pump outlives its last waiter.
    pub(super) block_seconds: f64,
    pub(super) serializer: Serializer,
    pub(super) shards: Vec<Shard>,
    pub(super) process: PerProcess<ProcessState>,
    pub(super) next_send: AtomicUsize,
    pub(super) next_receive: AtomicUsize,
    /// Set when the Python layer is gone (see `RedisCore`'s drop).
    pub(super) closed: tokio::sync::watch::Sender<bool>,
    pub(super) stats: Arc<Stats>,
}

/// What the layer holds for the process it runs in. A forked child starts
/// afresh (see `process`): a client prefix of its own, so that its
/// process-local channels are not the parent's or a sibling's, and no
/// pumps, buffers or receives of the parent's.
pub(super) struct ProcessState {
    pub(super) client_prefix: String,
    /// `.<client_prefix>!`: how every process-local name of this layer ends
    /// (`<prefix>.<client_prefix>!`, one Redis key per new_channel prefix).
    pub(super) client_suffix: String,
    /// Receivers and buffers of this layer's process-local channels.
    pub(super) inbox: Arc<Inbox>,
    /// (local name, shard) pairs a pump is reading.
    pub(super) pumps: HashSet<(String, usize)>,
    /// Receives of normal channels under way, by the address of their
    /// future, until their receiver has taken the message or given up.
    pub(super) receiving: HashMap<usize, Arc<Receipt>>,
    /// The groups this process's channels are in, and whether those are
    /// alive here (see `renewal`).
    pub(super) memberships: Memberships,
    /// Whether the task that renews them runs.
    pub(super) renewing: bool,
    /// Normal channels with receives waiting on them, and how many.
    pub(super) waiting: HashMap<String, usize>,
}

impl ProcessState {
    pub(super) fn new(inbox: Inbox) -> Self {
        let client_prefix = names::client_prefix();
        ProcessState {
            client_suffix: format!(".{client_prefix}!"),
            client_prefix,
            inbox: Arc::new(inbox),
            pumps: HashSet::new(),
            receiving: HashMap::new(),
            memberships: Memberships::default(),
            renewing: false,
            waiting: HashMap::new(),
        }
    }
}

impl Queues {
    pub(super) fn process(&self) -> Guard<'_, ProcessState> {
        self.process.lock()
    }

    pub(super) fn inbox(&self) -> Arc<Inbox> {
        Arc::clone(&self.process().inbox)
    }

    pub(super) fn key(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    pub(super) fn backup(&self, shard: usize, key: &str) -> Backup {
        Backup::of(&self.prefix, key, self.shards[shard].is_cluster())
    }

    pub(super) fn round_robin(&self, counter: &AtomicUsize) -> usize {
        counter.fetch_add(1, Ordering::Relaxed) % self.shards.len()
    }

    /// Adds `members` to `key` in one script, all of them or (when they
    /// would not all fit) none.
    pub(super) async fn send(
        &self,
        shard: usize,
        key: String,
        members: Vec<Vec<u8>>,
        capacity: i64,
        channel: String,
    ) -> Result<(), Failure> {
        if members.is_empty() {
            return Ok(());
        }
        let sent = members.len() as u64;
        let mut invocation = scripts::SEND.prepare_invoke();
        invocation
            .key(key)
            .arg(unix_now())
            .arg(self.expiry)
            .arg(capacity)
            .arg(members);
        let added: i64 = self.shards[shard].run(&invocation).await?;
        if added == 0 {
            self.stats.add(Count::ChannelFull, 1);
            return Err(Failure::Full(channel));
        }
        self.stats.add(Count::Sent, sent);
        Ok(())
    }

    /// Pops the next readable message of a normal channel, waiting as long
    /// as it takes, or until the receiver is `abandoned` (then `None`).
    /// Unreadable messages are dropped with a log line, so one bad message
    /// cannot stop a consumer.
    ///
    /// While Redis is out of reach or failing over it keeps trying: a
    /// receive waits out a restart or failover rather than failing.
    pub(super) async fn pop(
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
                    let why = format!("it cannot be read: {problem}");
                    self.stats
                        .dropped(Reason::Unreadable, &format!("key {key}"), 1, why);
                    if backed_up {
                        let backup = self.backup(from, key);
                        self.forget_backup(&backup, from, key, &member).await;
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
    pub(super) async fn pop_member(
        &self,
        shard: usize,
        key: &str,
    ) -> Result<Option<Member>, Failure> {
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
    pub(super) async fn take_queued(
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
    async fn forget_backup(&self, backup: &Backup, shard: usize, key: &str, member: &[u8]) {
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
    pub(super) async fn hand_over(
        &self,
        taken: Taken,
        key: &str,
        mut settled: oneshot::Receiver<Settled>,
    ) {
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
            Some(Settled::Taken) if backed_up => {
                self.forget_backup(&backup, shard, key, &member).await
            }
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
    pub(super) async fn pump(self: Arc<Self>, local_name: String, shard: usize) {
        let mut closed = self.closed.subscribe();
        tokio::select! {
            () = self.pump_until_idle(local_name, shard) => {}
            // Nobody can receive on the layer's local channels any more.
            _ = closed.wait_for(|closed| *closed) => {}
        }
    }

    pub(super) async fn pump_until_idle(&self, local_name: String, shard: usize) {
        let key = self.key(&local_name);
        let inbox = self.inbox();
        let mut idle = false;
        loop {
            if idle {
                // Decided under the same lock receivers take to start pumps.
                let mut local = self.process();
                if !local.inbox.has_waiters(&local_name) {
                    local.pumps.remove(&(local_name, shard));
                    return;
                }
            }
            match self.pop_local(shard, &key).await {
                Ok(members) => {
                    idle = members.is_empty();
                    for member in members {
                        self.route(&inbox, &key, member);
                    }
                }
                Err(failure) => {
                    // With nobody waiting, the check above ends the pump quietly.
                    idle = true;
                    match failure {
                        Failure::Redis { err, .. } if passing(&err) => {
                            if inbox.has_waiters(&local_name) {
                                tokio::time::sleep(self.shards[shard].pause_after(&err)).await;
                            }
                        }
                        // Refused (credentials, the ACL, writes): waiting
                        // mends nothing, so those waiting hear why.
                        failure => {
                            inbox.fail_waiting(|c| non_local_name(c) == local_name, &failure)
                        }
                    }
                }
            }
        }
    }

    /// Waits for the local key, then takes up to POP_BATCH members in the
    /// same round trip.
    pub(super) async fn pop_local(&self, shard: usize, key: &str) -> Result<Vec<Vec<u8>>, Failure> {
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
    pub(super) fn route(&self, inbox: &Arc<Inbox>, key: &str, member: Vec<u8>) {
        let unreadable = |why: &dyn std::fmt::Display| {
            let place = format!("key {key}");
            self.stats.dropped(Reason::Unreadable, &place, 1, why);
        };
        let opened = match self.serializer.open(&member) {
            Ok(opened) => opened,
            Err(problem) => return unreadable(&format_args!("it cannot be read: {problem}")),
        };
        let Some(channels) = opened.reply else {
            return unreadable(&format_args!("a local message without {REPLY_CHANNEL_KEY}"));
        };
        let body = Arc::new(opened.body);
        for channel in channels {
            inbox.deliver(channel, Buffered::Body(Arc::clone(&body)), false);
        }
    }

    pub(super) fn group_key(&self, group: &str) -> String {
        format!("{}:group:{group}", self.prefix)
    }

    pub(super) async fn group_add(&self, group: &str, channel: String) -> Result<(), Failure> {
        let shard = consistent_hash(group, self.shards.len());
        let key = self.group_key(group);
        let mut invocation = scripts::GROUP_ADD.prepare_invoke();
        invocation
            .key(&key)
            .arg(unix_now())
            .arg(self.group_expiry)
            .arg(&channel);
        let _: i64 = self.shards[shard].run(&invocation).await?;
        self.shards[shard].changed(&key);
        self.process().memberships.join(group, &channel);
        Ok(())
    }

    pub(super) async fn group_discard(&self, group: &str, channel: String) -> Result<(), Failure> {
        let shard = consistent_hash(group, self.shards.len());
        let key = self.group_key(group);
        let mut command = redis::cmd("ZREM");
        command.arg(&key).arg(&channel);
        let _: i64 = self.shards[shard].run(&command).await?;
        self.shards[shard].changed(&key);
        self.process().memberships.leave(group, &channel);
        Ok(())
    }

    /// The members of `group`, stale ones dropped first: kept between
    /// calls where the server tracks them for us (`tracking`), else read.
    pub(super) async fn group_members(&self, group: &str) -> Result<Arc<Members>, Failure> {
        let shard = &self.shards[consistent_hash(group, self.shards.len())];
        let key = self.group_key(group);
        let now = unix_now();
        if let Some(tracked) = shard.tracked().await {
            let read = tracked.members(&key, now, self.group_expiry).await;
            if let Some(members) = from_tracked(shard, read)? {
                return Ok(members);
            }
        }
        // Two commands sent together, as channels_redis reads them, not a
        // script: a script's reply crosses Lua twice, which costs Redis as
        // much again for a big group. Not a pipeline either: on a
        // connection the server refuses (maxclients), a pipeline reports a
        // broken pipe instead of its words.
        let stale = older_than(now, self.group_expiry);
        let (trim, read) = (trim_group(&key, stale), read_group(&key, stale));
        let (_, names): (i64, Vec<String>) =
            futures_util::future::try_join(shard.run(&trim), shard.run(&read)).await?;
        Ok(Arc::new(Members::read(names)))
    }

    /// Sends each of `bodies` to every member of each of `groups`. The
    /// members are read first (one round trip per group's shard), then each
    /// queue key's copy, naming its members, is built here and written to
    /// its shard (`write_copies`). Building the copies in Lua instead would
    /// save the first round trip but cost the one shared Redis several
    /// times the CPU per call (docs/architecture.md, "group_send"); a group
    /// sent to lately saves it instead (`group_send_watched`).
    pub(super) async fn group_send(
        &self,
        groups: Vec<String>,
        bodies: Vec<Body>,
        default_capacity: i64,
        capacity_of: Option<CapacityOf>,
    ) -> Result<(), Failure> {
        if bodies.is_empty() {
            return Ok(());
        }
        let capacity_of = capacity_of.as_ref();
        if self
            .group_send_watched(&groups, &bodies, default_capacity, capacity_of)
            .await?
        {
            return Ok(());
        }
        let read = groups.iter().map(|group| self.group_members(group));
        let memberships = futures_util::future::try_join_all(read).await?;
        let batches = self.batches(&memberships, &bodies, default_capacity, capacity_of)?;
        let now = unix_now();
        let writes = batches.iter().map(|batch| self.write_copies(batch, now));
        let full: i64 = futures_util::future::try_join_all(writes)
            .await?
            .into_iter()
            .sum();
        self.delivered(&groups, bodies.len(), full, &memberships);
        Ok(())
    }

    /// A group_send to one group on the only server, in one round trip
    /// where the bytes allow: its members are WATCHed on the tracked
    /// connection, so kept ones need no PING, and the write goes there in
    /// MULTI/EXEC (`tracking::Watch`). False where it cannot, or if the
    /// group changed meanwhile: the caller then sends the usual way.
    async fn group_send_watched(
        &self,
        groups: &[String],
        bodies: &[Body],
        default_capacity: i64,
        capacity_of: Option<&CapacityOf>,
    ) -> Result<bool, Failure> {
        let ([group], [shard]) = (groups, self.shards.as_slice()) else {
            return Ok(false);
        };
        let Some(tracked) = shard.tracked().await else {
            return Ok(false);
        };
        // Another send has it: this one goes the usual way, alongside.
        let Some(mut watch) = tracked.watch() else {
            return Ok(false);
        };
        let key = self.group_key(group);
        let read = watch.members(&key, unix_now(), self.group_expiry).await;
        let Some(Some(members)) = from_tracked(shard, read)? else {
            return Ok(false);
        };
        let memberships = [members];
        let batches = self.batches(&memberships, bodies, default_capacity, capacity_of)?;
        let now = unix_now();
        let mut full = 0;
        for batch in &batches {
            if batch.bytes() > SCRIPT_BYTES {
                full += self.write_copies(batch, now).await?;
                continue;
            }
            let (keys, messages, numbers) = self.script_args(batch, now);
            let mut write = redis::cmd("EVALSHA");
            write
                .arg(scripts::GROUP_SEND.get_hash())
                .arg(keys.len())
                .arg(keys)
                .arg(messages)
                .arg(numbers);
            match from_tracked(shard, watch.send(&key, write).await)? {
                Some(Written::Ran(reply)) => full += reply.map_err(|err| shard.failed(err))?,
                // A restarted server may have sent some copies already:
                // some may arrive twice, none zero times (as `Shard::run`).
                None => full += self.write_copies(batch, now).await?,
                Some(Written::NotRun) => return Ok(false),
            }
        }
        self.delivered(groups, bodies.len(), full, &memberships);
        Ok(true)
    }

    /// Each shard's copies of `bodies` for `memberships`, sealed: one copy
    /// per queue key, naming every member on it. One batch per shard; on a
    /// cluster one per key (keys of a script must share a slot), all
    /// written at once, so each node gets its share pipelined.
    fn batches<'m>(
        &self,
        memberships: &'m [Arc<Members>],
        bodies: &[Body],
        default_capacity: i64,
        capacity_of: Option<&CapacityOf>,
    ) -> Result<Vec<Batch<'m>>, Failure> {
        let mut batches: Vec<Batch> = Vec::new();
        for members in memberships {
            let names = &members.names;
            let capacities = match capacity_of {
                Some(capacity_of) => capacity_of(names),
                None => vec![default_capacity; names.len()],
            };
            for copy in self.copies(names, capacities) {
                let sealed = bodies
                    .iter()
                    .map(|body| self.serializer.seal(body, &copy.members))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(Failure::Data)?;
                let joins = if self.shards[copy.shard].is_cluster() {
                    None
                } else {
                    batches.iter_mut().find(|batch| batch.shard == copy.shard)
                };
                match joins {
                    Some(batch) => {
                        batch.copies.push(copy);
                        batch.sealed.push(sealed);
                    }
                    None => batches.push(Batch {
                        shard: copy.shard,
                        copies: vec![copy],
                        sealed: vec![sealed],
                    }),
                }
            }
        }
        Ok(batches)
    }

    /// GROUP_SEND's KEYS, and its ARGV in two parts: the messages (not
    /// copied), then the numbers (see group_send.lua).
    fn script_args<'b>(&self, batch: &'b Batch, now: f64) -> ScriptArgs<'b> {
        let keys = batch.copies.iter().map(|copy| copy.key.as_str()).collect();
        let messages = batch.sealed.iter().flatten().map(Vec::as_slice).collect();
        let mut numbers = Vec::new();
        for copy in &batch.copies {
            numbers.extend(copy.capacity.to_redis_args());
        }
        let per = batch.sealed.first().map_or(0, Vec::len);
        numbers.extend(now.to_redis_args());
        numbers.extend(self.expiry.to_redis_args());
        numbers.extend(per.to_redis_args());
        (keys, messages, numbers)
    }

    /// Writes one shard's copies and returns how many of their keys were
    /// full. Small copies go in one script: one round trip, checked and
    /// added atomically. Handing bytes to Lua costs Redis about 1.8 ns
    /// each, as much as adding them, so bigger ones go as plain commands:
    /// the keys trimmed and counted, then those under capacity added in
    /// one transaction, in two round trips (channels_redis checks capacity
    /// this way too).
    async fn write_copies(&self, batch: &Batch<'_>, now: f64) -> Result<i64, Failure> {
        let shard = &self.shards[batch.shard];
        if batch.bytes() <= SCRIPT_BYTES {
            let (keys, messages, numbers) = self.script_args(batch, now);
            let mut invocation = scripts::GROUP_SEND.prepare_invoke();
            for key in keys {
                invocation.key(key);
            }
            for message in messages {
                invocation.arg(message);
            }
            for number in numbers {
                invocation.arg(number);
            }
            return shard.run(&invocation).await;
        }
        let cutoff = older_than(now, self.expiry);
        // ZCOUNT, as the scripts count: the README's ACL line has no ZCARD.
        let mut count = redis::pipe();
        for copy in &batch.copies {
            count
                .zrembyscore(&copy.key, 0, cutoff)
                .ignore()
                .zcount(&copy.key, "-inf", "+inf");
        }
        let sizes: Vec<i64> = shard.run(&count).await?;
        let mut add = transaction();
        let mut full = 0;
        for ((copy, messages), size) in batch.copies.iter().zip(&batch.sealed).zip(sizes) {
            if size >= copy.capacity {
                full += 1;
                continue;
            }
            // A microsecond apart, as the script does, to keep their order.
            for (at, message) in messages.iter().enumerate() {
                add.zadd(&copy.key, message, now + at as f64 * 1e-6);
            }
            add.expire(&copy.key, self.expiry as i64);
        }
        if full < batch.copies.len() {
            shard.run_atomically(add).await?;
        }
        Ok(full as i64)
    }

    /// One copy per queue key, naming every member on that key; its
    /// capacity is its first member's, as channels_redis has it.
    fn copies<'m>(&self, members: &'m [String], capacities: Vec<i64>) -> Vec<GroupCopy<'m>> {
        let mut copies: Vec<GroupCopy> = Vec::new();
        let mut by_queue: HashMap<&str, usize> = HashMap::new();
        for (member, capacity) in members.iter().zip(capacities) {
            let queue = non_local_name(member);
            match by_queue.get(queue) {
                Some(&at) => copies[at].members.push(member),
                None => {
                    by_queue.insert(queue, copies.len());
                    copies.push(GroupCopy {
                        key: self.key(queue),
                        shard: consistent_hash(queue, self.shards.len()),
                        members: vec![member],
                        capacity,
                    });
                }
            }
        }
        copies
    }

    /// Counts `per` messages sent to each of `groups`, whose `memberships`
    /// were written to but for `full` of their channels.
    fn delivered(&self, groups: &[String], per: usize, full: i64, memberships: &[Arc<Members>]) {
        let members: usize = memberships.iter().map(|members| members.names.len()).sum();
        let (full, members, per) = (full.max(0) as u64, members as u64, per as u64);
        self.stats.add(Count::GroupSends, groups.len() as u64 * per);
        let delivered = members.saturating_sub(full) * per;
        self.stats.add(Count::GroupDeliveries, delivered);
        let why = format_args!("{full} of {members} channels over capacity");
        let place = format!("group {}", groups.join(", "));
        self.stats
            .dropped(Reason::GroupFull, &place, full * per, why);
    }

    pub(super) async fn flush(&self) -> Result<(), Failure> {
        // Its groups are gone: nothing of them is renewed or added back.
        self.process().memberships = Memberships::default();
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

/// What the tracked connection answered, or None after it failed: it is
/// dropped, and the caller goes the shared connection's way. A server that
/// does not answer would not answer the shared one either: the caller
/// waits once.
fn from_tracked<T>(shard: &Shard, answer: redis::RedisResult<T>) -> Result<Option<T>, Failure> {
    match answer {
        Ok(value) => Ok(Some(value)),
        Err(err) if err.is_timeout() => {
            shard.drop_tracked();
            Err(shard.failed(err))
        }
        Err(err) => {
            log::debug!(target: "channels_rs", "Redis at {}: the tracked connection failed, going on with the shared one: {err}", shard.name);
            shard.drop_tracked();
            Ok(None)
        }
    }
}

/// Drops the group's members that joined at `stale` or before.
pub(super) fn trim_group(key: &str, stale: u64) -> redis::Cmd {
    let mut trim = redis::cmd("ZREMRANGEBYSCORE");
    trim.arg(key).arg(0).arg(stale);
    trim
}

/// The group's members that joined after `stale`, whether or not
/// `trim_group` has run yet.
pub(super) fn read_group(key: &str, stale: u64) -> redis::Cmd {
    let mut read = redis::cmd("ZRANGE");
    read.arg(key)
        .arg(format!("({stale}"))
        .arg("+inf")
        .arg("BYSCORE");
    read
}

/// Scores up to this one are `age` seconds old at `now`, as the scripts
/// reckon it (`math.floor(now) - age`), and are trimmed.
pub(super) fn older_than(now: f64, age: u64) -> u64 {
    (now.floor() as u64).saturating_sub(age)
}

fn glob_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
            _ => vec![c],
        })
        .collect()
}
