//! Connections to each shard, owned by the layer and the runtime, never by an
//! event loop. Commands share one multiplexed connection per shard (so
//! concurrent callers are pipelined); blocking pops take a dedicated one from
//! a small pool, since they would stall everything queued behind them.
//! Connections made before a fork are not used in the child.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, RedisResult};

/// Where a shard's connections come from.
pub enum Source {
    Direct(Client),
    /// Asked for the current master at every (re)connection, which is how a
    /// failover is followed.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// How long to wait before reporting an error: for a connection, and for a
/// reply to a non-blocking command.
#[derive(Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub reply: Duration,
}

struct PerProcess {
    pid: u32,
    shared: Option<MultiplexedConnection>,
    idle_blocking: Vec<MultiplexedConnection>,
}

pub struct Shard {
    source: Source,
    timeouts: Timeouts,
    /// What the error messages call this shard: its address, no password.
    pub name: String,
    state: Mutex<PerProcess>,
}

impl PerProcess {
    fn current() -> Self {
        PerProcess {
            pid: std::process::id(),
            shared: None,
            idle_blocking: Vec::new(),
        }
    }
}

impl Shard {
    pub fn new(source: Source, timeouts: Timeouts, name: String) -> Self {
        let state = Mutex::new(PerProcess::current());
        Shard {
            source,
            timeouts,
            name,
            state,
        }
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut PerProcess) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.pid != std::process::id() {
            // Inherited from the parent: their sockets are the parent's.
            std::mem::forget(std::mem::replace(&mut *state, PerProcess::current()));
        }
        f(&mut state)
    }

    /// A new connection, trying again while the server refuses or cannot be
    /// reached (a restart, a failover) until the connect timeout has passed.
    async fn connect(
        &self,
        response_timeout: Option<Duration>,
    ) -> RedisResult<MultiplexedConnection> {
        let deadline = Instant::now() + self.timeouts.connect;
        let mut pause = Duration::from_millis(25);
        loop {
            let attempt =
                tokio::time::timeout_at(deadline.into(), self.connect_once(response_timeout));
            let err = match attempt.await {
                Ok(Ok(connection)) => return Ok(connection),
                Ok(Err(err)) => err,
                Err(_) => RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)),
            };
            if !unreachable(&err) || Instant::now() + pause >= deadline {
                return Err(err);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(400));
        }
    }

    async fn connect_once(
        &self,
        response_timeout: Option<Duration>,
    ) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeouts.connect))
            .set_response_timeout(response_timeout);
        let client = match &self.source {
            Source::Direct(client) => client.clone(),
            Source::Sentinel(sentinel) => {
                let asking = async { sentinel.lock().await.async_get_client().await };
                tokio::time::timeout(self.timeouts.connect, asking)
                    .await
                    .map_err(|_| {
                        RedisError::from((ErrorKind::Io, "no Sentinel answered in time"))
                    })??
            }
        };
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// The shared connection for non-blocking commands.
    pub async fn shared(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(connection) = self.with_state(|state| state.shared.clone()) {
            return Ok(connection);
        }
        let connection = self.connect(Some(self.timeouts.reply)).await?;
        Ok(self.with_state(|state| state.shared.get_or_insert(connection).clone()))
    }

    /// Forgets the shared connection after an error, so the next call reconnects.
    pub fn drop_shared(&self) {
        self.with_state(|state| state.shared = None);
    }

    /// A connection of its own for a blocking pop; give it back with `release`.
    pub async fn blocking(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(connection) = self.with_state(|state| state.idle_blocking.pop()) {
            return Ok(connection);
        }
        // No reply timeout: a blocking pop legitimately waits.
        self.connect(None).await
    }

    /// Returns a blocking connection that just worked; one that failed is
    /// simply dropped.
    pub fn release(&self, connection: MultiplexedConnection) {
        self.with_state(|state| state.idle_blocking.push(connection));
    }

    pub fn close(&self) {
        self.with_state(|state| {
            state.shared = None;
            state.idle_blocking.clear();
        });
    }
}

/// Whether `err` means the server is (for now) out of reach, rather than
/// refusing us for a reason that trying again will not change.
pub fn unreachable(err: &RedisError) -> bool {
    err.is_connection_refusal() || err.is_connection_dropped() || err.is_timeout()
}
