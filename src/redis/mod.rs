//! The Redis layers. `layer` (RedisCore) and `pubsub` (PubSubCore) are the
//! classes Python calls. Under them, `queues` holds the core layer's logic,
//! with `backup` for popped messages, and `subscriptions` the pub/sub
//! layer's, with a `listener` per shard; both reach each shard through
//! `connections`, and `failure` says what went wrong. `tracking` keeps
//! group members between group_sends.

mod atomic;
mod backoff;
mod backup;
mod connections;
mod failure;
mod hosts;
mod inbox;
mod layer;
mod listener;
mod memberships;
mod pubsub;
mod queues;
mod refusal;
mod renewal;
mod report;
mod ring;
mod scripts;
mod sentinel;
mod subscriptions;
mod tracking;

pub use layer::RedisCore;
pub use pubsub::PubSubCore;
