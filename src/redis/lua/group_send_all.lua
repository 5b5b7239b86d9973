-- group_send in one round trip, for one shard and unencrypted msgpack.
-- KEYS: group. ARGV: now, group expiry, expiry, capacity, key prefix,
-- random prefix, msgpack body of the message.
-- Drops stale members, then for each queue key the members map to, adds
-- one copy whose `__asgi_channel__` lists that key's members (spliced into
-- the body as msgpack-python would pack it) unless the key is full.
-- Returns {keys that were full, members}.
-- The map splicing below is the rule of codec::msgpack::append_entry, in Lua.
local function sized(small, base16, n)
    if n < small.limit then return string.char(small.base + n) end
    if n < 65536 then return string.char(base16, math.floor(n / 256), n % 256) end
    return string.char(base16 + 1, math.floor(n / 16777216) % 256,
        math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end
local function str(s)
    local n = #s
    if n < 32 then return string.char(0xa0 + n) .. s end
    if n < 256 then return string.char(0xd9, n) .. s end
    return sized({limit = 0, base = 0}, 0xda, n) .. s
end
local now, body = ARGV[1], ARGV[7]
local first, count, rest = string.byte(body, 1), 0, nil
if first >= 0x80 and first <= 0x8f then
    count, rest = first - 0x80, string.sub(body, 2)
elseif first == 0xde then
    count, rest = string.byte(body, 2) * 256 + string.byte(body, 3), string.sub(body, 4)
else
    local b = {string.byte(body, 2, 5)}
    count, rest = ((b[1] * 256 + b[2]) * 256 + b[3]) * 256 + b[4], string.sub(body, 6)
end
local head = ARGV[6] .. sized({limit = 16, base = 0x80}, 0xde, count + 1) .. rest
    .. str('__asgi_channel__')

redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, math.floor(tonumber(now)) - tonumber(ARGV[2]))
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local keys, names = {}, {}
for _, member in ipairs(members) do
    local bang = string.find(member, '!', 1, true)
    local key = ARGV[5] .. (bang and string.sub(member, 1, bang) or member)
    if not names[key] then
        names[key] = {}
        table.insert(keys, key)
    end
    table.insert(names[key], member)
end
local expiry, capacity = tonumber(ARGV[3]), tonumber(ARGV[4])
local cutoff = math.floor(tonumber(now)) - expiry
local full = 0
for _, key in ipairs(keys) do
    redis.call('ZREMRANGEBYSCORE', key, 0, cutoff)
    if redis.call('ZCOUNT', key, '-inf', '+inf') < capacity then
        local listed = {sized({limit = 16, base = 0x90}, 0xdc, #names[key])}
        for _, name in ipairs(names[key]) do
            table.insert(listed, str(name))
        end
        redis.call('ZADD', key, now, head .. table.concat(listed))
        redis.call('EXPIRE', key, expiry)
    else
        full = full + 1
    end
end
return {full, #members}
