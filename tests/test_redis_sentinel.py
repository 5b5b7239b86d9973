"""Both layers through Sentinel, on loopback. A master, a replica and three
Sentinels, each behind a password: the layer finds the master, follows a
failover by itself (SENTINEL FAILOVER, or the master killed), says so
without giving a password away, and the messages the old master had
replicated are all still there."""

import asyncio
import logging
import time

import pytest

from channels_rs import RedisChannelLayer, RedisPubSubChannelLayer, layers_from_env
from conftest import receive
from redis_server import RedisServer, command, wait_for

MASTER_PASSWORD = "master-s3cret"
SENTINEL_PASSWORD = "sentinel-s3cret"


def guarded(*extra, **options):
    """A server (or Sentinel) behind SENTINEL_PASSWORD or MASTER_PASSWORD."""
    password = SENTINEL_PASSWORD if "monitor" in options else MASTER_PASSWORD
    server = RedisServer(*extra, "--requirepass", password, **options)
    server.password = password
    return server


def ask(server, *words):
    return command(server.port, *words, password=server.password)


def sentinel_of(master, quorum=1):
    return guarded(
        monitor=master,
        quorum=quorum,
        sentinel=[
            f"auth-pass mymaster {MASTER_PASSWORD}",
            f"sentinel-pass {SENTINEL_PASSWORD}",
        ],
    )


def hosts_through(sentinels, **options):
    return [
        {
            "sentinels": [("127.0.0.1", s.port) for s in sentinels],
            "master_name": "mymaster",
            "password": MASTER_PASSWORD,
            "sentinel_kwargs": {"password": SENTINEL_PASSWORD},
            **options,
        }
    ]


@pytest.fixture(scope="module")
def watched():
    """A master and one Sentinel watching it."""
    master = guarded()
    sentinel = sentinel_of(master)
    yield master, sentinel
    sentinel.stop()
    master.stop()


@pytest.mark.parametrize("kind", [RedisChannelLayer, RedisPubSubChannelLayer])
async def test_through_a_sentinel_behind_a_password(watched, kind):
    master, sentinel = watched
    layer = kind(hosts=hosts_through([sentinel]))
    channel = await layer.new_channel()
    await layer.group_add("watched", channel)
    await layer.group_send("watched", {"type": "via.sentinel"})
    assert await receive(layer, channel) == {"type": "via.sentinel"}
    if kind is RedisChannelLayer:
        assert ask(master, "EXISTS", "asgi:group:watched") == b":1\r\n"
    await layer.flush()


@pytest.mark.parametrize("backend", ["redis", "pubsub"])
async def test_sentinel_settings_from_the_environment(watched, backend):
    _, sentinel = watched
    environ = {
        "REDIS_SENTINELS": f"127.0.0.1:{sentinel.port}",
        "REDIS_PASSWORD": MASTER_PASSWORD,
        "REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
        "CHANNEL_LAYERS_BACKEND": backend,
    }
    settings = layers_from_env(environ)["default"]
    kind = {"redis": RedisChannelLayer, "pubsub": RedisPubSubChannelLayer}[backend]
    assert settings["BACKEND"] == f"channels_rs.{kind.__name__}"
    layer = kind(**settings["CONFIG"])
    channel = await layer.new_channel()
    await layer.group_add("from-env", channel)
    await layer.group_send("from-env", {"type": "via.env.sentinel"})
    assert await receive(layer, channel) == {"type": "via.env.sentinel"}
    await layer.flush()


async def test_unknown_sentinel_master_is_a_clear_error(watched):
    _, sentinel = watched
    hosts = hosts_through([sentinel], master_name="nobody", socket_connect_timeout=0.5)
    layer = RedisChannelLayer(hosts=hosts)
    with pytest.raises(ConnectionError, match="'nobody' via Sentinel 127.0.0.1"):
        await layer.send("chan", {"type": "x"})


# Failovers


def role(server):
    return ask(server, "ROLE").split(b"\r\n")[2]


def replicated(master, replica):
    """Whether the replica has everything the master wrote."""

    def offset(server, field):
        info = ask(server, "INFO", "replication").decode()
        return next(
            int(line.split(":")[1]) for line in info.split() if line.startswith(field)
        )

    return offset(master, "master_repl_offset") == offset(replica, "slave_repl_offset")


def promotable(sentinel):
    """Whether `sentinel` sees a replica it could promote: connected, and
    linked to its master."""
    seen = ask(sentinel, "SENTINEL", "REPLICAS", "mymaster")
    return (
        b"flags\r\n$5\r\nslave\r\n" in seen
        and b"master-link-status\r\n$2\r\nok\r\n" in seen
    )


@pytest.fixture
def sentinel_group():
    master = guarded("--masterauth", MASTER_PASSWORD)
    replica = guarded(
        "--replicaof",
        "127.0.0.1",
        str(master.port),
        "--masterauth",
        MASTER_PASSWORD,
    )
    servers = [master, replica]
    try:
        wait_for(
            lambda: b"master_link_status:up" in ask(replica, "INFO", "replication"),
            "the replica to sync",
        )
        sentinels = [sentinel_of(master, quorum=2) for _ in range(3)]
        servers += sentinels
        for sentinel in sentinels:
            wait_for(
                lambda s=sentinel: promotable(s), "the Sentinels to see the replica"
            )
        yield master, replica, sentinels
    finally:
        for server in reversed(servers):
            server.stop()


def on(server, key):
    try:
        return ask(server, "EXISTS", key) == b":1\r\n"
    except OSError:  # killed
        return False


async def follow_a_failover(group, caplog, how, messages):
    """Sends `messages` to a normal and a process-local channel, fails the
    master over `how`, and checks that the layer follows and loses nothing
    the old master had replicated."""
    master, replica, sentinels = group
    hosts = hosts_through(sentinels, socket_connect_timeout=1)
    layer = RedisChannelLayer(hosts=hosts, capacity=messages)
    local = await layer.new_channel()
    await layer.group_add("failover-room", local)
    # The room's members, kept on a connection to the old master.
    await layer.group_send("failover-room", {"type": "before"})
    assert await receive(layer, local) == {"type": "before"}
    for n in range(messages):
        await layer.send("failover-normal", {"type": "m", "n": n})
        await layer.send(local, {"type": "m", "n": n})
    wait_for(lambda: replicated(master, replica), "replication")
    waiting = asyncio.ensure_future(layer.receive("failover-waiting"))
    await asyncio.sleep(0.1)

    with caplog.at_level(logging.WARNING, logger="channels_rs"):
        if how == "SENTINEL FAILOVER":
            reply = ask(sentinels[0], "SENTINEL", "FAILOVER", "mymaster")
            assert reply == b"+OK\r\n"
        else:
            master.kill()
        started = time.monotonic()
        # Sends go on as an application's would; the layer must reach the
        # new master by itself.
        probes = 0
        while True:
            probes += 1
            try:
                await layer.send(f"failover-probe-{probes}", {"type": "probe"})
            except (ConnectionError, TimeoutError):
                pass
            # Landed on the new master, and not on the old one: the old one
            # is still a master that accepts writes until Sentinel demotes
            # it (and then it would have the probe too, by replication).
            key = f"asgifailover-probe-{probes}"
            try:
                promoted = role(replica) == b"master"
                landed = promoted and on(replica, key) and not on(master, key)
            except ConnectionError:  # a server changing role resets clients
                landed = False
            if landed:
                break
            assert time.monotonic() - started < 10, "the layer did not follow"
            await asyncio.sleep(0.05)
    followed = time.monotonic() - started
    print(f"\nfollowed the new master {followed:.1f} s after {how}, {probes} probes")
    assert followed < (6 if how == "SENTINEL FAILOVER" else 10)
    moved = [
        r.getMessage() for r in caplog.records if "Sentinel moved" in r.getMessage()
    ]
    assert moved == [
        f"Sentinel moved 'mymaster' via Sentinel "
        f"{', '.join(f'127.0.0.1:{s.port}' for s in sentinels)} "
        f"to 127.0.0.1:{replica.port}: reconnecting"
    ]
    for secret in (MASTER_PASSWORD, SENTINEL_PASSWORD):
        assert secret not in caplog.text
    # The shared connection moved once; a kill may also count a lost one.
    stats = layer.stats()
    assert stats["failovers"] == 1
    assert stats["reconnects"] >= 1

    normal = [await layer.receive("failover-normal") for _ in range(messages)]
    assert [m["n"] for m in normal] == list(range(messages))
    direct = [await receive(layer, local) for _ in range(messages)]
    assert [m["n"] for m in direct] == list(range(messages))
    # A member only the new master has: what was kept from the old one is
    # not used.
    joined = str(time.time())
    ask(replica, "ZADD", "asgi:group:failover-room", joined, "failover-late")
    await layer.group_send("failover-room", {"type": "after"})
    assert await receive(layer, local) == {"type": "after"}
    assert await receive(layer, "failover-late") == {"type": "after"}
    # The receive that was waiting through it all carries on.
    await layer.send("failover-waiting", {"type": "woken"})
    assert await asyncio.wait_for(waiting, 10) == {"type": "woken"}
    await layer.flush()


async def test_the_layer_follows_sentinel_failover(sentinel_group, caplog):
    await follow_a_failover(sentinel_group, caplog, "SENTINEL FAILOVER", 50)


async def test_the_layer_follows_a_killed_master(sentinel_group, caplog):
    await follow_a_failover(sentinel_group, caplog, "kill -9 master", 200)


@pytest.mark.soak
async def test_soak_a_killed_master_with_5000_messages(sentinel_group, caplog):
    await follow_a_failover(sentinel_group, caplog, "kill -9 master", 5000)


async def test_memberships_the_new_master_missed_come_back(sentinel_group, caplog):
    """The replica misses the last group_add (its link to the master is cut
    and cannot come back), then the master dies: once Sentinel has promoted
    the replica, which lacks that member, every live consumer is reachable
    again, and one WARNING says what came back."""
    master, replica, sentinels = sentinel_group
    hosts = hosts_through(sentinels, socket_connect_timeout=1)
    layer, view = RedisChannelLayer(hosts=hosts), RedisChannelLayer(hosts=hosts)
    early, late = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", early)
    await view.group_send("room", {"type": "before"})
    waiting = [asyncio.ensure_future(layer.receive(c)) for c in (early, late)]
    assert await waiting[0] == {"type": "before"}
    waiting[0] = asyncio.ensure_future(layer.receive(early))
    wait_for(lambda: replicated(master, replica), "replication")
    # Connections made before this keep working; the replica's next does not.
    ask(master, "CONFIG", "SET", "requirepass", "locked-out")
    command(master.port, "CLIENT", "KILL", "TYPE", "replica", password="locked-out")
    await layer.group_add("room", late)
    assert ask(replica, "ZSCORE", "asgi:group:room", late) == b"$-1\r\n"
    with caplog.at_level(logging.WARNING, logger="channels_rs"):
        master.kill()
        started = time.monotonic()
        while not all(task.done() for task in waiting):
            assert time.monotonic() - started < 20, "a live consumer missed the group"
            try:
                await view.group_send("room", {"type": "after.failover"})
            except (ConnectionError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    assert role(replica) == b"master"
    for task in waiting:
        assert task.result() == {"type": "after.failover"}
    said = [r.getMessage() for r in caplog.records if "had lost" in r.getMessage()]
    assert len(said) == 1 and "had lost 1 of the 2 group memberships" in said[0]
    await layer.flush()
