"""The Redis core layer keeps each group's members between group_sends
(CLIENT TRACKING), so that a big group's names are not read on every call.
Whatever changes a group, by whichever client or process, reaches the next
group_send as if the members had been read again."""

import asyncio
import multiprocessing
import re
import signal
import time

import pytest
from channels_redis.core import RedisChannelLayer as UpstreamLayer

from channels_rs import RedisChannelLayer
from conftest import receive
from redis_server import Monitor, command, members


async def queued(layer, channel):
    """The messages waiting on `channel`, taken."""
    got = []
    while True:
        try:
            got.append(await receive(layer, channel, timeout=0.2))
        except asyncio.TimeoutError:
            return got


def tracking_clients(server):
    """The ids of the server's clients that have tracking on."""
    listing = command(server.port, "CLIENT", "LIST").decode()
    return re.findall(r"id=(\d+) .*flags=\w*t\w* ", listing)


async def test_changes_by_another_client_reach_the_very_next_group_send(redis):
    ours = RedisChannelLayer(hosts=[redis.url], prefix="cached")
    theirs = UpstreamLayer(hosts=[redis.url], prefix="cached")
    for n in range(20):
        await theirs.group_add("room", f"worker.{n}")
        if n:
            await theirs.group_discard("room", f"worker.{n - 1}")
        await ours.group_send("room", {"type": "m", "n": n})
        # Sent again unchanged: kept members, the same outcome.
        await ours.group_send("room", {"type": "m", "n": n})
    for n in range(20):
        got = await queued(ours, f"worker.{n}")
        assert [message["n"] for message in got] == [n, n], n
    await ours.flush()


async def test_a_member_gone_stale_leaves_a_kept_group(redis):
    layer = RedisChannelLayer(hosts=[redis.url], prefix="stale", group_expiry=4)
    await layer.group_add("room", "worker.old")
    joined = time.time()
    await asyncio.sleep(3)
    await layer.group_add("room", "worker.new")
    await layer.group_send("room", {"type": "m", "n": 1})
    # Stale once a whole second below now is group_expiry past its join:
    # the first member only, and the key (expiring at joined + 7) lives on.
    await asyncio.sleep(max(0, int(joined) + 5.2 - time.time()))
    await layer.group_send("room", {"type": "m", "n": 2})
    assert [m["n"] for m in await queued(layer, "worker.old")] == [1]
    assert [m["n"] for m in await queued(layer, "worker.new")] == [1, 2]
    assert members(redis.port, "stale:group:room") == [b"worker.new"]
    await layer.flush()


async def test_an_expired_group_is_not_kept(redis):
    """The key expires group_expiry after the last group_add, a little
    before its members' scores say they are stale."""
    layer = RedisChannelLayer(hosts=[redis.url], prefix="expired", group_expiry=2)
    while time.time() % 1 > 0.3:
        await asyncio.sleep(0.05)
    await layer.group_add("room", "worker.one")
    await layer.group_send("room", {"type": "m", "n": 1})
    await asyncio.sleep(2.2)
    await layer.group_send("room", {"type": "m", "n": 2})
    assert [m["n"] for m in await queued(layer, "worker.one")] == [1]


async def test_a_flushed_server_leaves_no_kept_group(redis):
    layer = RedisChannelLayer(hosts=[redis.url], prefix="flushed")
    theirs = UpstreamLayer(hosts=[redis.url], prefix="flushed")
    await layer.group_add("room", "worker.gone")
    await layer.group_send("room", {"type": "m"})
    assert command(redis.port, "FLUSHALL") == b"+OK\r\n"
    await layer.group_send("room", {"type": "m"})
    assert command(redis.port, "DBSIZE") == b":0\r\n"
    # The empty group was kept; a member another client adds gets the next.
    await theirs.group_add("room", "worker.new")
    await layer.group_send("room", {"type": "m", "n": 3})
    assert [m["n"] for m in await queued(layer, "worker.new")] == [3]
    await layer.flush()


async def test_a_lost_tracking_connection_loses_no_change(own_redis):
    layer = RedisChannelLayer(hosts=[own_redis.url])
    theirs = UpstreamLayer(hosts=[own_redis.url])
    await layer.group_add("room", "worker.a")
    await layer.group_send("room", {"type": "m", "n": 1})
    [tracker] = tracking_clients(own_redis)
    assert command(own_redis.port, "CLIENT", "KILL", "ID", tracker) == b":1\r\n"
    # Nobody is told of these changes now.
    await theirs.group_discard("room", "worker.a")
    await theirs.group_add("room", "worker.b")
    await layer.group_send("room", {"type": "m", "n": 2})

    deadline = time.monotonic() + 10
    while tracking_clients(own_redis) in ([], [tracker]):
        assert time.monotonic() < deadline, "no new tracking connection"
        await layer.group_send("room", {"type": "m", "n": 3})
        await asyncio.sleep(0.1)
    await theirs.group_add("room", "worker.c")
    await layer.group_send("room", {"type": "m", "n": 4})
    assert [m["n"] for m in await queued(layer, "worker.a")] == [1]
    got = [m["n"] for m in await queued(layer, "worker.b")]
    assert got[0] == 2 and set(got[1:-1]) == {3} and got[-1] == 4, got
    assert [m["n"] for m in await queued(layer, "worker.c")] == [4]
    await layer.flush()


async def test_past_4096_kept_groups_the_cache_starts_over(redis):
    layer = RedisChannelLayer(hosts=[redis.url], prefix="many")
    for n in range(4098):
        await layer.group_add(f"room-{n}", "worker.all")
        await layer.group_send(f"room-{n}", {"type": "m"})
    await layer.group_send("room-4097", {"type": "m"})
    monitor = Monitor(redis)
    await layer.group_send("room-4097", {"type": "m"})
    await layer.group_send("room-0", {"type": "m"})
    sent = [name for name, _ in monitor.commands()]
    assert sent == [
        *["PING", "EVALSHA"],
        *["ZREMRANGEBYSCORE", "ZRANGE", "ZRANGE", "ZRANGE", "EVALSHA"],
    ], sent
    await layer.flush()


def send_in_a_child(url, queue):
    """In a forked child: join the room, send to it, report."""

    async def child():
        layer = RedisChannelLayer(hosts=[url], prefix="forked")
        await layer.group_add("room", "worker.child")
        await layer.group_send("room", {"type": "m", "from": "child"})

    asyncio.run(child())
    queue.put("sent")


def test_a_forked_child_and_its_parent_see_each_others_changes(redis):
    layer = RedisChannelLayer(hosts=[redis.url], prefix="forked")
    asyncio.run(layer.group_add("room", "worker.parent"))
    asyncio.run(layer.group_send("room", {"type": "m", "from": "parent"}))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=send_in_a_child, args=(redis.url, queue))
    child.start()
    assert queue.get(timeout=30) == "sent"
    child.join(10)
    asyncio.run(layer.group_send("room", {"type": "m", "from": "parent"}))

    async def check():
        return [m["from"] for m in await queued(layer, channel)]

    channel = "worker.parent"
    assert asyncio.run(check()) == ["parent", "child", "parent"]
    channel = "worker.child"
    assert asyncio.run(check()) == ["child", "parent"]
    asyncio.run(layer.flush())


@pytest.mark.parametrize("size", [3, 500])
async def test_kept_and_read_members_get_the_same_bytes(redis, size):
    """A group_send from kept members writes what one after a fresh read
    does: one copy per queue key, naming every member on it."""
    layer = RedisChannelLayer(hosts=[redis.url], prefix="same")
    for n in range(size):
        await layer.group_add("room", f"specific.abc!{n}")
    await layer.group_send("room", {"type": "m"})
    [read] = members(redis.port, "samespecific.abc!")
    command(redis.port, "DEL", "samespecific.abc!")
    await layer.group_send("room", {"type": "m"})
    [kept] = members(redis.port, "samespecific.abc!")
    # Past the random prefix that keeps equal messages apart.
    assert kept[12:] == read[12:]
    await layer.flush()


async def test_a_server_gone_silent_times_out_once(own_redis):
    """Kept members or not, a group_send to a server that stopped
    answering fails after one socket_timeout, naming the server."""
    hosts = [{"address": own_redis.url, "socket_timeout": 0.5}]
    layer = RedisChannelLayer(hosts=hosts)
    await layer.group_add("room", "worker.one")
    await layer.group_send("room", {"type": "m"})
    own_redis.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=f"{own_redis.port} did not answer"):
            await layer.group_send("room", {"type": "m"})
        assert 0.5 <= time.monotonic() - started < 0.9
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
