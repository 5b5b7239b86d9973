"""Fan-out across processes, every layer in one run, on servers started here.

    python benches/fanout.py [--members 1000,10000] [--procs 2] [--runs 3]
                             [--server redis|valkey] [--layers NAME,...]

`--procs` worker processes each hold members/procs `new_channel()` members
of one group, each awaiting `receive()` in a task of its own, as a consumer
does. This process then makes `--sends` group_send calls (default 50, or 20
from 10,000 members), one every 10 ms, each carrying its publish time.
Latency is arrival minus publish time; deliveries/s counts every delivery
from the first publish to the last arrival. CPU is counted from the first
publish to the end: the client's over this process and the workers,
redis-server's from its INFO, nats-server's from /proc. RSS is a worker's
growth for its members and their waiting receives. "call ms" is how long a
group_send takes its caller (median), "server ms/call" the server's CPU per
group_send. Each figure is the median of `--runs` runs. `--chart PNG` draws
deliveries/s and p99.
"""

import argparse
import asyncio
import gc
import importlib
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import redis_server  # noqa: E402

GROUP = "fanout"
SPACING = 0.01
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
LAYERS = {
    "channels_rs core": ("channels_rs.RedisChannelLayer", "redis"),
    "channels_rs pubsub": ("channels_rs.RedisPubSubChannelLayer", "redis"),
    "channels_redis core": ("channels_redis.core.RedisChannelLayer", "redis"),
    "channels_redis pubsub": ("channels_redis.pubsub.RedisPubSubChannelLayer", "redis"),
    "channels-nats": ("channels_nats.NatsChannelLayer", "nats"),
}


def make_layer(backend, url, **config):
    module, _, name = backend.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    if backend.startswith("channels_nats"):
        return cls(servers=[url], **config)
    return cls(hosts=[url], **config)


def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def cpu_of(pid):
    """User + system CPU seconds of process `pid` so far (10 ms ticks)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def redis_cpu(url):
    """redis-server's CPU seconds so far, from INFO (to the microsecond)."""
    import redis

    with redis.Redis.from_url(url) as client:
        info = client.info("cpu")
    return info["used_cpu_sys"] + info["used_cpu_user"]


def worker(backend, url, members, sends, pipe):
    asyncio.run(hold_members(backend, url, members, sends, pipe))


async def hold_members(backend, url, members, sends, pipe):
    """Members that receive until they have `sends` messages; reports when
    all are warm, then, after "go", what arrived and what it cost."""
    layer = make_layer(backend, url)
    await layer.group_add("warm-up", await layer.new_channel())  # connects
    gc.collect()
    before = rss()
    channels = [await layer.new_channel() for _ in range(members)]
    for start in range(0, members, 100):
        some = channels[start : start + 100]
        await asyncio.gather(*(layer.group_add(GROUP, c) for c in some))
    warm = asyncio.Event()
    warmed = [0]
    latencies = []

    async def member(channel):
        got_warm, got = False, 0
        while got < sends:
            message = await layer.receive(channel)
            if message["type"] == "fan.warm":
                if not got_warm:
                    got_warm = True
                    warmed[0] += 1
                    if warmed[0] == members:
                        warm.set()
                continue
            latencies.append(time.time() - message["t"])
            got += 1

    tasks = [asyncio.create_task(member(c)) for c in channels]
    loop = asyncio.get_running_loop()
    pipe.send(("subscribed",))
    await warm.wait()
    gc.collect()
    pipe.send(("warm", rss() - before))
    deadline = await loop.run_in_executor(None, pipe.recv)
    started = time.process_time()
    done, pending = await asyncio.wait(tasks, timeout=deadline - time.time())
    for task in pending:
        task.cancel()
    finished = time.time()
    pipe.send(("done", latencies, time.process_time() - started, finished))
    await asyncio.sleep(0.1)


async def publish(backend, url, sends, pipes):
    layer = make_layer(backend, url)
    while not all(pipe.poll() for pipe in pipes):  # "subscribed"
        await asyncio.sleep(0.05)
    for pipe in pipes:
        pipe.recv()
    growth = []
    while len(growth) < len(pipes):
        await layer.group_send(GROUP, {"type": "fan.warm"})
        await asyncio.sleep(0.2)
        growth += [pipe.recv()[1] for pipe in pipes if pipe.poll()]
    await asyncio.sleep(0.5)  # stray warm-ups drain
    return layer, growth


def one_run(name, url, server_cpu_of, members, sends, procs):
    backend, _ = LAYERS[name]
    context = multiprocessing.get_context("spawn")
    ends = [context.Pipe() for _ in range(procs)]
    workers = [
        context.Process(
            target=worker, args=(backend, url, members // procs, sends, child)
        )
        for _, child in ends
    ]
    for process in workers:
        process.start()
    pipes = [parent for parent, _ in ends]
    try:
        return asyncio.run(
            measure(backend, url, server_cpu_of, members, sends, pipes, workers)
        )
    finally:
        for process in workers:
            process.join(10)
            if process.is_alive():
                process.kill()


async def measure(backend, url, server_cpu_of, members, sends, pipes, workers):
    layer, growth = await publish(backend, url, sends, pipes)
    deadline = time.time() + sends * SPACING + 60
    for pipe in pipes:
        pipe.send(deadline)
    server_cpu, own_cpu = server_cpu_of(), time.process_time()
    first, calls = time.time(), []
    for n in range(sends):
        # On a fixed cadence: a slow group_send delays only the next one.
        await asyncio.sleep(first + n * SPACING - time.time())
        started = time.perf_counter()
        await layer.group_send(GROUP, {"type": "fan.out", "n": n, "t": time.time()})
        calls.append(time.perf_counter() - started)
    own_cpu = time.process_time() - own_cpu
    # Not a blocking recv(): a layer that buffers its writes (channels-nats)
    # needs the loop to flush the last group_send.
    loop = asyncio.get_running_loop()
    reports = [await loop.run_in_executor(None, pipe.recv) for pipe in pipes]
    server_cpu = server_cpu_of() - server_cpu
    latencies = sorted(ms for report in reports for ms in report[1])
    delivered = len(latencies)
    last = max(report[3] for report in reports)
    client_cpu = own_cpu + sum(report[2] for report in reports)
    per = max(delivered, 1)
    return {
        "delivered": delivered / (members * sends),
        "p50": quantile(latencies, 0.5),
        "p99": quantile(latencies, 0.99),
        "max": latencies[-1] * 1000 if latencies else float("nan"),
        "deliveries/s": delivered / (last - first),
        "client µs": client_cpu / per * 1e6,
        "server µs": server_cpu / per * 1e6,
        "RSS MB": statistics.mean(growth) / 2**20,
        "call ms": statistics.median(calls) * 1000,
        "server ms/call": server_cpu / sends * 1000,
    }


def quantile(ordered, q):
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def nats_server():
    binary = shutil.which("nats-server") or str(
        Path(sys.executable).parent / "nats-server"
    )
    port = redis_server.free_port()
    process = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    redis_server.wait_for(listening, f"nats-server on port {port}", timeout=10)
    return process, f"nats://127.0.0.1:{port}"


COLUMNS = {
    "delivered": "{:.0%}",
    "p50": "{:,.1f} ms",
    "p99": "{:,.1f} ms",
    "max": "{:,.1f} ms",
    "deliveries/s": "{:,.0f}",
    "client µs": "{:.1f}",
    "server µs": "{:.2f}",
    "RSS MB": "{:+.1f}",
    "call ms": "{:.2f}",
    "server ms/call": "{:.2f}",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="1000,10000")
    parser.add_argument("--sends", type=int, help="default 50, or 20 from 10,000")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server", choices=["redis", "valkey"], default=None)
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--chart", metavar="PNG", help="also draw the results here")
    options = parser.parse_args()
    if options.server:
        redis_server.use(options.server)
    redis = redis_server.RedisServer()
    nats, nats_url = nats_server()
    servers = {
        "redis": (redis.url, lambda: redis_cpu(redis.url)),
        "nats": (nats_url, lambda: cpu_of(nats.pid)),
    }
    names = options.layers.split(",")
    results = {}  # members -> layer -> medians
    print(
        f"Fan-out, {options.procs} worker processes, {os.cpu_count()} cores; "
        f"{redis_server.server_binary()}; per delivery: client and server CPU"
    )
    try:
        for members in map(int, options.members.split(",")):
            sends = options.sends or (50 if members < 10_000 else 20)
            spacing = f"{SPACING * 1000:.0f} ms apart"
            print(f"\n{members:,} members × {sends} group_sends, {spacing}")
            print(f"{'layer':22}" + "".join(f"{c:>15}" for c in COLUMNS))
            for name in names:
                url, server_cpu_of = servers[LAYERS[name][1]]
                runs = [
                    one_run(name, url, server_cpu_of, members, sends, options.procs)
                    for _ in range(options.runs)
                ]
                medians = {k: statistics.median(r[k] for r in runs) for k in COLUMNS}
                results.setdefault(members, {})[name] = medians
                cells = (form.format(medians[k]) for k, form in COLUMNS.items())
                print(f"{name:22}" + "".join(f"{c:>15}" for c in cells), flush=True)
    finally:
        redis.stop()
        nats.terminate()
    if options.chart:
        chart(results, options.chart)


def chart(results, path):
    """Deliveries/s and p99 of each layer at each size, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    sizes = list(results)
    names = list(results[sizes[0]])
    bar = 1 / (len(names) + 1)
    for ax, key, label in (
        (axes[0], "deliveries/s", "deliveries per second (higher is better)"),
        (axes[1], "p99", "p99 latency, ms, log scale (lower is better)"),
    ):
        for at, name in enumerate(names):
            values = [results[size][name][key] for size in sizes]
            ax.bar([n + at * bar for n in range(len(sizes))], values, bar, label=name)
        ax.set_xticks([n + bar * (len(names) - 1) / 2 for n in range(len(sizes))])
        ax.set_xticklabels([f"{size:,} members" for size in sizes])
        ax.set_title(label, fontsize=10)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"\nchart: {path}")


if __name__ == "__main__":
    main()
