//! Group members kept in this process between group_sends, so that a big
//! group's names cross the network once, not on every call. Redis's
//! client-side caching keeps them fresh: the read goes on a RESP3
//! connection of its own with CLIENT TRACKING on, and Redis pushes an
//! invalidation on that connection when anyone changes a key it read. A
//! cached group is used only after a PING on the same connection: replies
//! and pushes arrive in order, so every change made before the PING has
//! been applied by the time its answer comes.
//!
//! One send at a time may instead write on that connection, in MULTI/EXEC,
//! with its group WATCHed since the members were read or PINGed (`Watch`):
//! EXEC refuses if anyone changed the group meanwhile, so a group sent to
//! lately needs no PING, and the send takes one round trip.
//!
//! A server that refuses (Redis before 6, an ACL user without HELLO or
//! CLIENT|TRACKING) leaves the layer reading every time, as channels_redis
//! does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::{
    AsyncConnectionConfig, Client, ErrorKind, FromRedisValue, PushInfo, PushKind, RedisError,
    RedisResult, ServerErrorKind, Value,
};

use super::connections::{resp3, Connection, Request};
use super::queues::{older_than, read_group, trim_group};

/// More groups than this, and the cache starts over: a site with a group
/// per user sends to each one rarely, and must not hold them all.
const MOST_GROUPS: usize = 4096;

/// The groups sent to most lately that stay WATCHed (see `Watch`): each
/// send WATCHes them all again, and Redis spends a little on each.
const MOST_WATCHED: usize = 16;

/// A group's members as last read, in ZRANGE's order.
pub struct Members {
    pub names: Vec<String>,
    /// The score (join time) of the longest-standing member; once that is
    /// stale, the group is trimmed and read again.
    oldest: f64,
    /// When the key expires: group_expiry after the newest member joined
    /// (each group_add sets it so). Redis may delete an expired key only
    /// when something touches it, and only then says so.
    expires: f64,
}

/// A tracked connection to one server, and what it has read.
pub struct Tracked {
    connection: Connection,
    /// The server's name, for the log.
    name: String,
    /// Of the master it was made to (see `sentinel`).
    pub generation: u64,
    cache: Arc<Mutex<Cache>>,
    /// When it last answered.
    answered: Mutex<Instant>,
    /// Held by the one send that may write here (`watch`).
    turn: tokio::sync::Mutex<()>,
    /// Set once the server refused WATCH, MULTI or EXEC (an ACL user
    /// without them): every send then PINGs first.
    refused: AtomicBool,
}

/// The right to send in one round trip on the tracked connection. EXEC
/// forgets every WATCH, so each send WATCHes the groups lately sent to
/// again right after its EXEC, and the next waits for that answer: a
/// change made in between has been pushed before it.
pub struct Watch<'t> {
    tracked: &'t Tracked,
    _turn: tokio::sync::MutexGuard<'t, ()>,
}

#[derive(Default)]
struct Cache {
    groups: HashMap<Vec<u8>, Entry>,
    /// Counts the times everything was forgotten: a read that began
    /// before is not kept.
    epoch: u64,
    /// The groups WATCHed on the connection, most lately sent to last.
    watched: Vec<String>,
    /// Set when a WATCHed group changed: EXEC refuses until UNWATCH.
    dirty: bool,
    /// Groups WATCHed but not listed: written the plain way, with no EXEC
    /// to forget them. Past MOST_WATCHED, the next send UNWATCHes.
    unlisted: usize,
}

#[derive(Default)]
struct Entry {
    /// Counts invalidations of this key: a read that began before one is
    /// not kept, as it may predate the change.
    version: u64,
    members: Option<Arc<Members>>,
}

impl Members {
    /// Members read without tracking: never kept.
    pub fn read(names: Vec<String>) -> Self {
        Members {
            names,
            oldest: f64::NEG_INFINITY,
            expires: f64::NEG_INFINITY,
        }
    }
}

impl Cache {
    fn invalidated(&mut self, push: PushInfo) {
        let keys = match push.data.first() {
            Some(Value::Array(keys)) if push.kind == PushKind::Invalidate => keys,
            // A FLUSHALL (no key named), or the connection closed.
            _ => return self.forget(),
        };
        for key in keys {
            if let Value::BulkString(key) = key {
                self.changed(key);
            }
        }
    }

    fn changed(&mut self, key: &[u8]) {
        if let Some(entry) = self.groups.get_mut(key) {
            entry.version += 1;
            entry.members = None;
        }
        self.dirty |= self.watched.iter().any(|group| group.as_bytes() == key);
    }

    fn forget(&mut self) {
        self.groups.clear();
        self.epoch += 1;
        self.dirty = true;
    }

    fn members(&self, key: &str) -> Option<&Arc<Members>> {
        self.groups.get(key.as_bytes())?.members.as_ref()
    }

    /// The group's kept members, unless stale: as of the connection's
    /// last answer.
    fn kept(&self, key: &str, now: f64, expiry: u64) -> Option<Arc<Members>> {
        let stale = older_than(now, expiry);
        let members = self.members(key)?;
        let fresh = members.oldest > stale as f64 && now < members.expires;
        fresh.then(|| Arc::clone(members))
    }

    /// The WATCHed groups whose members are kept, less the oldest if there
    /// is no room for `key`, then `key`.
    fn to_watch(&self, key: &str) -> Vec<String> {
        let mut groups: Vec<String> = self
            .watched
            .iter()
            .filter(|group| *group != key && self.members(group).is_some())
            .cloned()
            .collect();
        if groups.len() >= MOST_WATCHED {
            groups.remove(0);
        }
        groups.push(key.to_owned());
        groups
    }
}

impl Tracked {
    /// Connects to the server `client` reaches, with tracking on.
    pub async fn connect(
        client: &Client,
        name: &str,
        generation: u64,
        connect: Duration,
        reply: Duration,
    ) -> RedisResult<Tracked> {
        let client = resp3(client)?;
        let cache = Arc::new(Mutex::new(Cache::default()));
        let pushed = Arc::clone(&cache);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(reply))
            .set_push_sender(move |push: PushInfo| {
                lock(&pushed).invalidated(push);
                Ok::<(), ()>(())
            });
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let mut tracking = redis::cmd("CLIENT");
        tracking.arg("TRACKING").arg("ON");
        tracking.query_async::<()>(&mut connection).await?;
        Ok(Tracked {
            connection: Connection::Server(connection),
            name: name.to_owned(),
            generation,
            cache,
            answered: Mutex::new(Instant::now()),
            turn: tokio::sync::Mutex::default(),
            refused: AtomicBool::new(false),
        })
    }

    /// The members of the group at `key` who joined after `stale`, now,
    /// its members expiring `expiry` seconds after they join. Kept ones
    /// need one PING; others are read, stale members trimmed first as
    /// channels_redis does, in one round trip.
    pub async fn members(&self, key: &str, now: f64, expiry: u64) -> RedisResult<Arc<Members>> {
        self.fetch(key, now, expiry, None).await
    }

    /// The right to write here in one round trip, unless another send has
    /// it or the server refuses transactions.
    pub fn watch(&self) -> Option<Watch<'_>> {
        if self.refused.load(Ordering::Relaxed) {
            return None;
        }
        let turn = self.turn.try_lock().ok()?;
        Some(Watch {
            tracked: self,
            _turn: turn,
        })
    }

    /// `members`; with `watch`, that pipeline first and the group WATCHed
    /// from then on: WATCH stands for the PING, and follows the trim.
    async fn fetch(
        &self,
        key: &str,
        now: f64,
        expiry: u64,
        watch: Option<&redis::Pipeline>,
    ) -> RedisResult<Arc<Members>> {
        if lock(&self.cache).members(key).is_some() {
            let mut barrier = watch.cloned().unwrap_or_default();
            match watch {
                Some(_) => barrier.cmd("WATCH").arg(key).ignore(),
                None => barrier.cmd("PING").ignore(),
            };
            self.run::<()>(&barrier).await?;
            if let Some(members) = lock(&self.cache).kept(key, now, expiry) {
                return Ok(members);
            }
        }
        let (epoch, version) = {
            let cache = &mut *lock(&self.cache);
            let entry = cache.groups.entry(key.as_bytes().to_vec()).or_default();
            (cache.epoch, entry.version)
        };
        let stale = older_than(now, expiry);
        let mut read = watch.cloned().unwrap_or_default();
        read.add_command(trim_group(key, stale)).ignore();
        if watch.is_some() {
            read.cmd("WATCH").arg(key).ignore();
        }
        read.add_command(read_group(key, stale));
        read.cmd("ZRANGE").arg(key).arg(0).arg(0).arg("WITHSCORES");
        read.cmd("ZRANGE")
            .arg(key)
            .arg(-1)
            .arg(-1)
            .arg("WITHSCORES");
        let (names, oldest, newest): (Vec<String>, Value, Value) = self.run(&read).await?;
        // An empty group stays empty until someone adds to it, and Redis
        // says so: it tracks a key read while it did not exist too.
        let members = Arc::new(Members {
            names,
            oldest: only_score(&oldest).unwrap_or(f64::INFINITY),
            expires: only_score(&newest).map_or(f64::INFINITY, |at| at + expiry as f64),
        });
        let mut cache = lock(&self.cache);
        if cache.epoch == epoch {
            if cache.groups.len() > MOST_GROUPS {
                cache.forget();
            } else if let Some(entry) = cache.groups.get_mut(key.as_bytes()) {
                if entry.version == version {
                    entry.members = Some(Arc::clone(&members));
                }
            }
        }
        Ok(members)
    }

    /// Whether `err` refused a transaction's command; if so, sends on this
    /// connection PING first from now on.
    fn refuse(&self, err: &RedisError) -> bool {
        let refused = err.kind() == ErrorKind::Server(ServerErrorKind::NoPerm);
        if refused && !self.refused.swap(true, Ordering::Relaxed) {
            log::info!(target: "channels_rs", "Redis at {}: group_send PINGs before it writes, as the server refuses a transaction: {err}", self.name);
        }
        refused
    }

    /// Forgets the group at `key`, changed by this process.
    pub fn forget(&self, key: &str) {
        lock(&self.cache).changed(key.as_bytes());
    }

    /// How long since it last answered.
    pub fn idle(&self) -> Duration {
        lock(&self.answered).elapsed()
    }

    async fn run<T: FromRedisValue + Send>(&self, request: &impl Request) -> RedisResult<T> {
        let mut connection = self.connection.clone();
        // The connection's response timeout bounds the wait.
        let reply = request.send(&mut connection).await?;
        *lock(&self.answered) = Instant::now();
        Ok(reply)
    }
}

/// What became of a write sent by `Watch::send`.
pub enum Written {
    /// It ran, with this reply.
    Ran(RedisResult<i64>),
    /// It did not run: a WATCHed group changed, or the server refused the
    /// transaction (a script it lost, a command refused when queued).
    NotRun,
}

impl From<RedisResult<Value>> for Written {
    /// A script's reply: one the server lost (NOSCRIPT) did not run.
    fn from(reply: RedisResult<Value>) -> Self {
        match reply {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                Written::NotRun
            }
            reply => Written::Ran(reply.and_then(|full| Ok(i64::from_redis_value(full)?))),
        }
    }
}

impl Watch<'_> {
    /// `Tracked::members`, the group WATCHed until this send's EXEC; kept
    /// members of one the last EXEC left WATCHed take no round trip. None
    /// if the server refuses WATCH.
    pub async fn members(
        &mut self,
        key: &str,
        now: f64,
        expiry: u64,
    ) -> RedisResult<Option<Arc<Members>>> {
        let mut first = redis::pipe();
        {
            let cache = &mut *lock(&self.tracked.cache);
            let listed = cache.watched.iter().any(|group| group == key);
            if !cache.dirty && listed {
                if let Some(members) = cache.kept(key, now, expiry) {
                    return Ok(Some(members));
                }
            }
            let dirty = std::mem::take(&mut cache.dirty);
            if !listed {
                cache.unlisted += 1;
            }
            if dirty || cache.unlisted > MOST_WATCHED {
                // EXEC would refuse, or too many are WATCHed: start again
                // with the groups still kept (the group itself after its
                // trim, in `fetch`).
                cache.unlisted = 0;
                let groups = cache.to_watch(key);
                first.cmd("UNWATCH").ignore();
                if let [others @ .., _] = groups.as_slice() {
                    if !others.is_empty() {
                        first.cmd("WATCH").arg(others).ignore();
                    }
                }
                cache.watched = groups;
            }
        }
        match self.tracked.fetch(key, now, expiry, Some(&first)).await {
            Ok(members) => Ok(Some(members)),
            Err(err) if self.tracked.refuse(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Runs `write` (one script call) between MULTI and EXEC, then WATCHes
    /// `key` and the other groups lately sent to again. An error says the
    /// connection failed, and may be left inside MULTI.
    pub async fn send(&mut self, key: &str, write: redis::Cmd) -> RedisResult<Written> {
        let groups = {
            let cache = &mut *lock(&self.tracked.cache);
            let groups = cache.to_watch(key);
            // Until WATCH answers, a change to any of either list's groups
            // may leave the connection dirty.
            if !cache.watched.iter().any(|group| group == key) {
                cache.watched.push(key.to_owned());
            }
            groups
        };
        let mut transaction = redis::pipe();
        transaction.ignore_errors().cmd("MULTI");
        transaction.add_command(write);
        transaction.cmd("EXEC").cmd("WATCH").arg(&groups);
        let replies: Vec<RedisResult<Value>> = self.tracked.run(&transaction).await?;
        let Ok([multi, write, exec, watch]) = <[_; 4]>::try_from(replies) else {
            return Err((
                ErrorKind::UnexpectedReturnType,
                "a transaction without four replies",
            )
                .into());
        };
        if watch.is_ok() {
            let cache = &mut *lock(&self.tracked.cache);
            cache.watched = groups;
            cache.unlisted = 0;
        }
        if let Err(err) = multi {
            // Refused MULTI: the write ran on its own.
            self.tracked.refuse(&err);
            return Ok(Written::from(write));
        }
        match exec {
            Ok(Value::Nil) => Ok(Written::NotRun),
            Ok(Value::Array(mut replies)) if replies.len() == 1 => Ok(Written::from(
                replies.pop().unwrap_or(Value::Nil).extract_error(),
            )),
            Ok(reply) => Err((
                ErrorKind::UnexpectedReturnType,
                "EXEC",
                format!("{reply:?}"),
            )
                .into()),
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::ExecAbort) => {
                Ok(Written::NotRun)
            }
            // EXEC itself refused: MULTI is still open.
            Err(err) => {
                self.tracked.refuse(&err);
                Err(err)
            }
        }
    }
}

/// The score of the one member a RESP3 ZRANGE WITHSCORES returned: its
/// pairs come nested, the score a double. None for an empty group.
fn only_score(reply: &Value) -> Option<f64> {
    let Value::Array(pairs) = reply else {
        return None;
    };
    match pairs.first()? {
        Value::Array(pair) => match pair.get(1)? {
            Value::Double(score) => Some(*score),
            _ => None,
        },
        _ => None,
    }
}

fn lock<T>(value: &Mutex<T>) -> MutexGuard<'_, T> {
    value
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
