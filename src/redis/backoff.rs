//! Pacing attempts to reach a server that is out of reach (or refuses the
//! layer), and saying so.
//!
//! Waits grow in a few steps: a restart is ridden out within a tenth of a
//! second, while a server that is gone for good costs one attempt every few
//! seconds. Each step is logged once per shard, not once per attempt or per
//! receiver, so an outage cannot flood the log.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::{RedisError, RedisResult};

/// From this far into an outage, wait this long between attempts.
const STEPS: [(Duration, Duration); 4] = [
    (Duration::ZERO, Duration::from_millis(100)),
    (Duration::from_secs(2), Duration::from_millis(500)),
    (Duration::from_secs(10), Duration::from_secs(2)),
    (Duration::from_secs(60), Duration::from_secs(5)),
];

fn step_at(age: Duration) -> usize {
    STEPS
        .iter()
        .rposition(|(from, _)| age >= *from)
        .unwrap_or(0)
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

struct Started {
    since: Instant,
    step: usize,
    /// When the last attempt failed.
    failed_at: Instant,
}

/// One shard's outage, as everything using the shard sees it.
#[derive(Default)]
pub struct Outage {
    state: Mutex<Option<Started>>,
    /// Whether `state` holds an outage: read on every successful attempt.
    active: AtomicBool,
}

impl Outage {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Started>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a failed attempt to reach `shard`; the first failure, and the
    /// first of each later step, are logged.
    pub fn failed(&self, shard: &str, err: &RedisError) {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(started) = state.as_mut() else {
            *state = Some(Started {
                since: now,
                step: 0,
                failed_at: now,
            });
            self.active.store(true, Ordering::Release);
            log::warn!(target: "channels_rs", "Redis at {shard} failed, retrying every {:.1} s and less often as it goes on: {err}", seconds(STEPS[0].1));
            return;
        };
        started.failed_at = now;
        let step = step_at(now - started.since);
        if step > started.step {
            started.step = step;
            log::warn!(target: "channels_rs", "Redis at {shard} still failing after {:.0} s, retrying every {:.1} s: {err}", seconds(now - started.since), seconds(STEPS[step].1));
        }
    }

    /// How long to wait before the next attempt: none outside an outage.
    pub fn wait(&self) -> Duration {
        if !self.active.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        self.lock().as_ref().map_or(Duration::ZERO, |started| {
            let pause = STEPS[step_at(started.since.elapsed())].1;
            (started.failed_at + pause).saturating_duration_since(Instant::now())
        })
    }

    /// The pause a retry loop takes after a failure: its step's.
    pub fn pause(&self) -> Duration {
        if !self.active.load(Ordering::Acquire) {
            return STEPS[0].1;
        }
        let age = self.lock().as_ref().map(|started| started.since.elapsed());
        STEPS[step_at(age.unwrap_or_default())].1
    }

    /// Notes that `shard` answered; ends the outage, if there was one.
    pub fn over(&self, shard: &str) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        if let Some(started) = self.lock().take() {
            self.active.store(false, Ordering::Release);
            log::warn!(target: "channels_rs", "Redis at {shard} works again after {:.1} s", seconds(started.since.elapsed()));
        }
    }
}

/// Cluster nodes whose last connection attempt failed, by address: when
/// that run of failures began, and when the last one failed.
static REFUSING: Mutex<Option<HashMap<String, (Instant, Instant)>>> = Mutex::new(None);

/// `connect` to the node at `address`, after the pause its failures call
/// for. redis-rs's cluster client tries to reconnect a lost cluster again as
/// soon as an attempt fails, from every connection it holds; this is what
/// paces it. (Not one attempt at a time: redis-rs leaves some connection
/// futures unpolled while it recovers, and one of those would hold the
/// turn of all the others.)
pub async fn paced<T>(
    address: String,
    connect: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    let refusing = || REFUSING.lock().unwrap_or_else(|p| p.into_inner());
    let wait = refusing()
        .as_ref()
        .and_then(|nodes| nodes.get(&address))
        .map_or(Duration::ZERO, |(since, last)| {
            let pause = STEPS[step_at(since.elapsed())].1;
            (*last + pause).saturating_duration_since(Instant::now())
        });
    tokio::time::sleep(wait).await;
    let result = connect.await;
    let mut nodes = refusing();
    let nodes = nodes.get_or_insert_with(HashMap::new);
    if result.is_ok() {
        nodes.remove(&address);
    } else {
        let now = Instant::now();
        nodes.entry(address).or_insert((now, now)).1 = now;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> RedisError {
        std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into()
    }

    #[test]
    fn steps_grow_with_the_outage() {
        assert_eq!(step_at(Duration::ZERO), 0);
        assert_eq!(step_at(Duration::from_millis(1999)), 0);
        assert_eq!(step_at(Duration::from_secs(2)), 1);
        assert_eq!(step_at(Duration::from_secs(59)), 2);
        assert_eq!(step_at(Duration::from_secs(3600)), 3);
    }

    #[test]
    fn no_wait_outside_an_outage() {
        let outage = Outage::default();
        assert_eq!(outage.wait(), Duration::ZERO);
        assert_eq!(outage.pause(), STEPS[0].1);
        outage.failed("here", &refused());
        let wait = outage.wait();
        assert!(wait > Duration::ZERO && wait <= STEPS[0].1, "{wait:?}");
        outage.over("here");
        assert_eq!(outage.wait(), Duration::ZERO);
    }
}
