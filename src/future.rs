//! A Rust object that asyncio awaits like an `asyncio.Future`.
//!
//! Why not `loop.create_future()`: a value handed to an asyncio future is lost
//! if the awaiting task is cancelled before it runs (the task then throws
//! `CancelledError` past a future that holds the result). Here, cancelling a
//! future whose value was delivered but not yet taken gives the value back to
//! its owner, so a cancelled `receive()` never drops a message.
//!
//! The states: pending, then either done (value given; "taken" once the
//! awaiting side read it) or cancelled. Done-callbacks are scheduled with
//! `call_soon` on the future's loop, or `call_soon_threadsafe` from another
//! thread. Nothing here runs Python code while holding the state lock.

use std::sync::{Mutex, MutexGuard};
use std::thread::{self, ThreadId};

use pyo3::exceptions::asyncio::{CancelledError, InvalidStateError};
use pyo3::exceptions::PyStopIteration;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

/// Who handed out the future, told when it stops waiting.
pub trait Owner: Send + Sync {
    /// The future no longer waits: its value was taken, or it was cancelled
    /// before any value arrived.
    fn release(&self, py: Python<'_>, future: &Bound<'_, Future>);
    /// A value given to the future came back untaken (cancelled, or its event
    /// loop is closed). Implies `release`.
    fn give_back(&self, py: Python<'_>, future: &Bound<'_, Future>, value: Py<PyAny>);
}

enum Outcome {
    Pending,
    Done { value: Py<PyAny>, taken: bool },
    Cancelled { message: Option<Py<PyAny>> },
}

/// A done-callback and the `contextvars.Context` to run it in.
type Callback = (Py<PyAny>, Option<Py<PyAny>>);

struct State {
    outcome: Outcome,
    blocking: bool,
    callbacks: Vec<Callback>,
}

#[pyclass(frozen, module = "channels_rs._core")]
pub struct Future {
    /// The event loop that awaits this future; `None` for futures completed at
    /// creation, which are never waited on.
    event_loop: Option<Py<PyAny>>,
    /// The thread running `event_loop`: callbacks from other threads go
    /// through `call_soon_threadsafe`.
    thread: ThreadId,
    owner: Option<Box<dyn Owner>>,
    state: Mutex<State>,
}

/// Callbacks taken from a future whose outcome was just set, to be scheduled
/// once the caller has released its own locks.
#[must_use = "the awaiting task only wakes when the callbacks are scheduled"]
pub struct Wake {
    future: Py<Future>,
    callbacks: Vec<Callback>,
}

impl Wake {
    /// Schedules the callbacks. If the future's loop is closed, a delivered
    /// value goes back to the owner instead.
    pub fn schedule(self, py: Python<'_>) {
        let future = self.future.bind(py);
        if future.get().schedule(py, future, self.callbacks).is_err() {
            future.get().abandon(py, future);
        }
    }
}

impl Future {
    /// A future waiting on the running loop of the calling thread.
    pub fn pending(py: Python<'_>, owner: Box<dyn Owner>) -> PyResult<Py<Future>> {
        let event_loop = running_loop(py)?;
        Self::create(py, Some(event_loop), Some(owner), Outcome::Pending)
    }

    /// A future that already holds its value: awaiting it does not suspend.
    pub fn ready(py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<Future>> {
        let outcome = Outcome::Done {
            value,
            taken: false,
        };
        Self::create(py, None, None, outcome)
    }

    fn create(
        py: Python<'_>,
        event_loop: Option<Py<PyAny>>,
        owner: Option<Box<dyn Owner>>,
        outcome: Outcome,
    ) -> PyResult<Py<Future>> {
        let state = State {
            outcome,
            blocking: false,
            callbacks: Vec::new(),
        };
        let future = Future {
            event_loop,
            thread: thread::current().id(),
            owner,
            state: Mutex::new(state),
        };
        Py::new(py, future)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether nothing has completed or cancelled this future yet.
    pub fn is_pending(&self) -> bool {
        matches!(self.lock().outcome, Outcome::Pending)
    }

    /// Gives the future its value. Returns the value back if the future is no
    /// longer pending.
    pub fn resolve(this: &Bound<'_, Future>, value: Py<PyAny>) -> Result<Wake, Py<PyAny>> {
        let mut state = this.get().lock();
        if !matches!(state.outcome, Outcome::Pending) {
            return Err(value);
        }
        state.outcome = Outcome::Done {
            value,
            taken: false,
        };
        let callbacks = std::mem::take(&mut state.callbacks);
        Ok(Wake {
            future: this.clone().unbind(),
            callbacks,
        })
    }

    fn loop_of<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.event_loop {
            Some(event_loop) => Ok(event_loop.bind(py).clone()),
            None => Ok(running_loop(py)?.into_bound(py)),
        }
    }

    fn schedule(
        &self,
        py: Python<'_>,
        this: &Bound<'_, Future>,
        callbacks: Vec<Callback>,
    ) -> PyResult<()> {
        if callbacks.is_empty() {
            return Ok(());
        }
        let event_loop = self.loop_of(py)?;
        let method = if thread::current().id() == self.thread {
            intern!(py, "call_soon")
        } else {
            intern!(py, "call_soon_threadsafe")
        };
        for (callback, context) in callbacks {
            let kwargs = PyDict::new(py);
            kwargs.set_item(intern!(py, "context"), context)?;
            event_loop.call_method(method, (callback, this), Some(&kwargs))?;
        }
        Ok(())
    }

    /// The loop is gone: cancel, and return an untaken value to the owner.
    fn abandon(&self, py: Python<'_>, this: &Bound<'_, Future>) {
        let previous = {
            let mut state = self.lock();
            if matches!(
                state.outcome,
                Outcome::Done { taken: true, .. } | Outcome::Cancelled { .. }
            ) {
                return;
            }
            std::mem::replace(&mut state.outcome, Outcome::Cancelled { message: None })
        };
        self.settle(py, this, previous);
    }

    /// Tells the owner what a transition out of `previous` means for it.
    fn settle(&self, py: Python<'_>, this: &Bound<'_, Future>, previous: Outcome) {
        let Some(owner) = &self.owner else { return };
        match previous {
            Outcome::Pending => owner.release(py, this),
            Outcome::Done {
                value,
                taken: false,
            } => owner.give_back(py, this, value),
            Outcome::Done { taken: true, .. } | Outcome::Cancelled { .. } => {}
        }
    }

    fn cancelled_error(py: Python<'_>, message: &Option<Py<PyAny>>) -> PyErr {
        match message {
            Some(message) => CancelledError::new_err(message.clone_ref(py)),
            None => CancelledError::new_err(()),
        }
    }
}

#[pymethods]
impl Future {
    fn done(&self) -> bool {
        !self.is_pending()
    }

    fn cancelled(&self) -> bool {
        matches!(self.lock().outcome, Outcome::Cancelled { .. })
    }

    fn result(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let (value, first_take) = {
            let mut state = this.lock();
            match &mut state.outcome {
                Outcome::Pending => return Err(InvalidStateError::new_err("Result is not ready.")),
                Outcome::Cancelled { message } => return Err(Self::cancelled_error(py, message)),
                Outcome::Done { value, taken } => {
                    let first_take = !*taken;
                    *taken = true;
                    (value.clone_ref(py), first_take)
                }
            }
        };
        if first_take {
            if let Some(owner) = &this.owner {
                owner.release(py, slf);
            }
        }
        Ok(value)
    }

    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.lock().outcome {
            Outcome::Pending => Err(InvalidStateError::new_err("Exception is not set.")),
            Outcome::Cancelled { message } => Err(Self::cancelled_error(py, message)),
            Outcome::Done { .. } => Ok(None),
        }
    }

    #[pyo3(signature = (msg=None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> bool {
        let py = slf.py();
        let this = slf.get();
        let (previous, callbacks) = {
            let mut state = this.lock();
            let cancellable = match state.outcome {
                Outcome::Pending => true,
                Outcome::Done { taken, .. } => !taken,
                Outcome::Cancelled { .. } => false,
            };
            if !cancellable {
                return false;
            }
            let previous =
                std::mem::replace(&mut state.outcome, Outcome::Cancelled { message: msg });
            (previous, std::mem::take(&mut state.callbacks))
        };
        this.settle(py, slf, previous);
        // A failure here means the loop is closed: nobody is left to wake.
        let _ = this.schedule(py, slf, callbacks);
        true
    }

    #[pyo3(signature = (callback, *, context=None))]
    fn add_done_callback(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let this = slf.get();
        {
            let mut state = this.lock();
            if matches!(state.outcome, Outcome::Pending) {
                state.callbacks.push((callback, context));
                return Ok(());
            }
        }
        this.schedule(slf.py(), slf, vec![(callback, context)])
    }

    fn remove_done_callback(slf: &Bound<'_, Self>, callback: &Bound<'_, PyAny>) -> PyResult<usize> {
        let this = slf.get();
        // Compare outside the lock: `==` may run Python code.
        let callbacks = std::mem::take(&mut this.lock().callbacks);
        let total = callbacks.len();
        let mut kept = Vec::with_capacity(total);
        for entry in callbacks {
            if !entry.0.bind(slf.py()).eq(callback)? {
                kept.push(entry);
            }
        }
        let removed = total - kept.len();
        let mut state = this.lock();
        if matches!(state.outcome, Outcome::Pending) {
            state.callbacks.append(&mut kept);
            return Ok(removed);
        }
        // Completed meanwhile by another thread: run what we kept aside.
        drop(state);
        this.schedule(slf.py(), slf, kept)?;
        Ok(removed)
    }

    fn get_loop(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.loop_of(py)?.unbind())
    }

    #[getter(_asyncio_future_blocking)]
    fn get_blocking(&self) -> bool {
        self.lock().blocking
    }

    #[setter(_asyncio_future_blocking)]
    fn set_blocking(&self, value: bool) {
        self.lock().blocking = value;
    }

    #[pyo3(signature = (msg=None))]
    fn _make_cancelled_error(&self, py: Python<'_>, msg: Option<Py<PyAny>>) -> PyErr {
        Self::cancelled_error(py, &msg)
    }

    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// One step of `await`: yield the future while it waits, then finish
    /// with its result.
    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        {
            let mut state = slf.get().lock();
            if matches!(state.outcome, Outcome::Pending) {
                state.blocking = true;
                return Ok(slf.clone().into_any().unbind());
            }
        }
        let value = Self::result(slf)?;
        Err(PyStopIteration::new_err((value,)))
    }
}

fn running_loop(py: Python<'_>) -> PyResult<Py<PyAny>> {
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    Ok(GET_RUNNING_LOOP
        .import(py, "asyncio", "get_running_loop")?
        .call0()?
        .unbind())
}
