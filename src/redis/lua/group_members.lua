-- KEYS: group. ARGV: now, group expiry. Drops stale members, returns the rest.
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, math.floor(tonumber(ARGV[1])) - tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
