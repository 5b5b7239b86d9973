"""A Sentinel failover under the layer: a master, a replica and three
Sentinels on loopback. The layer finds the new master by itself, and
messages the old master had replicated are all still there."""

import asyncio
import time

import pytest

from channels_rs import RedisChannelLayer
from redis_server import RedisServer, command


def wait_for(check, what, timeout=15):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def role(server):
    return command(server.port, "ROLE").split(b"\r\n")[2]


def replicated(master, replica):
    """Whether the replica has everything the master wrote."""

    def offset(server, field):
        info = command(server.port, "INFO", "replication").decode()
        return next(
            int(line.split(":")[1]) for line in info.split() if line.startswith(field)
        )

    return offset(master, "master_repl_offset") == offset(replica, "slave_repl_offset")


def promotable(sentinel):
    """Whether `sentinel` sees a replica it could promote: connected, and
    linked to its master."""
    seen = command(sentinel.port, "SENTINEL", "REPLICAS", "mymaster")
    return (
        b"flags\r\n$5\r\nslave\r\n" in seen
        and b"master-link-status\r\n$2\r\nok\r\n" in seen
    )


@pytest.fixture
def sentinel_group():
    master = RedisServer()
    replica = RedisServer("--replicaof", "127.0.0.1", str(master.port))
    wait_for(
        lambda: (
            b"master_link_status:up" in command(replica.port, "INFO", "replication")
        ),
        "the replica to sync",
    )
    sentinels = [RedisServer(monitor=master, quorum=2) for _ in range(3)]
    for sentinel in sentinels:
        wait_for(lambda s=sentinel: promotable(s), "the Sentinels to see the replica")
    yield master, replica, sentinels
    for server in (*sentinels, replica, master):
        server.stop()


def on(server, key):
    try:
        return command(server.port, "EXISTS", key) == b":1\r\n"
    except OSError:  # killed
        return False


@pytest.mark.parametrize(
    "how", ["SENTINEL FAILOVER", pytest.param("kill -9 master", marks=pytest.mark.soak)]
)
async def test_layer_follows_a_failover_and_keeps_replicated_messages(
    sentinel_group, how
):
    master, replica, sentinels = sentinel_group
    hosts = [
        {
            "sentinels": [("127.0.0.1", s.port) for s in sentinels],
            "master_name": "mymaster",
            "socket_connect_timeout": 1,
        }
    ]
    layer = RedisChannelLayer(hosts=hosts)
    local = await layer.new_channel()
    await layer.group_add("failover-room", local)
    for n in range(50):
        await layer.send("failover-normal", {"type": "m", "n": n})
        await layer.send(local, {"type": "m", "n": n})
    wait_for(lambda: replicated(master, replica), "replication")
    waiting = asyncio.ensure_future(layer.receive("failover-waiting"))
    await asyncio.sleep(0.1)

    if how == "SENTINEL FAILOVER":
        reply = command(sentinels[0].port, "SENTINEL", "FAILOVER", "mymaster")
        assert reply == b"+OK\r\n"
    else:
        master.kill()
    started = time.monotonic()
    # Sends go on as an application's would; the layer must reach the new
    # master by itself.
    probes = 0
    while True:
        probes += 1
        try:
            await layer.send(f"failover-probe-{probes}", {"type": "probe"})
        except (ConnectionError, TimeoutError):
            pass
        # Landed on the new master, and not on the old one: the old one is
        # still a master that accepts writes until Sentinel demotes it (and
        # then it would have the probe too, by replication).
        key = f"asgifailover-probe-{probes}"
        if role(replica) == b"master" and on(replica, key) and not on(master, key):
            break
        assert time.monotonic() - started < 10, "the layer did not follow"
        await asyncio.sleep(0.05)
    followed = time.monotonic() - started
    print(f"\nfollowed the new master {followed:.1f} s after {how}, {probes} probes")
    assert followed < (6 if how == "SENTINEL FAILOVER" else 10)

    normal = [await layer.receive("failover-normal") for _ in range(50)]
    assert [m["n"] for m in normal] == list(range(50))
    direct = [await asyncio.wait_for(layer.receive(local), 5) for _ in range(50)]
    assert [m["n"] for m in direct] == list(range(50))
    await layer.group_send("failover-room", {"type": "after"})
    assert await asyncio.wait_for(layer.receive(local), 5) == {"type": "after"}
    # The receive that was waiting through it all carries on.
    await layer.send("failover-waiting", {"type": "woken"})
    assert await asyncio.wait_for(waiting, 10) == {"type": "woken"}
    await layer.flush()
