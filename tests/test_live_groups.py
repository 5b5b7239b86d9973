"""Group memberships follow live consumers: renewed past group_expiry while
their consumer receives, and added back to a server that lost them; the
members of discarded channels, of channels nobody receives on and of
processes that died stay gone. (Sentinel and cluster failovers:
test_redis_sentinel, test_redis_cluster.)"""

import asyncio
import logging
import subprocess
import sys
import textwrap
import time

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from channels_redis.core import RedisChannelLayer as UpstreamLayer
from django.test import override_settings

from channels_rs import RedisChannelLayer
from conftest import receive
from redis_server import command
from testproject.asgi import application

GROUP = "broadcast"  # the test project's consumers join it on connect


def settings(kind, server, **config):
    if kind == "memory":
        return {
            "default": {"BACKEND": "channels_rs.InMemoryChannelLayer", "CONFIG": config}
        }
    config = {"hosts": [server.url], "prefix": "live", **config}
    return {"default": {"BACKEND": "channels_rs.RedisChannelLayer", "CONFIG": config}}


async def connected():
    communicator = WebsocketCommunicator(application, "/ws/async/")
    assert (await communicator.connect())[0]
    return communicator


DEAD = textwrap.dedent(
    """
    import asyncio, sys
    from channels_rs import RedisChannelLayer

    async def main():
        layer = RedisChannelLayer(hosts=[sys.argv[1]], prefix="live", group_expiry=2)
        channel = await layer.new_channel()
        await layer.group_add(sys.argv[2], channel)
        print(channel, flush=True)
        await layer.receive(channel)

    asyncio.run(main())
    """
)


def a_process_that_dies_in(server, group):
    """The channel of a process that joined `group`, received, then died."""
    process = subprocess.Popen(
        [sys.executable, "-c", DEAD, server.url, group],
        stdout=subprocess.PIPE,
        text=True,
    )
    channel = process.stdout.readline().strip()
    time.sleep(0.3)
    process.kill()
    process.wait()
    return channel


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_a_live_consumer_outlives_group_expiry(kind, own_redis):
    """group_expiry=2: after 10 s the connected consumer still gets the
    group's messages; the one that disconnected (group_discard), a channel
    nobody receives on and the channel of a killed process do not."""
    with override_settings(CHANNEL_LAYERS=settings(kind, own_redis, group_expiry=2)):
        layer = get_channel_layer()
        live = await connected()
        left = await connected()
        await left.disconnect()
        await layer.group_add(GROUP, "nobody.receives")
        dead = a_process_that_dies_in(own_redis, GROUP) if kind == "redis" else None
        if dead:
            assert dead in await layer.group_channels(GROUP)
        await asyncio.sleep(10)
        members = await layer.group_channels(GROUP)
        assert len(members) == 1 and members[0].startswith("specific."), members
        await layer.group_send(GROUP, {"type": "broadcast.message", "text": "still"})
        assert await live.receive_from(timeout=3) == "still"
        await live.disconnect()
        assert await layer.group_channels(GROUP) == []
        await layer.flush()


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_without_renewal_group_expiry_takes_live_members_too(kind, own_redis):
    config = {"group_expiry": 1, "renew_groups": False}
    with override_settings(CHANNEL_LAYERS=settings(kind, own_redis, **config)):
        layer = get_channel_layer()
        live = await connected()
        await asyncio.sleep(2.5)
        assert await layer.group_channels(GROUP) == []
        await live.disconnect()


async def test_a_channels_redis_process_sees_the_renewed_members(own_redis):
    """channels_redis reads members by score: renewed ones are as fresh to
    it, so its group_send reaches our live consumer past group_expiry."""
    layer = RedisChannelLayer(hosts=[own_redis.url], group_expiry=2)
    theirs = UpstreamLayer(hosts=[own_redis.url], group_expiry=2)
    live, idle = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("mixed", live)
    await layer.group_add("mixed", idle)
    waiting = asyncio.ensure_future(layer.receive(live))
    await asyncio.sleep(5)
    await theirs.group_send("mixed", {"type": "from.upstream"})
    assert await asyncio.wait_for(waiting, 3) == {"type": "from.upstream"}
    with pytest.raises(asyncio.TimeoutError):
        await receive(layer, idle, timeout=0.2)
    stored = command(own_redis.port, "ZRANGE", "asgi:group:mixed", 0, -1)
    assert live.encode() in stored and idle.encode() not in stored


async def test_live_memberships_come_back_after_an_empty_restart(own_redis, caplog):
    """Redis (no persistence) killed and started again under live consumers:
    within 2 s of its return, a group_send from another process reaches
    every one, and one WARNING says how many memberships came back. The
    discarded member and the one nobody receives on stay gone."""
    layer = RedisChannelLayer(hosts=[own_redis.url])
    view = RedisChannelLayer(hosts=[own_redis.url])  # a view in another process
    local = [await layer.new_channel() for _ in range(3)]
    receivers = [*local, "jobs"]
    for channel in receivers:
        await layer.group_add("room", channel)
    await layer.group_add("other", local[0])
    gone = await layer.new_channel()
    await layer.group_add("room", gone)
    await layer.group_discard("room", gone)
    await layer.group_add("room", "nobody.receives")
    waiting = {c: asyncio.ensure_future(layer.receive(c)) for c in receivers}
    await asyncio.sleep(0.2)
    with caplog.at_level(logging.WARNING, "channels_rs"):
        own_redis.kill()
        own_redis.start()
        back = time.monotonic()
        while not all(task.done() for task in waiting.values()):
            assert time.monotonic() - back < 2, "a live consumer missed the group"
            await view.group_send("room", {"type": "after.restart"})
            await asyncio.sleep(0.05)
    for task in waiting.values():
        assert task.result() == {"type": "after.restart"}
    said = [r.getMessage() for r in caplog.records if "had lost" in r.getMessage()]
    assert len(said) == 1, said
    assert (
        "had lost 5 of the 5 group memberships" in said[0] and "in 2 groups" in said[0]
    )
    assert own_redis.url in said[0]
    assert sorted(await layer.group_channels("room")) == sorted(receivers)
    assert await layer.group_channels("other") == [local[0]]
    await layer.flush()
