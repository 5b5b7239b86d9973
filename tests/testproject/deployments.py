"""Django test cases that test_deployments.py runs with Django's own test
runner, as a project's suite would: the layer made once at import (the
module-level `channel_layer = get_channel_layer()` many projects have),
WebsocketCommunicator tests that use it, and a ChannelsLiveServerTestCase,
whose server runs in a process forked from this one after those tests
ran. With --parallel, the runner forks its workers after the import too."""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import ChannelsLiveServerTestCase, WebsocketCommunicator
from django.test import SimpleTestCase
from websockets.sync.client import connect

from .asgi import application
from .consumers import GROUP

channel_layer = get_channel_layer()


async def broadcast_reaches_a_communicator(text):
    communicator = WebsocketCommunicator(application, "/ws/async/")
    connected, _ = await communicator.connect()
    assert connected
    await channel_layer.group_send(GROUP, {"type": "broadcast.message", "text": text})
    assert await communicator.receive_from(timeout=5) == text
    await communicator.disconnect()


class CommunicatorTests(SimpleTestCase):
    def test_a_broadcast_reaches_the_consumer(self):
        async_to_sync(broadcast_reaches_a_communicator)("first")


# More classes of the same, so that --parallel has work for each worker.
class MoreCommunicatorTests(CommunicatorTests):
    pass


class YetMoreCommunicatorTests(CommunicatorTests):
    pass


class LastCommunicatorTests(CommunicatorTests):
    pass


class LiveServerTests(ChannelsLiveServerTestCase):
    serve_static = False

    def test_a_broadcast_reaches_the_live_server(self):
        with connect(self.live_server_ws_url + "/ws/async/", open_timeout=5) as socket:
            async_to_sync(channel_layer.group_send)(
                GROUP, {"type": "broadcast.message", "text": "live"}
            )
            self.assertEqual(socket.recv(timeout=5), "live")
