"""What one group_send costs its caller and redis-server, for the Redis core
layers, at 100, 1,000 and 10,000 members on two processes' queue keys.

    python benches/group_send_cost.py

Caller time is wall time per call, awaited one after another; Redis CPU is
INFO's used_cpu_user + used_cpu_sys per call, on a server started here.
"""

import asyncio
import sys
import time
from pathlib import Path

from channels_redis.core import RedisChannelLayer as UpstreamLayer

import channels_rs
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis_server import RedisServer  # noqa: E402

LAYERS = {"channels_rs": channels_rs.RedisChannelLayer, "channels_redis": UpstreamLayer}


def redis_cpu(client):
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


async def cost(layer_class, url, client, members):
    # Room for every copy: a full queue would be skipped, not written.
    layer = layer_class(hosts=[url], capacity=10**6)
    for start in range(0, members, 100):
        names = [
            f"specific.{'ab'[n % 2] * 12}!{n:012d}" for n in range(start, start + 100)
        ]
        await asyncio.gather(*(layer.group_add("cost", name) for name in names))
    message = {"type": "cost.message", "text": "hello", "t": time.time()}
    await layer.group_send("cost", message)
    calls = max(20, 20_000 // members)
    cpu, started = redis_cpu(client), time.perf_counter()
    for _ in range(calls):
        await layer.group_send("cost", message)
    wall = (time.perf_counter() - started) / calls
    cpu = (redis_cpu(client) - cpu) / calls
    await layer.flush()
    return wall * 1000, cpu * 1000


def main():
    server = RedisServer()
    client = redis.Redis(port=server.port)
    try:
        print(f"{'members':>8}" + "".join(f"{name:>30}" for name in LAYERS))
        print(f"{'':>8}" + f"{'caller / Redis CPU, ms':>30}" * len(LAYERS))
        for members in (100, 1000, 10_000):
            cells = []
            for layer_class in LAYERS.values():
                run = cost(layer_class, server.url, client, members)
                wall, cpu = asyncio.run(run)
                cells.append(f"{wall:.2f} / {cpu:.2f}")
            print(
                f"{members:>8,}" + "".join(f"{cell:>30}" for cell in cells), flush=True
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
