#!lua
-- KEYS: queue. ARGV: now, expiry (whole seconds), capacity, members...
-- Drops expired members; refuses (0) when the members would not all fit;
-- else adds them, a microsecond apart so they keep their order, and
-- refreshes the key's TTL (1).
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, math.floor(tonumber(ARGV[1])) - tonumber(ARGV[2]))
local adding = #ARGV - 3
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') + adding > tonumber(ARGV[3]) then
    return 0
end
for i = 4, #ARGV do
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + (i - 4) * 1e-6, ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
