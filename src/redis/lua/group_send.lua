-- KEYS: queue keys on one shard. ARGV: one member per key, one capacity per
-- key, now, expiry. Returns how many keys were full.
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
