"""What keeping live group memberships costs: one process with 10,000 live
memberships (100 groups of 100 process-local channels, a receive waiting on
each), renewed every quarter of group_expiry.

    python benches/renewal_cost.py [--members 10000] [--seconds 20]

It runs the same process twice on a server started here, renewal on and
off, with group_expiry=4 (a round a second), and takes redis-server's CPU
(INFO) and this process's CPU (all threads) over the same time. What
renewal adds, per round, is the difference; at the default group_expiry
(86,400 s) a round comes every 21,600 s, which gives its share of a core.
"""

import argparse
import asyncio
import sys
import time
from pathlib import Path

import channels_rs
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis_server import RedisServer  # noqa: E402

GROUP_EXPIRY = 4
DEFAULT_ROUND = 86_400 / 4


def redis_cpu(client):
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


async def run(url, client, members, seconds, renew):
    layer = channels_rs.RedisChannelLayer(
        hosts=[url], group_expiry=GROUP_EXPIRY, renew_groups=renew
    )
    channels = [await layer.new_channel() for _ in range(members)]
    for start in range(0, members, 100):
        group = f"room{start // 100}"
        await asyncio.gather(
            *(layer.group_add(group, c) for c in channels[start : start + 100])
        )
    receives = [asyncio.ensure_future(layer.receive(c)) for c in channels]
    await asyncio.sleep(1)
    cpu, process = redis_cpu(client), time.process_time()
    await asyncio.sleep(seconds)
    cpu, process = redis_cpu(client) - cpu, time.process_time() - process
    alive = len(await layer.group_channels("room0"))
    for receive in receives:
        receive.cancel()
    await asyncio.gather(*receives, return_exceptions=True)
    await layer.flush()
    return cpu, process, alive


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20)
    options = parser.parse_args()
    server = RedisServer()
    client = redis.Redis(port=server.port)
    try:
        runs = {}
        for renew in (False, True):
            runs[renew] = asyncio.run(
                run(server.url, client, options.members, options.seconds, renew)
            )
    finally:
        server.stop()
    rounds = options.seconds * 4 / GROUP_EXPIRY
    (off_redis, off_process, off_alive), (on_redis, on_process, on_alive) = (
        runs[False],
        runs[True],
    )
    per_round = [(on_redis - off_redis) / rounds, (on_process - off_process) / rounds]
    print(
        f"{options.members:,} live memberships, group_expiry={GROUP_EXPIRY} "
        f"({rounds:.0f} rounds in {options.seconds:g} s); members left in a "
        f"group of 100 at the end: {on_alive} renewed, {off_alive} not"
    )
    print(f"{'':<28}{'redis-server':>16}{'this process':>16}")

    def row(title, *seconds, digits=0):
        cells = "".join(f"{value * 1000:>13.{digits}f} ms" for value in seconds)
        print(f"{title:<28}{cells}")

    row("CPU, renewal off", off_redis, off_process)
    row("CPU, renewal on", on_redis, on_process)
    row("per round (difference)", *per_round, digits=1)
    print(
        f"{'share of a core, default':<28}"
        + "".join(f"{cost / DEFAULT_ROUND * 100:>14.5f} %" for cost in per_round)
    )


if __name__ == "__main__":
    main()
