//! channels_rs._core: the Rust half of channels-rs, the channel layers for
//! Django Channels. `python/channels_rs` is the thin Python face over it.

mod bridge;
mod capacity;
mod clock;
mod codec;
mod errors;
mod interpreter;
mod memory;
mod names;
mod process;
mod redis;
mod runtime;
mod stats;

use pyo3::prelude::*;

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    interpreter::forward_logs(module.py())?;
    module.add_function(wrap_pyfunction!(interpreter::python_exits, module)?)?;
    module.add_class::<memory::MemoryCore>()?;
    module.add_class::<codec::Serializer>()?;
    module.add_class::<redis::RedisCore>()?;
    module.add_class::<redis::PubSubCore>()?;
    module.add_class::<bridge::Bridge>()?;
    module.add_function(wrap_pyfunction!(bridge::wakeup_of, module)?)?;
    module.add_function(wrap_pyfunction!(names::random_letters, module)?)?;
    Ok(())
}
