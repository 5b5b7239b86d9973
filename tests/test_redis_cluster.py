"""channels_rs.RedisChannelLayer on a real Redis Cluster (3 masters, 3
replicas), which channels_redis cannot use: its scripts touch keys in
several slots."""

import asyncio

import pytest

from channels_rs import RedisChannelLayer
from redis_server import command


@pytest.fixture
def layer(cluster):
    return RedisChannelLayer(hosts=[{"cluster": cluster.urls}])


async def receive(layer, channel):
    return await asyncio.wait_for(layer.receive(channel), 5)


async def test_normal_channels(layer):
    names = [f"cluster-normal-{n}" for n in range(20)]
    for name in names:
        await layer.send(name, {"type": "m", "to": name})
    for name in names:
        assert await receive(layer, name) == {"type": "m", "to": name}
    waiting = asyncio.ensure_future(layer.receive("cluster-blocking"))
    await asyncio.sleep(0.05)
    await layer.send("cluster-blocking", {"type": "woken"})
    assert await asyncio.wait_for(waiting, 5) == {"type": "woken"}


async def test_process_local_channels_and_groups(layer):
    channels = [await layer.new_channel(prefix=f"p{n}") for n in range(6)]
    normal = [f"cluster-member-{n}" for n in range(6)]
    for channel in channels + normal:
        await layer.group_add("cluster-room", channel)
    await layer.group_send("cluster-room", {"type": "everyone"})
    for channel in channels + normal:
        assert await receive(layer, channel) == {"type": "everyone"}
    await layer.send(channels[0], {"type": "direct"})
    assert await receive(layer, channels[0]) == {"type": "direct"}


async def test_flush_empties_every_master_of_our_keys_only(layer, cluster):
    other = RedisChannelLayer(hosts=[{"cluster": cluster.urls}], prefix="other")
    await other.send("kept", {"type": "kept"})
    for n in range(30):
        await layer.send(f"cluster-flushed-{n}", {"type": "m"})
        await layer.group_add(f"cluster-flushed-group-{n}", f"cluster-flushed-{n}")
    await layer.flush()
    for master in cluster.masters:
        assert command(master.port, "KEYS", "asgi*") == b"*0\r\n"
    assert await receive(other, "kept") == {"type": "kept"}
    await other.flush()
