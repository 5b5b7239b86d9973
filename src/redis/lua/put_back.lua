#!lua flags=allow-oom
-- KEYS: queue, our backup of it, the leases. ARGV: score, member, expiry.
-- Moves a backed-up member back into the queue at its old place.
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
