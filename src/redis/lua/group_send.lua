#!lua
-- KEYS: queue keys on one shard (a key may come more than once). ARGV: `per`
-- members for each key in turn, one capacity per key, now, expiry, per.
-- A key under its capacity gets all its members (channels_redis #400's
-- rule for bulk sends), a microsecond apart so they keep their order.
-- Returns how many keys were full.
local count = #KEYS
local per = tonumber(ARGV[#ARGV])
local now = ARGV[#ARGV - 2]
local expiry = tonumber(ARGV[#ARGV - 1])
local cutoff = math.floor(tonumber(now)) - expiry
local full = 0
for i = 1, count do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, cutoff)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[count * per + i]) then
        for j = 1, per do
            redis.call('ZADD', KEYS[i], tonumber(now) + (j - 1) * 1e-6, ARGV[(i - 1) * per + j])
        end
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        full = full + 1
    end
end
return full
