"""channels_rs.RedisChannelLayer on a real server, and side by side with the
real channels_redis on the same server (a mixed fleet during a migration)."""

import asyncio
import os
import re
import signal
import socket
import threading
import time

import msgpack
import pytest
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer as UpstreamLayer

from channels_rs import InvalidMessage, RedisChannelLayer
from conftest import receive, until
from redis_server import (
    Monitor,
    RedisServer,
    command,
    connections_received,
    info_field,
    wait_for,
)


@pytest.fixture
def redis(own_redis):
    """Each test here has a server of its own: what it finds in Redis is
    what it wrote, whatever ran before."""
    return own_redis


@pytest.fixture
async def layer(redis):
    layer = RedisChannelLayer(hosts=[redis.url])
    yield layer
    await layer.flush()


def keys(redis):
    return sorted(
        re.findall(rb"\$\d+\r\n([^\r]*)\r\n", command(redis.port, "KEYS", "*"))
    )


async def test_send_receive_and_keys_in_redis(layer, redis):
    await layer.send("http.request", {"type": "http.request", "body": b"\x00\x01"})
    assert keys(redis) == [b"asgihttp.request"]
    assert await receive(layer, "http.request") == {
        "type": "http.request",
        "body": b"\x00\x01",
    }


async def test_process_local_channels(layer, redis):
    first, second = await layer.new_channel(), await layer.new_channel()
    assert re.fullmatch(rf"specific\.{layer.client_prefix}![0-9a-f]{{32}}", first)
    waiting = asyncio.create_task(receive(layer, second))
    await asyncio.sleep(0.05)
    await layer.send(first, {"type": "to.first"})
    await layer.send(second, {"type": "to.second"})
    assert await waiting == {"type": "to.second"}
    assert await receive(layer, first) == {"type": "to.first"}


async def test_receiving_another_instances_channel_is_refused(layer, redis):
    other = RedisChannelLayer(hosts=[redis.url])
    with pytest.raises(AssertionError, match="client prefix"):
        await layer.receive(await other.new_channel())


async def test_capacity(redis):
    layer = RedisChannelLayer(
        hosts=[redis.url], capacity=2, channel_capacity={"big.*": 3}
    )
    for _ in range(2):
        await layer.send("small", {"type": "x"})
    with pytest.raises(ChannelFull):
        await layer.send("small", {"type": "x"})
    for _ in range(3):
        await layer.send("big.one", {"type": "x"})
    with pytest.raises(ChannelFull):
        await layer.send("big.one", {"type": "x"})
    await layer.flush()


# Trim, members, the oldest and newest members' scores: sent together on
# the tracking connection, the group WATCHed after its trim, and UNWATCH
# first as a group WATCHed there changed since.
WATCHED_READ = ["UNWATCH", "ZREMRANGEBYSCORE", "WATCH", "ZRANGE", "ZRANGE", "ZRANGE"]
# A write to a WATCHed group's members, and the groups WATCHed again.
WATCHED_WRITE = ["MULTI", "EVALSHA", "EXEC", "WATCH"]


async def test_the_commands_each_operation_sends(layer, redis):
    """send and group_add: one script each, run by its SHA. group_send: the
    members read, then small copies written by one script; members kept
    since the last call, and WATCHed since, cost nothing more."""
    await layer.send("warm", {"type": "connects and loads the scripts"})
    await layer.group_add("counted-room", "warm")
    await layer.group_send("counted-room", {"type": "x"})
    monitor = Monitor(redis)
    for n in range(10):
        await layer.send(f"counted-{n}", {"type": "x"})
        await layer.group_add("counted-room", f"counted-{n}")
        await layer.group_send("counted-room", {"type": "x"})
    sent = [name for name, _ in monitor.commands()]
    assert sent == ["EVALSHA", "EVALSHA", *WATCHED_READ, *WATCHED_WRITE] * 10, sent
    # Redis's word of the last group_add may come during the read that
    # followed it, which is then not kept: one more read at most.
    monitor = Monitor(redis)
    for _ in range(4):
        await layer.group_send("counted-room", {"type": "y"})
    sent = [name for name, _ in monitor.commands()]
    read_again = [*WATCHED_READ, *WATCHED_WRITE * 4]
    assert sent in (read_again, WATCHED_WRITE * 4), sent


@pytest.mark.parametrize("text", [10, 20_000], ids=["script", "commands"])
async def test_group_send_skips_a_full_member_whatever_its_size(redis, text):
    """Over 16 KiB of copies on a shard, group_send writes them with plain
    commands rather than through Lua; either way a full member is skipped,
    counted and left as it was, and the others get the message."""
    layer = RedisChannelLayer(hosts=[redis.url], capacity=2)
    await layer.group_add("warm-room", "worker.warm")
    await layer.group_send("warm-room", {"type": "loads the script"})
    await receive(layer, "worker.warm")
    await layer.group_discard("warm-room", "worker.warm")
    for n in range(2):
        await layer.send("worker.full", {"type": "filler", "n": n})
    for member in ("worker.full", "worker.free"):
        await layer.group_add("sized-room", member)
    monitor = Monitor(redis)
    message = {"type": "big", "text": "x" * text}
    await layer.group_send("sized-room", message)
    sent = [name for name, _ in monitor.commands()]
    if text < 16_384:
        assert sent == [*WATCHED_READ, *WATCHED_WRITE], sent
    else:
        check = ["ZREMRANGEBYSCORE", "ZCOUNT"] * 2
        assert sent == [*WATCHED_READ, *check, "MULTI", "ZADD", "EXPIRE", "EXEC"], sent
    assert command(redis.port, "ZCARD", "asgiworker.full") == b":2\r\n"
    assert command(redis.port, "ZCARD", "asgiworker.free") == b":1\r\n"
    assert await receive(layer, "worker.free") == message
    assert [(await receive(layer, "worker.full"))["n"] for _ in range(2)] == [0, 1]
    assert layer.stats()["dropped_group_full"] == 1
    await layer.flush()


async def test_bad_messages_write_nothing(layer, redis):
    with pytest.raises(InvalidMessage):
        await layer.send("chan", ["not a dict"])
    with pytest.raises(TypeError, match="keys must be str"):
        await layer.send("chan", {"type": "x", 1: "int key"})
    with pytest.raises(TypeError, match="can not serialize"):
        await layer.group_send("room", {"type": "x", "obj": object()})
    with pytest.raises(TypeError, match="Channel name must be"):
        await layer.send("bad name", {"type": "x"})
    assert keys(redis) == []


async def test_flush_removes_only_our_prefix(layer, redis):
    other = RedisChannelLayer(hosts=[redis.url], prefix="other")
    await layer.send("chan", {"type": "x"})
    await layer.group_add("room", "chan")
    await other.send("chan", {"type": "x"})
    await layer.flush()
    assert keys(redis) == [b"otherchan"]
    await other.flush()


async def test_cancelled_local_receive_keeps_the_message(layer):
    channel = await layer.new_channel()
    for _ in range(5):
        receiver = asyncio.create_task(layer.receive(channel))
        await asyncio.sleep(0.02)
        receiver.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiver
    await layer.send(channel, {"type": "kept"})
    assert await receive(layer, channel) == {"type": "kept"}


def group_send_from_threads(layer, group, threads, calls):
    """Each of `threads` plain threads calls async_to_sync(group_send)
    `calls` times; returns the errors they met."""
    errors = []

    def sender():
        try:
            for _ in range(calls):
                async_to_sync(layer.group_send)(group, {"type": "tick"})
        except Exception as error:  # reported by the caller
            errors.append(error)

    running = [threading.Thread(target=sender) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(120)
    return errors


def test_group_send_from_threads_with_async_to_sync(redis):
    layer = RedisChannelLayer(hosts=[redis.url])
    async_to_sync(layer.group_add)("room", "sink")
    assert group_send_from_threads(layer, "room", threads=4, calls=20) == []
    got = [async_to_sync(layer.receive)("sink") for _ in range(80)]
    assert got == [{"type": "tick"}] * 80
    async_to_sync(layer.flush)()


async def test_unreachable_server_is_a_clear_connection_error():
    """Async and sync alike: the server named, the cause given, and the
    password in the URL left out."""
    url = "redis://user:hunter2@127.0.0.1:1/0"
    layer = RedisChannelLayer(hosts=[{"address": url, "socket_connect_timeout": 0.2}])
    with pytest.raises(ConnectionError) as waited:
        await asyncio.wait_for(layer.send("chan", {"type": "x"}), 10)
    with pytest.raises(ConnectionError) as blocked:
        await asyncio.to_thread(layer.send_sync, "chan", {"type": "x"})
    for error in (str(waited.value), str(blocked.value)):
        assert "redis://127.0.0.1:1/0" in error and "refused" in error.lower()
        assert "hunter2" not in error


# Interop with channels_redis on the same server


async def test_interop_bytes_are_identical(redis):
    """Without the random prefix, both write exactly the same member."""
    config = {"hosts": [redis.url], "random_prefix_length": 0}
    ours, theirs = RedisChannelLayer(**config), UpstreamLayer(**config)
    message = {"type": "x", "text": "héllo", "n": [1, 2.5, None]}
    assert ours.serialize(message) == theirs.serialize(message)
    await ours.send("same", message)
    await theirs.send("same", message)
    reply = command(redis.port, "ZRANGE", "asgisame", "0", "-1")
    assert reply.startswith(b"*1\r\n")  # one member: the same bytes twice
    await ours.flush()


# Bad bytes in Redis


def zadd(redis, key, member):
    """Adds a raw member, scored now like a fresh message."""
    score = str(time.time())
    assert command(redis.port, "ZADD", key, score, member).startswith(b":")


async def test_garbage_on_a_normal_channel_is_dropped_and_logged(layer, redis, caplog):
    zadd(redis, "asgijunk", "not msgpack at all, long enough for the prefix")
    await layer.send("junk", {"type": "good"})
    with caplog.at_level("ERROR", logger="channels_rs"):
        assert await receive(layer, "junk") == {"type": "good"}
    assert "cannot be read" in caplog.text
    assert layer.stats()["dropped_unreadable"] == 1


async def test_garbage_on_the_local_key_does_not_stop_the_pump(layer, redis, caplog):
    channel = await layer.new_channel()
    waiting = asyncio.create_task(receive(layer, channel))
    await asyncio.sleep(0.05)
    with caplog.at_level("ERROR", logger="channels_rs"):
        zadd(redis, f"asgispecific.{layer.client_prefix}!", "x" * 30)
        await asyncio.sleep(0.05)
        await layer.send(channel, {"type": "after.garbage"})
        assert await waiting == {"type": "after.garbage"}
    assert "cannot be read" in caplog.text
    assert layer.stats()["dropped_unreadable"] == 1


async def test_routing_entry_is_removed_wherever_it_is(layer, redis):
    """A sender may put __asgi_channel__ anywhere in the map; every receiver
    gets the rest, in order."""
    first, second = await layer.new_channel(), await layer.new_channel()
    stored = {"type": "a", "__asgi_channel__": [first, second], "z": [1, {"y": b"2"}]}
    # channels_redis's layout: a 12-byte random prefix, then the msgpack map.
    member = os.urandom(12) + msgpack.packb(stored)
    zadd(redis, f"asgispecific.{layer.client_prefix}!", member)
    expected = {"type": "a", "z": [1, {"y": b"2"}]}
    for channel in (first, second):
        got = await receive(layer, channel)
        assert got == expected
        assert list(got) == ["type", "z"]


async def test_buffered_local_messages_expire(redis):
    """A message pulled into this process for a channel nobody receives on
    is dropped after `expiry`, as it would have expired in Redis."""
    layer = RedisChannelLayer(hosts=[redis.url], expiry=1)
    watched, forgotten = await layer.new_channel(), await layer.new_channel()
    waiting = asyncio.ensure_future(layer.receive(watched))
    await asyncio.sleep(0.05)
    await layer.send(forgotten, {"type": "old"})
    await layer.send(watched, {"type": "wakes"})
    assert await waiting == {"type": "wakes"}  # the pump read both by now
    await asyncio.sleep(1.2)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(forgotten), 0.3)
    await layer.send(forgotten, {"type": "new"})
    assert await receive(layer, forgotten) == {"type": "new"}
    await layer.flush()


class QuickPops(RedisChannelLayer):
    brpop_timeout = 0.2


def blocked_pops(redis):
    """How many connections wait in a blocking pop now."""
    return info_field(redis, "clients", "blocked_clients")


def blocked_clients(redis):
    """The ids of the connections that wait in a blocking pop now."""
    clients = command(redis.port, "CLIENT", "LIST").decode().splitlines()
    return [c.split()[0] for c in clients if re.search(r"\bflags=\w*b", c)]


def pops_issued(redis):
    """How many blocking pops the server has run."""
    stats = command(redis.port, "INFO", "commandstats").decode()
    found = re.search(r"cmdstat_bzpopmin:calls=(\d+)", stats)
    return int(found.group(1)) if found else 0


async def test_idle_receiving_stops_after_the_block_timeout(redis):
    """Nothing keeps popping for a process that stopped receiving, nor for a
    receive that was given up."""
    layer = QuickPops(hosts=[redis.url])
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "one"})
    await layer.send("normal", {"type": "two"})
    assert await receive(layer, channel) == {"type": "one"}
    assert await receive(layer, "normal") == {"type": "two"}
    with pytest.raises(asyncio.TimeoutError):
        await receive(layer, "given-up", timeout=0.1)
    deadline = time.monotonic() + 2
    while blocked_pops(redis):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    issued = pops_issued(redis)
    await asyncio.sleep(3 * QuickPops.brpop_timeout)
    assert pops_issued(redis) == issued
    # Nobody pops any more: the next messages stay in Redis.
    await layer.send(channel, {"type": "three"})
    await layer.send("given-up", {"type": "four"})
    await asyncio.sleep(0.5)
    queue = f"asgispecific.{layer.client_prefix}!"
    assert command(redis.port, "ZCARD", queue) == b":1\r\n"
    assert command(redis.port, "ZCARD", "asgigiven-up") == b":1\r\n"
    assert await receive(layer, channel) == {"type": "three"}
    assert await receive(layer, "given-up") == {"type": "four"}


async def test_wrong_encryption_key_drops_the_message_with_a_log(redis, caplog):
    writer = RedisChannelLayer(hosts=[redis.url], symmetric_encryption_keys=["a"])
    reader = RedisChannelLayer(hosts=[redis.url], symmetric_encryption_keys=["b"])
    await writer.send("secret", {"type": "unreadable"})
    await reader.send("secret", {"type": "readable"})
    with caplog.at_level("ERROR", logger="channels_rs"):
        assert await receive(reader, "secret") == {"type": "readable"}
    assert "could not be decrypted" in caplog.text
    assert reader.stats()["dropped_unreadable"] == 1
    await reader.flush()


# Plain sync code


def test_sync_methods_need_no_event_loop(redis):
    layer = RedisChannelLayer(hosts=[redis.url], capacity=1)
    async_to_sync(layer.group_add)("room", "member")
    layer.send_sync("direct", {"type": "direct"})
    with pytest.raises(ChannelFull):
        layer.send_sync("direct", {"type": "too many"})
    layer.group_send_sync("room", {"type": "broadcast"})
    with pytest.raises(InvalidMessage):
        layer.group_send_sync("room", "not a dict")
    assert async_to_sync(layer.receive)("direct") == {"type": "direct"}
    assert async_to_sync(layer.receive)("member") == {"type": "broadcast"}
    async_to_sync(layer.flush)()


def test_sixteen_threads_of_async_to_sync_share_connections(own_redis):
    """3,200 calls from 16 threads, each call in an event loop of its own,
    open no connection: those the first calls made serve them all."""
    layer = RedisChannelLayer(hosts=[own_redis.url])
    async_to_sync(layer.group_add)("busy-room", "sink")
    async_to_sync(layer.group_send)("busy-room", {"type": "tracks the room"})
    before = connections_received(own_redis)
    assert group_send_from_threads(layer, "busy-room", threads=16, calls=200) == []
    assert connections_received(own_redis) == before


# Timeouts


class SlowPops(RedisChannelLayer):
    brpop_timeout = 7


async def test_the_default_socket_timeout_is_5_s_but_not_for_blocking_pops(redis):
    stopped = RedisServer()
    stopped.process.send_signal(signal.SIGSTOP)
    try:
        waiting_layer = SlowPops(hosts=[redis.url])
        waiting = asyncio.ensure_future(waiting_layer.receive("patient"))
        await until(lambda: blocked_pops(redis) == 1, "the pop to block")
        blocked = blocked_clients(redis)
        layer = RedisChannelLayer(hosts=[stopped.url])
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="did not answer in time"):
            await layer.send("chan", {"type": "x"})
        assert 4.9 <= time.monotonic() - started < 6.5
        # The pop, past 5 s, still waits on the connection it started on.
        assert blocked_clients(redis) == blocked
        await waiting_layer.send("patient", {"type": "woken"})
        assert await asyncio.wait_for(waiting, 3) == {"type": "woken"}
    finally:
        stopped.process.send_signal(signal.SIGCONT)
        stopped.stop()


async def test_a_silent_server_times_out_as_configured():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        hosts = [
            {
                "address": f"redis://127.0.0.1:{port}",
                "socket_connect_timeout": 0.3,
                "socket_timeout": 0.3,
            }
        ]
        layer = RedisChannelLayer(hosts=hosts)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=f"127.0.0.1:{port} did not answer"):
            await layer.send("chan", {"type": "x"})
        assert 0.3 <= time.monotonic() - started < 1


@pytest.mark.parametrize("size", [1, 15, 16, 70000], ids=lambda n: f"{n}-keys")
@pytest.mark.parametrize("shards", [1, 2])
async def test_group_send_bytes_match_channels_redis(redis, size, shards):
    """Both write the same member per queue key (no random prefix), so each
    sorted set ends up with one member, not two; the 70,000-key message
    goes as plain commands, the others through the script."""
    extra = [RedisServer() for _ in range(shards - 1)]
    try:
        hosts = [redis.url] + [server.url for server in extra]
        config = {"hosts": hosts, "random_prefix_length": 0}
        ours, theirs = RedisChannelLayer(**config), UpstreamLayer(**config)
        members = [await ours.new_channel(), await ours.new_channel(), "worker.q"]
        for member in members:
            await ours.group_add("bytes-room", member)
        message = {"type": "x", **{f"k{n}": n for n in range(size - 1)}}
        await ours.group_send("bytes-room", message)
        await theirs.group_send("bytes-room", message)
        for key in (f"asgispecific.{ours.client_prefix}!", "asgiworker.q"):
            counts = [command(s.port, "ZCARD", key) for s in [redis, *extra]]
            assert sorted(counts) == [b":0\r\n"] * (shards - 1) + [b":1\r\n"], key
        assert await receive(ours, members[0]) == message
        assert await receive(ours, members[1]) == message
        await ours.flush()
    finally:
        for server in extra:
            server.stop()


async def test_group_send_to_a_big_group_matches_channels_redis(redis):
    """1,500 members on one process's queue: a 50 KB copy naming them all,
    which goes as plain commands; the same bytes as channels_redis's."""
    config = {"hosts": [redis.url], "random_prefix_length": 0}
    ours, theirs = RedisChannelLayer(**config), UpstreamLayer(**config)
    members = [await ours.new_channel() for _ in range(1500)]
    for member in members:
        await ours.group_add("big-room", member)
    message = {"type": "x", "text": "to everyone"}
    await ours.group_send("big-room", message)
    await theirs.group_send("big-room", message)
    key = f"asgispecific.{ours.client_prefix}!"
    assert command(redis.port, "ZCARD", key) == b":1\r\n"
    for member in (members[0], members[-1]):
        assert await receive(ours, member) == message
    await ours.flush()


async def test_new_channel_with_other_prefixes(layer, redis):
    chat, default = await layer.new_channel("chat"), await layer.new_channel()
    assert chat.startswith(f"chat.{layer.client_prefix}!")
    waiting = [asyncio.create_task(receive(layer, c)) for c in (chat, default)]
    await asyncio.sleep(0.05)
    await UpstreamLayer(hosts=[redis.url]).send(chat, {"type": "from.python"})
    await layer.send(default, {"type": "from.rust"})
    assert [await w for w in waiting] == [
        {"type": "from.python"},
        {"type": "from.rust"},
    ]
    assert keys(redis) == []


async def test_backup_is_cleared_once_a_message_is_taken(layer, redis):
    """Another receiver's restore step must not hand the message out again."""
    await layer.send("backed", {"type": "x"})
    assert await receive(layer, "backed") == {"type": "x"}
    deadline = time.monotonic() + 1
    while keys(redis) != []:  # backup and lease gone, like the queue
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)


async def test_cancelled_normal_receive_loses_nothing(layer):
    for _ in range(3):
        pending = asyncio.create_task(layer.receive("patient"))
        await asyncio.sleep(0.05)  # its blocking pop is on the server
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
    for n in range(3):
        await layer.send("patient", {"type": "m", "n": n})
    got = sorted([(await receive(layer, "patient", timeout=12))["n"] for _ in range(3)])
    assert got == [0, 1, 2]


def test_a_receive_left_on_a_closed_loop_loses_nothing(redis):
    """A blocking pop still on the server when its event loop closed hands
    its message back, not to the dead loop."""
    layer = RedisChannelLayer(hosts=[redis.url])

    async def leave_a_receive_pending():
        asyncio.ensure_future(layer.receive("orphaned"))
        await asyncio.sleep(0.1)  # its blocking pop is on the server

    asyncio.run(leave_a_receive_pending())  # cancels it and closes the loop
    layer.send_sync("orphaned", {"type": "kept"})

    async def receive_again():
        return await asyncio.wait_for(layer.receive("orphaned"), 3)

    assert asyncio.run(receive_again()) == {"type": "kept"}
    wait_for(lambda: keys(redis) == [], "its backup cleared")


async def test_group_channels_reads_channels_redis_groups_and_writes_no_new_keys(
    layer, redis
):
    upstream = UpstreamLayer(hosts=[redis.url])
    await upstream.group_add("shared-room", "theirs")
    await layer.group_add("shared-room", "ours")
    assert keys(redis) == [b"asgi:group:shared-room"]
    assert sorted(await layer.group_channels("shared-room")) == ["ours", "theirs"]
    assert await layer.group_size("shared-room") == 2
    assert layer.group_size_sync("shared-room") == 2
    # A member whose score is older than group_expiry is left out, and
    # removed from the sorted set, as channels_redis's group_send removes it.
    command(redis.port, "ZADD", "asgi:group:shared-room", "1", "stale")
    assert sorted(await layer.group_channels("shared-room")) == ["ours", "theirs"]
    assert command(redis.port, "ZSCORE", "asgi:group:shared-room", "stale") == (
        b"$-1\r\n"
    )
    assert keys(redis) == [b"asgi:group:shared-room"]
    await upstream.flush()
