//! What runtime threads must know of the Python interpreter: whether it is
//! shutting down. A thread that attaches to a finalizing interpreter is ended
//! by CPython with pthread_exit, which cannot unwind through Rust frames and
//! aborts the whole process (seen at exit, on a redis-rs log record). So from
//! the moment Python runs its atexit handlers, runtime threads leave it alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use log::{Level, LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;

static EXITING: AtomicBool = AtomicBool::new(false);

/// Whether Python has started to shut down: attach to it no more.
pub fn exiting() -> bool {
    EXITING.load(Ordering::Acquire)
}

/// Registered with atexit: from now on nothing is forwarded to Python. A
/// moment with the GIL released lets a thread already on its way in finish.
#[pyfunction]
pub fn python_exits(py: Python<'_>) {
    EXITING.store(true, Ordering::Release);
    log::set_max_level(LevelFilter::Off);
    py.detach(|| std::thread::sleep(Duration::from_millis(20)));
}

/// pyo3-log's logger, silent once Python is shutting down.
struct UntilExit(pyo3_log::Logger);

/// Records of the layer's own, as they are; the client libraries' (redis-rs
/// warns of every failed reconnection attempt) at DEBUG: the layer says what
/// they mean in its own words, once per outage step or as the error raised.
fn level_of(metadata: &Metadata<'_>) -> Level {
    if metadata.target().starts_with("channels_rs") {
        metadata.level()
    } else {
        metadata.level().max(Level::Debug)
    }
}

impl Log for UntilExit {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let demoted = Metadata::builder()
            .level(level_of(metadata))
            .target(metadata.target())
            .build();
        !exiting() && self.0.enabled(&demoted)
    }

    fn log(&self, record: &Record<'_>) {
        if exiting() {
            return;
        }
        let level = level_of(record.metadata());
        if level == record.level() {
            self.0.log(record);
            return;
        }
        self.0.log(
            &Record::builder()
                .args(*record.args())
                .level(level)
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Rust log records reach Python's logging, under the logger "channels_rs".
/// Levels are asked each time, not cached: they change at run time
/// (logging.config, pytest's caplog), and we log rarely.
pub fn forward_logs(py: Python<'_>) -> PyResult<()> {
    let logger = pyo3_log::Logger::new(py, pyo3_log::Caching::Loggers)?;
    if log::set_boxed_logger(Box::new(UntilExit(logger))).is_ok() {
        log::set_max_level(LevelFilter::Debug);
    }
    Ok(())
}
