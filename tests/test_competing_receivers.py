"""Competing receivers on one normal channel, as `runworker` runs them:
several tasks in one process, several processes, a process killed with
work in hand. Each job reaches exactly one receiver, and none is lost."""

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time

import pytest
from channels_redis.core import RedisChannelLayer as UpstreamLayer

from channels_rs import RedisChannelLayer
from conftest import receive, until
from redis_server import command, members

WORKER = os.path.join(os.path.dirname(__file__), "receiver_worker.py")


def sender(redis):
    return RedisChannelLayer(hosts=[redis.url], capacity=100_000)


@pytest.fixture(params=["server", "shards", "cluster"])
def hosts(request):
    """One server, three shards the channel's messages are spread over, or
    a cluster (whose backup keys share the queue key's slot)."""
    if request.param == "server":
        return [request.getfixturevalue("own_redis").url]
    if request.param == "shards":
        return [server.url for server in request.getfixturevalue("shards")]
    return [{"cluster": request.getfixturevalue("cluster").urls}]


async def deliveries(receivers, channel, jobs):
    """Sends `jobs` numbered jobs on `channel` through the first of
    `receivers`, while each of them receives in a task of its own; how often
    each job arrived, and how many each receiver got."""
    got, by = collections.Counter(), collections.Counter()

    async def receiver(n, layer):
        while True:
            got[(await layer.receive(channel))["job"]] += 1
            by[n] += 1

    tasks = [asyncio.create_task(receiver(*pair)) for pair in enumerate(receivers)]
    for job in range(jobs):
        await receivers[0].send(channel, {"type": "job", "job": job})
    deadline = time.monotonic() + 30
    while sum(got.values()) < jobs and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # a late second copy would arrive by now
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return got, by


async def test_receivers_in_one_process_each_get_one(hosts):
    layer, jobs = RedisChannelLayer(hosts=hosts, capacity=100_000), 2000
    for run in range(3):
        got, by = await deliveries([layer] * 4, "one-process", jobs)
        assert (run, sorted(got.elements())) == (run, list(range(jobs)))
        assert len(by) == 4


async def test_receivers_of_both_layers_share_a_channel(own_redis):
    """Two of ours and two of channels_redis's on one channel: each job
    reaches one of them. channels_redis's restore step puts back all of its
    backup key, so ours keep theirs elsewhere."""
    hosts, jobs = [own_redis.url], 2000
    ours = RedisChannelLayer(hosts=hosts, capacity=100_000)
    theirs = UpstreamLayer(hosts=hosts, capacity=100_000)
    got, by = await deliveries([ours, theirs] * 2, "mixed", jobs)
    assert sorted(got.elements()) == list(range(jobs))
    assert by[0] + by[2] > 0 and by[1] + by[3] > 0


def start_workers(redis, out, count, tasks=4, kill_after=0):
    return [
        subprocess.Popen(
            [sys.executable, WORKER, redis.url, "work", str(out(n)), str(tasks)]
            + ([str(kill_after)] if n == 0 and kill_after else [])
        )
        for n in range(count)
    ]


def records(files):
    """Every job the workers wrote, and how often."""
    got = collections.Counter()
    for path in files:
        if path.exists():
            got.update(int(line) for line in path.read_text().split())
    return got


def wait_for_jobs(files, jobs, timeout):
    deadline = time.monotonic() + timeout
    while sum(records(files).values()) < jobs and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # a late second copy would arrive by now
    return records(files)


@pytest.mark.parametrize("run", range(3))
def test_receiver_processes_each_get_one(own_redis, tmp_path, run):
    redis = own_redis
    jobs, files = 3000, [tmp_path / f"worker-{n}" for n in range(3)]
    workers = start_workers(redis, lambda n: files[n], 3)
    try:
        layer = sender(redis)
        for job in range(jobs):
            layer.send_sync("work", {"type": "job", "job": job})
        got = wait_for_jobs(files, jobs, timeout=30)
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    twice = sorted(job for job, n in got.items() if n > 1)
    assert (len(twice), sorted(got)) == (0, list(range(jobs)))


def held(redis):
    """The members of the channel's in-flight backup now."""
    return set(members(redis.port, "asgiwork$held"))


def test_a_receiver_killed_mid_run_loses_nothing(own_redis, tmp_path):
    """Worker 0 dies after 300 jobs, holding the jobs its other receivers had
    popped but not yet handed to their consumers: those come back once their
    lease runs out, and every job is delivered exactly once."""
    redis, jobs = own_redis, 3000
    files = [tmp_path / f"worker-{n}" for n in range(3)]
    layer = sender(redis)
    for job in range(jobs):
        layer.send_sync("work", {"type": "job", "job": job})
    workers = start_workers(redis, lambda n: files[n], 3, kill_after=300)
    try:
        assert workers[0].wait(timeout=30) == -signal.SIGKILL
        first = held(redis)
        time.sleep(0.5)
        left_behind = first & held(redis)  # the others' copies are cleared in ms
        assert len(left_behind) == 3
        got = wait_for_jobs(files, jobs, timeout=30)
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    assert sum(records(files[:1]).values()) == 300
    twice = sorted(job for job, n in got.items() if n > 1)
    assert (len(twice), sorted(got)) == (0, list(range(jobs)))
    assert held(redis) == set()


def test_a_receiver_killed_with_a_blocking_pops_message_loses_nothing(
    own_redis, tmp_path
):
    """Job 1 reaches worker 0's second receiver through its blocking pop
    while the process holds its loop, and dies with it: a worker started
    later gets it."""
    redis, files = own_redis, [tmp_path / "worker-0", tmp_path / "worker-1"]
    (worker,) = start_workers(redis, lambda n: files[0], 1, tasks=2, kill_after=1)
    try:
        time.sleep(1)  # both receivers block on the server
        layer = sender(redis)
        layer.send_sync("work", {"type": "job", "job": 0})
        deadline = time.monotonic() + 10
        while not files[0].exists() or not files[0].read_text():
            assert time.monotonic() < deadline
            time.sleep(0.005)
        layer.send_sync("work", {"type": "job", "job": 1})
        assert worker.wait(timeout=10) == -signal.SIGKILL
        assert len(held(redis)) == 1
        (survivor,) = start_workers(redis, lambda n: files[1], 1)
        try:
            got = wait_for_jobs(files, 2, timeout=20)
        finally:
            survivor.kill()
            survivor.wait()
    finally:
        worker.kill()
        worker.wait()
    assert records(files[:1]) == {0: 1}
    assert got == {0: 1, 1: 1}


class QuickRedisChannelLayer(RedisChannelLayer):
    brpop_timeout = 1  # so a receive runs its restore step every second


async def test_a_dead_channels_redis_receivers_backup_comes_back(own_redis):
    """A channels_redis receiver that died between its pop and its consumer
    left the message in its backup: with no channels_redis receiver left,
    ours put it back once the lease they gave it ran out."""
    port = own_redis.port
    member = UpstreamLayer(hosts=[own_redis.url]).serialize({"type": "job", "job": 7})
    command(port, "ZADD", "asgiorphan$inflight", time.time(), member)
    layer = QuickRedisChannelLayer(hosts=[own_redis.url])
    started = time.monotonic()
    assert await receive(layer, "orphan", timeout=15) == {"type": "job", "job": 7}
    assert time.monotonic() - started > 3  # not before the lease ran out
    await until(lambda: command(port, "KEYS", "*") == b"*0\r\n", "no keys left")
