"""channels_rs.RedisChannelLayer on a real Redis Cluster (3 masters, 3
replicas), which channels_redis cannot use: its scripts touch keys in
several slots."""

import asyncio
import logging
import time

import pytest
from channels.exceptions import ChannelFull

from channels_rs import RedisChannelLayer, RedisPubSubChannelLayer
from channels_rs.exceptions import AccessDenied
from conftest import INTEROP_CONFIGS, INTEROP_IDS, receive, require_tls
from redis_cluster import RedisCluster, ask, migrate_slot_of, owner_of, wait_for
from redis_server import Certificates, Monitor, command, connect, resp


@pytest.fixture
def layer(cluster):
    return RedisChannelLayer(hosts=[{"cluster": cluster.urls}])


async def test_flush_empties_every_master_of_our_keys_only(layer, cluster):
    other = RedisChannelLayer(hosts=[{"cluster": cluster.urls}], prefix="other")
    await other.send("kept", {"type": "kept"})
    for n in range(30):
        await layer.send(f"cluster-flushed-{n}", {"type": "m"})
        await layer.group_add(f"cluster-flushed-group-{n}", f"cluster-flushed-{n}")
    await layer.flush()
    for master in cluster.current_masters():
        assert command(master.port, "KEYS", "asgi*") == b"*0\r\n"
    assert await receive(other, "kept") == {"type": "kept"}
    await other.flush()


@pytest.mark.parametrize("config", INTEROP_CONFIGS, ids=INTEROP_IDS)
async def test_serializers_and_encryption(cluster, config):
    layer = RedisChannelLayer(hosts=[{"cluster": cluster.urls}], **config)
    message = {"type": "m", "text": "marker-é", "n": [1, 2.5]}
    local = await layer.new_channel()
    for channel in ("cluster-codec", local):
        await layer.group_add("cluster-codec-room", channel)
    await layer.send("cluster-codec", message)
    stored = command(
        owner_of(cluster, "asgicluster-codec").port,
        "ZRANGE",
        "asgicluster-codec",
        0,
        -1,
    )
    assert (b"marker" in stored) is ("symmetric_encryption_keys" not in config)
    assert await receive(layer, "cluster-codec") == message
    await layer.group_send("cluster-codec-room", message)
    for channel in ("cluster-codec", local):
        assert await receive(layer, channel) == message
    await layer.flush()


async def test_capacity_on_every_master(cluster):
    """Each master enforces capacity and channel_capacity on its keys (a
    group_send to full members is in the behaviour suite)."""
    layer = RedisChannelLayer(
        hosts=[{"cluster": cluster.urls}], capacity=1, channel_capacity={"big*": 2}
    )
    full = [f"cluster-full-{n}" for n in range(6)]
    assert len({owner_of(cluster, "asgi" + name) for name in full}) > 1
    for name in full:
        await layer.send(name, {"type": "first"})
        with pytest.raises(ChannelFull):
            await layer.send(name, {"type": "second"})
    await layer.send("big-one", {"type": "one"})
    await layer.send("big-one", {"type": "two"})
    with pytest.raises(ChannelFull):
        await layer.send("big-one", {"type": "three"})
    await layer.flush()


async def test_expiry(cluster):
    layer = RedisChannelLayer(hosts=[{"cluster": cluster.urls}], expiry=1)
    await layer.send("cluster-expiring", {"type": "old"})
    owner = owner_of(cluster, "asgicluster-expiring")
    ttl = int(command(owner.port, "TTL", "asgicluster-expiring")[1:-2])
    assert 0 <= ttl <= 1
    await asyncio.sleep(1.6)
    assert command(owner.port, "EXISTS", "asgicluster-expiring") == b":0\r\n"
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive("cluster-expiring"), 0.3)
    await layer.send("cluster-expiring", {"type": "new"})
    assert await receive(layer, "cluster-expiring") == {"type": "new"}
    await layer.flush()


async def test_tls_and_a_password(tmp_path):
    require_tls()
    certificates = Certificates(tmp_path)
    own = RedisCluster(masters=3, replicas_per_master=0, tls=certificates)
    try:
        own.require_password("cluster-secret")
        nodes = [f"rediss://:cluster-secret@127.0.0.1:{m.port}" for m in own.masters]
        # valkeys:// is TLS as rediss:// is.
        for kind, scheme in (
            (RedisChannelLayer, "rediss"),
            (RedisPubSubChannelLayer, "valkeys"),
        ):
            startup = [url.replace("rediss", scheme, 1) for url in nodes]
            layer = kind(hosts=[{"cluster": startup, "ssl_ca_certs": certificates.ca}])
            channels = [await layer.new_channel() for _ in range(6)]
            for channel in channels:
                await layer.group_add("tls-room", channel)
            await layer.group_send("tls-room", {"type": "sealed"})
            for channel in channels:
                assert await receive(layer, channel) == {"type": "sealed"}
            await layer.flush()
        wrong = [url.replace("cluster-secret", "guess") for url in nodes]
        layer = RedisChannelLayer(
            hosts=[{"cluster": wrong, "ssl_ca_certs": certificates.ca}]
        )
        with pytest.raises(AccessDenied) as error:
            await layer.send("anything", {"type": "refused"})
        assert error.value.reply.startswith("WRONGPASS")
        assert "guess" not in str(error.value) and "guess" not in repr(layer)
        (tmp_path / "stranger").mkdir()
        stranger = Certificates(tmp_path / "stranger")
        layer = RedisChannelLayer(
            hosts=[{"cluster": nodes, "ssl_ca_certs": stranger.ca}]
        )
        with pytest.raises(ConnectionError, match="(?i)certificate|issuer"):
            await layer.send("anything", {"type": "refused"})
    finally:
        own.stop()


async def traffic_through(layer, change, channels=12, retry_for=0, tail=100):
    """Sends over `channels` normal and process-local channels while
    receivers take them, and runs `change` (a blocking call, in a thread)
    while the sending goes on: from the 100th message to the end of the
    change, then `tail` more. A send or receive that raises is a failure, unless
    `retry_for` seconds are allowed (as an application would, when a master
    dies), and then only within that long of the change. Returns what the
    receivers got, per message, and how many sends began while the change
    went on (at least one: a CLUSTER FAILOVER on Valkey can take a few
    milliseconds, and the sends just after it meet the redirections too, as
    the layer's slot map is stale until one does)."""
    names = [f"cluster-traffic-{n}" for n in range(channels // 2)]
    names += [await layer.new_channel() for _ in range(channels // 2)]
    got = {}
    failures = []

    async def consume(name):
        while True:
            try:
                message = await layer.receive(name)
            except Exception as error:  # noqa: BLE001 - every one is a failure
                failures.append(f"receive on {name}: {error!r}")
                return
            got[message["n"]] = got.get(message["n"], 0) + 1

    consumers = [asyncio.ensure_future(consume(name)) for name in names]
    acknowledged, during, changing, after = [], 0, None, 0
    n = 0
    while after < tail:
        if n == 100:
            changing = asyncio.ensure_future(asyncio.to_thread(change))
        message = {"type": "m", "n": n}
        if changing is not None and not changing.done():
            during += 1
        give_up = time.monotonic() + retry_for
        while True:
            try:
                await layer.send(names[n % channels], message)
                break
            except Exception as error:  # noqa: BLE001 - every one is a failure
                if time.monotonic() >= give_up:
                    failures.append(f"send {n}: {error!r}")
                    break
                await asyncio.sleep(0.05)
        acknowledged.append(n)
        if changing is not None and changing.done():
            after += 1
        n += 1
        await asyncio.sleep(0.001)  # a steady stream, not a burst
    changing.result()
    deadline = time.monotonic() + 10
    while not all(n in got for n in acknowledged) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for consumer in consumers:
        consumer.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    assert failures == [], failures
    missing = [n for n in acknowledged if n not in got]
    assert missing == [], f"{len(missing)} acknowledged messages never arrived"
    assert during >= 1, "no send while the change went on"
    return got, during


async def test_a_replica_promoted_under_traffic_loses_nothing(layer, cluster):
    replica = cluster.replicas[0]

    def failover():
        assert command(replica.port, "CLUSTER", "FAILOVER") == b"+OK\r\n"
        wait_for(
            lambda: b"role:master" in command(replica.port, "INFO", "replication"),
            "the replica to take over",
        )
        wait_for(cluster.settled, "every node to learn of the new master")

    got, during = await traffic_through(layer, failover)
    print(
        f"\n{during} sends during CLUSTER FAILOVER; "
        f"{sum(got.values()) - len(got)} duplicates"
    )


async def test_a_slot_migrated_under_traffic_loses_nothing(layer, cluster):
    moved = []

    def migrate():
        # The slot of the first normal channel's queue key.
        moved.append(migrate_slot_of(cluster, "asgicluster-traffic-0", dwell=0.3))

    got, during = await traffic_through(layer, migrate)
    slot, source, target = moved[0]
    wait_for(cluster.settled, "every node to learn the slot's new owner")
    assert owner_of(cluster, "asgicluster-traffic-0") is target
    print(
        f"\nslot {slot} moved {source.port} -> {target.port} during {during} "
        f"sends; {sum(got.values()) - len(got)} duplicates"
    )


# The pub/sub layer: PUBLISH reaches every node of a cluster, so one
# subscriber connection to any node hears the messages of all of them.


async def test_pubsub_hears_what_is_published_through_every_master(cluster):
    listener = RedisPubSubChannelLayer(hosts=[{"cluster": cluster.urls}])
    sender = RedisPubSubChannelLayer(hosts=[{"cluster": cluster.urls[-1:]}])
    # Random names: keep making channels until every master owns one.
    channels = [await listener.new_channel() for _ in range(3)]
    while len({owner_of(cluster, name) for name in channels}) < 3:
        assert len(channels) < 100, "new_channel() names never reach a master"
        channels.append(await listener.new_channel())
    for channel in channels:
        await listener.group_add("pubsub-cluster-room", channel)
        await sender.send(channel, {"type": "direct", "to": channel})
        assert await receive(listener, channel) == {"type": "direct", "to": channel}
    await sender.group_send("pubsub-cluster-room", {"type": "everyone"})
    for channel in channels:
        assert await receive(listener, channel) == {"type": "everyone"}
    await listener.flush()


async def test_pubsub_publishes_through_the_slot_master(cluster):
    layer = RedisPubSubChannelLayer(hosts=[{"cluster": cluster.urls}])
    channels = [await layer.new_channel() for _ in range(6)]
    masters = cluster.current_masters()
    monitors = [Monitor(master) for master in masters]
    for channel in channels:
        await layer.send(channel, {"type": "m"})
        assert await receive(layer, channel) == {"type": "m"}
    for master, monitor in zip(masters, monitors, strict=True):
        published = [arg for name, arg in monitor.commands() if name == "PUBLISH"]
        owned = [c for c in channels if owner_of(cluster, c) is master]
        assert published == owned
    await layer.flush()


def subscribed_nodes(servers):
    """The servers with a pub/sub client connected."""
    return [
        server
        for server in servers
        if b"id=" in command(server.port, "CLIENT", "LIST", "TYPE", "pubsub")
    ]


async def test_pubsub_moves_to_another_node_when_its_own_dies():
    # Its own, which loses a node; the other masters go on serving.
    own = RedisCluster(
        masters=3,
        replicas_per_master=0,
        options=("--cluster-require-full-coverage", "no"),
    )
    try:
        layer = RedisPubSubChannelLayer(
            hosts=[{"cluster": own.urls, "socket_connect_timeout": 1}],
            on_disconnect="layer.disconnected",
            on_reconnect="layer.reconnected",
        )
        channels = [await layer.new_channel() for _ in range(3)]
        (node,) = subscribed_nodes(own.servers)
        alive = [server for server in own.servers if server is not node]
        # Channels whose messages go through each master that stays up.
        owners = {c: owner_of(own, c) for c in channels}
        while set(owners.values()) < set(alive):
            assert len(owners) < 100, "new_channel() names never reach a master"
            channel = await layer.new_channel()
            owners[channel] = owner_of(own, channel)
        node.kill()
        for channel in owners:
            assert await receive(layer, channel) == {"type": "layer.disconnected"}
            assert await receive(layer, channel) == {"type": "layer.reconnected"}
        assert len(subscribed_nodes(alive)) == 1
        for channel, owner in owners.items():
            if owner is not node:
                await layer.send(channel, {"type": "after", "to": channel})
                assert await receive(layer, channel) == {"type": "after", "to": channel}
    finally:
        own.stop()


async def a_master_killed_under(tail):
    """A master killed while `tail` messages and more go through; sends may
    fail until its replica has taken over, as a restart's do."""
    own = RedisCluster()  # its own: this one loses a node
    try:
        layer = RedisChannelLayer(
            hosts=[{"cluster": own.urls, "socket_connect_timeout": 1}]
        )
        victim, heir = own.masters[0], own.replicas[0]

        def kill_master():
            victim.kill()
            wait_for(
                lambda: b"role:master" in command(heir.port, "INFO", "replication"),
                "the replica to take over",
            )

        # A send waits the failover out, or fails and is sent again.
        got, during = await traffic_through(layer, kill_master, retry_for=10, tail=tail)
        print(
            f"\n{len(got):,} messages, a master killed after the 100th "
            f"({during} sent while its replica took over): 0 lost, "
            f"{sum(got.values()) - len(got)} duplicates"
        )
    finally:
        own.stop()


async def test_a_master_killed_under_traffic_loses_nothing_acknowledged():
    await a_master_killed_under(tail=200)


@pytest.mark.soak
async def test_soak_a_master_killed_under_traffic_2000_messages():
    await a_master_killed_under(tail=2000)


def on_replica(server, *words):
    """A command's raw reply from a cluster replica, which answers reads
    only on a connection that sent READONLY."""
    with connect(server.port, 2) as connection:
        connection.sendall(resp("READONLY") + resp(*words))
        reply = b""
        while reply.count(b"\r\n") < 2 or not reply.endswith(b"\r\n"):
            reply += connection.recv(65536)
        return reply


async def test_memberships_a_promoted_replica_missed_come_back(caplog):
    """The replica of a group's master misses the last group_add (its link
    is cut and cannot come back), then the master dies: once the replica
    has taken over, every live consumer is reachable, and one WARNING says
    what came back."""
    own = RedisCluster()  # its own: this one loses a node
    try:
        hosts = [{"cluster": own.urls, "socket_connect_timeout": 1}]
        layer, view = RedisChannelLayer(hosts=hosts), RedisChannelLayer(hosts=hosts)
        victim, heir = own.masters[0], own.replicas[0]
        group = next(
            f"room{n}"
            for n in range(1000)
            if owner_of(own, f"asgi:group:room{n}") is victim
        )
        early, late = await layer.new_channel(), await layer.new_channel()
        await layer.group_add(group, early)
        waiting = [asyncio.ensure_future(layer.receive(c)) for c in (early, late)]
        await view.group_send(group, {"type": "before"})
        assert await waiting[0] == {"type": "before"}
        waiting[0] = asyncio.ensure_future(layer.receive(early))
        wait_for(
            lambda: b"master_link_status:up" in ask(heir, "INFO", "replication"), "sync"
        )
        # Connections made before this keep working; the replica's next does not.
        ask(victim, "CONFIG", "SET", "requirepass", "locked-out")
        command(victim.port, "CLIENT", "KILL", "TYPE", "replica", password="locked-out")
        await layer.group_add(group, late)
        key = f"asgi:group:{group}"
        assert early.encode() in on_replica(heir, "ZRANGE", key, 0, -1)
        assert late.encode() not in on_replica(heir, "ZRANGE", key, 0, -1)
        with caplog.at_level(logging.WARNING, logger="channels_rs"):
            victim.kill()
            started = time.monotonic()
            while not all(task.done() for task in waiting):
                assert time.monotonic() - started < 20, (
                    "a live consumer missed the group"
                )
                try:
                    await view.group_send(group, {"type": "after.failover"})
                except (ConnectionError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)
        for task in waiting:
            assert task.result() == {"type": "after.failover"}
        said = [r.getMessage() for r in caplog.records if "had lost" in r.getMessage()]
        assert len(said) == 1 and "had lost 1 of the 2 group memberships" in said[0]
    finally:
        own.stop()
