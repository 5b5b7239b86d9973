//! Server-side scripts: each layer operation is one atomic round trip with
//! the same effect on Redis as channels_redis's separate commands. Each
//! `.lua` file says what its KEYS and ARGV are.
//!
//! Each starts with a `#!lua` line, so that Redis 7+ and Valkey check the
//! script as a whole before it runs, as they check a command: at maxmemory,
//! on a read-only replica, after a failed save or with too few replicas it
//! is refused and writes nothing. Without that line Redis checks memory
//! only at the first write command that adds, and ours start with one that
//! removes (ZREMRANGEBYSCORE): their writes went on past maxmemory. The
//! scripts that only move a member between sorted sets or its score (pop,
//! hold, put_back, renew) are `allow-oom`, so queued messages are still
//! received and live memberships kept.

use std::sync::LazyLock;

use redis::Script;

/// Send: trim, refuse when full, add.
pub static SEND: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/send.lua")));

/// Group_send to queue keys on one shard.
pub static GROUP_SEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/group_send.lua")));

/// Group_add, of one channel or (added back) many.
pub static GROUP_ADD: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/group_add.lua")));

/// Live members' scores moved to now (see `renewal`).
pub static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/renew.lua")));

/// A normal channel's next message, backed up under a lease (see `backup`).
pub static POP: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/pop.lua")));

/// A backup's lease renewed, the backup written first if need be.
pub static HOLD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/hold.lua")));

/// A backed-up message back into its queue.
pub static PUT_BACK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/put_back.lua")));
