"""Normal channels (those without "!"), channels_rs against channels_redis
on one redis-server: messages per second and the server's CPU time per
message, which is what a shared Redis runs out of first.

    python benches/normal_channels.py

Runs a send-then-receive loop, 100 concurrent pairs (channels_rs only:
channels_redis runs out of pooled connections there) and 4 competing
receivers on one channel, each receiving in a task of its own."""

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

from bench import concurrent_pairs, round_trip
from channels_redis.core import RedisChannelLayer as UpstreamLayer

from channels_rs import RedisChannelLayer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_server import RedisServer  # noqa: E402


def cpu_seconds(server):
    """redis-server's user and system CPU time so far."""
    stat = Path(f"/proc/{server.process.pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def competing(layer, jobs, receivers=4):
    """`jobs` sent to one channel that `receivers` tasks take from."""
    done, got = asyncio.Event(), 0

    async def receiver():
        nonlocal got
        while True:
            await layer.receive("bench-jobs")
            got += 1
            if got == jobs:
                done.set()

    tasks = [asyncio.ensure_future(receiver()) for _ in range(receivers)]
    start = time.perf_counter()
    for job in range(jobs):
        await layer.send("bench-jobs", {"type": "bench.job", "job": job})
    await done.wait()
    rate = jobs / (time.perf_counter() - start)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return rate


async def pairs(layer, messages):
    return await concurrent_pairs(layer, 100, messages // 100)


# name, messages, run, whether channels_redis runs it too
SCENARIOS = [
    ("send, then receive", 10_000, round_trip, True),
    ("100 concurrent pairs", 40_000, pairs, False),
    ("4 receivers, one channel", 20_000, competing, True),
]


async def main():
    server = RedisServer()
    try:
        for name, count, run, upstream_too in SCENARIOS:
            kinds = [RedisChannelLayer] + [UpstreamLayer] * upstream_too
            for kind in kinds:
                rates, costs = [], []
                for _ in range(3):
                    layer = kind(hosts=[server.url], capacity=100_000)
                    before = cpu_seconds(server)
                    rates.append(await run(layer, count))
                    costs.append((cpu_seconds(server) - before) / count * 1e6)
                    await layer.flush()
                print(
                    f"{name:26} {kind.__module__.split('.')[0]:15} "
                    f"{statistics.median(rates):9,.0f} msg/s  "
                    f"Redis CPU {statistics.median(costs):5.1f} µs/msg"
                )
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
