//! The Redis layers. `layer` (RedisCore) and `pubsub` (PubSubCore) are the
//! classes Python calls; `queues` holds the core layer's logic over
//! `connections` to each shard, with `backup` for popped messages and
//! `failure` for what goes wrong.

mod backoff;
mod backup;
mod connections;
mod failure;
mod hosts;
mod inbox;
mod layer;
mod pubsub;
mod queues;
mod report;
mod ring;
mod scripts;
mod sentinel;

pub use layer::RedisCore;
pub use pubsub::PubSubCore;
