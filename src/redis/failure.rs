//! Why a Redis operation failed, and which failures a receiver waits out.

use pyo3::exceptions::{PyConnectionError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use redis::RedisError;

use super::connections::{settling, stale, unreachable};
use super::refusal;
use crate::bridge::Failed;
use crate::errors;

/// Redis work for an operation, ready to run.
pub type Work<T> = crate::bridge::Work<T, Failure>;

/// Why an operation failed, turned into a Python exception on the loop thread.
#[derive(Clone)]
pub enum Failure {
    Redis { shard: String, err: RedisError },
    Full(String),
    Data(String),
}

impl Failed for Failure {
    fn into_py(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Full(channel) => errors::channel_full(py, &channel),
            Failure::Data(text) => PyValueError::new_err(text),
            Failure::Redis { shard, err } => match refusal::cause(&err) {
                Some(cause) => {
                    let text = refusal::explain(&shard, &err);
                    errors::server_refused(py, cause.class(), text, &shard, &refusal::words(&err))
                }
                None if err.is_timeout() => PyTimeoutError::new_err(format!(
                    "Redis at {shard} did not answer in time: {err}"
                )),
                None => PyConnectionError::new_err(format!(
                    "Redis at {shard} failed: {}",
                    refusal::words(&err)
                )),
            },
        }
    }
}

/// Whether a receiver should wait and try again: Redis is out of reach, its
/// server changed role under it in a failover (which also ends blocked pops
/// with UNBLOCKED), or a cluster is still settling a slot's owner. Never
/// when it refuses the layer's credentials: waiting mends nothing.
pub fn passing(err: &RedisError) -> bool {
    let waits = unreachable(err) || stale(err) || settling(err) || err.code() == Some("UNBLOCKED");
    waits && refusal::cause(err) != Some(refusal::Cause::Access)
}
