//! What `python -m channels_rs check` asks each shard: the server's own
//! description and how long a PING takes.

use std::time::Instant;

use redis::Value;

use super::failure::Failure;
use super::queues::Queues;

/// A shard's name, its `INFO server` text, and each PING's time in seconds.
pub type ShardReport = (String, String, Vec<f64>);

impl Queues {
    pub(super) async fn report(&self, pings: usize) -> Result<Vec<ShardReport>, Failure> {
        let mut reports = Vec::new();
        for shard in &self.shards {
            let mut info = redis::cmd("INFO");
            info.arg("server");
            let info: Value = shard.run(&info).await?;
            let mut times = Vec::with_capacity(pings);
            for _ in 0..pings {
                let start = Instant::now();
                let _: String = shard.run(&redis::cmd("PING")).await?;
                times.push(start.elapsed().as_secs_f64());
            }
            reports.push((shard.name.clone(), text_of(info), times));
        }
        Ok(reports)
    }
}

/// The text of a reply; a cluster answers with one per node, of which the
/// first will do.
fn text_of(value: Value) -> String {
    match value {
        Value::Map(nodes) => nodes
            .into_iter()
            .next()
            .map(|(_, reply)| text_of(reply))
            .unwrap_or_default(),
        reply => redis::from_redis_value(reply).unwrap_or_default(),
    }
}
