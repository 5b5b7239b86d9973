//! Group members kept in this process between group_sends, so that a big
//! group's names cross the network once, not on every call. Redis's
//! client-side caching keeps them fresh: the read goes on a RESP3
//! connection of its own with CLIENT TRACKING on, and Redis pushes an
//! invalidation on that connection when anyone changes a key it read. A
//! cached group is used only after a PING on the same connection: replies
//! and pushes arrive in order, so every change made before the PING has
//! been applied by the time its answer comes.
//!
//! A server that refuses (Redis before 6, an ACL user without HELLO or
//! CLIENT|TRACKING) leaves the layer reading every time, as channels_redis
//! does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::{
    AsyncConnectionConfig, Client, FromRedisValue, ProtocolVersion, PushInfo, PushKind,
    RedisResult, Value,
};

use super::connections::{Connection, Request};
use super::queues::{older_than, read_group, trim_group};

/// More groups than this, and the cache starts over: a site with a group
/// per user sends to each one rarely, and must not hold them all.
const MOST_GROUPS: usize = 4096;

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
    /// Of the master it was made to (see `sentinel`).
    pub generation: u64,
    cache: Arc<Mutex<Cache>>,
    /// When it last answered.
    answered: Mutex<Instant>,
}

#[derive(Default)]
struct Cache {
    groups: HashMap<Vec<u8>, Entry>,
    /// Counts the times everything was forgotten: a read that began
    /// before is not kept.
    epoch: u64,
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
    }

    fn forget(&mut self) {
        self.groups.clear();
        self.epoch += 1;
    }

    fn members(&self, key: &str) -> Option<&Arc<Members>> {
        self.groups.get(key.as_bytes())?.members.as_ref()
    }
}

impl Tracked {
    /// Connects to the server `client` reaches, with tracking on.
    pub async fn connect(
        client: &Client,
        generation: u64,
        connect: Duration,
        reply: Duration,
    ) -> RedisResult<Tracked> {
        let info = client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(settings))?;
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
            generation,
            cache,
            answered: Mutex::new(Instant::now()),
        })
    }

    /// The members of the group at `key` who joined after `stale`, now,
    /// its members expiring `expiry` seconds after they join. Kept ones
    /// need one PING; others are read, stale members trimmed first as
    /// channels_redis does, in one round trip.
    pub async fn members(&self, key: &str, now: f64, expiry: u64) -> RedisResult<Arc<Members>> {
        let stale = older_than(now, expiry);
        let fresh = |cache: &Cache| {
            let members = cache.members(key)?;
            let fresh = members.oldest > stale as f64 && now < members.expires;
            fresh.then(|| Arc::clone(members))
        };
        if lock(&self.cache).members(key).is_some() {
            let ping = redis::cmd("PING");
            self.run::<()>(&ping).await?;
            if let Some(members) = fresh(&lock(&self.cache)) {
                return Ok(members);
            }
        }
        let (epoch, version) = {
            let cache = &mut *lock(&self.cache);
            let entry = cache.groups.entry(key.as_bytes().to_vec()).or_default();
            (cache.epoch, entry.version)
        };
        let mut read = redis::pipe();
        read.add_command(trim_group(key, stale)).ignore();
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
