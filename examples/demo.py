"""Two websocket clients on the test project (one async consumer, one sync),
a broadcast from a plain Django view, and what each client got.

    nox -s demo
"""

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

from asgiref.sync import sync_to_async  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.testing import WebsocketCommunicator  # noqa: E402
from django.test import Client  # noqa: E402

from testproject.asgi import application  # noqa: E402


async def main():
    layer = get_channel_layer()
    print(f"CHANNEL_LAYERS backend: {type(layer).__module__}.{type(layer).__name__}")
    clients = {}
    for path in ("/ws/async/", "/ws/sync/"):
        clients[path] = WebsocketCommunicator(application, path)
        connected, _ = await clients[path].connect()
        print(f"connected {path}: {connected}")
    print(f"group 'broadcast' members: {sorted(layer.groups['broadcast'])}")

    response = await sync_to_async(Client().get)("/broadcast/", {"text": "hello"})
    print(f"GET /broadcast/?text=hello -> {response.status_code} {response.content!r}")
    for path, client in clients.items():
        print(f"{path} received: {await client.receive_from(timeout=2)!r}")

    await clients["/ws/async/"].send_to(text_data="typed in the async client")
    for path, client in clients.items():
        print(f"{path} received: {await client.receive_from(timeout=2)!r}")

    for client in clients.values():
        await client.disconnect()
    print(
        f"after disconnect: groups={dict(layer.groups)} channels={len(layer.channels)}"
    )


if __name__ == "__main__":
    asyncio.run(main())
