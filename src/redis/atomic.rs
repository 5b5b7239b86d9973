//! Plain commands that must all be written or none: a server at maxmemory
//! refuses each write on its own, so a pipeline could leave some written
//! and some not. Between MULTI and EXEC, a refused one aborts them all.

use std::sync::atomic::{AtomicBool, Ordering};

use redis::{ErrorKind, Pipeline, RedisError, RedisResult, ServerErrorKind, Value};

use super::connections::Shard;
use super::failure::Failure;

/// Set once a server's ACL refused MULTI, so that it is said once.
static MULTI_REFUSED: AtomicBool = AtomicBool::new(false);

/// A pipeline for `Shard::run_atomically`: add the commands, then run it.
pub fn transaction() -> Pipeline {
    let mut transaction = redis::pipe();
    // Each reply is looked at there: redis-rs's atomic pipelines cannot
    // tell a refused MULTI from a refused command.
    transaction.ignore_errors().cmd("MULTI");
    transaction
}

impl Shard {
    /// Runs the commands of `transaction` (see `transaction()`) between
    /// MULTI and EXEC on the shared connection. An ACL user without
    /// `multi` still has them run, one by one as the server takes them
    /// (logged once at INFO).
    pub async fn run_atomically(&self, mut transaction: Pipeline) -> Result<(), Failure> {
        transaction.cmd("EXEC");
        let replies: Vec<RedisResult<Value>> = self.run(&transaction).await?;
        outcome(&self.name, replies).map_err(|err| self.failed(err))
    }
}

/// What a transaction's replies (MULTI's, each command's, EXEC's) say.
fn outcome(shard: &str, mut replies: Vec<RedisResult<Value>>) -> RedisResult<()> {
    let exec = replies.pop().unwrap_or(Ok(Value::Nil));
    let queued = replies.split_off(1.min(replies.len()));
    let first_error = |results: Vec<RedisResult<Value>>| {
        results
            .into_iter()
            .find_map(|result| result.and_then(Value::extract_error).err())
            .map_or(Ok(()), Err)
    };
    if let Some(Err(err)) = replies.pop() {
        // No MULTI: each command ran as it came; EXEC is refused too.
        if !MULTI_REFUSED.swap(true, Ordering::Relaxed) {
            log::info!(target: "channels_rs", "Redis at {shard}: big group_sends are written without MULTI/EXEC, which the server refuses: {err}");
        }
        return first_error(queued);
    }
    match exec {
        Ok(Value::Array(results)) => first_error(results.into_iter().map(Ok).collect()),
        // A command refused as it was queued (OOM): nothing ran.
        Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::ExecAbort) => {
            first_error(queued).and(Err(err))
        }
        Err(err) => Err(err),
        Ok(reply) => Err(RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "EXEC",
            format!("{reply:?}"),
        ))),
    }
}
