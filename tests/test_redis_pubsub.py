"""channels_rs.RedisPubSubChannelLayer on real servers: the behaviour of
channels_redis.pubsub (run on both where they agree), the same bytes on the
same pub/sub channels (interop both ways), and what upstream gets wrong:
unbounded queues, lost subscriptions after a restart, callbacks that never
fire, one connection per event loop."""

import asyncio
import signal
import threading
import time

import pytest
from asgiref.sync import async_to_sync
from channels_redis.pubsub import RedisPubSubChannelLayer as UpstreamPubSub

from channels_rs import RedisPubSubChannelLayer
from conftest import INTEROP_CONFIGS, INTEROP_IDS, publish_until_received, receive
from redis_server import Monitor, RedisServer, command, connections_received

LAYERS = {"rs": RedisPubSubChannelLayer, "upstream": UpstreamPubSub}


@pytest.fixture(params=list(LAYERS))
async def layer(request, redis):
    layer = LAYERS[request.param](hosts=[redis.url])
    yield layer
    await layer.flush()


async def subscribed(redis, name, count=1):
    """Waits until `count` connections are subscribed to `name`."""
    for _ in range(200):
        reply = command(redis.port, "PUBSUB", "NUMSUB", name)
        if reply.endswith(f":{count}\r\n".encode()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} never had {count} subscribers: {reply!r}")


# Behaviour shared with channels_redis.pubsub


async def test_new_channel_is_subscribed_and_receives(layer, redis):
    channel = await layer.new_channel()
    assert channel.startswith("asgispecific.")
    await subscribed(redis, channel)
    await layer.send(channel, {"type": "hello", "n": 1})
    assert await receive(layer, channel) == {"type": "hello", "n": 1}


async def test_receive_subscribes_a_named_channel(layer, redis):
    waiting = asyncio.ensure_future(layer.receive("pubsub-named"))
    await subscribed(redis, "pubsub-named")
    await layer.send("pubsub-named", {"type": "named"})
    assert await asyncio.wait_for(waiting, 3) == {"type": "named"}


async def test_every_subscriber_gets_each_message(redis, layer):
    other = type(layer)(hosts=[redis.url])
    listeners = [asyncio.ensure_future(x.receive("pubsub-fan")) for x in (layer, other)]
    await subscribed(redis, "pubsub-fan", 2)
    await layer.send("pubsub-fan", {"type": "everyone"})
    assert (
        await asyncio.wait_for(asyncio.gather(*listeners), 3)
        == [{"type": "everyone"}] * 2
    )
    await other.flush()


async def test_groups(layer, redis):
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("pubsub-room", first)
    await layer.group_add("pubsub-room", second)
    await layer.group_send("pubsub-room", {"type": "to.all"})
    assert await receive(layer, first) == {"type": "to.all"}
    assert await receive(layer, second) == {"type": "to.all"}
    await layer.group_discard("pubsub-room", first)
    await layer.group_send("pubsub-room", {"type": "to.second"})
    assert await receive(layer, second) == {"type": "to.second"}
    with pytest.raises(asyncio.TimeoutError):
        await receive(layer, first, timeout=0.2)
    await layer.group_discard("pubsub-room", second)
    await subscribed(redis, "asgi__group__pubsub-room", 0)


async def test_group_add_refuses_channels_of_other_processes(layer):
    with pytest.raises(RuntimeError, match="exist in-process"):
        await layer.group_add("pubsub-room", "asgispecific.elsewhere")


async def test_cancelled_receive_unsubscribes(layer, redis):
    channel = await layer.new_channel()
    await subscribed(redis, channel)
    with pytest.raises(asyncio.TimeoutError):
        await receive(layer, channel, timeout=0.1)
    await subscribed(redis, channel, 0)


async def test_flush_unsubscribes_everything(layer, redis):
    channel = await layer.new_channel()
    await layer.group_add("pubsub-flushed", channel)
    await layer.flush()
    await subscribed(redis, channel, 0)
    await subscribed(redis, "asgi__group__pubsub-flushed", 0)


async def test_shards_by_the_crc_ring():
    servers = [RedisServer(), RedisServer()]
    try:
        hosts = [server.url for server in servers]
        ours, theirs = RedisPubSubChannelLayer(hosts=hosts), UpstreamPubSub(hosts=hosts)
        names = [await ours.new_channel() for _ in range(20)]
        for name in names:
            await theirs.send(name, {"type": "across", "to": name})
        for name in names:
            assert await receive(ours, name) == {"type": "across", "to": name}
        on_each = [
            command(server.port, "PUBSUB", "CHANNELS", "asgispecific.*")
            for server in servers
        ]
        assert all(b"asgispecific." in listed for listed in on_each)
        await ours.flush()
    finally:
        for server in servers:
            server.stop()


# Interop with channels_redis.pubsub


@pytest.fixture(params=INTEROP_CONFIGS, ids=INTEROP_IDS)
def pair(request, redis):
    config = {"hosts": [redis.url], **request.param}
    return RedisPubSubChannelLayer(**config), UpstreamPubSub(**config)


async def test_interop_both_ways(pair):
    ours, theirs = pair
    our_channel, their_channel = await ours.new_channel(), await theirs.new_channel()
    await theirs.send(our_channel, {"type": "to.rust", "n": [1, 2.5, None]})
    await ours.send(their_channel, {"type": "to.python", "b": "é"})
    assert await receive(ours, our_channel) == {"type": "to.rust", "n": [1, 2.5, None]}
    assert await receive(theirs, their_channel) == {"type": "to.python", "b": "é"}
    await ours.group_add("mixed", our_channel)
    await theirs.group_add("mixed", their_channel)
    await ours.group_send("mixed", {"type": "from.rust"})
    await theirs.group_send("mixed", {"type": "from.python"})
    for layer, channel in ((ours, our_channel), (theirs, their_channel)):
        got = [await receive(layer, channel) for _ in range(2)]
        assert sorted(m["type"] for m in got) == ["from.python", "from.rust"]
    await ours.flush()
    await theirs.flush()


async def test_published_bytes_match_channels_redis(redis):
    config = {"hosts": [redis.url], "symmetric_encryption_keys": ["k"]}
    ours, theirs = RedisPubSubChannelLayer(), UpstreamPubSub()
    message = {"type": "x", "n": 1, "l": [1, "two"]}
    assert ours.serialize(message) == theirs.serialize(message)
    ours, theirs = RedisPubSubChannelLayer(**config), UpstreamPubSub(**config)
    assert theirs.deserialize(ours.serialize(message)) == message


# Beyond upstream


async def test_queues_are_bounded_dropping_the_oldest(redis):
    layer = RedisPubSubChannelLayer(hosts=[redis.url], capacity=5)
    channel, marker = await layer.new_channel(), await layer.new_channel()
    for n in range(12):
        await layer.send(channel, {"type": "m", "n": n})
    # Published after them on the same connection: once it is here, so are they.
    await layer.send(marker, {"type": "marker"})
    assert await receive(layer, marker) == {"type": "marker"}
    got = [(await receive(layer, channel))["n"] for _ in range(5)]
    assert got == [7, 8, 9, 10, 11]
    with pytest.raises(asyncio.TimeoutError):
        await receive(layer, channel, timeout=0.2)


async def test_subscriptions_survive_a_restart_and_every_consumer_is_told(own_redis):
    layer = RedisPubSubChannelLayer(
        hosts=[{"address": own_redis.url, "socket_connect_timeout": 0.5}],
        on_disconnect="redis.disconnect",
        on_reconnect="redis.reconnect",
    )
    channels = [await layer.new_channel() for _ in range(3)]
    channels.append("pubsub-named")
    waiting = asyncio.ensure_future(layer.receive("pubsub-named"))
    await subscribed(own_redis, "pubsub-named")
    await layer.group_add("survivors", channels[0])
    own_redis.kill()
    assert await asyncio.wait_for(waiting, 5) == {"type": "redis.disconnect"}
    for channel in channels[:3]:
        assert await receive(layer, channel) == {"type": "redis.disconnect"}
    own_redis.start()
    for channel in channels:
        assert await receive(layer, channel, timeout=10) == {"type": "redis.reconnect"}
    for channel in channels:
        await layer.send(channel, {"type": "direct"})
        assert await receive(layer, channel) == {"type": "direct"}
    await layer.group_send("survivors", {"type": "grouped"})
    assert await receive(layer, channels[0]) == {"type": "grouped"}


async def test_an_idle_subscriber_sends_nothing(own_redis):
    """No polling: a subscribed layer with nothing to do is silent."""
    layer = RedisPubSubChannelLayer(hosts=[own_redis.url])
    channel = await layer.new_channel()
    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.1)
    monitor = Monitor(own_redis)
    await asyncio.sleep(1)
    assert monitor.commands() == []
    await layer.send(channel, {"type": "still there"})
    assert await asyncio.wait_for(waiting, 3) == {"type": "still there"}


async def test_messages_older_than_expiry_are_dropped(redis):
    layer = RedisPubSubChannelLayer(hosts=[redis.url], expiry=1)
    channel, marker = await layer.new_channel(), await layer.new_channel()
    await layer.send(channel, {"type": "old"})
    await layer.send(marker, {"type": "marker"})
    assert await receive(layer, marker) == {"type": "marker"}  # "old" is here too
    await asyncio.sleep(1.2)
    with pytest.raises(asyncio.TimeoutError):
        await receive(layer, channel, timeout=0.2)
    # The receive given up unsubscribed the channel, as channels_redis does.
    await publish_until_received(layer, channel, {"type": "new"})
    await layer.flush()


async def test_subscribing_while_redis_is_down_fails_then_recovers(own_redis):
    own_redis.kill()
    layer = RedisPubSubChannelLayer(
        hosts=[{"address": own_redis.url, "socket_connect_timeout": 0.3}]
    )
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{own_redis.port}"):
        await asyncio.wait_for(layer.new_channel(), 10)
    # It kept trying for socket_connect_timeout, and no longer.
    assert 0.3 <= time.monotonic() - started < 1.5
    own_redis.start()
    channel = await asyncio.wait_for(layer.new_channel(), 10)
    await layer.send(channel, {"type": "after"})
    assert await receive(layer, channel) == {"type": "after"}
    own_redis.kill()
    await asyncio.sleep(0.5)  # the listener is trying to reconnect
    # Unsubscribing needs no answer from a server that is gone.
    await asyncio.wait_for(layer.flush(), 10)


async def test_a_server_that_stops_answering_is_left_for_a_new_connection(own_redis):
    layer = RedisPubSubChannelLayer(
        hosts=[{"address": own_redis.url, "socket_timeout": 0.5}],
        on_disconnect="redis.disconnect",
    )
    channel = await layer.new_channel()
    own_redis.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(TimeoutError, match="did not answer in time"):
            await asyncio.wait_for(layer.new_channel(), 15)
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
    assert await receive(layer, channel) == {"type": "redis.disconnect"}
    # Subscribed again, on a new connection. (Not PUBSUB NUMSUB: Valkey 9
    # answers it with garbage counts after this.)
    await publish_until_received(layer, channel, {"type": "after"})


def test_one_subscriber_connection_per_shard_for_every_loop_and_thread():
    """4 threads, 5 event loops each, 20 channels over 2 shards: each server
    accepts 2 connections in all, one to subscribe and one to publish."""
    servers = [RedisServer(), RedisServer()]  # their own: no other layer's
    try:
        layer = RedisPubSubChannelLayer(hosts=[server.url for server in servers])
        before = [connections_received(server) for server in servers]
        errors = []

        async def round_trip():
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "echo"})
            assert await receive(layer, channel) == {"type": "echo"}

        def worker():
            try:
                for _ in range(5):
                    async_to_sync(round_trip)()
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        for server, earlier in zip(servers, before, strict=True):
            assert connections_received(server) - earlier == 2
            subscribers = command(server.port, "CLIENT", "LIST", "TYPE", "pubsub")
            assert subscribers.count(b"id=") == 1, subscribers
    finally:
        for server in servers:
            server.stop()


async def test_sync_methods_publish_without_an_event_loop(redis):
    layer = RedisPubSubChannelLayer(hosts=[redis.url])
    channel = await layer.new_channel()
    await layer.group_add("pubsub-sync", channel)
    await asyncio.to_thread(layer.send_sync, channel, {"type": "direct"})
    await asyncio.to_thread(layer.group_send_sync, "pubsub-sync", {"type": "grouped"})
    assert await receive(layer, channel) == {"type": "direct"}
    assert await receive(layer, channel) == {"type": "grouped"}
    await layer.flush()
