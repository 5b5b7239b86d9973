//! The tokio runtime behind the Redis layers: one per process, made on first
//! use. A forked child (Daphne's live-server tests fork) makes its own: the
//! parent's runtime threads do not exist in the child.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyRuntimeError;
use pyo3::PyResult;
use tokio::runtime::{Builder, Handle, Runtime};

static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

/// A handle to this process's runtime.
pub fn handle() -> PyResult<Handle> {
    let pid = std::process::id();
    let mut slot = RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((owner, runtime)) = slot.as_ref() {
        if *owner == pid {
            return Ok(runtime.handle().clone());
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
    let handle = runtime.handle().clone();
    *slot = Some((pid, Arc::new(runtime)));
    Ok(handle)
}
