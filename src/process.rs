//! State that belongs to one process. A forked child (Daphne's live-server
//! tests, `gunicorn --preload`, multiprocessing, `manage.py test
//! --parallel`) inherits a copy of the parent's memory, but none of its
//! threads, and shares its sockets: what the parent's tasks were doing
//! cannot go on in the child, and must not be undone there either.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

/// This process's id; 0 until read, and again in a forked child.
static PID: AtomicU32 = AtomicU32::new(0);

/// This process's id, as `std::process::id()` but without its system
/// call (glibc stopped caching getpid) on every operation: every layer call
/// asks it, to notice a fork.
pub fn id() -> u32 {
    static WATCH: Once = Once::new();
    WATCH.call_once(|| {
        #[cfg(unix)]
        {
            extern "C" fn forked() {
                PID.store(0, Ordering::Relaxed);
            }
            // SAFETY: registers a handler that only stores to an atomic,
            // which is async-signal-safe, as a fork's child handler must be.
            unsafe { libc::pthread_atfork(None, None, Some(forked)) };
        }
    });
    match PID.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id();
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// A value that the first access in a forked child renews with `after_fork`.
pub struct PerProcess<T> {
    value: Mutex<(u32, T)>,
    after_fork: Box<dyn Fn(&mut T) + Send + Sync>,
}

/// The parent's copy of `value`, replaced by `fresh`. It is forgotten, not
/// dropped: dropping could close what the parent still uses.
pub fn renew<T>(value: &mut T, fresh: T) {
    std::mem::forget(std::mem::replace(value, fresh));
}

impl<T> PerProcess<T> {
    pub fn new(value: T, after_fork: impl Fn(&mut T) + Send + Sync + 'static) -> Self {
        PerProcess {
            value: Mutex::new((id(), value)),
            after_fork: Box::new(after_fork),
        }
    }

    /// A value this process's own.
    pub fn lock(&self) -> Guard<'_, T> {
        let mut guard = self.value.lock().unwrap_or_else(|p| p.into_inner());
        let pid = id();
        if guard.0 != pid {
            guard.0 = pid;
            (self.after_fork)(&mut guard.1);
        }
        Guard(guard)
    }

    /// The value as it is, forked or not: for the garbage collector, which
    /// must not wait for a lock.
    pub fn try_lock(&self) -> Option<Guard<'_, T>> {
        self.value.try_lock().ok().map(Guard)
    }
}

pub struct Guard<'a, T>(MutexGuard<'a, (u32, T)>);

impl<T> Deref for Guard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0 .1
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0 .1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_renews_the_value_once() {
        let value = PerProcess::new(vec![1], |v: &mut Vec<i32>| renew(v, vec![2]));
        assert_eq!(*value.lock(), [1]);
        value.value.lock().unwrap().0 = 0; // as if inherited from another pid
        assert_eq!(*value.lock(), [2]);
        value.lock().push(3);
        assert_eq!(*value.lock(), [2, 3]);
    }
}
