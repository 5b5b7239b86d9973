"""The test project's consumers and view, through the layer that settings.py
names in CHANNEL_LAYERS."""

import channels_rs
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client
from testproject.asgi import application


def test_settings_load_our_layer():
    assert type(get_channel_layer()) is channels_rs.InMemoryChannelLayer


async def connect(path):
    communicator = WebsocketCommunicator(application, path)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


@pytest.fixture
async def clients():
    clients = [await connect("/ws/async/"), await connect("/ws/sync/")]
    yield clients
    for client in clients:
        await client.disconnect()


async def test_view_broadcast_reaches_both_consumers(clients):
    response = await sync_to_async(Client().get)("/broadcast/", {"text": "hello all"})
    assert response.status_code == 200
    for client in clients:
        assert await client.receive_from(timeout=2) == "hello all"


async def test_message_from_one_socket_reaches_every_socket(clients):
    await clients[0].send_to(text_data="from async")
    for client in clients:
        assert await client.receive_from(timeout=2) == "from async"


async def test_disconnect_leaves_the_layer_empty():
    layer = get_channel_layer()
    clients = [await connect("/ws/async/"), await connect("/ws/sync/")]
    assert len(layer.groups["broadcast"]) == 2
    for client in clients:
        await client.disconnect()
    assert layer.groups == {}
    assert len(layer.channels) == 0
