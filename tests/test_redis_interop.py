"""channels_rs.RedisChannelLayer beside the real channels_redis, as in a
mixed fleet during a migration: on one server and on three shards, with
each serializer setting, every kind of message goes both ways."""

import math

import pytest
from channels_redis.core import RedisChannelLayer as UpstreamLayer

from channels_rs import RedisChannelLayer
from conftest import INTEROP_CONFIGS, INTEROP_IDS, receive
from redis_server import command

# channels_redis receives on one shard at a time, for up to 5 s each.
SLOW = 12


@pytest.fixture(
    params=[(shards, n) for shards in (1, 3) for n in range(len(INTEROP_CONFIGS))],
    ids=[f"{s}-shard-{i}" for s in (1, 3) for i in INTEROP_IDS],
)
async def pair(request):
    shards, config = request.param
    servers = request.getfixturevalue("shards")[:shards] if shards > 1 else None
    servers = servers or [request.getfixturevalue("redis")]
    config = {"hosts": [server.url for server in servers], **INTEROP_CONFIGS[config]}
    ours, theirs = RedisChannelLayer(**config), UpstreamLayer(**config)
    yield ours, theirs
    await ours.flush()


async def test_normal_channels_both_ways(pair):
    """Several messages, so both senders' round-robin reaches every shard."""
    ours, theirs = pair
    for sender, receiver in ((theirs, ours), (ours, theirs)):
        for n in range(3):
            await sender.send("interop-work", {"type": "job", "n": n})
        got = sorted(
            [(await receive(receiver, "interop-work", SLOW))["n"] for _ in range(3)]
        )
        assert got == [0, 1, 2]


async def test_process_local_channels_both_ways(pair):
    ours, theirs = pair
    for _ in range(3):  # channels_redis puts these on any shard (its bug #94)
        our_channel, their_channel = (
            await ours.new_channel(),
            await theirs.new_channel(),
        )
        await theirs.send(our_channel, {"type": "to.rust"})
        await ours.send(their_channel, {"type": "to.python"})
        assert await receive(ours, our_channel, SLOW) == {"type": "to.rust"}
        assert await receive(theirs, their_channel, SLOW) == {"type": "to.python"}


async def test_special_floats_both_ways(pair):
    """Python's json writes NaN and Infinity (not JSON); they must arrive."""
    ours, theirs = pair
    our_channel, their_channel = await ours.new_channel(), await theirs.new_channel()
    message = {"type": "floats", "v": [math.nan, math.inf, -math.inf], "s": 'NaN "x'}
    await theirs.send(our_channel, message)
    await ours.send(their_channel, message)
    for got in (
        await receive(ours, our_channel, SLOW),
        await receive(theirs, their_channel, SLOW),
    ):
        assert math.isnan(got["v"][0])
        assert got["v"][1:] == [math.inf, -math.inf]
        assert got["s"] == 'NaN "x'


async def test_groups_with_members_of_both(pair):
    ours, theirs = pair
    our_channels = [await ours.new_channel() for _ in range(2)] + ["interop-ours"]
    their_channels = [await theirs.new_channel() for _ in range(2)]
    for n, channel in enumerate(our_channels + their_channels):
        await (ours if n % 2 else theirs).group_add("interop-room", channel)
    await ours.group_send("interop-room", {"type": "from.rust"})
    await theirs.group_send("interop-room", {"type": "from.python"})
    for layer, channels in ((ours, our_channels), (theirs, their_channels)):
        for channel in channels:
            got = sorted(
                [(await receive(layer, channel, SLOW))["type"] for _ in range(2)]
            )
            assert got == ["from.python", "from.rust"]


async def test_bulk_sends_reach_channels_redis_in_order(pair):
    """send_bulk, group_send_bulk and group_send_many write what channels_redis
    reads: to its process-local channels, a normal channel, and groups."""
    ours, theirs = pair
    local, other = await theirs.new_channel(), await theirs.new_channel()
    messages = [{"type": "bulk", "n": n} for n in range(5)]
    await ours.send_bulk(local, messages)
    got = [await receive(theirs, local, SLOW) for _ in messages]
    assert got == messages
    if ours.ring_size == 1:
        # One shard holds the bulk; channels_redis would wait 5 s on each
        # other shard before it looked there.
        await ours.send_bulk("interop-bulk", messages)
        normal = [await receive(theirs, "interop-bulk", SLOW) for _ in messages]
        assert normal == messages
    await theirs.group_add("interop-bulk-a", local)
    await theirs.group_add("interop-bulk-b", other)
    await ours.group_send_bulk("interop-bulk-a", messages)
    assert [await receive(theirs, local, SLOW) for _ in messages] == messages
    await ours.group_send_many(["interop-bulk-a", "interop-bulk-b"], {"type": "all"})
    for channel in (local, other):
        assert await receive(theirs, channel, SLOW) == {"type": "all"}


@pytest.mark.parametrize("flusher", ["ours", "theirs"])
async def test_flush_from_either_side_deletes_the_same_keys(pair, flusher):
    ours, theirs = pair
    servers = [int(url.rsplit(":", 1)[1]) for url in ours._host_names]
    for layer in (ours, theirs):
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "kept"})
        await layer.send("interop-flushed", {"type": "kept"})
        await layer.group_add("interop-flushed-room", channel)
    assert any(command(port, "KEYS", "asgi*") != b"*0\r\n" for port in servers)
    await (ours if flusher == "ours" else theirs).flush()
    for port in servers:
        assert command(port, "KEYS", "asgi*") == b"*0\r\n"
