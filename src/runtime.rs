//! The tokio runtime behind the Redis layers: one per process, made on first
//! use. A forked child (Daphne's live-server tests fork) makes its own: the
//! parent's runtime threads do not exist in the child.
//!
//! Work from Python threads goes through a submission queue that one task on
//! the runtime drains, rather than `Handle::spawn` per operation: that task
//! keeps polling for a short while after each batch, so an operation that
//! follows soon after the last one (a sequential consumer, the reply to a
//! Redis command) does not pay for waking a parked worker thread
//! (about 12 µs of an 18 µs hop: docs/architecture.md, "The bridge").

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::PyResult;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::Notify;

/// How long the submission task keeps polling after its last batch before
/// it parks. Longer than a Redis round trip plus a Python turn-around.
const SPIN: Duration = Duration::from_micros(150);

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Submissions {
    jobs: Mutex<Vec<Job>>,
    arrived: Notify,
}

struct Process {
    pid: u32,
    runtime: Arc<Runtime>,
    submissions: Arc<Submissions>,
}

static RUNTIME: Mutex<Option<Process>> = Mutex::new(None);

fn with_process<R>(f: impl FnOnce(&Process) -> R) -> PyResult<R> {
    let pid = crate::process::id();
    let mut slot = RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(process) = slot.as_ref() {
        if process.pid == pid {
            return Ok(f(process));
        }
        // Inherited through fork: its threads are gone, and dropping it would
        // wait for them. Leave it be.
        std::mem::forget(slot.take());
    }
    // One worker: measured cheaper than two for this work (fewer wake-ups).
    let runtime = Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("channels-rs")
        .enable_all()
        .build()
        .map_err(|err| {
            PyRuntimeError::new_err(format!("cannot start the Redis I/O thread: {err}"))
        })?;
    let submissions = Arc::new(Submissions {
        jobs: Mutex::new(Vec::new()),
        arrived: Notify::new(),
    });
    runtime.spawn(drive(Arc::clone(&submissions)));
    let process = Process {
        pid,
        runtime: Arc::new(runtime),
        submissions,
    };
    Ok(f(slot.insert(process)))
}

/// A handle to this process's runtime.
pub fn handle() -> PyResult<Handle> {
    with_process(|process| process.runtime.handle().clone())
}

/// Runs `job` on this process's runtime.
pub fn spawn(job: impl Future<Output = ()> + Send + 'static) -> PyResult<()> {
    let submissions = with_process(|process| Arc::clone(&process.submissions))?;
    let was_empty = {
        let mut jobs = submissions.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.push(Box::pin(job));
        jobs.len() == 1
    };
    if was_empty {
        // Only an atomic store while the task is still polling; a wake-up
        // of the worker once it has parked.
        submissions.arrived.notify_one();
    }
    Ok(())
}

/// Starts submitted jobs as tasks of their own, polling for more until SPIN
/// has passed without any.
async fn drive(submissions: Arc<Submissions>) {
    let mut last = Instant::now();
    loop {
        let jobs = std::mem::take(&mut *submissions.jobs.lock().unwrap_or_else(|p| p.into_inner()));
        if !jobs.is_empty() {
            for job in jobs {
                tokio::spawn(job);
            }
            last = Instant::now();
        } else if last.elapsed() < SPIN {
            // Lets the worker run other tasks and poll its sockets first.
            tokio::task::yield_now().await;
        } else {
            // A notify_one that came before this stored a permit: no job
            // pushed meanwhile is missed.
            submissions.arrived.notified().await;
            last = Instant::now();
        }
    }
}
