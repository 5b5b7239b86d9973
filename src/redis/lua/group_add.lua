#!lua
-- KEYS: a group. ARGV: now, group expiry, channels...
-- Adds each channel at `now` (channels_redis's score: when it joined) and
-- refreshes the key's TTL. Returns how many were not members: when live
-- memberships are added back, how many the server had lost.
local added = 0
for i = 3, #ARGV do
    added = added + redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return added
