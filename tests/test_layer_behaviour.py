"""What every channels-rs layer does alike, run on each of them: the
in-memory layer, and Redis and Redis pub/sub, each on one server and on a
cluster."""

import asyncio

import pytest

from channels_rs import (
    InMemoryChannelLayer,
    InvalidMessage,
    RedisChannelLayer,
    RedisPubSubChannelLayer,
)


@pytest.fixture(params=["memory", "redis", "pubsub", "cluster", "pubsub-cluster"])
async def layer(request):
    if request.param == "memory":
        layer = InMemoryChannelLayer()
    else:
        if request.param.endswith("cluster"):
            hosts = [{"cluster": request.getfixturevalue("cluster").urls}]
        else:
            hosts = [request.getfixturevalue("redis").url]
        pubsub = request.param.startswith("pubsub")
        kind = RedisPubSubChannelLayer if pubsub else RedisChannelLayer
        layer = kind(hosts=hosts, prefix="behaviour")
    yield layer
    await layer.flush()


async def receive(layer, channel):
    return await asyncio.wait_for(layer.receive(channel), 3)


async def test_extensions(layer):
    assert {"groups", "flush"} <= set(layer.extensions)


async def test_new_channels_are_unique_and_carry_messages_exactly(layer):
    names = {await layer.new_channel() for _ in range(20)}
    assert len(names) == 20
    channel = names.pop()
    message = {"type": "exact", "text": "é", "n": [1, 2.5, None, True], "b": b"\x00"}
    await layer.send(channel, message)
    assert await receive(layer, channel) == message


async def test_messages_keep_their_order(layer):
    channel = await layer.new_channel()
    for n in range(20):
        await layer.send(channel, {"type": "m", "n": n})
    assert [(await receive(layer, channel))["n"] for n in range(20)] == list(range(20))


async def test_groups_reach_members_until_discarded(layer):
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("behaviour-room", first)
    await layer.group_add("behaviour-room", second)
    await layer.group_send("behaviour-room", {"type": "both"})
    assert await receive(layer, first) == {"type": "both"}
    assert await receive(layer, second) == {"type": "both"}
    await layer.group_discard("behaviour-room", first)
    await layer.group_send("behaviour-room", {"type": "second only"})
    assert await receive(layer, second) == {"type": "second only"}
    await layer.send(first, {"type": "direct"})
    assert await receive(layer, first) == {"type": "direct"}


@pytest.mark.parametrize("name", ["", "x" * 101, "bad name", "bad\u00e9"])
async def test_invalid_names_are_refused(layer, name):
    with pytest.raises(TypeError):
        await layer.send(name, {"type": "x"})
    with pytest.raises(TypeError):
        await layer.group_send(name, {"type": "x"})


async def test_messages_must_be_dicts(layer):
    channel = await layer.new_channel()
    for bad in (["a list"], "text", None):
        with pytest.raises(InvalidMessage):
            await layer.send(channel, bad)
        with pytest.raises(InvalidMessage):
            await layer.group_send("behaviour-room", bad)


async def test_usable_after_flush(layer):
    await layer.flush()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "after.flush"})
    assert await receive(layer, channel) == {"type": "after.flush"}
