"""channels_rs.RedisChannelLayer on a real Redis Cluster (3 masters, 3
replicas), which channels_redis cannot use: its scripts touch keys in
several slots."""

import asyncio

import pytest
from channels.exceptions import ChannelFull

from channels_rs import RedisChannelLayer, RedisPubSubChannelLayer
from conftest import INTEROP_CONFIGS, INTEROP_IDS, require_tls
from redis_cluster import RedisCluster, migrate_slot_of, owner_of, wait_for
from redis_server import Certificates, command


@pytest.fixture
def layer(cluster):
    return RedisChannelLayer(hosts=[{"cluster": cluster.urls}])


async def receive(layer, channel):
    return await asyncio.wait_for(layer.receive(channel), 5)


async def test_normal_channels(layer):
    names = [f"cluster-normal-{n}" for n in range(20)]
    for name in names:
        await layer.send(name, {"type": "m", "to": name})
    for name in names:
        assert await receive(layer, name) == {"type": "m", "to": name}
    waiting = asyncio.ensure_future(layer.receive("cluster-blocking"))
    await asyncio.sleep(0.05)
    await layer.send("cluster-blocking", {"type": "woken"})
    assert await asyncio.wait_for(waiting, 5) == {"type": "woken"}


async def test_process_local_channels_and_groups(layer):
    channels = [await layer.new_channel(prefix=f"p{n}") for n in range(6)]
    normal = [f"cluster-member-{n}" for n in range(6)]
    for channel in channels + normal:
        await layer.group_add("cluster-room", channel)
    await layer.group_send("cluster-room", {"type": "everyone"})
    for channel in channels + normal:
        assert await receive(layer, channel) == {"type": "everyone"}
    await layer.send(channels[0], {"type": "direct"})
    assert await receive(layer, channels[0]) == {"type": "direct"}


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


async def test_capacity_across_slots(cluster):
    layer = RedisChannelLayer(
        hosts=[{"cluster": cluster.urls}], capacity=1, channel_capacity={"big*": 2}
    )
    full = [f"cluster-full-{n}" for n in range(6)]
    assert len({owner_of(cluster, "asgi" + name) for name in full}) > 1
    for name in full:
        await layer.send(name, {"type": "first"})
        with pytest.raises(ChannelFull):
            await layer.send(name, {"type": "second"})
        await layer.group_add("cluster-full-room", name)
    await layer.send("big-one", {"type": "one"})
    await layer.send("big-one", {"type": "two"})
    with pytest.raises(ChannelFull):
        await layer.send("big-one", {"type": "three"})
    await layer.group_add("cluster-full-room", "cluster-empty")
    await layer.group_send("cluster-full-room", {"type": "group"})
    assert await receive(layer, "cluster-empty") == {"type": "group"}
    for name in full:
        assert await receive(layer, name) == {"type": "first"}
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(name), 0.1)
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
        with pytest.raises(ConnectionError) as error:
            await layer.send("anything", {"type": "refused"})
        assert "authentication" in str(error.value).lower()
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


async def traffic_through(layer, change, count=600, channels=12):
    """Sends `count` messages over `channels` normal and process-local
    channels while receivers take them, running `change` (a blocking call)
    halfway through. Returns what the receivers got, per message."""
    names = [f"cluster-traffic-{n}" for n in range(channels // 2)]
    names += [await layer.new_channel() for _ in range(channels // 2)]
    got = {}

    async def consume(name):
        while True:
            message = await layer.receive(name)
            got[message["n"]] = got.get(message["n"], 0) + 1

    consumers = [asyncio.ensure_future(consume(name)) for name in names]
    acknowledged = []
    for n in range(count):
        if n == count // 2:
            await asyncio.to_thread(change)
        while True:
            try:
                await layer.send(names[n % channels], {"type": "m", "n": n})
                break
            except (ConnectionError, TimeoutError):
                await asyncio.sleep(0.05)
        acknowledged.append(n)
    for _ in range(200):
        if all(n in got for n in acknowledged):
            break
        await asyncio.sleep(0.05)
    for consumer in consumers:
        consumer.cancel()
    ended = await asyncio.gather(*consumers, return_exceptions=True)
    failed = [e for e in ended if not isinstance(e, asyncio.CancelledError)]
    assert failed == [], "a receive failed instead of waiting the change out"
    missing = [n for n in acknowledged if n not in got]
    assert missing == [], f"{len(missing)} acknowledged messages never arrived"
    return got


async def test_a_replica_promoted_under_traffic_loses_nothing(layer, cluster):
    replica = cluster.replicas[0]

    def failover():
        assert command(replica.port, "CLUSTER", "FAILOVER") == b"+OK\r\n"
        wait_for(
            lambda: b"role:master" in command(replica.port, "INFO", "replication"),
            "the replica to take over",
        )
        wait_for(cluster.settled, "every node to learn of the new master")

    got = await traffic_through(layer, failover)
    print(f"\n{sum(got.values()) - len(got)} duplicates across CLUSTER FAILOVER")


async def test_a_slot_migrated_under_traffic_loses_nothing(layer, cluster):
    moved = []

    def migrate():
        # The slot of the first normal channel's queue key.
        moved.append(migrate_slot_of(cluster, "asgicluster-traffic-0"))

    got = await traffic_through(layer, migrate)
    slot, source, target = moved[0]
    wait_for(cluster.settled, "every node to learn the slot's new owner")
    assert owner_of(cluster, "asgicluster-traffic-0") is target
    print(
        f"\nslot {slot} moved {source.port} -> {target.port} under traffic; "
        f"{sum(got.values()) - len(got)} duplicates"
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


def subscribed_node(servers):
    """The one server with a pub/sub client connected."""
    (node,) = [
        server
        for server in servers
        if b"id=" in command(server.port, "CLIENT", "LIST", "TYPE", "pubsub")
    ]
    return node


async def test_pubsub_moves_to_another_node_when_its_own_dies():
    own = RedisCluster(masters=3, replicas_per_master=0)  # its own: loses a node
    try:
        layer = RedisPubSubChannelLayer(
            hosts=[{"cluster": own.urls, "socket_connect_timeout": 1}],
            on_disconnect="layer.disconnected",
            on_reconnect="layer.reconnected",
        )
        channels = [await layer.new_channel() for _ in range(6)]
        node = subscribed_node(own.servers)
        # A channel whose messages go through a master that stays up.
        (channel, *_) = [c for c in channels if owner_of(own, c) is not node]
        node.kill()
        assert await receive(layer, channel) == {"type": "layer.disconnected"}
        assert await receive(layer, channel) == {"type": "layer.reconnected"}
        assert subscribed_node([s for s in own.servers if s is not node]) is not node
        await layer.send(channel, {"type": "after"})
        assert await receive(layer, channel) == {"type": "after"}
    finally:
        own.stop()


@pytest.mark.soak
async def test_a_master_killed_under_traffic_loses_nothing_acknowledged():
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

        got = await traffic_through(layer, kill_master, count=2000)
        print(
            f"\n2,000 messages, a master killed mid-run: 0 lost, "
            f"{sum(got.values()) - len(got)} duplicates"
        )
    finally:
        own.stop()
