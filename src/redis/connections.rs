//! Connections to each shard, owned by the layer and the runtime, never by an
//! event loop. Commands share one multiplexed connection per shard (so
//! concurrent callers are pipelined); blocking pops take a dedicated one from
//! a small pool, since they would stall everything queued behind them.
//! Connections made before a fork are not used in the child, nor those made
//! to a master Sentinel has since replaced.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection, PubSub};
use redis::cluster::ClusterClient;
use redis::cluster_async::{ClusterConnection as Cluster, Connect};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind, FromRedisValue,
    IntoConnectionInfo, ProtocolVersion, RedisError, RedisResult, ServerErrorKind, TlsCertificates,
};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::backoff::{paced, Outage};
use super::failure::{passing, Failure};
use super::refusal::{self, words, Refusals};
use super::sentinel::Watched;
use super::tracking::Tracked;
use crate::process::{renew, PerProcess};
use crate::stats::{Count, Stats};

/// Where a shard's connections come from.
pub enum Source {
    Direct(Box<Client>),
    Sentinel(Arc<Watched>),
    /// A Redis Cluster: its connections route each command by key slot and
    /// follow MOVED/ASK redirections and topology changes by themselves.
    Cluster {
        shared: Box<ClusterClient>,
        blocking: Box<ClusterClient>,
        nodes: Box<Nodes>,
    },
}

/// How to reach one node of a cluster by itself, for SUBSCRIBE: the first
/// startup node's credentials and TLS settings, at any node's address.
pub struct Nodes {
    pub template: ConnectionInfo,
    pub certificates: TlsCertificates,
    pub startup: Vec<(String, u16)>,
}

impl Nodes {
    fn client(&self, host: &str, port: u16) -> RedisResult<Client> {
        let host = host.to_owned();
        let addr = match self.template.addr() {
            ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        client(self.template.clone().set_addr(addr), &self.certificates)
    }
}

/// `info` without the CLIENT SETINFO redis-rs sends on connecting. Redis
/// 7.0 has no such command, so an ACL line that grants it fails there; and
/// on Redis 7.2+ and Valkey a user without it would fill ACL LOG with one
/// denial per connection.
pub fn quiet(info: ConnectionInfo) -> ConnectionInfo {
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    info.set_redis_settings(settings)
}

/// A client like `client` that speaks RESP3 (authenticating with HELLO).
pub fn resp3(client: &Client) -> RedisResult<Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(settings))
}

/// `err`, a failure to connect with `client`; if the server refused the
/// login, in its own words: redis-rs reports a refused AUTH only as
/// "Password authentication failed", while a refused HELLO keeps the reply
/// (WRONGPASS, or the ACL's reason).
async fn in_servers_words(
    err: RedisError,
    client: &Client,
    config: &AsyncConnectionConfig,
) -> RedisError {
    if err.kind() != ErrorKind::AuthenticationFailed {
        return err;
    }
    let Ok(probe) = resp3(client) else {
        return err;
    };
    match probe
        .get_multiplexed_async_connection_with_config(config)
        .await
    {
        Err(said) if said.code().is_some() => said,
        _ => err,
    }
}

/// A client for `info`, trusting and presenting `certificates` over TLS.
pub fn client(info: ConnectionInfo, certificates: &TlsCertificates) -> RedisResult<Client> {
    let info = quiet(info);
    if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        Client::build_with_tls(info, certificates.clone())
    } else {
        Client::open(info)
    }
}

/// Told of each connection to a cluster node made (see `Shard::came_back`).
static NODES_MADE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// A connection to one node of a cluster, made the way redis-rs makes its
/// own, but quiet (no CLIENT SETINFO) and paced while the node refuses.
#[derive(Clone)]
pub struct Node(MultiplexedConnection);

impl Connect for Node {
    fn connect_with_config<'a, T>(info: T, config: AsyncConnectionConfig) -> RedisFuture<'a, Self>
    where
        T: IntoConnectionInfo + Send + 'a,
    {
        Box::pin(async move {
            let info = quiet(info.into_connection_info()?);
            let address = info.addr().to_string();
            let client = Client::open(info)?;
            let connecting = client.get_multiplexed_async_connection_with_config(&config);
            match paced(address, connecting).await {
                Ok(connection) => {
                    NODES_MADE.notify_waiters();
                    Ok(Node(connection))
                }
                Err(err) => Err(in_servers_words(err, &client, &config).await),
            }
        })
    }
}

impl ConnectionLike for Node {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// A connection to a whole cluster.
pub type ClusterConnection = Cluster<Node>;

/// A connection to one server, or to a whole cluster.
#[derive(Clone)]
pub enum Connection {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Server(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Server(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

/// A connection of its own for a blocking pop; give it back with `release`.
pub struct Blocking {
    pub connection: Connection,
    generation: u64,
}

/// How long to wait before reporting an error: for a connection, and for a
/// reply to a non-blocking command.
#[derive(Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub reply: Duration,
    /// redis-py's `health_check_interval`: a connection idle this long is
    /// PINGed before use, and a subscriber connection as often.
    pub health_check: Option<Duration>,
}

/// This process's connections to a shard (see `process`).
#[derive(Default)]
struct Connections {
    /// With the generation of the master each was made to (see `sentinel`).
    shared: Option<(u64, Connection)>,
    /// When the shared connection was last handed out.
    used: Option<Instant>,
    /// Held while the shared connection is made, so that callers arriving
    /// together make one, not one each.
    connecting: Arc<tokio::sync::Mutex<()>>,
    /// When making it last failed, and why: those who waited meanwhile
    /// fail with it rather than each try again in turn.
    connect_failed: Option<(Instant, RedisError)>,
    /// The generation of a shared connection an error dropped: the next
    /// one made is a reconnect (a failover, if to another master).
    lost: Option<u64>,
    idle_blocking: Vec<Blocking>,
    tracking: Tracking,
    /// Held while the tracked connection is made.
    tracking_turn: Arc<tokio::sync::Mutex<()>>,
}

/// The connection that keeps group members (see `tracking`).
#[derive(Default)]
enum Tracking {
    #[default]
    Untried,
    Live(Arc<Tracked>),
    /// The server refuses tracking: members are read every time.
    Refused,
    /// Made or used in vain at this time: not tried again for a second.
    Failed(Instant),
}

pub struct Shard {
    source: Source,
    pub timeouts: Timeouts,
    /// What the error messages call this shard: its address, no password.
    pub name: String,
    /// Whether, and since when, the shard is out of reach.
    pub outage: Outage,
    /// What the shard refused lately (see `refusal`).
    pub refusals: Refusals,
    /// Why it last failed, until it answers again: what a health check
    /// that ran out of time names.
    trouble: Mutex<Option<String>>,
    troubled: AtomicBool,
    /// Whether a connection was made yet, and one broke since the last
    /// was made; the master generation of the last (see `came_back`).
    made: AtomicBool,
    lost: AtomicBool,
    made_for: AtomicU64,
    back: tokio::sync::Notify,
    /// The layer's, where reconnects and failovers are counted.
    pub stats: Arc<Stats>,
    state: PerProcess<Connections>,
}

impl Shard {
    pub fn new(source: Source, timeouts: Timeouts, name: String, stats: Arc<Stats>) -> Self {
        Shard {
            source,
            timeouts,
            name,
            outage: Outage::default(),
            refusals: Refusals::default(),
            trouble: Mutex::new(None),
            troubled: AtomicBool::new(false),
            made: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            made_for: AtomicU64::new(0),
            back: tokio::sync::Notify::new(),
            stats,
            // The parent's sockets stay the parent's.
            state: PerProcess::new(Connections::default(), |c| renew(c, Connections::default())),
        }
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut Connections) -> R) -> R {
        f(&mut self.state.lock())
    }

    /// A new connection, trying again while the server refuses or cannot be
    /// reached (a restart, a failover) until the connect timeout has passed.
    /// The first attempt goes at once; later ones wait as the shard's outage
    /// says, which every caller shares.
    async fn connect(&self, response_timeout: Option<Duration>) -> RedisResult<(u64, Connection)> {
        let deadline = Instant::now() + self.timeouts.connect;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let err = match within(left, self.connect_once(response_timeout)).await {
                Ok((generation, connection)) => {
                    self.connected(generation);
                    return Ok((generation, connection));
                }
                Err(err) => err,
            };
            self.note_trouble(&err);
            if !unreachable(&err) {
                return Err(err);
            }
            self.outage.failed(&self.name, &err);
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = self.outage.wait();
            if wait >= left {
                // No attempt fits before the deadline: fail at it, as promised.
                tokio::time::sleep(left).await;
                return Err(err);
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn connect_once(
        &self,
        response_timeout: Option<Duration>,
    ) -> RedisResult<(u64, Connection)> {
        if let Source::Cluster {
            shared, blocking, ..
        } = &self.source
        {
            // Timeouts were set when the cluster clients were built.
            let client = if response_timeout.is_some() {
                shared
            } else {
                blocking
            };
            let connection = client.get_async_generic_connection::<Node>().await?;
            return Ok((0, Connection::Cluster(connection)));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeouts.connect))
            .set_response_timeout(response_timeout);
        let (client, generation) = self.client().await?;
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(connection) => Ok((generation, Connection::Server(connection))),
            Err(err) => Err(in_servers_words(err, &client, &config).await),
        }
    }

    /// A client for the server (the current master, with Sentinel), and
    /// the generation of that master.
    async fn client(&self) -> RedisResult<(Client, u64)> {
        match &self.source {
            Source::Direct(client) => Ok((Client::clone(client), 0)),
            Source::Sentinel(watched) => watched.master(self.timeouts.connect).await,
            Source::Cluster { .. } => unreachable!("cluster connections come from its clients"),
        }
    }

    /// A new connection for SUBSCRIBE (the pub/sub layer). On a cluster,
    /// PUBLISH reaches every node, so any node that answers will do: the
    /// masters the cluster names first, then the startup nodes.
    pub async fn subscriber(&self) -> RedisResult<PubSub> {
        let clients = match &self.source {
            Source::Cluster { nodes, .. } => {
                let mut addresses = self.masters().await.unwrap_or_default();
                addresses.extend(nodes.startup.iter().cloned());
                let mut seen = std::collections::HashSet::new();
                addresses.retain(|address| seen.insert(address.clone()));
                let clients = addresses
                    .iter()
                    .map(|(host, port)| nodes.client(host, *port));
                clients.collect::<RedisResult<Vec<_>>>()?
            }
            _ => vec![self.client().await?.0],
        };
        let mut failure = None;
        for client in clients {
            match within(self.timeouts.connect, client.get_async_pubsub()).await {
                Ok(pubsub) => return Ok(pubsub),
                Err(err) => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(self.timeouts.connect));
                    failure = Some(in_servers_words(err, &client, &config).await);
                }
            }
        }
        Err(failure.expect("a cluster has at least one startup node"))
    }

    /// The connection that keeps group members fresh, if the server
    /// tracks keys for it. Not on a cluster: a group's slot may move.
    pub async fn tracked(&self) -> Option<Arc<Tracked>> {
        if self.is_cluster() {
            return None;
        }
        let current = self.generation();
        let kept = || {
            self.with_state(|state| match &state.tracking {
                // One idle past the health check interval is made anew, not
                // PINGed: a PING that times out would cost the caller twice.
                Tracking::Live(tracked)
                    if tracked.generation == current && !self.due(tracked.idle()) =>
                {
                    Err(Some(Arc::clone(tracked)))
                }
                Tracking::Refused => Err(None),
                Tracking::Failed(at) if at.elapsed() < Duration::from_secs(1) => Err(None),
                // Not before the shared connection proves the server there:
                // while it is not, a caller waits on one connection only.
                _ if state.shared.is_none() => Err(None),
                _ => Ok(Arc::clone(&state.tracking_turn)),
            })
        };
        let turn = match kept() {
            Ok(turn) => turn,
            Err(tracked) => return tracked,
        };
        let _turn = turn.lock().await;
        if let Err(tracked) = kept() {
            return tracked;
        }
        let (client, generation) = self.client().await.ok()?;
        let timeouts = self.timeouts;
        let made = Tracked::connect(
            &client,
            &self.name,
            generation,
            timeouts.connect,
            timeouts.reply,
        )
        .await;
        let (tracking, tracked) = match made {
            Ok(tracked) => {
                let tracked = Arc::new(tracked);
                (Tracking::Live(Arc::clone(&tracked)), Some(tracked))
            }
            Err(err) if breaks(&err) || err.is_timeout() => {
                (Tracking::Failed(Instant::now()), None)
            }
            Err(err) => {
                log::info!(target: "channels_rs", "Redis at {}: group_send reads each group's members every time, as the server refuses client-side caching: {err}", self.name);
                (Tracking::Refused, None)
            }
        };
        self.with_state(|state| state.tracking = tracking);
        tracked
    }

    /// Forgets what is kept of the group at `key`, which this process
    /// just changed: the next group_send need not wait for Redis to say so.
    pub fn changed(&self, key: &str) {
        self.with_state(|state| {
            if let Tracking::Live(tracked) = &state.tracking {
                tracked.forget(key);
            }
        });
    }

    /// Forgets the tracked connection after it failed; members are read
    /// on the shared one meanwhile.
    pub fn drop_tracked(&self) {
        self.with_state(|state| state.tracking = Tracking::Failed(Instant::now()));
    }

    /// The generation of the master connections must be made to now.
    fn generation(&self) -> u64 {
        match &self.source {
            Source::Direct(_) | Source::Cluster { .. } => 0,
            Source::Sentinel(watched) => watched.generation(),
        }
    }

    /// Completes when Sentinel names another master (never, without one):
    /// a pop blocked on the old master gives up then.
    pub async fn moved(&self) {
        match &self.source {
            Source::Direct(_) | Source::Cluster { .. } => std::future::pending().await,
            Source::Sentinel(watched) => watched.moved().await,
        }
    }

    /// The shared connection for non-blocking commands.
    pub async fn shared(&self) -> RedisResult<Connection> {
        let current = self.generation();
        let kept = || {
            self.with_state(|state| match &state.shared {
                Some((generation, connection)) if *generation == current => {
                    let idle = state.used.replace(Instant::now()).map(|at| at.elapsed());
                    Some((connection.clone(), idle))
                }
                _ => None,
            })
        };
        if let Some((connection, idle)) = kept() {
            return self.checked(connection, idle).await;
        }
        let asked = Instant::now();
        let connecting = self.with_state(|state| Arc::clone(&state.connecting));
        let _turn = connecting.lock().await;
        // Made, or failed, while this caller waited for its turn?
        if let Some((connection, _)) = kept() {
            return Ok(connection);
        }
        let failed = self.with_state(|state| state.connect_failed.clone());
        if let Some((_, err)) = failed.filter(|(at, _)| *at > asked) {
            return Err(err);
        }
        match self.connect(Some(self.timeouts.reply)).await {
            Ok((generation, connection)) => {
                let replaced = self.with_state(|state| {
                    state.used = Some(Instant::now());
                    let stale = state.shared.replace((generation, connection.clone()));
                    state.lost.take().or(stale.map(|(old, _)| old))
                });
                if let Some(old) = replaced {
                    self.stats.add(Count::Reconnects, 1);
                    if old != generation {
                        self.stats.add(Count::Failovers, 1);
                    }
                }
                Ok(connection)
            }
            Err(err) => {
                self.with_state(|state| state.connect_failed = Some((Instant::now(), err.clone())));
                Err(err)
            }
        }
    }

    /// The shared `connection`, PINGed first if it was `idle` longer than
    /// the health check interval; one that does not answer is replaced.
    async fn checked(
        &self,
        mut connection: Connection,
        idle: Option<Duration>,
    ) -> RedisResult<Connection> {
        if !idle.is_some_and(|idle| self.due(idle)) {
            return Ok(connection);
        }
        let ping = redis::cmd("PING");
        match within(self.timeouts.reply, ping.send::<Value>(&mut connection)).await {
            Ok(_) => Ok(connection),
            Err(err) => {
                log::info!(target: "channels_rs", "Redis at {}: an idle connection did not answer PING, reconnecting: {err}", self.name);
                self.drop_shared();
                Box::pin(self.shared()).await
            }
        }
    }

    /// Whether a connection idle this long is due a health check.
    fn due(&self, idle: Duration) -> bool {
        self.timeouts
            .health_check
            .is_some_and(|every| idle >= every)
    }

    /// `err` as a Failure naming this shard. A connection that failed that
    /// way is not used again, and the shard counts as out of reach until a
    /// command succeeds: a connection alone proves nothing (a proxy may
    /// accept one and hang up).
    pub fn failed(&self, err: RedisError) -> Failure {
        if self.broke(&err) {
            self.outage.failed(&self.name, &err);
        }
        self.failure(err)
    }

    fn failure(&self, err: RedisError) -> Failure {
        self.note_trouble(&err);
        self.refusals.note(&self.name, &err, &self.stats);
        Failure::Redis {
            shard: self.name.clone(),
            err,
        }
    }

    /// Whether `err` broke the connection; the shared one is then dropped.
    fn broke(&self, err: &RedisError) -> bool {
        let broke = breaks(err);
        if broke {
            self.drop_shared();
        }
        broke
    }

    /// How long a receiver that is still wanted waits before it tries again
    /// after `err`, which counts toward the outage if it broke a connection.
    pub fn pause_after(&self, err: &RedisError) -> Duration {
        if breaks(err) {
            self.lost.store(true, Ordering::Release);
            self.outage.failed(&self.name, err);
        }
        self.outage.pause()
    }

    /// Runs `request` on the shared connection. One that turns out dead (the
    /// server restarted since it was made) or read-only (a failover demoted
    /// its server) is replaced, and the request sent once more: around a
    /// restart a message may then arrive twice, never zero times. A cluster
    /// still settling a slot's owner, or a server still loading its data,
    /// refused the request without running it, so it is sent again until
    /// the reply timeout has passed.
    pub async fn run<T: FromRedisValue + Send>(
        &self,
        request: &(impl Request + Sync),
    ) -> Result<T, Failure> {
        let deadline = Instant::now() + self.timeouts.reply;
        let mut replaced = false;
        loop {
            let mut connection = self.shared().await.map_err(|err| self.failed(err))?;
            match request.send(&mut connection).await {
                Err(err) if stale(&err) && !replaced => {
                    self.drop_shared();
                    replaced = true;
                }
                Err(err) if settling(&err) && Instant::now() < deadline => {
                    self.note_trouble(&err);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                result => return self.answered(result).map_err(|err| self.failed(err)),
            }
        }
    }

    /// Runs a blocking `request` on a connection of its own. It gives up
    /// if Sentinel names another master meanwhile: the old one is on its way
    /// to being demoted, and nothing sent to it from then on is kept.
    pub async fn run_blocking<T: FromRedisValue + Send>(
        &self,
        request: &(impl Request + Sync),
    ) -> Result<T, Failure> {
        let mut blocking = self.blocking().await.map_err(|err| self.failed(err))?;
        let result = tokio::select! {
            result = request.send(&mut blocking.connection) => result,
            () = self.moved() => Err(RedisError::from((ErrorKind::Io, "Sentinel named a new master"))),
        };
        // A blocked pop that broke proves no outage: its receiver may be
        // gone. If not, it tries again, and connecting tells. A server that
        // is failing over refuses it (READONLY, UNBLOCKED) only for now.
        let value = self.answered(result).map_err(|err| {
            self.broke(&err);
            if passing(&err) {
                Failure::Redis {
                    shard: self.name.clone(),
                    err,
                }
            } else {
                self.failure(err)
            }
        })?;
        self.release(blocking);
        Ok(value)
    }

    /// The result of a request, noting when the shard answers.
    fn answered<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if result.is_ok() {
            self.outage.over(&self.name);
            // A load first: every answer passes here, troubles are rare.
            if self.troubled.load(Ordering::Relaxed) && self.troubled.swap(false, Ordering::Relaxed)
            {
                *lock(&self.trouble) = None;
            }
        }
        result
    }

    /// Notes `err` as why the shard fails now.
    pub fn note_trouble(&self, err: &RedisError) {
        *lock(&self.trouble) = Some(format!("Redis at {}: {}", self.name, words(err)));
        self.troubled.store(true, Ordering::Relaxed);
    }

    /// Notes a connection made to the master of `generation`.
    fn connected(&self, generation: u64) {
        let first = !self.made.swap(true, Ordering::AcqRel);
        let lost = self.lost.swap(false, Ordering::AcqRel);
        let moved = self.made_for.swap(generation, Ordering::AcqRel) != generation;
        if !first && (lost || moved) {
            self.back.notify_one();
        }
    }

    /// Completes once a connection is made again after one broke, or to
    /// another master: the server may have lost what this process added,
    /// as an empty restart or a failover to a replica that missed it
    /// would. On a cluster, also when any node is connected anew (a
    /// replica promoted, a node replaced), which redis-rs does unseen.
    pub async fn came_back(&self) {
        if self.is_cluster() {
            tokio::select! {
                () = self.back.notified() => {}
                () = NODES_MADE.notified() => {}
            }
        } else {
            self.back.notified().await;
        }
    }

    /// Why the shard failed last, if it has not answered since.
    pub fn trouble(&self) -> Option<String> {
        lock(&self.trouble).clone()
    }

    /// Forgets the shared connection after an error, so the next call reconnects.
    pub fn drop_shared(&self) {
        self.lost.store(true, Ordering::Release);
        self.with_state(|state| {
            if let Some((generation, _)) = state.shared.take() {
                state.lost = Some(generation);
            }
        });
    }

    /// A connection of its own for a blocking pop; give it back with `release`.
    pub async fn blocking(&self) -> RedisResult<Blocking> {
        let current = self.generation();
        let idle = self.with_state(|state| {
            state
                .idle_blocking
                .retain(|idle| idle.generation == current);
            state.idle_blocking.pop()
        });
        if let Some(blocking) = idle {
            return Ok(blocking);
        }
        // No reply timeout: a blocking pop legitimately waits.
        let (generation, connection) = self.connect(None).await?;
        Ok(Blocking {
            connection,
            generation,
        })
    }

    /// Returns a blocking connection that just worked; one that failed is
    /// simply dropped.
    pub fn release(&self, blocking: Blocking) {
        self.with_state(|state| state.idle_blocking.push(blocking));
    }

    pub fn close(&self) {
        self.with_state(|state| {
            state.shared = None;
            state.idle_blocking.clear();
            state.tracking = Tracking::Untried;
        });
    }
}

/// Whether `err` means the server is (for now) out of reach, rather than
/// refusing us for a reason that trying again will not change. Sentinel
/// knows no master for a moment during a failover.
pub fn unreachable(err: &RedisError) -> bool {
    // A cluster client reports why it reached no node as text.
    if let Some(detail) = err.detail().filter(|_| err.kind() == ErrorKind::Io) {
        let detail = detail.to_lowercase();
        return ["refused", "reset", "timed out"]
            .iter()
            .any(|cause| detail.contains(cause));
    }
    err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.is_timeout()
        || matches!(
            err.kind(),
            ErrorKind::MasterNameNotFoundBySentinel | ErrorKind::ClusterConnectionNotFound
        )
}

/// Whether `err` means the connection it came on is no use any more: an
/// outage. A login refused is none, though a cluster client reports it as
/// an I/O error.
fn breaks(err: &RedisError) -> bool {
    let broken = err.is_io_error() || unreachable(err) || stale(err);
    broken && refusal::cause(err) != Some(refusal::Cause::Access)
}

/// A command that can be sent again on another connection.
pub trait Request {
    fn send<T: FromRedisValue + Send>(
        &self,
        connection: &mut Connection,
    ) -> impl std::future::Future<Output = RedisResult<T>> + Send;
}

impl Request for redis::Cmd {
    fn send<T: FromRedisValue + Send>(
        &self,
        connection: &mut Connection,
    ) -> impl std::future::Future<Output = RedisResult<T>> + Send {
        self.query_async(connection)
    }
}

impl Request for redis::ScriptInvocation<'_> {
    fn send<T: FromRedisValue + Send>(
        &self,
        connection: &mut Connection,
    ) -> impl std::future::Future<Output = RedisResult<T>> + Send {
        self.invoke_async(connection)
    }
}

impl Request for redis::Pipeline {
    fn send<T: FromRedisValue + Send>(
        &self,
        connection: &mut Connection,
    ) -> impl std::future::Future<Output = RedisResult<T>> + Send {
        self.query_async(connection)
    }
}

/// The error of a wait that ran out of time.
pub fn timed_out() -> RedisError {
    std::io::Error::from(std::io::ErrorKind::TimedOut).into()
}

/// `request`, or `timed_out()` once `limit` has passed.
pub async fn within<T>(
    limit: Duration,
    request: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    tokio::time::timeout(limit, request)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

/// Whether `err` is a cluster moving a slot or electing a master, or a
/// server loading its data after a restart, which refuses a command before
/// running it.
pub fn settling(err: &RedisError) -> bool {
    use ServerErrorKind::{Ask, BusyLoading, ClusterDown, MasterDown, Moved, TryAgain};
    matches!(
        err.kind(),
        ErrorKind::Server(Moved | Ask | TryAgain | ClusterDown | MasterDown | BusyLoading)
    )
}

/// Whether `err` says the connection is no use any more: closed, or on a
/// server that is now a replica.
pub fn stale(err: &RedisError) -> bool {
    err.is_connection_dropped() || err.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

impl Shard {
    /// Whether this shard is a Redis Cluster: keys of one command must then
    /// share a slot, so work that touches several keys is split up.
    pub fn is_cluster(&self) -> bool {
        matches!(self.source, Source::Cluster { .. })
    }

    /// Every key matching `pattern` (SCAN), on the server or on every
    /// master of a cluster.
    pub async fn keys_matching(&self, pattern: &str) -> Result<Vec<Vec<u8>>, Failure> {
        let connection = self.shared().await.map_err(|err| self.failed(err))?;
        let Connection::Cluster(mut cluster) = connection else {
            return self.scan(pattern, None).await;
        };
        let mut keys = Vec::new();
        for (_, slot) in self.masters_of(&mut cluster).await? {
            keys.extend(self.scan(pattern, Some((&mut cluster, slot))).await?);
        }
        Ok(keys)
    }

    /// The address of each master of the cluster.
    async fn masters(&self) -> Result<Vec<(String, u16)>, Failure> {
        let connection = self.shared().await.map_err(|err| self.failed(err))?;
        let Connection::Cluster(mut cluster) = connection else {
            return Ok(Vec::new());
        };
        let masters = self.masters_of(&mut cluster).await?;
        Ok(masters.into_iter().map(|(address, _)| address).collect())
    }

    /// Each master a cluster names (CLUSTER SLOTS), with the first slot it
    /// serves: a master is reached through that slot, as the host can be
    /// empty (a node that never met another does not know its address).
    async fn masters_of(
        &self,
        cluster: &mut ClusterConnection,
    ) -> Result<Vec<((String, u16), u16)>, Failure> {
        let slots: Vec<Vec<Value>> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(cluster)
            .await
            .map_err(|err| self.failed(err))?;
        // Each entry: first slot, last slot, then the master: [host, port, ...].
        let mut masters: Vec<((String, u16), u16)> = slots
            .into_iter()
            .filter_map(|entry| {
                let mut fields = entry.into_iter();
                let slot = redis::from_redis_value::<u16>(fields.next()?).ok()?;
                let master = redis::from_redis_value::<Vec<Value>>(fields.nth(1)?).ok()?;
                let mut master = master.into_iter();
                let host = redis::from_redis_value::<String>(master.next()?).ok()?;
                let port = redis::from_redis_value::<u16>(master.next()?).ok()?;
                Some(((host, port), slot))
            })
            .collect();
        masters.sort();
        masters.dedup_by(|a, b| a.0 == b.0);
        Ok(masters)
    }

    async fn scan(
        &self,
        pattern: &str,
        mut node: Option<(&mut ClusterConnection, u16)>,
    ) -> Result<Vec<Vec<u8>>, Failure> {
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, found): (u64, Vec<Vec<u8>>) = match &mut node {
                None => self.run(&scan).await?,
                Some((cluster, slot)) => {
                    let master = Route::new(*slot, SlotAddr::Master);
                    let reply = cluster
                        .route_command(
                            scan,
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(master)),
                        )
                        .await
                        .map_err(|err| self.failed(err))?;
                    redis::from_redis_value(reply)
                        .map_err(|err| self.failed(RedisError::from(err)))?
                }
            };
            keys.extend(found);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

fn lock<T>(value: &Mutex<T>) -> MutexGuard<'_, T> {
    value.lock().unwrap_or_else(|p| p.into_inner())
}
