"""A server's limits hold: at maxmemory every write path is refused whole,
with the server's words, and nothing of the refused call is written; the
same for a read-only replica, a failed save (MISCONF) and too few replicas
(NOREPLICAS). Messages already queued are still received at maxmemory."""

import asyncio
import logging
import shutil
import tempfile
from dataclasses import dataclass, field

import msgpack
import pytest

from channels_rs import RedisChannelLayer
from channels_rs.exceptions import OutOfMemory, ServerRefused, WritesRefused
from conftest import receive
from redis_server import RedisServer, command, info_field, wait_for

BIG = {"type": "big", "pad": "y" * 20_000}
SMALL = {"type": "small", "pad": "y" * 2_000}
# Room the server has for this test's writes, above what it holds at start.
ROOM = 1_000_000


@dataclass
class Path:
    """A write path: `write(layer, ctx)` makes one call, which stores
    `per` messages of `message`; `keys` (given ctx) hold what it stored."""

    write: object
    message: dict
    per: int
    keys: object
    setup: object = None
    ctx: dict = field(default_factory=dict)


async def joined(layer, ctx, group, *channels):
    for channel in channels:
        await layer.group_add(group, channel)


async def new_local(layer, ctx):
    ctx["local"] = await layer.new_channel("oom")


def local_key(layer, ctx):
    return [f"asgi{ctx['local'].split('!')[0]}!"]


PATHS = {
    "send": Path(
        lambda layer, ctx: layer.send("oom.normal", BIG),
        BIG,
        1,
        lambda layer, ctx: ["asgioom.normal"],
    ),
    "send-local": Path(
        lambda layer, ctx: layer.send(ctx["local"], BIG),
        BIG,
        1,
        local_key,
        setup=new_local,
    ),
    "send_bulk": Path(
        lambda layer, ctx: layer.send_bulk("oom.bulk", [BIG, BIG]),
        BIG,
        2,
        lambda layer, ctx: ["asgioom.bulk"],
    ),
    # Copies of up to 16 KiB: the script, on the tracked connection's
    # MULTI/EXEC once the group was sent to.
    "group_send-script": Path(
        lambda layer, ctx: layer.group_send("oom.small", SMALL),
        SMALL,
        1,
        lambda layer, ctx: ["asgioom.small.a"],
        setup=lambda layer, ctx: joined(layer, ctx, "oom.small", "oom.small.a"),
    ),
    # Bigger copies: plain commands in MULTI/EXEC.
    "group_send-commands": Path(
        lambda layer, ctx: layer.group_send("oom.big", BIG),
        BIG,
        2,
        lambda layer, ctx: ["asgioom.big.a", "asgioom.big.b"],
        setup=lambda layer, ctx: joined(
            layer, ctx, "oom.big", "oom.big.a", "oom.big.b"
        ),
    ),
    "group_send_bulk": Path(
        lambda layer, ctx: layer.group_send_bulk("oom.gbulk", [SMALL, SMALL]),
        SMALL,
        2,
        lambda layer, ctx: ["asgioom.gbulk.a"],
        setup=lambda layer, ctx: joined(layer, ctx, "oom.gbulk", "oom.gbulk.a"),
    ),
    "group_send_many": Path(
        lambda layer, ctx: layer.group_send_many(["oom.m1", "oom.m2"], BIG),
        BIG,
        2,
        lambda layer, ctx: ["asgioom.m1.a", "asgioom.m2.a"],
        setup=lambda layer, ctx: asyncio.gather(
            layer.group_add("oom.m1", "oom.m1.a"), layer.group_add("oom.m2", "oom.m2.a")
        ),
    ),
}


def stored(server, keys):
    return sum(int(command(server.port, "ZCARD", key)[1:]) for key in keys)


def limit_memory(server, room=ROOM):
    """noeviction at `room` bytes above what the server uses now."""
    limit = info_field(server, "memory", "used_memory") + room
    assert command(server.port, "CONFIG", "SET", "maxmemory", limit) == b"+OK\r\n"
    assert command(server.port, "CONFIG", "SET", "maxmemory-policy", "noeviction")
    return limit


@pytest.fixture
def server():
    server = RedisServer()
    yield server
    server.stop()


def dataset(server):
    """What the server's keys take, by its own count: used_memory without
    its overhead (clients' buffers, scripts, bookkeeping)."""
    return info_field(server, "memory", "used_memory_dataset")


async def fill(layer, path, limit, server):
    """Calls `path` until the server refuses; returns how many calls
    succeeded, the refusal, and how far the keys grew."""
    start, peak = dataset(server), 0
    for calls in range(2000):
        try:
            await path.write(layer, path.ctx)
        except OutOfMemory as refused:
            return calls, refused, peak
        peak = max(peak, dataset(server) - start)
    raise AssertionError(f"2000 calls and no refusal: used {peak} of {limit} bytes")


@pytest.mark.parametrize("name", list(PATHS))
async def test_every_write_path_stops_at_maxmemory(server, name, caplog):
    path = PATHS[name]
    layer = RedisChannelLayer(hosts=[server.url], capacity=100_000)
    if path.setup:
        await path.setup(layer, path.ctx)
    keys = path.keys(layer, path.ctx)
    limit = limit_memory(server)
    with caplog.at_level(logging.ERROR, "channels_rs"):
        calls, refused, peak = await fill(layer, path, limit, server)
    # The keys grew past the room the limit left by at most what one call
    # stores (with Redis's bookkeeping for a sorted-set member).
    one_call = path.per * len(msgpack.packb(path.message)) * 1.3
    assert calls > 0 and peak <= ROOM + one_call, (calls, peak, one_call)
    assert stored(server, keys) == calls * path.per
    text = str(refused)
    assert "maxmemory" in text and server.url in text
    assert "OOM command not allowed when used memory > 'maxmemory'" in refused.reply
    assert refused.server == server.url
    assert isinstance(refused, WritesRefused) and isinstance(refused, ConnectionError)
    # Refused again, and nothing of it written either.
    with pytest.raises(OutOfMemory):
        await path.write(layer, path.ctx)
    assert stored(server, keys) == calls * path.per
    assert layer.stats()["refused_out_of_memory"] == 2
    said = [r for r in caplog.records if "maxmemory" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "ERROR"


async def test_queued_messages_are_received_at_maxmemory(server):
    """Receiving pops: normal channels (pop script, blocking pop and its
    backup) and process-local ones, while the server refuses writes."""
    layer = RedisChannelLayer(hosts=[server.url], capacity=100_000)
    local = await layer.new_channel()
    limit_memory(server)
    sent = {"oom.normal": 0, local: 0}
    with pytest.raises(OutOfMemory):
        for at in range(1000):
            channel = ("oom.normal", local)[at % 2]
            await layer.send(channel, {**BIG, "n": sent[channel]})
            sent[channel] += 1
    assert info_field(server, "memory", "used_memory") > limit_memory_of(server)
    for channel, count in sent.items():
        for n in range(count):
            assert (await receive(layer, channel))["n"] == n
    # A receive that waits (a blocking pop, backed up after) gets the next.
    waiting = asyncio.ensure_future(receive(layer, "oom.normal"))
    await asyncio.sleep(0.1)
    wait_for(
        lambda: info_field(server, "memory", "used_memory") < limit_memory_of(server),
        "room",
    )
    await layer.send("oom.normal", {"type": "after"})
    assert (await waiting)["type"] == "after"
    assert command(server.port, "EXISTS", "asgioom.normal$held") == b":0\r\n"


def limit_memory_of(server):
    reply = command(server.port, "CONFIG", "GET", "maxmemory").split(b"\r\n")
    return int(reply[-2])


async def test_group_add_is_refused_at_maxmemory(server):
    layer = RedisChannelLayer(hosts=[server.url], capacity=100_000)
    limit_memory(server)
    with pytest.raises(OutOfMemory):
        for _ in range(1000):
            await layer.send("oom.filler", BIG)
    # What a refused send's own 20 KB freed leaves room for a few joins.
    for joined in range(2000):
        try:
            await layer.group_add("oom.group", f"oom.member.{joined}")
        except OutOfMemory as refused:
            assert "maxmemory" in str(refused)
            break
    assert 0 <= joined < 2000
    key = "asgi:group:oom.group"
    assert command(server.port, "ZCARD", key) == b":%d\r\n" % joined


def replica_of(master):
    replica = RedisServer("--replicaof", "127.0.0.1", str(master.port))
    wait_for(
        lambda: (
            b"master_link_status:up" in command(replica.port, "INFO", "replication")
        ),
        "the replica to sync",
    )
    return replica


async def writes_are_refused(layer, server, words, caplog):
    """Every write path raises WritesRefused with the server's `words`, and
    writes nothing; one ERROR line says so."""
    local = await layer.new_channel()
    calls = [
        lambda: layer.send("ro.normal", SMALL),
        lambda: layer.send(local, SMALL),
        lambda: layer.send_bulk("ro.normal", [SMALL, SMALL]),
        lambda: layer.group_add("ro.group", "ro.member"),
        lambda: layer.group_send("ro.joined", SMALL),
        lambda: layer.group_send("ro.joined", BIG),
        lambda: layer.group_send_bulk("ro.joined", [SMALL]),
        lambda: layer.group_send_many(["ro.joined", "ro.joined2"], SMALL),
    ]
    with caplog.at_level(logging.ERROR, "channels_rs"):
        for call in calls:
            with pytest.raises(WritesRefused) as refused:
                await call()
            assert words in refused.value.reply
            assert server.url in str(refused.value)
    assert command(server.port, "DBSIZE") == b":2\r\n"  # the two groups
    assert layer.stats()["refused_writes"] == len(calls)
    said = [r for r in caplog.records if words in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "ERROR"


async def joined_groups(server):
    """ro.joined and ro.joined2 with members, written before writes stop."""
    layer = RedisChannelLayer(hosts=[server.url])
    await layer.group_add("ro.joined", "ro.a")
    await layer.group_add("ro.joined", "ro.b")
    await layer.group_add("ro.joined2", "ro.a")


async def test_a_read_only_replica_refuses_every_write(server, caplog):
    await joined_groups(server)
    replica = replica_of(server)
    try:
        wait_for(lambda: command(replica.port, "DBSIZE") == b":2\r\n", "the groups")
        layer = RedisChannelLayer(hosts=[replica.url])
        await writes_are_refused(layer, replica, "READONLY", caplog)
    finally:
        replica.stop()


async def test_too_few_replicas_refuse_every_write(server, caplog):
    await joined_groups(server)
    command(server.port, "CONFIG", "SET", "min-replicas-to-write", "1")
    layer = RedisChannelLayer(hosts=[server.url])
    await writes_are_refused(layer, server, "NOREPLICAS", caplog)
    # Receiving pops, a write too: it is refused, not left waiting.
    with pytest.raises(WritesRefused, match="NOREPLICAS"):
        await receive(layer, "ro.normal")


async def test_a_failed_save_refuses_every_write(caplog):
    """stop-writes-on-bgsave-error: once a save fails (here: its directory
    is gone), Redis takes no writes (MISCONF)."""
    directory = tempfile.mkdtemp(prefix="channels-rs-misconf-")
    server = RedisServer("--save", "3600 1", "--dir", directory)
    try:
        await joined_groups(server)
        shutil.rmtree(directory)
        command(server.port, "BGSAVE")
        wait_for(
            lambda: (
                b"rdb_last_bgsave_status:err"
                in command(server.port, "INFO", "persistence")
            ),
            "the save to fail",
        )
        layer = RedisChannelLayer(hosts=[server.url])
        await writes_are_refused(layer, server, "MISCONF", caplog)
        local = await layer.new_channel()
        with pytest.raises(WritesRefused, match="MISCONF"):
            await receive(layer, local)
    finally:
        server.stop()


async def test_another_refusal_keeps_its_words(server):
    """A key of another type where a queue should be: the server's WRONGTYPE
    reaches the caller as ServerRefused."""
    command(server.port, "SET", "asgiwrong.type", "a string")
    layer = RedisChannelLayer(hosts=[server.url])
    with pytest.raises(ServerRefused) as refused:
        await layer.send("wrong.type", {"type": "x"})
    assert refused.value.reply.startswith("WRONGTYPE")
    assert layer.stats()["refused_other"] == 1
