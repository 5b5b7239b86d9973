//! Server-side scripts: each layer operation is one atomic round trip with
//! the same effect on Redis as channels_redis's separate commands.

use std::sync::LazyLock;

use redis::Script;

/// KEYS: queue. ARGV: now, expiry (whole seconds), capacity, member.
/// Drops expired members; refuses (0) when full; else adds the member and
/// refreshes the key's TTL (1).
pub static SEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, math.floor(tonumber(ARGV[1])) - tonumber(ARGV[2]))
        if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[3]) then
            return 0
        end
        redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
        redis.call('EXPIRE', KEYS[1], ARGV[2])
        return 1
        ",
    )
});

/// KEYS: queue keys on one shard. ARGV: one member per key, one capacity per
/// key, now, expiry. Returns how many keys were full.
pub static GROUP_SEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local count = #KEYS
        local now = ARGV[2 * count + 1]
        local expiry = tonumber(ARGV[2 * count + 2])
        local cutoff = math.floor(tonumber(now)) - expiry
        local full = 0
        for i = 1, count do
            redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, cutoff)
            if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[count + i]) then
                redis.call('ZADD', KEYS[i], now, ARGV[i])
                redis.call('EXPIRE', KEYS[i], expiry)
            else
                full = full + 1
            end
        end
        return full
        ",
    )
});

/// KEYS: group. ARGV: now, group expiry. Drops stale members, returns the rest.
pub static GROUP_MEMBERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, math.floor(tonumber(ARGV[1])) - tonumber(ARGV[2]))
        return redis.call('ZRANGE', KEYS[1], 0, -1)
        ",
    )
});

/// KEYS: group. ARGV: now, group expiry, channel.
pub static GROUP_ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
        redis.call('EXPIRE', KEYS[1], ARGV[2])
        ",
    )
});

/// KEYS: queue, its in-flight backup. ARGV: most members to take.
/// Puts back what an interrupted receiver left in the backup (the protocol
/// channels_redis receivers share), then pops up to ARGV[1] members, copying
/// each into the backup in the same step, so no crash or cancellation can
/// lose one. Returns member, score, member, score, ...
pub static POP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local backed_up = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
        for i = #backed_up, 1, -2 do
            redis.call('ZADD', KEYS[1], backed_up[i], backed_up[i - 1])
        end
        redis.call('DEL', KEYS[2])
        local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[1])
        for i = 1, #popped, 2 do
            redis.call('ZADD', KEYS[2], popped[i + 1], popped[i])
        end
        return popped
        ",
    )
});
