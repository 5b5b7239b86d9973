//! The watchdog: results on their way to a loop that closed are given back.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use pyo3::intern;
use pyo3::prelude::*;

use super::Queue;
use crate::runtime;

/// The queues this process's watchdog looks after, each with its drain
/// count at the last look.
struct Watchdog {
    pid: u32,
    queues: Vec<(Weak<Queue>, u64)>,
}

static WATCHDOG: Mutex<Watchdog> = Mutex::new(Watchdog {
    pid: 0,
    queues: Vec::new(),
});

/// How often the watchdog looks for loops that closed with results pending.
const WATCHDOG_PERIOD: Duration = Duration::from_secs(1);

/// Adds `queue` to those this process's watchdog looks after, starting it
/// on first use.
pub fn watch(queue: &Arc<Queue>) -> PyResult<()> {
    let mut watched = WATCHDOG.lock().unwrap_or_else(|p| p.into_inner());
    let pid = crate::process::id();
    if watched.pid != pid {
        *watched = Watchdog {
            pid,
            queues: Vec::new(),
        };
        runtime::spawn(watchdog())?;
    }
    watched.queues.push((Arc::downgrade(queue), 0));
    Ok(())
}

/// A loop that closed while results were on their way to it never drains
/// them: a message a blocking pop took would be lost there. Once a second,
/// queues that hold results and did not drain since the last look are
/// checked; those of a closed (or collected) loop are settled here, which
/// gives each message back to where it came from.
async fn watchdog() {
    loop {
        tokio::time::sleep(WATCHDOG_PERIOD).await;
        let stalled: Vec<Arc<Queue>> = {
            let mut watched = WATCHDOG.lock().unwrap_or_else(|p| p.into_inner());
            watched.queues.retain(|(queue, _)| queue.strong_count() > 0);
            watched
                .queues
                .iter_mut()
                .filter_map(|(queue, seen)| {
                    let queue = queue.upgrade()?;
                    let drains = queue.drains.load(Ordering::Relaxed);
                    let idle = drains == std::mem::replace(seen, drains);
                    let pending = !queue
                        .done
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .is_empty();
                    (idle && pending).then_some(queue)
                })
                .collect()
        };
        if stalled.is_empty() || crate::interpreter::exiting() {
            continue;
        }
        Python::try_attach(|py| {
            for queue in stalled {
                rescue(py, &queue);
            }
        });
    }
}

/// Settles what waits in the queue of a loop that is gone, as if every
/// receiver had been cancelled.
pub fn rescue(py: Python<'_>, queue: &Queue) {
    let closed = match queue.event_loop.bind(py).upgrade() {
        None => true,
        Some(event_loop) => event_loop
            .call_method0(intern!(py, "is_closed"))
            .and_then(|closed| closed.is_truthy())
            .unwrap_or(true),
    };
    if !closed {
        return;
    }
    for completion in queue.take() {
        if let (Ok(value), Some(settle)) = ((completion.outcome)(py), completion.settle) {
            settle(py, Some(value));
        }
    }
}
