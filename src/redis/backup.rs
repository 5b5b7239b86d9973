//! Backups of messages popped from normal channels, so that each message
//! reaches exactly one receiver and none is lost with one.
//!
//! A popped message stays in `<key>$held` until a consumer has it, under a
//! lease in `<key>$leases` that its process renews meanwhile. Every pop
//! first puts back the backups whose lease ran out, because their process
//! died or lost Redis before a consumer had the message, and only those: a
//! backup that another receiver still holds stays with it.
//!
//! channels_redis backs up in `<key>$inflight` and puts back all of it on
//! every receive, which would hand out again what our receivers hold: ours
//! stay out of its way. Its backups get a lease from our pops, so that the
//! message of one of its receivers that died comes back even when no
//! channels_redis receiver is left. The full protocol: docs/architecture.md.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::connections::Shard;
use super::failure::Failure;
use super::scripts;

/// How long a backup stays its receiver's after its process last renewed
/// the lease: how soon the message of a receiver killed with it comes back.
pub const LEASE: Duration = Duration::from_secs(5);

/// How long the message of a blocking pop goes without a backup: a blocking
/// pop cannot write one in the same step, so its first moments are unguarded
/// anyway, and a consumer on a responsive loop takes it well within this,
/// which spares Redis the two scripts of a backup.
pub const GRACE: Duration = Duration::from_millis(1);

/// How often a receiver renews its lease while its consumer has not taken
/// the message yet (its event loop may be busy): well within LEASE.
const RENEW: Duration = Duration::from_secs(1);

/// The backup keys of one queue key.
pub struct Backup {
    held: String,
    leases: String,
    /// channels_redis's.
    inflight: String,
}

impl Backup {
    /// `<key>$held`, `<key>$leases` and `<key>$inflight`. On a cluster they
    /// carry the queue key as hash tag, so that one script can touch them
    /// with the queue (channels_redis does not run on a cluster).
    pub fn of(prefix: &str, key: &str, cluster: bool) -> Self {
        let base = if cluster {
            format!("{prefix}{{{key}}}")
        } else {
            key.to_owned()
        };
        Backup {
            held: format!("{base}$held"),
            leases: format!("{base}$leases"),
            inflight: format!("{base}$inflight"),
        }
    }

    /// Pops the first member of `key` on `shard`, backed up under a lease in
    /// the same script; `None` when the queue is empty.
    pub async fn take(
        &self,
        shard: &Shard,
        key: &str,
        expiry: u64,
    ) -> Result<Option<(Vec<u8>, f64)>, Failure> {
        let mut invocation = scripts::POP.prepare_invoke();
        invocation
            .key(key)
            .key(&self.held)
            .key(&self.leases)
            .key(&self.inflight)
            .arg(LEASE.as_secs())
            .arg(expiry);
        let popped: Vec<(Vec<u8>, f64)> = shard.run(&invocation).await?;
        Ok(popped.into_iter().next())
    }

    /// Leases `member` again; with its queue `score`, backs it up first (a
    /// blocking pop cannot do that in the same step).
    pub async fn hold(
        &self,
        shard: &Shard,
        member: &[u8],
        score: Option<f64>,
        expiry: u64,
    ) -> Result<(), Failure> {
        let mut invocation = scripts::HOLD.prepare_invoke();
        invocation
            .key(&self.held)
            .key(&self.leases)
            .arg(LEASE.as_secs())
            .arg(expiry)
            .arg(member);
        if let Some(score) = score {
            invocation.arg(score);
        }
        shard.run(&invocation).await
    }

    /// Keeps `member` leased until its receiver settles it; returns how.
    /// After `expiry` seconds without a word, the message has expired: the
    /// lease is left to run out, and `None` returned.
    pub async fn hold_until_settled(
        &self,
        shard: &Shard,
        member: &[u8],
        expiry: u64,
        settled: &mut oneshot::Receiver<Settled>,
    ) -> Option<Settled> {
        let give_up = Instant::now() + Duration::from_secs(expiry);
        loop {
            tokio::select! {
                // No word at all: the receiver is gone, nobody took it.
                how = &mut *settled => return Some(how.unwrap_or(Settled::Returned)),
                () = tokio::time::sleep(RENEW) => {
                    if Instant::now() >= give_up {
                        return None;
                    }
                    // A failed renewal is tried again at the next one.
                    let _ = self.hold(shard, member, None, expiry).await;
                }
            }
        }
    }

    /// Forgets the backup of a message from `key` that its consumer has.
    /// If the backup is gone, its lease had run out (this process stalled,
    /// or lost Redis, for longer) and a pop put the message back: it leaves
    /// the queue again, unless another receiver took it meanwhile.
    pub async fn clear(&self, shard: &Shard, key: &str, member: &[u8]) -> Result<(), Failure> {
        let mut pipeline = redis::pipe();
        pipeline
            .zrem(&self.held, member)
            .zrem(&self.leases, member)
            .ignore();
        let (cleared,): (i64,) = shard.run(&pipeline).await?;
        if cleared == 0 {
            let _: i64 = shard.run(redis::cmd("ZREM").arg(key).arg(member)).await?;
        }
        Ok(())
    }

    /// Moves a message nobody took from the backup back into `key`, at its
    /// old place.
    pub async fn put_back(
        &self,
        shard: &Shard,
        key: &str,
        member: &[u8],
        score: f64,
        expiry: u64,
    ) -> Result<(), Failure> {
        let mut invocation = scripts::PUT_BACK.prepare_invoke();
        invocation
            .key(key)
            .key(&self.held)
            .key(&self.leases)
            .arg(score)
            .arg(member)
            .arg(expiry);
        shard.run(&invocation).await
    }
}

/// What a receiver did with the message handed to it.
pub enum Settled {
    /// Its consumer has it.
    Taken,
    /// It was cancelled first: the message goes back to the channel.
    Returned,
}

/// One receive of a normal channel, from the call until its message is
/// taken or returned.
pub struct Receipt {
    /// Set when the receiver gives up: it pops no more, and what it already
    /// popped goes back.
    pub abandoned: AtomicBool,
    settled: Mutex<Option<oneshot::Sender<Settled>>>,
}

impl Receipt {
    pub fn new() -> (Arc<Self>, oneshot::Receiver<Settled>) {
        let (tell, told) = oneshot::channel();
        let receipt = Receipt {
            abandoned: AtomicBool::new(false),
            settled: Mutex::new(Some(tell)),
        };
        (Arc::new(receipt), told)
    }

    /// Tells the receive's task how it ended; only the first word counts.
    pub fn settle(&self, how: Settled) {
        let tell = self
            .settled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(tell) = tell {
            let _ = tell.send(how);
        }
    }
}
