"""Several Redis servers as shards, with channels_redis beside us."""

import asyncio
import random

import pytest
from channels_redis.core import RedisChannelLayer as UpstreamLayer
from channels_redis.utils import _consistent_hash

from channels_rs import RedisChannelLayer
from redis_server import RedisServer, command


@pytest.fixture(scope="module")
def shards():
    servers = [RedisServer() for _ in range(3)]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
async def pair(shards):
    hosts = [server.url for server in shards]
    ours, theirs = RedisChannelLayer(hosts=hosts), UpstreamLayer(hosts=hosts)
    yield ours, theirs
    await ours.flush()


def test_documented_ring_vectors():
    """The vectors in the wire-format spec, checked against channels_redis."""
    assert [_consistent_hash(n, 2) for n in ("key_one", "key_two")] == [1, 0]
    assert [_consistent_hash(n, 10) for n in ("key_one", "key_two")] == [6, 4]


async def test_groups_land_on_channels_redis_shards(pair, shards):
    ours, _ = pair
    rng = random.Random(5)
    names = [f"room-{rng.randrange(10**9)}" for _ in range(40)]
    for name in names:
        await ours.group_add(name, "member")
    for name in names:
        home = shards[_consistent_hash(name, 3)]
        assert command(home.port, "EXISTS", f"asgi:group:{name}") == b":1\r\n", name


async def test_direct_messages_land_where_receivers_look(pair, shards):
    """Unlike channels_redis (bug #94): the shard of the non-local name."""
    ours, _ = pair
    channel = await ours.new_channel()
    await ours.send(channel, {"type": "x"})
    local_key = f"asgispecific.{ours.client_prefix}!"
    home = shards[_consistent_hash(local_key[len("asgi") :], 3)]
    assert command(home.port, "EXISTS", local_key) == b":1\r\n"


async def receive(layer, channel, timeout=12):
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def test_interop_direct_messages_both_ways(pair):
    ours, theirs = pair
    for _ in range(6):  # channels_redis puts these on random shards
        our_channel, their_channel = (
            await ours.new_channel(),
            await theirs.new_channel(),
        )
        await theirs.send(our_channel, {"type": "to.rust"})
        await ours.send(their_channel, {"type": "to.python"})
        assert await receive(ours, our_channel) == {"type": "to.rust"}
        assert await receive(theirs, their_channel) == {"type": "to.python"}


async def test_interop_groups_across_shards(pair):
    ours, theirs = pair
    our_channels = [await ours.new_channel() for _ in range(3)]
    their_channels = [await theirs.new_channel() for _ in range(3)]
    for channel in our_channels + their_channels:
        await theirs.group_add("sharded-room", channel)
    await ours.group_send("sharded-room", {"type": "from.rust"})
    await theirs.group_send("sharded-room", {"type": "from.python"})
    for layer, channels in ((ours, our_channels), (theirs, their_channels)):
        for channel in channels:
            got = sorted([(await receive(layer, channel))["type"] for _ in range(2)])
            assert got == ["from.python", "from.rust"]


async def test_interop_normal_channels_round_robin(pair):
    ours, theirs = pair
    for n in range(3):
        await theirs.send("shared-work", {"type": "job", "n": n})
    got = sorted([(await receive(ours, "shared-work"))["n"] for _ in range(3)])
    assert got == [0, 1, 2]
    for n in range(3):
        await ours.send("shared-work", {"type": "job", "n": n})
    got = sorted([(await receive(theirs, "shared-work"))["n"] for _ in range(3)])
    assert got == [0, 1, 2]
