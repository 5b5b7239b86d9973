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

/// KEYS: queue, our backup of it, the leases, channels_redis's backup (see
/// `backup`). ARGV: lease seconds, expiry.
/// Puts back the backed-up members whose lease ran out, leases those of
/// channels_redis's backup that have none, then pops one member and backs
/// it up under a lease in the same step, so no crash or cancellation can
/// lose it. Leases run on the server's clock, which every receiver shares.
/// Returns {member, score}, or {} if the queue is empty.
pub static POP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local now = tonumber(redis.call('TIME')[1])
        local lapsed = redis.call('ZRANGE', KEYS[3], '-inf', now, 'BYSCORE')
        for _, member in ipairs(lapsed) do
            for _, backup in ipairs({KEYS[2], KEYS[4]}) do
                local score = redis.call('ZSCORE', backup, member)
                if score then
                    redis.call('ZADD', KEYS[1], score, member)
                    redis.call('ZREM', backup, member)
                end
            end
            redis.call('ZREM', KEYS[3], member)
        end
        if #lapsed > 0 then
            redis.call('EXPIRE', KEYS[1], ARGV[2])
        end
        local deadline, leased = now + tonumber(ARGV[1]), false
        for _, member in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
            if not redis.call('ZSCORE', KEYS[3], member) then
                redis.call('ZADD', KEYS[3], deadline, member)
                leased = true
            end
        end
        local popped = redis.call('ZPOPMIN', KEYS[1])
        if popped[1] then
            redis.call('ZADD', KEYS[2], popped[2], popped[1])
            redis.call('ZADD', KEYS[3], deadline, popped[1])
            redis.call('EXPIRE', KEYS[2], ARGV[2])
        end
        if leased or popped[1] then
            redis.call('EXPIRE', KEYS[3], ARGV[2])
        end
        return popped
        ",
    )
});

/// KEYS: our backup of a queue, the leases. ARGV: lease seconds, expiry, member,
/// and its queue score when it is not backed up yet.
/// Leases the member for another ARGV[1] seconds of the server's clock.
pub static HOLD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if ARGV[4] then
            redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
            redis.call('EXPIRE', KEYS[1], ARGV[2])
        end
        local now = tonumber(redis.call('TIME')[1])
        redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), ARGV[3])
        redis.call('EXPIRE', KEYS[2], ARGV[2])
        ",
    )
});

/// KEYS: queue, our backup of it, the leases. ARGV: score, member, expiry.
/// Moves a backed-up member back into the queue at its old place.
pub static PUT_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
        redis.call('EXPIRE', KEYS[1], ARGV[3])
        redis.call('ZREM', KEYS[2], ARGV[2])
        redis.call('ZREM', KEYS[3], ARGV[2])
        ",
    )
});

/// group_send in one round trip, for one shard and unencrypted msgpack.
/// KEYS: group. ARGV: now, group expiry, expiry, capacity, key prefix,
/// random prefix, msgpack body of the message.
/// Drops stale members, then for each queue key the members map to, adds
/// one copy whose `__asgi_channel__` lists that key's members (spliced into
/// the body as msgpack-python would pack it) unless the key is full.
/// Returns {keys that were full, members}.
pub static GROUP_SEND_ALL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local function sized(small, base16, n)
            if n < small.limit then return string.char(small.base + n) end
            if n < 65536 then return string.char(base16, math.floor(n / 256), n % 256) end
            return string.char(base16 + 1, math.floor(n / 16777216) % 256,
                math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
        end
        local function str(s)
            local n = #s
            if n < 32 then return string.char(0xa0 + n) .. s end
            if n < 256 then return string.char(0xd9, n) .. s end
            return sized({limit = 0, base = 0}, 0xda, n) .. s
        end
        local now, body = ARGV[1], ARGV[7]
        local first, count, rest = string.byte(body, 1), 0, nil
        if first >= 0x80 and first <= 0x8f then
            count, rest = first - 0x80, string.sub(body, 2)
        elseif first == 0xde then
            count, rest = string.byte(body, 2) * 256 + string.byte(body, 3), string.sub(body, 4)
        else
            local b = {string.byte(body, 2, 5)}
            count, rest = ((b[1] * 256 + b[2]) * 256 + b[3]) * 256 + b[4], string.sub(body, 6)
        end
        local head = ARGV[6] .. sized({limit = 16, base = 0x80}, 0xde, count + 1) .. rest
            .. str('__asgi_channel__')

        redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, math.floor(tonumber(now)) - tonumber(ARGV[2]))
        local members = redis.call('ZRANGE', KEYS[1], 0, -1)
        local keys, names = {}, {}
        for _, member in ipairs(members) do
            local bang = string.find(member, '!', 1, true)
            local key = ARGV[5] .. (bang and string.sub(member, 1, bang) or member)
            if not names[key] then
                names[key] = {}
                table.insert(keys, key)
            end
            table.insert(names[key], member)
        end
        local expiry, capacity = tonumber(ARGV[3]), tonumber(ARGV[4])
        local cutoff = math.floor(tonumber(now)) - expiry
        local full = 0
        for _, key in ipairs(keys) do
            redis.call('ZREMRANGEBYSCORE', key, 0, cutoff)
            if redis.call('ZCOUNT', key, '-inf', '+inf') < capacity then
                local listed = {sized({limit = 16, base = 0x90}, 0xdc, #names[key])}
                for _, name in ipairs(names[key]) do
                    table.insert(listed, str(name))
                end
                redis.call('ZADD', key, now, head .. table.concat(listed))
                redis.call('EXPIRE', key, expiry)
            else
                full = full + 1
            end
        end
        return {full, #members}
        ",
    )
});
