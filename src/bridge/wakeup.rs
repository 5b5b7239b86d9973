//! How a runtime thread tells an event loop that results wait in its
//! queue: the one part of the bridge that differs by platform and by loop.
//! Each is rung only when the queue turns non-empty, so a loop wakes once
//! per batch of completions, however many the batch holds.
//!
//! - eventfd, on Linux: an 8-byte counter the loop watches.
//! - A self-pipe on other POSIX systems (macOS, the BSDs), which have no
//!   eventfd.
//! - `loop.call_soon_threadsafe(drain)` for a loop that cannot watch a
//!   descriptor: Windows' ProactorEventLoop, or any loop whose `add_reader`
//!   raises NotImplementedError. The call needs the GIL, so a thread of its
//!   own makes it: waiting for the GIL on the runtime's one worker would
//!   stall every connection while Python code runs.
//!
//! `CHANNELS_RS_WAKEUP` forces one (each is tested on Linux that way);
//! unset or `auto`, each loop gets the first that works for it.

#[cfg(unix)]
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::{Arc, LazyLock};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;

use super::{Bridge, Queue};
use crate::process::{renew, PerProcess};

/// The variable that forces a way, by name.
const FORCE: &str = "CHANNELS_RS_WAKEUP";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    EventFd,
    Pipe,
    Threadsafe,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::EventFd, Kind::Pipe, Kind::Threadsafe];

    pub fn name(self) -> &'static str {
        match self {
            Kind::EventFd => "eventfd",
            Kind::Pipe => "pipe",
            Kind::Threadsafe => "call_soon_threadsafe",
        }
    }

    fn available(self) -> bool {
        match self {
            Kind::EventFd => cfg!(target_os = "linux"),
            Kind::Pipe => cfg!(unix),
            Kind::Threadsafe => true,
        }
    }

    /// The descriptor-watching way this platform has, if any.
    fn native() -> Option<Kind> {
        [Kind::EventFd, Kind::Pipe]
            .into_iter()
            .find(|kind| kind.available())
    }

    /// The way `CHANNELS_RS_WAKEUP` names, or None for "whichever works".
    /// Read at each new loop, so one process can try each (the benchmark).
    pub fn forced() -> PyResult<Option<Kind>> {
        Kind::parse(&std::env::var(FORCE).unwrap_or_default())
    }

    fn parse(wanted: &str) -> PyResult<Option<Kind>> {
        if wanted.is_empty() || wanted == "auto" {
            return Ok(None);
        }
        let here = || {
            Kind::ALL
                .iter()
                .filter(|kind| kind.available())
                .map(|kind| kind.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match Kind::ALL.into_iter().find(|kind| kind.name() == wanted) {
            Some(kind) if kind.available() => Ok(Some(kind)),
            Some(_) => Err(PyValueError::new_err(format!(
                "{FORCE}={wanted}: this platform has no {wanted}; it has auto, {}",
                here()
            ))),
            None => Err(PyValueError::new_err(format!(
                "{FORCE}={wanted:?} is not a way to wake an event loop; use auto, {}",
                here()
            ))),
        }
    }

    /// The ways to try for a new loop, in order: one forced, or the
    /// platform's descriptor then call_soon_threadsafe.
    pub fn candidates() -> PyResult<Vec<Kind>> {
        Ok(match Kind::forced()? {
            Some(kind) => vec![kind],
            None => Kind::native()
                .into_iter()
                .chain([Kind::Threadsafe])
                .collect(),
        })
    }
}

pub enum Wakeup {
    #[cfg(target_os = "linux")]
    EventFd(OwnedFd),
    #[cfg(unix)]
    Pipe {
        read: OwnedFd,
        write: OwnedFd,
    },
    Threadsafe,
}

impl Wakeup {
    pub fn new(kind: Kind) -> PyResult<Wakeup> {
        match kind {
            #[cfg(target_os = "linux")]
            Kind::EventFd => {
                // SAFETY: eventfd returns a new descriptor or -1.
                let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
                Ok(Wakeup::EventFd(owned(fd, "eventfd")?))
            }
            #[cfg(unix)]
            Kind::Pipe => {
                let (read, write) = pipe()?;
                Ok(Wakeup::Pipe { read, write })
            }
            Kind::Threadsafe => Ok(Wakeup::Threadsafe),
            #[allow(unreachable_patterns)] // every kind this platform lacks
            _ => Err(PyOSError::new_err(format!("no {} here", kind.name()))),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            #[cfg(target_os = "linux")]
            Wakeup::EventFd(_) => Kind::EventFd,
            #[cfg(unix)]
            Wakeup::Pipe { .. } => Kind::Pipe,
            Wakeup::Threadsafe => Kind::Threadsafe,
        }
    }

    /// The descriptor the loop watches with `add_reader`, if this way has one.
    pub fn watched(&self) -> Option<i32> {
        match self {
            #[cfg(target_os = "linux")]
            Wakeup::EventFd(fd) => Some(fd.as_raw_fd()),
            #[cfg(unix)]
            Wakeup::Pipe { read, .. } => Some(read.as_raw_fd()),
            Wakeup::Threadsafe => None,
        }
    }

    /// Wakes the loop of `queue`, which has just turned non-empty.
    pub fn ring(&self, queue: &Arc<Queue>) {
        match self {
            #[cfg(target_os = "linux")]
            Wakeup::EventFd(fd) => {
                let one: u64 = 1;
                // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
                unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
            }
            #[cfg(unix)]
            Wakeup::Pipe { write, .. } => {
                // SAFETY: writes 1 byte from a live buffer to a pipe we own. A
                // full pipe (it cannot be: each ring is drained) would only
                // mean the loop is already due to wake.
                unsafe { libc::write(write.as_raw_fd(), b"!".as_ptr().cast(), 1) };
            }
            Wakeup::Threadsafe => wake_later(queue),
        }
    }

    /// On the loop thread, before it drains: consumes what `ring` wrote.
    pub fn clear(&self) {
        match self {
            #[cfg(target_os = "linux")]
            Wakeup::EventFd(fd) => {
                let mut count = [0u8; 8];
                // SAFETY: reads 8 bytes into a live buffer from an eventfd we own.
                unsafe { libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
            }
            #[cfg(unix)]
            Wakeup::Pipe { read, .. } => {
                let mut bytes = [0u8; 64];
                // SAFETY: reads into a live buffer of its length from a
                // non-blocking pipe we own, until it is empty.
                while unsafe { libc::read(read.as_raw_fd(), bytes.as_mut_ptr().cast(), 64) } == 64 {
                }
            }
            Wakeup::Threadsafe => {}
        }
    }
}

#[cfg(unix)]
fn owned(fd: RawFd, call: &str) -> PyResult<OwnedFd> {
    if fd < 0 {
        return Err(os_error(call));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(unix)]
fn os_error(call: &str) -> PyErr {
    PyOSError::new_err(format!(
        "{call} failed: {}",
        std::io::Error::last_os_error()
    ))
}

/// A pipe whose ends are non-blocking and closed on exec. macOS has no
/// pipe2, so there the flags are set after: nothing here forks and execs
/// in between.
#[cfg(unix)]
fn pipe() -> PyResult<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 fills a live two-int array or returns -1.
    #[cfg(not(target_vendor = "apple"))]
    let made = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    // SAFETY: pipe fills a live two-int array or returns -1.
    #[cfg(target_vendor = "apple")]
    let made = unsafe { libc::pipe(fds.as_mut_ptr()) };
    if made != 0 {
        return Err(os_error("pipe"));
    }
    let (read, write) = (owned(fds[0], "pipe")?, owned(fds[1], "pipe")?);
    #[cfg(target_vendor = "apple")]
    for fd in [&read, &write] {
        // SAFETY: sets the flags of a descriptor we own.
        unsafe {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok((read, write))
}

/// The queues whose loops are due a call_soon_threadsafe, sent to this
/// process's waking thread (made on first use; a forked child makes its own).
static WAKER: LazyLock<PerProcess<Option<mpsc::Sender<Arc<Queue>>>>> =
    LazyLock::new(|| PerProcess::new(None, |sender| renew(sender, None)));

fn wake_later(queue: &Arc<Queue>) {
    let mut sender = WAKER.lock();
    if sender.is_none() {
        let (new, queues) = mpsc::channel();
        let started = std::thread::Builder::new()
            .name("channels-rs-waker".into())
            .spawn(move || wake_loops(queues));
        if let Err(err) = started {
            // The results stay queued: the watchdog gives them back once
            // their loop closes.
            log::error!("cannot start the thread that wakes event loops: {err}");
            return;
        }
        *sender = Some(new);
    }
    if let Some(sender) = sender.as_ref() {
        sender.send(Arc::clone(queue)).ok();
    }
}

/// The waking thread: one GIL hold for every loop due a wake at the time.
fn wake_loops(queues: mpsc::Receiver<Arc<Queue>>) {
    while let Ok(first) = queues.recv() {
        let due: Vec<Arc<Queue>> = std::iter::once(first).chain(queues.try_iter()).collect();
        if crate::interpreter::exiting() {
            continue;
        }
        Python::try_attach(|py| {
            for queue in due {
                if let Err(err) = call_soon(py, queue) {
                    // A closed loop: its results are the watchdog's to give back.
                    log::debug!("cannot wake an event loop: {err}");
                }
            }
        });
    }
}

fn call_soon(py: Python<'_>, queue: Arc<Queue>) -> PyResult<()> {
    let Some(event_loop) = queue.event_loop.bind(py).upgrade() else {
        return Ok(());
    };
    let drain = Bound::new(py, Bridge { queue })?.getattr(intern!(py, "drain"))?;
    event_loop.call_method1(intern!(py, "call_soon_threadsafe"), (drain,))?;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn readable(fd: i32) -> bool {
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polls one live pollfd, without waiting.
        unsafe { libc::poll(&mut poll, 1, 0) == 1 }
    }

    #[test]
    fn a_descriptor_is_readable_after_rings_until_cleared() {
        Python::initialize();
        Python::attach(|py| {
            let event_loop = py
                .import("asyncio")
                .and_then(|asyncio| asyncio.call_method0("new_event_loop"))
                .unwrap();
            for kind in [Kind::EventFd, Kind::Pipe]
                .into_iter()
                .filter(|k| k.available())
            {
                let queue = Arc::new(Queue {
                    wakeup: Wakeup::new(kind).unwrap(),
                    done: Default::default(),
                    drains: Default::default(),
                    event_loop: pyo3::types::PyWeakrefReference::new(&event_loop)
                        .unwrap()
                        .unbind(),
                });
                let fd = queue.wakeup.watched().expect("a descriptor");
                assert!(!readable(fd), "{kind:?} starts quiet");
                // More rings than the pipe's read buffer: one clear takes them all.
                for _ in 0..100 {
                    queue.wakeup.ring(&queue);
                }
                assert!(readable(fd), "{kind:?} rung");
                queue.wakeup.clear();
                assert!(!readable(fd), "{kind:?} cleared");
            }
            event_loop.call_method0("close").unwrap();
        });
    }

    #[test]
    fn the_forcing_variable_names_a_way_or_says_which_exist() {
        Python::initialize();
        let forced = |value: &str| Kind::parse(value).map_err(|err| err.to_string());
        assert_eq!(forced(""), Ok(None));
        assert_eq!(forced("auto"), Ok(None));
        assert_eq!(forced("pipe"), Ok(Some(Kind::Pipe)));
        assert_eq!(forced("call_soon_threadsafe"), Ok(Some(Kind::Threadsafe)));
        let wrong = forced("epoll").unwrap_err();
        assert!(wrong.contains("\"epoll\" is not a way"), "{wrong}");
        assert!(
            wrong.contains("auto, ") && wrong.contains("pipe, call_soon_threadsafe"),
            "{wrong}"
        );
    }
}
