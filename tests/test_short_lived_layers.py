"""Layers made and dropped without being closed, as
`override_settings(CHANNEL_LAYERS=...)` does once per test in a Django test
suite: each lets go of its connections and pumps at once, so a long suite
does not fill the server, and a full server says so."""

import asyncio
import gc

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.test import override_settings

from channels_rs import RedisChannelLayer, RedisPubSubChannelLayer
from conftest import receive, until
from redis_server import RedisServer, connect, info_field

KINDS = {"redis": RedisChannelLayer, "pubsub": RedisPubSubChannelLayer}


def clients(server):
    """The connections the server holds, besides the one asking."""
    return int(info_field(server, "clients", "connected_clients")) - 1


async def use(layer):
    """What a consumer test does: a channel of its own, a group, a broadcast
    received (which starts the layer's pump or subscriber)."""
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    await layer.group_send("room", {"type": "hello"})
    assert await receive(layer, channel) == {"type": "hello"}


@pytest.mark.parametrize("kind", KINDS)
async def test_dropped_layers_let_go_of_their_connections(own_redis, kind):
    for _ in range(10):
        await use(KINDS[kind](hosts=[own_redis.url]))
    # Only the last layer's are left, once the server has seen the others'
    # closes (a busy machine can delay one past the next check).
    left = lambda: clients(own_redis) <= 2  # noqa: E731
    await until(left, "only the last layer's connections", timeout=1)
    gc.collect()
    await until(lambda: clients(own_redis) == 0, "no connections left", timeout=1)


@pytest.mark.parametrize("kind", KINDS)
def test_override_settings_test_after_test_on_a_small_server(kind):
    """200 tests, each with a layer of its own, on a server that takes 20
    clients: none fails."""
    server = RedisServer("--maxclients", "20")
    try:
        config = {"hosts": [server.url]}
        settings = {"default": {"BACKEND": f"channels_rs.{KINDS[kind].__name__}"}}
        settings["default"]["CONFIG"] = config
        for _ in range(200):
            with override_settings(CHANNEL_LAYERS=settings):
                async_to_sync(use)(get_channel_layer())
    finally:
        server.stop()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_full_server_says_so(kind):
    server = RedisServer("--maxclients", "2")
    try:
        taken = [connect(server.port, timeout=1) for _ in range(2)]
        layer = KINDS[kind](hosts=[server.url])
        said = "max number of clients reached"
        with pytest.raises(ConnectionError, match=said):
            await layer.send("full.server", {"type": "not.sent"})
        with pytest.raises(ConnectionError, match=said):
            await layer.group_send("room", {"type": "not.sent"})
        for connection in taken:
            connection.close()
        await asyncio.sleep(0.1)
        await use(layer)
    finally:
        server.stop()
