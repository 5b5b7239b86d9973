"""Several Redis servers as shards: channels and groups land where
channels_redis puts them (its interop tests are in test_redis_interop)."""

import asyncio
import random

import pytest
from channels_redis.utils import _consistent_hash

from channels_rs import RedisChannelLayer
from conftest import receive
from redis_server import command


@pytest.fixture
async def ours(shards):
    layer = RedisChannelLayer(hosts=[server.url for server in shards])
    yield layer
    await layer.flush()


def test_documented_ring_vectors():
    """The vectors in the wire-format spec, checked against channels_redis."""
    assert [_consistent_hash(n, 2) for n in ("key_one", "key_two")] == [1, 0]
    assert [_consistent_hash(n, 10) for n in ("key_one", "key_two")] == [6, 4]


async def test_groups_land_on_channels_redis_shards(ours, shards):
    rng = random.Random(5)
    names = [f"room-{rng.randrange(10**9)}" for _ in range(40)]
    for name in names:
        await ours.group_add(name, "member")
    for name in names:
        home = shards[_consistent_hash(name, 3)]
        assert command(home.port, "EXISTS", f"asgi:group:{name}") == b":1\r\n", name


async def test_direct_messages_land_where_receivers_look(ours, shards):
    """Unlike channels_redis (bug #94): the shard of the non-local name."""
    channel = await ours.new_channel()
    await ours.send(channel, {"type": "x"})
    local_key = f"asgispecific.{ours.client_prefix}!"
    home = shards[_consistent_hash(local_key[len("asgi") :], 3)]
    assert command(home.port, "EXISTS", local_key) == b":1\r\n"


class QuickPops(RedisChannelLayer):
    brpop_timeout = 0.2


async def test_a_normal_channel_receive_finds_messages_on_any_shard(shards):
    """group_send writes a normal member's queue on the shard of its name,
    send takes turns; a receive takes what waits on any shard, and one that
    waits moves on to the next shard after each block (channels_redis waits
    on one shard for ever)."""
    layer = QuickPops(hosts=[server.url for server in shards])
    # Receives take turns from shard 0; this name's queue is on shard 2.
    names = (f"worker-{n}" for n in range(100))
    name = next(name for name in names if _consistent_hash(name, 3) == 2)
    await layer.group_add("shards-room", name)
    await layer.group_send("shards-room", {"type": "queued"})
    assert await receive(layer, name, timeout=0.5) == {"type": "queued"}
    waiting = asyncio.ensure_future(layer.receive(name))  # blocks on shard 1
    await asyncio.sleep(0.05)
    await layer.group_send("shards-room", {"type": "later"})
    assert await asyncio.wait_for(waiting, 3 * QuickPops.brpop_timeout + 1) == {
        "type": "later"
    }
    await layer.flush()
