-- KEYS: queue. ARGV: now, expiry (whole seconds), capacity, member.
-- Drops expired members; refuses (0) when full; else adds the member and
-- refreshes the key's TTL (1).
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, math.floor(tonumber(ARGV[1])) - tonumber(ARGV[2]))
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[3]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
