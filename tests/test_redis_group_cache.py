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
        *["MULTI", "EVALSHA", "EXEC", "WATCH"],
        *["ZREMRANGEBYSCORE", "WATCH", "ZRANGE", "ZRANGE", "ZRANGE"],
        *["MULTI", "EVALSHA", "EXEC", "WATCH"],
    ], sent
    await layer.flush()


# A group sent to lately stays WATCHed on the tracking connection, and the
# next group_send to it writes there in MULTI/EXEC, without a PING first.
ONE_ROUND_TRIP = ["MULTI", "EVALSHA", "EXEC", "WATCH"]


async def test_a_group_sent_to_again_takes_one_round_trip(redis):
    layer = RedisChannelLayer(hosts=[redis.url], prefix="once")
    await layer.group_add("room", "worker.one")
    await layer.group_send("room", {"type": "m", "n": 0})
    monitor = Monitor(redis)
    for n in (1, 2, 3):
        await layer.group_send("room", {"type": "m", "n": n})
    sent = monitor.commands()
    assert [name for name, _ in sent] == ONE_ROUND_TRIP * 3, sent
    assert ("WATCH", "once:group:room") in sent
    assert [m["n"] for m in await queued(layer, "worker.one")] == [0, 1, 2, 3]
    await layer.flush()


async def test_a_change_to_another_watched_group_costs_a_round_trip_not_a_message(
    redis,
):
    """A WATCHed group another client changed makes EXEC refuse until the
    connection UNWATCHes. Told of the change first, the next send does
    that before it writes; if the word comes later, EXEC refuses, the
    script it held never runs (MONITOR shows none), and the send PINGs and
    writes the usual way. Either way each message arrives once."""
    ours = RedisChannelLayer(hosts=[redis.url], prefix="other")
    theirs = UpstreamLayer(hosts=[redis.url], prefix="other")
    for group in ("room-a", "room-b"):
        await ours.group_add(group, f"worker.{group}")
        await ours.group_send(group, {"type": "m", "n": 0})
    await theirs.group_add("room-b", "worker.new")
    monitor = Monitor(redis)
    await ours.group_send("room-a", {"type": "m", "n": 1})
    await ours.group_send("room-b", {"type": "m", "n": 1})
    sent = [name for name, _ in monitor.commands()]
    read_b = ["ZREMRANGEBYSCORE", "WATCH", "ZRANGE", "ZRANGE", "ZRANGE"]
    told = ["UNWATCH", "WATCH", *ONE_ROUND_TRIP, *read_b, *ONE_ROUND_TRIP]
    refused = ["MULTI", "EXEC", "WATCH", "PING", "EVALSHA", "UNWATCH", *read_b]
    assert sent in (told, [*refused, *ONE_ROUND_TRIP]), sent
    assert [m["n"] for m in await queued(ours, "worker.room-a")] == [0, 1]
    assert [m["n"] for m in await queued(ours, "worker.room-b")] == [0, 1]
    assert [m["n"] for m in await queued(ours, "worker.new")] == [1]
    await ours.flush()


async def test_changes_racing_group_sends_lose_or_double_no_message(redis):
    """Members joining while sends are in flight: some EXECs refuse (the
    change came after the WATCH), and those sends go the usual way. Every
    member gets each message sent after it joined once, in order."""
    ours = RedisChannelLayer(hosts=[redis.url], prefix="race", capacity=1000)
    theirs = UpstreamLayer(hosts=[redis.url], prefix="race")
    await ours.group_add("room", "worker.steady")
    await ours.group_send("room", {"type": "m", "n": -1})
    monitor = Monitor(redis)
    for n in range(200):
        joining = theirs.group_add("room", f"worker.joined-{n}")
        await asyncio.gather(ours.group_send("room", {"type": "m", "n": n}), joining)
    sent = " ".join(name for name, _ in monitor.commands())
    assert "MULTI EXEC" in sent, "no EXEC refused: the race was never run"
    got = [m["n"] for m in await queued(ours, "worker.steady")]
    assert got == list(range(-1, 200))
    for n in (0, 99, 199):
        got = [m["n"] for m in await queued(ours, f"worker.joined-{n}")]
        assert got in (list(range(n, 200)), list(range(n + 1, 200))), (n, got)
    await ours.flush()


async def test_big_copies_leave_few_groups_watched(redis):
    """Copies over 16 KiB go as plain commands, with no EXEC to forget their
    group's WATCH: past 16 such groups the next send UNWATCHes first, so a
    process does not keep every group it ever sent to WATCHed in Redis."""
    layer = RedisChannelLayer(hosts=[redis.url], prefix="big")
    for n in range(20):
        await layer.group_add(f"room-{n}", "worker.one")
    big = {"type": "m", "text": "x" * 20_000}
    monitor = Monitor(redis)
    for n in range(20):
        await layer.group_send(f"room-{n}", {**big, "n": n})
    sent = [name for name, _ in monitor.commands()]
    assert sent.count("UNWATCH") == 1, sent
    assert [m["n"] for m in await queued(layer, "worker.one")] == list(range(20))
    await layer.flush()


async def test_a_script_the_server_lost_is_loaded_and_sent_once(redis):
    layer = RedisChannelLayer(hosts=[redis.url], prefix="lost")
    await layer.group_add("room", "worker.one")
    await layer.group_send("room", {"type": "m", "n": 0})
    assert command(redis.port, "SCRIPT", "FLUSH") == b"+OK\r\n"
    await layer.group_send("room", {"type": "m", "n": 1})
    await layer.group_send("room", {"type": "m", "n": 2})
    assert [m["n"] for m in await queued(layer, "worker.one")] == [0, 1, 2]
    await layer.flush()


async def test_concurrent_group_sends_each_arrive_once(redis):
    """One send at a time writes in MULTI/EXEC; the others go the usual
    way alongside it."""
    layer = RedisChannelLayer(hosts=[redis.url], prefix="together")
    for member in ("worker.one", "worker.two"):
        await layer.group_add("room", member)
    await layer.group_send("room", {"type": "m", "n": -1})
    sends = (layer.group_send("room", {"type": "m", "n": n}) for n in range(50))
    await asyncio.gather(*sends)
    await layer.group_add("room", "worker.three")
    await layer.group_send("room", {"type": "m", "n": 50})
    for member in ("worker.one", "worker.two"):
        got = [m["n"] for m in await queued(layer, member)]
        assert got[0] == -1 and sorted(got[1:-1]) == list(range(50)), got
        assert got[-1] == 50
    assert [m["n"] for m in await queued(layer, "worker.three")] == [50]
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
