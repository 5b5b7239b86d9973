//! Per-channel capacities: the default, or the first `channel_capacity`
//! pattern that matches (compiled regexes, as `compile_capacities` makes them).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyString;

pub struct Capacities {
    default: usize,
    patterns: Vec<(Py<PyAny>, usize)>,
}

/// channels' in-memory layer queues with `asyncio.Queue(maxsize=capacity)`,
/// for which zero or less means unbounded.
pub fn unbounded_if_not_positive(capacity: i64) -> usize {
    usize::try_from(capacity)
        .ok()
        .filter(|&c| c > 0)
        .unwrap_or(usize::MAX)
}

impl Capacities {
    /// `patterns` is `BaseChannelLayer.compile_capacities()` output: a list of
    /// `(compiled_regex, capacity)` in the user's order.
    pub fn new(default: usize, patterns: Vec<(Py<PyAny>, usize)>) -> Self {
        Capacities { default, patterns }
    }

    /// The capacity of `channel`; calls Python's regex only when the user gave patterns.
    pub fn of(&self, py: Python<'_>, channel: &str) -> PyResult<usize> {
        if self.patterns.is_empty() {
            return Ok(self.default);
        }
        let channel = PyString::new(py, channel);
        for (pattern, capacity) in &self.patterns {
            if !pattern
                .bind(py)
                .call_method1(intern!(py, "match"), (&channel,))?
                .is_none()
            {
                return Ok(*capacity);
            }
        }
        Ok(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_or_less_is_unbounded_as_for_asyncio_queue() {
        assert_eq!(unbounded_if_not_positive(3), 3);
        assert_eq!(unbounded_if_not_positive(0), usize::MAX);
        assert_eq!(unbounded_if_not_positive(-1), usize::MAX);
    }

    #[test]
    fn the_first_matching_pattern_wins_else_the_default() {
        Python::initialize();
        Python::attach(|py| {
            let re = py.import("re").unwrap();
            let pattern = |text: &str| re.call_method1("compile", (text,)).unwrap().unbind();
            let capacities = Capacities::new(
                5,
                vec![(pattern("^small\\.big"), 10), (pattern("^small"), 1)],
            );
            assert_eq!(capacities.of(py, "small.big").unwrap(), 10);
            assert_eq!(capacities.of(py, "small.x").unwrap(), 1);
            assert_eq!(capacities.of(py, "other").unwrap(), 5);
        });
    }
}
