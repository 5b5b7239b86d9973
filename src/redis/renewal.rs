//! Live group memberships kept: renewed before `group_expiry` takes them,
//! and added back to a server that lost them.
//!
//! `group_expiry` is there to reap the members of processes that died
//! without `group_discard`; a websocket open longer than that (a day by
//! default) would fall out of its groups too. So this process renews the
//! memberships whose channels it still receives on (`memberships`), every
//! quarter of `group_expiry`: one script per group key, moving each member
//! still there to now. A member discarded meanwhile, by any process, is not
//! added back; one whose channel stopped receiving here is left to expire.
//!
//! A server can also lose memberships: restarted empty, or a failover to a
//! replica that had not received the latest group_adds. When a shard's
//! connection is made again after one was lost (`Shard::came_back`), this
//! process adds its live memberships back, and the script's count of what
//! it had to add is the signal: it costs nothing beyond the add itself,
//! and it sees a partial loss, where a server's run_id or a marker key
//! would not. One WARNING says how many came back.

use std::sync::Arc;
use std::time::Duration;

use super::failure::Failure;
use super::queues::Queues;
use super::ring::consistent_hash;
use super::scripts;
use crate::clock::unix_now;

/// The shortest pause between rounds, whatever `group_expiry`.
const SHORTEST: Duration = Duration::from_millis(100);

/// How soon an add-back that failed is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// A group's live channels, on the shard of its key.
struct Due {
    shard: usize,
    key: String,
    channels: Vec<String>,
}

impl Queues {
    /// How often live memberships are renewed; also how lately a channel
    /// must have received to count as alive.
    fn renewal_period(&self) -> Duration {
        (Duration::from_secs(self.group_expiry) / 4).max(SHORTEST)
    }

    /// Renews, and adds back where a shard came back, until the layer is
    /// gone. One task per process, started with its first group_add. An
    /// add-back that failed (the server not quite back, a cluster still
    /// electing) is tried again every RETRY until it is done.
    pub(super) async fn keep_memberships(self: Arc<Self>) {
        let mut closed = self.closed.subscribe();
        let period = self.renewal_period();
        let mut owed = vec![false; self.shards.len()];
        loop {
            let came_back = futures_util::future::select_all(
                self.shards.iter().map(|shard| Box::pin(shard.came_back())),
            );
            let pause = if owed.contains(&true) { RETRY } else { period };
            let back = tokio::select! {
                _ = closed.wait_for(|closed| *closed) => return,
                () = tokio::time::sleep(pause) => None,
                (_, shard, _) = came_back => Some(shard),
            };
            if let Some(shard) = back {
                owed[shard] = true;
            }
            if !owed.contains(&true) {
                self.renew().await;
            }
            for (shard, owed) in owed.iter_mut().enumerate().filter(|(_, owed)| **owed) {
                *owed = !self.add_back(shard).await;
            }
        }
    }

    /// This process's live memberships, by group key. Those gone for
    /// longer than group_expiry are forgotten on the way.
    fn due(&self, shard: Option<usize>) -> Vec<Due> {
        let mut guard = self.process();
        let process = &mut *guard;
        let waiting = |channel: &str| {
            process.waiting.contains_key(channel) || process.inbox.waits_on(channel)
        };
        let gone = Duration::from_secs(self.group_expiry);
        process.memberships.forget_older(gone, waiting);
        let live = process.memberships.live(self.renewal_period(), waiting);
        live.into_iter()
            .map(|(group, channels)| Due {
                shard: consistent_hash(group, self.shards.len()),
                key: self.group_key(group),
                channels: channels.into_iter().map(str::to_owned).collect(),
            })
            .filter(|due| shard.is_none_or(|shard| due.shard == shard))
            .collect()
    }

    /// One round: each live member still in its group moves to now. What
    /// fails is logged by its shard; the next round tries again.
    async fn renew(&self) {
        let now = unix_now();
        let calls = self.due(None).into_iter().map(|due| async move {
            let mut invocation = scripts::RENEW.prepare_invoke();
            invocation
                .key(&due.key)
                .arg(now)
                .arg(self.group_expiry)
                .arg(&due.channels);
            self.shards[due.shard].run::<()>(&invocation).await
        });
        futures_util::future::join_all(calls).await;
    }

    /// Adds this process's live memberships on `shard` back, and says so
    /// if the server had lost any; whether every one is there now.
    async fn add_back(&self, shard: usize) -> bool {
        let now = unix_now();
        let due = self.due(Some(shard));
        let calls = due.iter().map(|due| async move {
            let mut invocation = scripts::GROUP_ADD.prepare_invoke();
            invocation
                .key(&due.key)
                .arg(now)
                .arg(self.group_expiry)
                .arg(&due.channels);
            let added: Result<i64, Failure> = self.shards[shard].run(&invocation).await;
            self.shards[shard].changed(&due.key);
            added
        });
        let results = futures_util::future::join_all(calls).await;
        let done = results.iter().all(Result::is_ok);
        let added: i64 = results.into_iter().filter_map(Result::ok).sum();
        if added > 0 {
            let live: usize = due.iter().map(|due| due.channels.len()).sum();
            log::warn!(target: "channels_rs", "Redis at {} had lost {added} of the {live} group memberships of this process's live consumers, in {} groups (restarted empty, or a failover to a replica that missed them): added them back", self.shards[shard].name, due.len());
        }
        done
    }
}
