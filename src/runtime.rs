//! The tokio runtime behind the Redis layers: one per process, made on first
//! use. A forked child (Daphne's live-server tests fork) makes its own: the
//! parent's runtime threads do not exist in the child.

use std::future::Future;
use std::sync::Mutex;

use pyo3::exceptions::PyRuntimeError;
use pyo3::PyResult;
use tokio::runtime::{Builder, Handle};

struct Process {
    pid: u32,
    handle: Handle,
}

static RUNTIME: Mutex<Option<Process>> = Mutex::new(None);

/// A handle to this process's runtime.
pub fn handle() -> PyResult<Handle> {
    let pid = crate::process::id();
    let mut slot = RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(process) = slot.as_ref().filter(|process| process.pid == pid) {
        return Ok(process.handle.clone());
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
    let handle = runtime.handle().clone();
    // Kept for the life of the process. One inherited through fork is
    // replaced above without being dropped: its threads are gone, and
    // dropping it would wait for them.
    std::mem::forget(runtime);
    *slot = Some(Process {
        pid,
        handle: handle.clone(),
    });
    Ok(handle)
}

/// Runs `job` on this process's runtime.
pub fn spawn(job: impl Future<Output = ()> + Send + 'static) -> PyResult<()> {
    handle()?.spawn(job);
    Ok(())
}
