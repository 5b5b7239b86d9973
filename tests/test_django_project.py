"""The test project's consumers and view, through the layer CHANNEL_LAYERS
names: the in-memory default of settings.py, and Redis and Redis pub/sub,
each on one server and on a cluster."""

import time

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client, override_settings

import channels_rs
from redis_server import command
from testproject.asgi import application


def test_settings_load_our_layer():
    assert type(get_channel_layer()) is channels_rs.InMemoryChannelLayer


GROUP = "testproject__group__broadcast"


def pubsub_group_gone(servers):
    """Whether no server has a subscriber to the broadcast group any more
    (the unsubscribe is on its way to Redis for a moment)."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        replies = [command(s.port, "PUBSUB", "NUMSUB", GROUP) for s in servers]
        if all(reply.endswith(b":0\r\n") for reply in replies):
            return True
        time.sleep(0.02)
    return False


def group_key_gone(servers):
    """Whether no server holds the broadcast group's key (on a cluster, the
    nodes that do not serve its slot answer MOVED)."""
    key = "testproject:group:broadcast"
    return all(command(s.port, "EXISTS", key) != b":1\r\n" for s in servers)


@pytest.fixture(params=["memory", "redis", "pubsub", "cluster", "pubsub-cluster"])
def backend(request):
    """Runs the test with CHANNEL_LAYERS switched to each of our layers.
    Yields a check that the broadcast group left nothing behind."""
    if request.param == "memory":
        layer = get_channel_layer()
        yield lambda: layer.groups == {} and len(layer.channels) == 0
        return
    if request.param.endswith("cluster"):
        cluster = request.getfixturevalue("cluster")
        servers = cluster.servers
        hosts = [{"cluster": [m.url for m in cluster.current_masters()]}]
    else:
        servers = [request.getfixturevalue("redis")]
        hosts = [servers[0].url]
    pubsub = request.param.startswith("pubsub")
    layer_class = (
        channels_rs.RedisPubSubChannelLayer if pubsub else channels_rs.RedisChannelLayer
    )
    settings = {
        "default": {
            "BACKEND": f"channels_rs.{layer_class.__name__}",
            "CONFIG": {"hosts": hosts, "prefix": "testproject"},
        }
    }
    with override_settings(CHANNEL_LAYERS=settings):
        assert type(get_channel_layer()) is layer_class
        yield lambda: (pubsub_group_gone if pubsub else group_key_gone)(servers)


async def connect(path):
    communicator = WebsocketCommunicator(application, path)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


@pytest.fixture
async def clients(backend):
    clients = [await connect("/ws/async/"), await connect("/ws/sync/")]
    yield clients
    for client in clients:
        await client.disconnect()


async def test_view_broadcast_reaches_both_consumers(clients):
    response = await sync_to_async(Client().get)("/broadcast/", {"text": "hello all"})
    assert response.status_code == 200
    for client in clients:
        assert await client.receive_from(timeout=3) == "hello all"


async def test_message_from_one_socket_reaches_every_socket(clients):
    await clients[0].send_to(text_data="from async")
    for client in clients:
        assert await client.receive_from(timeout=3) == "from async"


async def test_disconnect_leaves_no_group_behind(backend):
    clients = [await connect("/ws/async/"), await connect("/ws/sync/")]
    for client in clients:
        await client.disconnect()
    assert backend()
