"""The release workflow's smoke test on runners without a Redis server: the
wheel imports, the in-memory layer carries a message, and the bridge picks
a way to wake this platform's default event loop."""

import asyncio

import channels_rs
from channels_rs._core import wakeup_of


async def main():
    layer = channels_rs.InMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "smoke.test"})
    assert await layer.receive(channel) == {"type": "smoke.test"}
    woken_by = wakeup_of(asyncio.get_running_loop())
    print(f"in-memory round trip ok; the loop is woken by {woken_by}")


asyncio.run(main())
