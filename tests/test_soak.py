"""Long runs for `nox -s soak`: memory stays flat over a million messages,
and abandoned process-local channels do not pile up. Each prints its RSS
curve."""

import asyncio
import gc
import os
import time

import pytest

from channels_rs import RedisChannelLayer

pytestmark = pytest.mark.soak

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20


async def test_a_million_messages_keep_memory_flat(redis):
    layer = RedisChannelLayer(hosts=[redis.url], capacity=1000)
    channels = [await layer.new_channel() for _ in range(1000)]
    groups = [f"soak-{n}" for n in range(10)]
    for at, channel in enumerate(channels):
        await layer.group_add(groups[at % 10], channel)
    total = int(os.environ.get("SOAK_MESSAGES", 1_000_000))
    received = 0

    async def consume(channel):
        nonlocal received
        while True:
            await layer.receive(channel)
            received += 1

    consumers = [asyncio.ensure_future(consume(c)) for c in channels]
    message = {"type": "soak.message", "text": "x" * 100, "n": 0}
    curve = []
    sent = 0
    started = time.monotonic()
    while sent < total:
        # A round: a direct message to every channel, then one group_send
        # to each group (100 members each): 2,000 deliveries.
        await asyncio.gather(*(layer.send(channel, message) for channel in channels))
        for group in groups:
            await layer.group_send(group, message)
        sent += 2000
        while received < sent:
            await asyncio.sleep(0.001)
        if sent % 100_000 == 0:
            gc.collect()
            curve.append((sent, rss_mb()))
    elapsed = time.monotonic() - started
    for consumer in consumers:
        consumer.cancel()
    await layer.flush()
    print(f"\n{total:,} messages over 1,000 channels in {elapsed:.0f} s")
    print("RSS (MB) after each 100,000:", " ".join(f"{mb:.1f}" for _, mb in curve))
    warm = curve[0][1]
    assert max(mb for _, mb in curve) - warm <= 10


async def test_abandoned_local_channels_do_not_pile_up(redis):
    # All local channels share one Redis key, which capacity limits.
    layer = RedisChannelLayer(hosts=[redis.url], expiry=2, capacity=100_000)
    listener = await layer.new_channel()
    waiting = asyncio.ensure_future(layer.receive(listener))  # keeps the pump on
    message = {"type": "soak.message", "text": "x" * 200}
    curve = []
    for _ in range(int(os.environ.get("SOAK_ROUNDS", 4))):
        # 100,000 channels that each get a message nobody will receive.
        names = [await layer.new_channel() for _ in range(100_000)]
        for start in range(0, len(names), 1000):
            batch = names[start : start + 1000]
            await asyncio.gather(*(layer.send(name, message) for name in batch))
        await asyncio.sleep(2.5)  # past expiry: the next delivery sweeps
        await layer.send(listener, {"type": "sweep"})
        await waiting
        waiting = asyncio.ensure_future(layer.receive(listener))
        del names
        gc.collect()
        curve.append(rss_mb())
    waiting.cancel()
    await layer.flush()
    print("\nRSS (MB) after each 100,000 abandoned channels:")
    print(" ".join(f"{mb:.1f}" for mb in curve))
    # Kept for ever, each round's messages would add about 40 MB; expired,
    # later rounds reuse what earlier ones freed.
    assert curve[-1] - curve[0] <= 30


IDLE_CONSUMERS = 10_000


def idle_consumer_memory(layer_path, url):
    """RSS a fresh process gains for IDLE_CONSUMERS tasks waiting in
    receive() on their own process-local channels, less what as many tasks
    cost awaiting a plain future: bytes per channel."""
    import importlib
    import subprocess
    import sys

    probe = f"""
import asyncio, gc, importlib, os
module, name = {layer_path!r}.rsplit(".", 1)
layer_class = getattr(importlib.import_module(module), name)
PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE
async def main():
    layer = layer_class(hosts=[{url!r}])
    warm = await layer.new_channel()
    await layer.send(warm, {{"type": "warm"}})
    await layer.receive(warm)
    base = rss()
    async def wait(future):
        return await future
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range({IDLE_CONSUMERS})]
    plain = [asyncio.ensure_future(wait(f)) for f in futures]
    await asyncio.sleep(0.5)
    waiting_plain = rss() - base
    names = [await layer.new_channel() for _ in range({IDLE_CONSUMERS})]
    base = rss()
    tasks = [asyncio.ensure_future(layer.receive(n)) for n in names]
    await asyncio.sleep(1)
    waiting_layer = rss() - base
    print(waiting_layer - waiting_plain)
    os._exit(0)
asyncio.run(main())
"""
    importlib.import_module(layer_path.rsplit(".", 1)[0])
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1]) / IDLE_CONSUMERS


def test_memory_per_idle_consumer(redis):
    ours = idle_consumer_memory("channels_rs.RedisChannelLayer", redis.url)
    theirs = idle_consumer_memory("channels_redis.core.RedisChannelLayer", redis.url)
    print(
        f"\nlayer memory per idle consumer ({IDLE_CONSUMERS:,} process-local "
        f"channels, each with a pending receive): channels_rs {ours:,.0f} bytes, "
        f"channels_redis {theirs:,.0f} bytes"
    )
    assert ours < 1024
