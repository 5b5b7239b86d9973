"""A fork after the layer exists, as os.fork() and multiprocessing's fork
start method make them (Daphne's live server, gunicorn --preload, Celery
prefork and manage.py test --parallel fork the same way): each child is a
process of its own for the layer, with process-local channels of its own,
and the parent goes on as before. (Django's runner and gunicorn:
test_deployments.py.)"""

import asyncio
import json
import multiprocessing
import os
import select
import time

import pytest

from channels_rs import InMemoryChannelLayer, RedisChannelLayer, RedisPubSubChannelLayer
from conftest import receive

CHILDREN = 3


@pytest.fixture(params=["redis", "pubsub", "memory"])
def layer(request):
    if request.param == "memory":
        return InMemoryChannelLayer()
    hosts = [request.getfixturevalue("redis").url]
    kind = RedisChannelLayer if request.param == "redis" else RedisPubSubChannelLayer
    return kind(hosts=hosts, prefix="fork")


async def round_trip(layer, tag):
    """A message through a new channel of this process, and what else that
    channel got."""
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "fork.message", "tag": tag})
    got = await receive(layer, channel, timeout=8)
    try:
        extra = await receive(layer, channel, timeout=0.2)
    except asyncio.TimeoutError:
        extra = None
    return {
        "got": got["tag"],
        "extra": extra,
        "prefix": getattr(layer, "client_prefix", None),
    }


def forked(layer):
    """Runs round_trip in CHILDREN forked children at once; their results."""
    readers, pids = [], []
    for n in range(CHILDREN):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, then leave without cleaning up
            try:
                result = asyncio.run(round_trip(layer, f"child-{n}"))
            except BaseException as error:  # noqa: BLE001 - reported to the parent
                result = {"error": repr(error)}
            os.write(write, json.dumps(result).encode())
            os._exit(0)
        os.close(write)
        readers.append(read)
        pids.append(pid)
    results = []
    deadline = time.monotonic() + 30
    for read, pid in zip(readers, pids, strict=True):
        ready, _, _ = select.select([read], [], [], max(0, deadline - time.monotonic()))
        results.append(json.loads(os.read(read, 65536) or b"{}") if ready else None)
        os.close(read)
        os.waitpid(pid, 0)
    return results


def test_forked_children_are_processes_of_their_own(layer):
    parent = asyncio.run(round_trip(layer, "parent"))
    # Forked at once: the parent's pump is still in a blocking pop.
    children = forked(layer)
    assert [child and child.get("got") for child in children] == [
        f"child-{n}" for n in range(CHILDREN)
    ], children
    assert all(child["extra"] is None for child in children), children
    if parent["prefix"] is not None:
        prefixes = {parent["prefix"], *(child["prefix"] for child in children)}
        assert len(prefixes) == CHILDREN + 1, "a child shares a client prefix"
    # The parent goes on, and holds nothing of the children's.
    again = asyncio.run(round_trip(layer, "parent-again"))
    assert again == {**parent, "got": "parent-again"}


def in_a_fork(layer, queue, n):
    queue.put(asyncio.run(round_trip(layer, f"worker-{n}")))


def test_multiprocessing_fork_workers(layer):
    asyncio.run(round_trip(layer, "parent"))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [
        context.Process(target=in_a_fork, args=(layer, queue, n)) for n in range(2)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(10)
    assert sorted(result["got"] for result in results) == ["worker-0", "worker-1"]
    assert all(result["extra"] is None for result in results)
