#!lua flags=allow-oom
-- KEYS: our backup of a queue, the leases. ARGV: lease seconds, expiry, member,
-- and its queue score when it is not backed up yet.
-- Leases the member for another ARGV[1] seconds of the server's clock.
if ARGV[4] then
    redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
    redis.call('EXPIRE', KEYS[1], ARGV[2])
end
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[2])
