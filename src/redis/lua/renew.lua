#!lua flags=allow-oom
-- KEYS: a group. ARGV: now, group expiry, channels...
-- Moves each channel that is still a member to `now`, so group_expiry
-- does not take it; one discarded meanwhile (by any process) stays gone.
-- Adds nothing, so it runs at maxmemory too.
for i = 3, #ARGV do
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
