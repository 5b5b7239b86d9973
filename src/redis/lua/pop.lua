#!lua flags=allow-oom
-- KEYS: queue, our backup of it, the leases, channels_redis's backup (see
-- `backup`). ARGV: lease seconds, expiry.
-- Puts back the backed-up members whose lease ran out, leases those of
-- channels_redis's backup that have none, then pops one member and backs
-- it up under a lease in the same step, so no crash or cancellation can
-- lose it. Leases run on the server's clock, which every receiver shares.
-- Returns {member, score}, or {} if the queue is empty.
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
