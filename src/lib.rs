//! channels_rs._core: the Rust half of channels-rs, the channel layers for
//! Django Channels. `python/channels_rs` is the thin Python face over it.

mod bridge;
mod capacity;
mod codec;
mod errors;
mod memory;
mod names;
mod redis;
mod runtime;

use pyo3::prelude::*;

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    // Rust log records reach Python's logging, under the logger "channels_rs".
    // Levels are asked each time, not cached: they change at run time
    // (logging.config, pytest's caplog), and we log rarely.
    pyo3_log::Logger::new(module.py(), pyo3_log::Caching::Loggers)?
        .install()
        .ok();
    module.add_class::<memory::MemoryCore>()?;
    module.add_class::<codec::Serializer>()?;
    module.add_class::<redis::RedisCore>()?;
    module.add_class::<redis::PubSubCore>()?;
    module.add_class::<bridge::Bridge>()?;
    module.add_function(wrap_pyfunction!(names::random_letters, module)?)?;
    Ok(())
}
