#!lua
-- KEYS: group. ARGV: now, group expiry, channel.
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[2])
