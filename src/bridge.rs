//! How a tokio task completes an asyncio future without taking the GIL.
//!
//! Each event loop gets one `Bridge`: a queue of finished operations and a
//! way to wake the loop (`wakeup`: an eventfd, a self-pipe, or
//! call_soon_threadsafe). Tokio pushes a completion and wakes the loop only
//! when the queue turns non-empty; the loop thread drains the whole queue at
//! once and builds Python objects there, holding the GIL it already has.
//! Measured: a sixteenth of the cost of `future_into_py` per operation when
//! many are in flight (docs/architecture.md, "The bridge").

mod wakeup;
mod watchdog;

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyNotImplementedError, PyRuntimeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyWeakrefReference;

use crate::runtime;
use wakeup::{Kind, Wakeup};

/// Makes the Python result of an operation, on the loop thread.
pub type Outcome = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;
/// Told what became of a result: `None` once the future holds it, or the
/// value itself when the future was cancelled first, to be put back.
pub type Settle = Box<dyn FnOnce(Python<'_>, Option<Py<PyAny>>) + Send>;

pub struct Completion {
    pub future: Py<PyAny>,
    pub outcome: Outcome,
    pub settle: Option<Settle>,
}

/// The part tokio tasks hold.
pub struct Queue {
    wakeup: Wakeup,
    done: Mutex<Vec<Completion>>,
    /// Counts drains, so the watchdog sees a loop that stopped draining.
    drains: AtomicU64,
    event_loop: Py<PyWeakrefReference>,
}

impl Queue {
    pub fn push(self: &Arc<Self>, completion: Completion) {
        let was_empty = {
            let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
            let was_empty = done.is_empty();
            done.push(completion);
            was_empty
        };
        if was_empty {
            self.wakeup.ring(self);
        }
    }

    fn take(&self) -> Vec<Completion> {
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[pyclass(frozen, module = "channels_rs._core")]
pub struct Bridge {
    queue: Arc<Queue>,
}

#[pymethods]
impl Bridge {
    /// Runs on the loop thread once the loop is woken.
    fn drain(&self, py: Python<'_>) {
        self.queue.wakeup.clear();
        self.queue.drains.fetch_add(1, Ordering::Relaxed);
        // Anything pushed after this take wakes the loop again: nothing is missed.
        for completion in self.queue.take() {
            if let Err(err) = complete(py, completion) {
                // A result that could not even be delivered: say so, keep draining.
                err.write_unraisable(py, None);
            }
        }
    }
}

fn complete(py: Python<'_>, completion: Completion) -> PyResult<()> {
    let future = completion.future.bind(py);
    let cancelled = future.call_method0(intern!(py, "done"))?.is_truthy()?;
    let settle = completion.settle;
    match (completion.outcome)(py) {
        Ok(value) if cancelled => {
            if let Some(settle) = settle {
                settle(py, Some(value));
            }
        }
        Ok(value) => {
            future.call_method1(intern!(py, "set_result"), (value,))?;
            if let Some(settle) = settle {
                settle(py, None);
            }
        }
        Err(_) if cancelled => {}
        Err(err) => {
            future.call_method1(intern!(py, "set_exception"), (err.value(py),))?;
        }
    }
    Ok(())
}

/// What an engine's failed operation becomes in Python, on the loop thread.
pub trait Failed: Send + 'static {
    fn into_py(self, py: Python<'_>) -> PyErr;
}

/// Runs `work` on the runtime; its result completes the returned future.
pub fn spawn<'py, T: Send + 'static, E: Failed>(
    py: Python<'py>,
    work: impl Future<Output = Result<T, E>> + Send + 'static,
    to_python: impl FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
) -> PyResult<Bound<'py, PyAny>> {
    let (future, queue) = pending(py)?;
    let target = future.clone().unbind();
    runtime::spawn(async move {
        let result = work.await;
        let outcome: Outcome = Box::new(move |py| match result {
            Ok(value) => to_python(py, value),
            Err(failure) => Err(failure.into_py(py)),
        });
        queue.push(Completion {
            future: target,
            outcome,
            settle: None,
        });
    })?;
    Ok(future)
}

/// An engine's work for an operation, ready to run.
pub type Work<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Runs `work` to completion on this thread, the GIL released meanwhile.
pub fn block<T: Send, E: Failed>(py: Python<'_>, work: Work<T, E>) -> PyResult<T> {
    let handle = runtime::handle()?;
    py.detach(|| handle.block_on(work))
        .map_err(|failure| failure.into_py(py))
}

/// The Python result of an operation that returns nothing.
pub fn none(py: Python<'_>, _: ()) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

/// The result a future holds when its awaiter gave up on it: none if it
/// is still pending, was cancelled, or failed.
pub fn unclaimed<'py>(future: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = future.py();
    let called = |name| future.call_method0(name)?.is_truthy();
    if !called(intern!(py, "done"))? || called(intern!(py, "cancelled"))? {
        return Ok(None);
    }
    if !future.call_method0(intern!(py, "exception"))?.is_none() {
        return Ok(None);
    }
    future.call_method0(intern!(py, "result")).map(Some)
}

/// A new future of the running loop, and the queue that completes it.
pub fn pending(py: Python<'_>) -> PyResult<(Bound<'_, PyAny>, Arc<Queue>)> {
    let event_loop = running_loop(py)?;
    let queue = for_loop(py, &event_loop)?;
    let future = event_loop.call_method0(intern!(py, "create_future"))?;
    Ok((future, queue))
}

/// The running event loop of this thread.
pub fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    GET_RUNNING_LOOP
        .import(py, "asyncio", "get_running_loop")?
        .call0()
}

thread_local! {
    /// The last loop this thread asked for, and its queue: nearly every call
    /// is for the same loop, and the dictionary lookup is Python code.
    static LAST: RefCell<Option<(Py<PyWeakrefReference>, Arc<Queue>)>> = const { RefCell::new(None) };
}

/// The bridge of `event_loop`, made (and registered with the loop) on first use.
pub fn for_loop(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<Queue>> {
    let cached = LAST.with_borrow(|last| {
        let (reference, queue) = last.as_ref()?;
        let alive = reference.bind(py).upgrade()?;
        alive.is(event_loop).then(|| Arc::clone(queue))
    });
    if let Some(queue) = cached {
        return Ok(queue);
    }
    let queue = registered(py, event_loop)?;
    let reference = PyWeakrefReference::new(event_loop)?.unbind();
    LAST.set(Some((reference, Arc::clone(&queue))));
    Ok(queue)
}

fn registered(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<Queue>> {
    static BRIDGES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let bridges = BRIDGES
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(
                py.import("weakref")?
                    .getattr("WeakKeyDictionary")?
                    .call0()?
                    .unbind(),
            )
        })?
        .bind(py);
    if let Ok(bridge) = bridges
        .call_method1(intern!(py, "get"), (event_loop,))?
        .cast::<Bridge>()
    {
        return Ok(Arc::clone(&bridge.get().queue));
    }
    let mut candidates = Kind::candidates()?.into_iter().peekable();
    let bridge = loop {
        let kind = candidates
            .next()
            .expect("call_soon_threadsafe is always a candidate");
        match attach(py, event_loop, kind) {
            // No add_reader (Windows' Proactor): try the next way.
            Err(err) if err.is_instance_of::<PyNotImplementedError>(py) => {
                if candidates.peek().is_none() {
                    return Err(PyRuntimeError::new_err(format!(
                        "CHANNELS_RS_WAKEUP={} needs loop.add_reader, which {} does \
                         not have: unset it, or set it to call_soon_threadsafe",
                        kind.name(),
                        event_loop.get_type().name()?
                    )));
                }
            }
            attached => break attached?,
        }
    };
    let queue = Arc::clone(&bridge.get().queue);
    watchdog::watch(&queue)?;
    bridges.set_item(event_loop, &bridge)?;
    Ok(queue)
}

/// A bridge for `event_loop` woken the `kind` way, watched by the loop if
/// that way has a descriptor.
fn attach<'py>(
    py: Python<'py>,
    event_loop: &Bound<'py, PyAny>,
    kind: Kind,
) -> PyResult<Bound<'py, Bridge>> {
    let queue = Arc::new(Queue {
        wakeup: Wakeup::new(kind)?,
        done: Mutex::new(Vec::new()),
        drains: AtomicU64::new(0),
        event_loop: PyWeakrefReference::new(event_loop)?.unbind(),
    });
    let bridge = Bound::new(py, Bridge { queue })?;
    if let Some(fd) = bridge.get().queue.wakeup.watched() {
        event_loop.call_method1(
            intern!(py, "add_reader"),
            (fd, bridge.getattr(intern!(py, "drain"))?),
        )?;
    }
    Ok(bridge)
}

/// Which way the bridge wakes `event_loop`: "eventfd", "pipe" or
/// "call_soon_threadsafe" (making its bridge if it has none yet).
#[pyfunction]
pub fn wakeup_of(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<&'static str> {
    let queue = for_loop(py, event_loop)?;
    Ok(queue.wakeup.kind().name())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What a result's `Settle` was told: None (the future took it) or the
    /// value handed back (nobody did).
    type Told = Arc<Mutex<Vec<Option<String>>>>;

    fn completion(future: &Bound<'_, PyAny>, value: &str, told: &Told) -> Completion {
        let value = value.to_owned();
        let told = Arc::clone(told);
        Completion {
            future: future.clone().unbind(),
            outcome: Box::new(move |py| Ok(value.into_pyobject(py)?.into_any().unbind())),
            settle: Some(Box::new(move |py, unused| {
                let back = unused.map(|v| v.bind(py).extract::<String>().expect("a str"));
                told.lock().unwrap().push(back);
            })),
        }
    }

    fn new_loop(py: Python<'_>) -> Bound<'_, PyAny> {
        py.import("asyncio")
            .and_then(|asyncio| asyncio.call_method0("new_event_loop"))
            .expect("an event loop")
    }

    #[test]
    fn a_result_completes_its_future_or_goes_back_when_cancelled() {
        Python::initialize();
        Python::attach(|py| {
            let event_loop = new_loop(py);
            let told = Told::default();
            let waiting = event_loop.call_method0("create_future").unwrap();
            complete(py, completion(&waiting, "taken", &told)).unwrap();
            let result: String = waiting.call_method0("result").unwrap().extract().unwrap();
            assert_eq!(result, "taken");
            let cancelled = event_loop.call_method0("create_future").unwrap();
            cancelled.call_method0("cancel").unwrap();
            complete(py, completion(&cancelled, "returned", &told)).unwrap();
            assert_eq!(*told.lock().unwrap(), [None, Some("returned".to_owned())]);
            event_loop.call_method0("close").unwrap();
        });
    }

    #[test]
    fn an_error_for_a_cancelled_future_is_dropped() {
        Python::initialize();
        Python::attach(|py| {
            let event_loop = new_loop(py);
            let cancelled = event_loop.call_method0("create_future").unwrap();
            cancelled.call_method0("cancel").unwrap();
            let failing = Completion {
                future: cancelled.clone().unbind(),
                outcome: Box::new(|_| Err(PyRuntimeError::new_err("gone"))),
                settle: None,
            };
            complete(py, failing).unwrap();
            assert!(cancelled
                .call_method0("cancelled")
                .unwrap()
                .is_truthy()
                .unwrap());
            event_loop.call_method0("close").unwrap();
        });
    }

    #[test]
    fn results_for_a_closed_loop_go_back_and_an_open_loop_keeps_them() {
        Python::initialize();
        Python::attach(|py| {
            let event_loop = new_loop(py);
            let queue = for_loop(py, &event_loop).unwrap();
            let told = Told::default();
            let future = event_loop.call_method0("create_future").unwrap();
            queue.push(completion(&future, "orphan", &told));
            watchdog::rescue(py, &queue);
            assert!(
                told.lock().unwrap().is_empty(),
                "the loop may still drain it"
            );
            event_loop.call_method0("close").unwrap();
            watchdog::rescue(py, &queue);
            assert_eq!(*told.lock().unwrap(), [Some("orphan".to_owned())]);
        });
    }
}
