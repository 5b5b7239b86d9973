"""Benchmark channels_rs's layers against the originals, in one run, on this
machine. Prints messages per second for each and the ratio; the Redis table
also shows channels_redis's pub/sub layer on the same server.

    python benches/bench.py [--quick] [--only memory|redis|wakeups|bulk|cpu]
                            [--chart PNG]

With --chart, it also draws every table as bars into that PNG (matplotlib).
"""

import argparse
import asyncio
import functools
import logging
import math
import os
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import channels.layers
from asgiref.sync import async_to_sync
from channels.utils import await_many_dispatch

import channels_rs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

SEQUENTIAL = 20_000
PAIRS, PER_PAIR = 100, 200
FAN_OUT_MEMBERS, FAN_OUT_ROUNDS = 100, 200
DRAIN_MEMBERS = 10_000


async def warm(layer, channel):
    """One message through `channel` before timing: pub/sub layers only get
    what is sent after they subscribe, which their first receive does; the
    others open their connections."""
    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.05)
    await layer.send(channel, {"type": "bench.warm"})
    await waiting


def consumer(layer, channel, on_message):
    """Receives on `channel` the way channels' consumers do: each receive()
    a task of its own, awaited through asyncio.wait by await_many_dispatch.
    A bare `await layer.receive()` loop skips that cost and flatters every
    layer. Cancel the returned task to stop it."""

    async def dispatch(message):
        on_message(message)

    receive = functools.partial(layer.receive, channel)
    return asyncio.ensure_future(await_many_dispatch([receive], dispatch))


async def stopped(tasks):
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def one_by_one(layer, channel, count, rate=None):
    """Sends `count` messages to `channel`, each once a consumer has the one
    before, back to back or `rate` a second. Returns the wall and process
    CPU (every thread) seconds it took."""
    message = {"type": "bench.message", "text": "hello"}
    await warm(layer, channel)
    arrived = asyncio.Event()
    task = consumer(layer, channel, lambda _: arrived.set())
    await asyncio.sleep(0.1)  # its first receive is waiting
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(count):
        if rate:
            await asyncio.sleep(wall + n / rate - time.perf_counter())
        await layer.send(channel, message)
        await arrived.wait()
        arrived.clear()
    took = time.perf_counter() - wall, time.process_time() - cpu
    await stopped([task])
    return took


async def round_trip(layer, count, local=False):
    """send, then wait until a consumer has it, one message at a time."""
    channel = await layer.new_channel() if local else "bench-rt"
    wall, _ = await one_by_one(layer, channel, count)
    return count / wall


async def concurrent_pairs(layer, pairs, per_pair, local=False):
    """`pairs` producers each sending to their own channel, `pairs` receivers."""
    message = {"type": "bench.message", "text": "hello"}

    async def produce(channel):
        for _ in range(per_pair):
            await layer.send(channel, message)
            await asyncio.sleep(0)

    if local:
        channels = [await layer.new_channel() for _ in range(pairs)]
    else:
        channels = [f"bench-pair-{n}" for n in range(pairs)]
    await asyncio.gather(*(warm(layer, channel) for channel in channels))
    received, all_in = 0, asyncio.Event()

    def count(_):
        nonlocal received
        received += 1
        if received == pairs * per_pair:
            all_in.set()

    consumers = [consumer(layer, channel, count) for channel in channels]
    start = time.perf_counter()
    await asyncio.gather(*map(produce, channels))
    await all_in.wait()
    rate = pairs * per_pair / (time.perf_counter() - start)
    await stopped(consumers)
    return rate


async def fan_out(layer, members, rounds):
    """group_send to `members` consumers that wait in receive() loops, as
    connected websocket consumers do; the next round starts once all got it."""
    channels = [await layer.new_channel() for _ in range(members)]
    for channel in channels:
        await layer.group_add("bench-fan", channel)
    received = 0
    round_done = asyncio.Event()

    def count(_):
        nonlocal received
        received += 1
        if received == members:
            round_done.set()

    consumers = [consumer(layer, channel, count) for channel in channels]
    await asyncio.sleep(0)
    message = {"type": "bench.message", "text": "hello"}
    start = time.perf_counter()
    for _ in range(rounds):
        received = 0
        round_done.clear()
        await layer.group_send("bench-fan", message)
        await round_done.wait()
    elapsed = time.perf_counter() - start
    await stopped(consumers)
    return members * rounds / elapsed


async def drain(layer, members):
    """one group_send to `members` channels, then every member reads it."""
    channels = [f"bench-drain-{n}" for n in range(members)]
    for channel in channels:
        await layer.group_add("bench-drain", channel)
    start = time.perf_counter()
    await layer.group_send("bench-drain", {"type": "bench.message"})
    for channel in channels:
        await layer.receive(channel)
    return members / (time.perf_counter() - start)


async def join_sync_group(layer):
    """A member that nobody reads, made in the same loop (pub/sub layers keep
    one inner layer per event loop)."""
    await layer.group_add("bench-sync", await layer.new_channel())


def sync_group_send(layer, calls):
    """async_to_sync(group_send) from plain sync code, as views and tasks do."""
    async_to_sync(join_sync_group)(layer)
    start = time.perf_counter()
    for _ in range(calls):
        async_to_sync(layer.group_send)("bench-sync", {"type": "bench.message"})
    rate = calls / (time.perf_counter() - start)
    async_to_sync(layer.flush)()
    return rate


def sync_no_op(calls):
    """The ceiling for any async_to_sync call: a coroutine that does nothing."""

    async def nothing():
        pass

    start = time.perf_counter()
    for _ in range(calls):
        async_to_sync(nothing)()
    return calls / (time.perf_counter() - start)


async def flushed(layer, scenario, *args):
    try:
        return await scenario(layer, *args)
    finally:
        await layer.flush()


def measure(layers, scenario, *args, runs=3):
    """`scenario`'s rate on each (layer class, config), each run on a fresh,
    flushed layer: the median of `runs`."""
    wrapped = lambda layer, *a: flushed(layer, scenario, *a)  # noqa: E731
    return [
        best_of(runs, wrapped, lambda c=cls, k=config: c(**k), *args)
        for cls, config in layers
    ]


def best_of(runs, scenario, make_layer, *args):
    """Median of `runs` runs, each on a fresh layer."""
    rates = [asyncio.run(scenario(make_layer(), *args)) for _ in range(runs)]
    return statistics.median(rates)


def in_memory_rows(quick):
    scale = 10 if quick else 1
    upstream = channels.layers.InMemoryChannelLayer
    ours = channels_rs.InMemoryChannelLayer
    big = {"capacity": 100_000}
    scenarios = [
        ("round trip, sequential", round_trip, {}, (SEQUENTIAL // scale,), 3),
        ("100 concurrent pairs", concurrent_pairs, big, (PAIRS, PER_PAIR // scale), 3),
        (
            "group_send to 100 waiting",
            fan_out,
            {},
            (FAN_OUT_MEMBERS, FAN_OUT_ROUNDS // scale),
            3,
        ),
        (
            f"group_send to {DRAIN_MEMBERS // scale:,}, drained",
            drain,
            {},
            (DRAIN_MEMBERS // scale,),
            1,
        ),
    ]
    for name, scenario, config, args, runs in scenarios:
        theirs = best_of(runs, scenario, lambda c=config: upstream(**c), *args)
        mine = best_of(runs, scenario, lambda c=config: ours(**c), *args)
        yield name, mine, theirs


def redis_rows(url, quick):
    """(scenario, channels_rs, channels_redis core, channels_redis pubsub)."""
    scale = 5 if quick else 1
    from channels_redis.core import RedisChannelLayer as UpstreamCore
    from channels_redis.pubsub import RedisPubSubChannelLayer as UpstreamPubSub

    # redis-py pools refuse a 101st connection: 100 receivers need more.
    theirs = {"hosts": [{"address": url, "max_connections": 1000}], "capacity": 100_000}
    mine = {"hosts": [url], "capacity": 100_000}
    layers = [
        (channels_rs.RedisChannelLayer, mine),
        (UpstreamCore, theirs),
        (UpstreamPubSub, {"hosts": [url]}),
    ]

    run = functools.partial(measure, layers)
    yield ("a) round trip, normal channel", *run(round_trip, 2000 // scale))
    yield ("b) 100 pairs, normal channels", *run(concurrent_pairs, PAIRS, 20 // scale))
    yield ("c) group_send to 100 waiting", *run(fan_out, FAN_OUT_MEMBERS, 50 // scale))
    yield ("d) round trip, new_channel()", *run(round_trip, 2000 // scale, True))
    yield (
        "e) 100 pairs, new_channel()",
        *run(concurrent_pairs, PAIRS, 20 // scale, True),
    )
    calls = 500 // scale
    ceiling = statistics.median(sync_no_op(calls) for _ in range(3))
    rates = [
        statistics.median(sync_group_send(cls(**config), calls) for _ in range(3))
        for cls, config in layers
    ]
    yield ("f) async_to_sync(group_send)", *rates)
    print(
        f"   async_to_sync(no-op) ceiling: {ceiling:,.0f} calls/s; channels_rs at "
        f"{rates[0] / ceiling:.0%} of it, channels_redis at {rates[1] / ceiling:.0%}, "
        f"its pubsub at {rates[2] / ceiling:.0%}"
    )
    direct = statistics.median(
        sync_direct(channels_rs.RedisChannelLayer(**mine), calls * 10) for _ in range(3)
    )
    yield ("g) group_send_sync vs f", direct, rates[1], rates[2])


def wakeup_rows(url, quick):
    """(scenario, eventfd, self-pipe, call_soon_threadsafe, uvloop with
    eventfd): channels_rs.RedisChannelLayer with each way the bridge wakes
    a loop, forced by CHANNELS_RS_WAKEUP, which each new loop reads."""
    import uvloop

    scale = 5 if quick else 1
    layers = [(channels_rs.RedisChannelLayer, {"hosts": [url], "capacity": 100_000})]
    runs = [
        ("eventfd", None),
        ("pipe", None),
        ("call_soon_threadsafe", None),
        ("eventfd", uvloop.EventLoopPolicy()),
    ]

    def on_each(scenario, *args):
        rates = []
        for wakeup, policy in runs:
            os.environ["CHANNELS_RS_WAKEUP"] = wakeup
            asyncio.set_event_loop_policy(policy)
            try:
                rates += measure(layers, scenario, *args)
            finally:
                del os.environ["CHANNELS_RS_WAKEUP"]
                asyncio.set_event_loop_policy(None)
        return rates

    yield ("a) round trip, normal channel", *on_each(round_trip, 2000 // scale))
    yield (
        "b) 100 pairs, normal channels",
        *on_each(concurrent_pairs, PAIRS, 20 // scale),
    )


def pubsub_rows(url, quick):
    """(scenario, channels_rs pubsub, channels_redis pubsub)."""
    scale = 5 if quick else 1
    from channels_redis.pubsub import RedisPubSubChannelLayer as UpstreamPubSub

    layers = [
        (channels_rs.RedisPubSubChannelLayer, {"hosts": [url], "capacity": 100_000}),
        (UpstreamPubSub, {"hosts": [url]}),
    ]

    run = functools.partial(measure, layers)
    yield ("round trip, new_channel()", *run(round_trip, 2000 // scale, True))
    yield ("100 pairs, new_channel()", *run(concurrent_pairs, PAIRS, 20 // scale, True))
    yield ("group_send to 100 waiting", *run(fan_out, FAN_OUT_MEMBERS, 50 // scale))


def cluster_rows(url, quick):
    """(scenario, one server, 1-master cluster, 3-master cluster): channels_rs
    only, as channels_redis cannot run on a cluster."""
    from redis_cluster import RedisCluster

    scale = 5 if quick else 1
    clusters = [RedisCluster(masters=n, replicas_per_master=0) for n in (1, 3)]
    try:
        targets = [[url]] + [[{"cluster": c.urls}] for c in clusters]

        layers = [
            (channels_rs.RedisChannelLayer, {"hosts": hosts, "capacity": 100_000})
            for hosts in targets
        ]

        run = functools.partial(measure, layers)
        yield ("a) round trip, normal channel", *run(round_trip, 2000 // scale))
        yield (
            "b) 100 pairs, normal channels",
            *run(concurrent_pairs, PAIRS, 20 // scale),
        )
        yield (
            "c) group_send to 100 waiting",
            *run(fan_out, FAN_OUT_MEMBERS, 50 // scale),
        )
        yield ("d) round trip, new_channel()", *run(round_trip, 2000 // scale, True))
        yield (
            "e) 100 pairs, new_channel()",
            *run(concurrent_pairs, PAIRS, 20 // scale, True),
        )
    finally:
        for cluster in clusters:
            cluster.stop()


BULK = 100


async def send_many(layer, batches, local, bulk):
    """`batches` times BULK messages to one channel: send_bulk, or a loop of
    send. Messages sent per second."""
    channel = await layer.new_channel() if local else "bench-bulk"
    messages = [{"type": "bench.message", "n": n} for n in range(BULK)]
    elapsed = 0.0
    for _ in range(batches):
        start = time.perf_counter()
        if bulk:
            await layer.send_bulk(channel, messages)
        else:
            for message in messages:
                await layer.send(channel, message)
        elapsed += time.perf_counter() - start
    return batches * BULK / elapsed


async def group_send_groups(layer, groups, members, rounds, bulk):
    """One message to each of `groups` groups of `members` members each:
    group_send_many, or a loop of group_send. Group messages per second."""
    names = [f"bench-groups-{n}" for n in range(groups)]
    for name in names:
        for _ in range(members):
            await layer.group_add(name, await layer.new_channel())
    message = {"type": "bench.message"}
    start = time.perf_counter()
    for _ in range(rounds):
        if bulk:
            await layer.group_send_many(names, message)
        else:
            for name in names:
                await layer.group_send(name, message)
    return rounds * groups / (time.perf_counter() - start)


async def group_send_messages(layer, members, rounds, bulk):
    """BULK messages to one group of `members`: group_send_bulk, or a loop of
    group_send. Messages per second; members are drained between rounds."""
    channels = [await layer.new_channel() for _ in range(members)]
    for channel in channels:
        await layer.group_add("bench-bulk-group", channel)
    messages = [{"type": "bench.message", "n": n} for n in range(BULK)]
    elapsed = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        if bulk:
            await layer.group_send_bulk("bench-bulk-group", messages)
        else:
            for message in messages:
                await layer.group_send("bench-bulk-group", message)
        elapsed += time.perf_counter() - start
        for channel in channels:
            for _ in messages:
                await layer.receive(channel)
    return rounds * BULK / elapsed


def bulk_rows(url, quick):
    """(scenario, channels_rs bulk call, channels_rs loop, channels_redis
    loop): bulk operations against a loop of single calls."""
    from channels_redis.core import RedisChannelLayer as Upstream

    scale = 5 if quick else 1
    config = {"hosts": [url], "capacity": 100_000}
    ours = [(channels_rs.RedisChannelLayer, config)]
    theirs = [(Upstream, config)]

    def three(scenario, *args):
        return (
            *measure(ours, scenario, *args, True),
            *measure(ours, scenario, *args, False),
            *measure(theirs, scenario, *args, False),
        )

    yield (f"{BULK} messages, normal channel", *three(send_many, 20 // scale, False))
    yield (f"{BULK} messages, new_channel()", *three(send_many, 20 // scale, True))
    yield (
        f"{BULK} messages to a group of 20",
        *three(group_send_messages, 20, 5 // scale or 1),
    )
    yield (
        "1 message to 50 groups of 20",
        *three(group_send_groups, 50, 20, 20 // scale),
    )


async def cpu_per_round_trip(layer, count, rate=None):
    """Process CPU µs per round trip through a consumer on a new_channel()."""
    _, cpu = await one_by_one(layer, await layer.new_channel(), count, rate)
    return cpu / count * 1e6


async def idle_cpu(layer, seconds):
    """The share of a core a quiet consumer uses: a receive pending, nothing
    sent."""
    channel = await layer.new_channel()
    await warm(layer, channel)
    task = consumer(layer, channel, lambda _: None)
    await asyncio.sleep(0.1)
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    share = (time.process_time() - cpu) / (time.perf_counter() - wall) * 100
    await stopped([task])
    return share


def light_load_rows(url, quick):
    """(layer, CPU µs per round trip at 50/s, at full speed, idle CPU %)."""
    from channels_redis.core import RedisChannelLayer as UpstreamCore
    from channels_redis.pubsub import RedisPubSubChannelLayer as UpstreamPubSub

    scale = 5 if quick else 1
    redis = {"hosts": [url]}
    # The in-memory layers show what waking Python's loop costs by itself.
    layers = [
        ("channels_rs core", channels_rs.RedisChannelLayer, redis),
        ("channels_rs pubsub", channels_rs.RedisPubSubChannelLayer, redis),
        ("channels_redis core", UpstreamCore, redis),
        ("channels_redis pubsub", UpstreamPubSub, redis),
        ("channels_rs in-memory", channels_rs.InMemoryChannelLayer, {}),
        ("channels in-memory", channels.layers.InMemoryChannelLayer, {}),
    ]
    for name, cls, config in layers:
        run = functools.partial(measure, [(cls, config)])
        yield (
            name,
            *run(cpu_per_round_trip, 100 // scale, 50),
            *run(cpu_per_round_trip, 2000 // scale),
            *run(idle_cpu, 2 / scale),
        )


def print_cpu_table(rows):
    title = (
        "Process CPU per round trip through a consumer, new_channel() "
        "(µs, median of 3), and idle CPU with a receive pending"
    )
    print(f"\n{title}")
    header = f"{'layer':<24}{'at 50/s':>12}{'full speed':>12}{'idle':>10}"
    print(header)
    print("-" * len(header))
    for name, light, full, idle in rows:
        print(f"{name:<24}{light:>10.0f}µs{full:>10.0f}µs{idle:>9.1f}%", flush=True)


def sync_direct(layer, calls):
    """channels_rs's group_send_sync: plain sync code, no event loop."""
    async_to_sync(join_sync_group)(layer)
    start = time.perf_counter()
    for _ in range(calls):
        layer.group_send_sync("bench-sync", {"type": "bench.message"})
    rate = calls / (time.perf_counter() - start)
    async_to_sync(layer.flush)()
    return rate


# Each table printed so far, for --chart: (title, column names, rows).
TABLES = []


def print_table(title, rows, baselines, ratio_to=None, first="channels_rs"):
    """Rows of (scenario, ours, *baselines). The ratio is ours to the first
    baseline, or with `ratio_to` that column to ours."""
    rows = list(rows)
    TABLES.append((title, [first, *baselines], rows))
    print(f"\n{title}")
    header = f"{'scenario':<34}{first:>14}"
    header += "".join(f"{name:>16}" for name in baselines) + f"{'ratio':>9}"
    print(header)
    print("-" * len(header))
    for name, mine, *theirs in rows:
        line = f"{name:<34}{mine:>12,.0f}/s"
        line += "".join(f"{rate:>14,.0f}/s" for rate in theirs)
        ratio = mine / theirs[0] if ratio_to is None else theirs[ratio_to] / mine
        print(f"{line}{ratio:>8.1f}x")
        sys.stdout.flush()


def chart(path):
    """Every table as horizontal bars, rates on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = [len(rows) * (len(columns) + 1) * 0.22 + 1 for _, columns, rows in TABLES]
    figure, axes = plt.subplots(
        len(TABLES), 1, figsize=(10, sum(heights)), height_ratios=heights
    )
    axes = [axes] if len(TABLES) == 1 else axes
    for ax, (title, columns, rows) in zip(axes, TABLES, strict=True):
        bar = 1 / (len(columns) + 1)
        for at, column in enumerate(columns):
            rates = [row[1 + at] for row in rows]
            places = [n + at * bar for n in range(len(rows))]
            ax.barh(places, rates, height=bar, label=column)
        ax.set_yticks([n + bar * (len(columns) - 1) / 2 for n in range(len(rows))])
        ax.set_yticklabels([row[0] for row in rows])
        ax.invert_yaxis()
        ax.set_xscale("log")
        # Bars start a decade below the smallest rate: starting them at the
        # smallest would draw it as nothing and overstate every difference.
        smallest = min(row[1 + at] for row in rows for at in range(len(columns)))
        ax.set_xlim(left=10 ** math.floor(math.log10(smallest)))
        ax.set_xlabel("messages or calls per second (log scale)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"\nchart: {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="less work, noisier")
    parser.add_argument(
        "--only",
        choices=["memory", "redis", "wakeups", "bulk", "cpu"],
        help="one layer's tables, the bridge's ways to wake a loop, bulk "
        "operations, or CPU per message at light load",
    )
    parser.add_argument("--chart", metavar="PNG", help="also draw the tables here")
    options = parser.parse_args()
    print(
        f"Python {platform.python_version()}, channels {version('channels')}, "
        f"channels-rs {version('channels-rs')}, {platform.machine()}"
    )
    if options.only in (None, "memory"):
        print_table(
            "InMemoryChannelLayer (messages/s, median of 3; drain: 1 run)",
            in_memory_rows(options.quick),
            ["channels"],
        )
    if options.only != "memory":
        from redis_server import RedisServer, server_binary

        server = RedisServer()
        try:
            print(
                f"\nRedis: {Path(server_binary()).name} on 127.0.0.1:{server.port}; "
                f"channels_redis {version('channels-redis')}, "
                f"redis-py {version('redis')}"
            )
            if options.only in (None, "bulk"):
                print_table(
                    "Bulk operations on Redis (messages/s; for 50 groups, group "
                    "messages/s; median of 3; ratio: bulk to a loop of our calls)",
                    bulk_rows(server.url, options.quick),
                    ["rs loop", "channels_redis"],
                    first="rs bulk",
                )
            if options.only == "cpu":
                print_cpu_table(light_load_rows(server.url, options.quick))
            if options.only in ("bulk", "cpu"):
                return
            if options.only != "wakeups":
                print_table(
                    "RedisChannelLayer (messages/s or calls/s, median of 3; "
                    "ratio to channels_redis core)",
                    redis_rows(server.url, options.quick),
                    ["channels_redis", "its pubsub"],
                )
            print_table(
                "channels_rs.RedisChannelLayer by how the bridge wakes the loop "
                "(messages/s, median of 3; ratio: call_soon_threadsafe to eventfd)",
                wakeup_rows(server.url, options.quick),
                ["self-pipe", "threadsafe", "uvloop"],
                ratio_to=1,
                first="eventfd",
            )
            if options.only != "wakeups":
                print_cpu_table(light_load_rows(server.url, options.quick))
                print_table(
                    "RedisPubSubChannelLayer (messages/s, median of 3)",
                    pubsub_rows(server.url, options.quick),
                    ["channels_redis"],
                )
                # Layers of the cluster runs outlive their stopped clusters for a
                # moment, and redis-rs logs each reconnection attempt.
                logging.getLogger("redis.cluster_handling").setLevel(
                    logging.CRITICAL + 1
                )
                print_table(
                    "channels_rs.RedisChannelLayer on Redis Cluster (no replicas; "
                    "ratio: 3 masters to one server)",
                    cluster_rows(server.url, options.quick),
                    ["1 master", "3 masters"],
                    ratio_to=-1,
                    first="one server",
                )
        finally:
            server.stop()
    if options.chart:
        chart(options.chart)


if __name__ == "__main__":
    main()
