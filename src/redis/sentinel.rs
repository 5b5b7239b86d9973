//! Following a Sentinel-managed master. Every connection is made to the
//! master Sentinel names at that moment; a watcher also asks once a second,
//! because after a failover the old master keeps accepting writes until
//! Sentinel gets round to demoting it (up to ten seconds), and whatever it
//! accepts meanwhile is lost when it resyncs from the new one.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::sentinel::SentinelClient;
use redis::{Client, ErrorKind, RedisError, RedisResult};
use tokio::sync::Notify;

/// How often the watcher asks Sentinel where the master is.
const WATCH_PERIOD: Duration = Duration::from_secs(1);

pub struct Watched {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// The master's address as last named, and a count of the times it
    /// changed: connections made under an older count are not used again.
    master: Mutex<(Option<String>, u64)>,
    generation: AtomicU64,
    /// Wakes pops blocked on the old master when it changes.
    moved: Notify,
    /// The process whose runtime runs the watcher (a forked child starts its own).
    watcher_pid: AtomicU32,
    /// What log lines call this master.
    name: String,
}

impl Watched {
    pub fn new(sentinel: SentinelClient, name: String) -> Arc<Self> {
        Arc::new(Watched {
            sentinel: tokio::sync::Mutex::new(sentinel),
            master: Mutex::new((None, 0)),
            generation: AtomicU64::new(0),
            moved: Notify::new(),
            watcher_pid: AtomicU32::new(0),
            name,
        })
    }

    /// A client for the current master, and the generation it belongs to.
    pub async fn master(self: &Arc<Self>, timeout: Duration) -> RedisResult<(Client, u64)> {
        self.watch();
        let client = self.ask(timeout).await?;
        let generation = self.learned(&client);
        Ok((client, generation))
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Completes when the master changes.
    pub async fn moved(&self) {
        self.moved.notified().await;
    }

    async fn ask(&self, timeout: Duration) -> RedisResult<Client> {
        let asking = async { self.sentinel.lock().await.async_get_client().await };
        tokio::time::timeout(timeout, asking)
            .await
            .map_err(|_| RedisError::from((ErrorKind::Io, "no Sentinel answered in time")))?
    }

    /// Notes where `client` points; if that is a new place, older
    /// connections are stale from now on.
    fn learned(&self, client: &Client) -> u64 {
        let address = client.get_connection_info().addr().to_string();
        let mut master = self.master.lock().unwrap_or_else(|p| p.into_inner());
        match &master.0 {
            Some(known) if *known == address => {}
            None => master.0 = Some(address),
            Some(_) => {
                log::warn!(target: "channels_rs", "Sentinel moved {} to {address}: reconnecting", self.name);
                *master = (Some(address), master.1 + 1);
                self.generation.store(master.1, Ordering::Release);
                self.moved.notify_waiters();
            }
        }
        master.1
    }

    /// Starts this process's watcher, once.
    fn watch(self: &Arc<Self>) {
        let pid = crate::process::id();
        if self.watcher_pid.swap(pid, Ordering::AcqRel) == pid {
            return;
        }
        let watched = Arc::downgrade(self);
        if crate::runtime::spawn(watch(watched)).is_err() {
            self.watcher_pid.store(0, Ordering::Release);
        }
    }
}

/// Asks where the master is once per WATCH_PERIOD, for as long as the layer lives.
async fn watch(watched: Weak<Watched>) {
    loop {
        tokio::time::sleep(WATCH_PERIOD).await;
        let Some(watched) = watched.upgrade() else {
            return;
        };
        if let Ok(client) = watched.ask(WATCH_PERIOD).await {
            watched.learned(&client);
        }
    }
}
