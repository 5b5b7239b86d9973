"""layer.stats() and drop accounting, on every layer: what is counted, why a
message was given up on, how often that is logged, and the Prometheus
export of the same figures."""

import asyncio
import logging
import multiprocessing
import time

import pytest
from channels.exceptions import ChannelFull
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_layer_behaviour import QUEUED, make

import redis as redis_py
from channels_rs import (
    InMemoryChannelLayer,
    RedisChannelLayer,
    RedisPubSubChannelLayer,
    prometheus,
)
from conftest import receive, until

KEYS = {
    "messages_sent",
    "messages_received",
    "group_sends",
    "group_deliveries",
    "channel_full",
    "reconnects",
    "failovers",
    "dropped_capacity",
    "dropped_expired",
    "dropped_unreadable",
    "dropped_group_full",
    "refused_out_of_memory",
    "refused_writes",
    "refused_access",
    "refused_other",
    "channels",
    "groups",
    "waiting_receives",
}


@pytest.fixture
async def made(request):
    """Makes the layer a test's parameter names, flushed after it."""
    layers = []

    def factory(kind, **config):
        layers.append(make(request, kind, **config))
        return layers[-1]

    yield factory
    for layer in layers:
        await layer.flush()


def changes(before, after):
    """The keys of stats() that changed, with how much."""
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


@pytest.mark.parametrize("kind", ["memory", "redis", "pubsub"])
async def test_sends_receives_and_group_deliveries_are_counted(made, kind):
    layer = made(kind)
    assert set(layer.stats()) == KEYS
    before = layer.stats()
    first, second = await layer.new_channel(), await layer.new_channel()
    for channel in (first, second):
        await layer.group_add("counted", channel)
    waiting = asyncio.ensure_future(layer.receive(first))
    await until(lambda: layer.stats()["waiting_receives"] == 1, "a waiting receive")
    await layer.send(first, {"type": "direct"})
    assert await asyncio.wait_for(waiting, 5) == {"type": "direct"}
    await layer.group_send("counted", {"type": "to.all"})
    for channel in (first, second):
        assert await receive(layer, channel) == {"type": "to.all"}
    assert changes(before, layer.stats()) == {
        "messages_sent": 1,
        "messages_received": 3,
        "group_sends": 1,
        "group_deliveries": 2,
        "groups": 1,
        # Pub/sub counts the channels it subscribed to; the others, those
        # holding messages or receivers, and these hold none now.
        **({"channels": 2} if kind == "pubsub" else {}),
    }
    await layer.group_discard("counted", first)
    await layer.group_discard("counted", second)
    assert layer.stats()["groups"] == 0


@pytest.mark.parametrize("kind", QUEUED)
async def test_a_full_member_skipped_by_group_send_is_counted_and_logged_once(
    made, kind, caplog
):
    layer = made(kind, capacity=1)
    channel = await layer.new_channel()
    await layer.group_add("crowded", channel)
    with caplog.at_level(logging.INFO, logger="channels_rs"):
        for number in range(50):
            await layer.group_send("crowded", {"type": "note", "n": number})
    stats = layer.stats()
    assert (stats["group_deliveries"], stats["dropped_group_full"]) == (1, 49)
    lines = [r for r in caplog.records if "over capacity" in r.getMessage()]
    assert [r.getMessage() for r in lines] == [
        "dropped a message on group crowded: 1 of 1 channels over capacity"
    ]
    assert await receive(layer, channel) == {"type": "note", "n": 0}


@pytest.mark.parametrize("kind", QUEUED)
async def test_channel_full_is_counted(made, kind):
    layer = made(kind, capacity=2)
    for _ in range(2):
        await layer.send("brim", {"type": "x"})
    with pytest.raises(ChannelFull):
        await layer.send("brim", {"type": "x"})
    stats = layer.stats()
    assert (stats["messages_sent"], stats["channel_full"]) == (2, 1)


async def test_a_full_process_buffer_drops_its_oldest_with_a_count(made, caplog):
    """Core layer: a pump serving one channel's receiver moves every local
    channel's messages into this process, where each buffers `capacity`."""
    layer = made("redis", capacity=3)
    idle, busy = await layer.new_channel(), await layer.new_channel()
    waiting = asyncio.ensure_future(layer.receive(busy))
    await until(lambda: layer.stats()["waiting_receives"] == 1, "the pump")
    with caplog.at_level(logging.WARNING, logger="channels_rs"):
        for number in range(6):
            await layer.send(idle, {"type": "n", "n": number})
            # Each lands in the buffer before the next is sent.
            await until(lambda: layer.stats()["channels"] == 2, "the buffer")
        await until(lambda: layer.stats()["dropped_capacity"] == 3, "three drops")
    assert [await receive(layer, idle) for _ in range(3)] == [
        {"type": "n", "n": number} for number in (3, 4, 5)
    ]
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert lines == [
        f"dropped a message on channel {idle}: not received, and this process "
        "buffers 3 per channel"
    ]
    waiting.cancel()


async def test_a_full_pubsub_queue_drops_its_oldest_with_a_count(made):
    layer = made("pubsub", capacity=2)
    channel = await layer.new_channel()
    for number in range(5):
        await layer.send(channel, {"type": "n", "n": number})
    await until(lambda: layer.stats()["dropped_capacity"] == 3, "three drops")
    assert [await receive(layer, channel) for _ in range(2)] == [
        {"type": "n", "n": 3},
        {"type": "n", "n": 4},
    ]


@pytest.mark.parametrize("kind", ["memory", "redis", "pubsub"])
async def test_expired_messages_in_this_process_are_counted(made, kind, caplog):
    layer = made(kind, expiry=1)
    channel = await layer.new_channel()
    if kind == "redis":
        # The pump brings the message into this process while it waits.
        other = await layer.new_channel()
        waiting = asyncio.ensure_future(layer.receive(other))
        await until(lambda: layer.stats()["waiting_receives"] == 1, "the pump")
    await layer.send(channel, {"type": "stale"})
    await until(lambda: layer.stats()["channels"] >= 1, "the message here")
    await asyncio.sleep(1.2)
    with caplog.at_level(logging.INFO, logger="channels_rs"):
        with pytest.raises(asyncio.TimeoutError):
            await receive(layer, channel, timeout=0.2)
    assert layer.stats()["dropped_expired"] == 1
    assert f"dropped a message on channel {channel}: not received within 1 s" in (
        caplog.text
    )
    if kind == "redis":
        waiting.cancel()


@pytest.mark.parametrize("kind", ["redis", "pubsub"])
async def test_unreadable_bytes_are_counted(made, kind, redis):
    layer = made(kind)
    client = redis_py.Redis.from_url(redis.url)
    if kind == "redis":
        garbage = b"not msgpack at all, long enough for the prefix"
        client.zadd("behaviourgarbled", {garbage: time.time()})
        await layer.send("garbled", {"type": "fine"})
        assert await receive(layer, "garbled") == {"type": "fine"}
    else:
        channel = await layer.new_channel()
        client.publish(channel, b"\xc1 not msgpack")
        await until(lambda: layer.stats()["dropped_unreadable"] == 1, "the drop")
    assert layer.stats()["dropped_unreadable"] == 1


@pytest.mark.parametrize("kind", ["redis", "pubsub"])
async def test_a_lost_connection_counts_one_reconnect(own_redis, kind):
    layer = make_own(own_redis, kind)
    channel = await layer.new_channel()
    await layer.group_add("again", channel)
    await layer.group_send("again", {"type": "before"})
    assert await receive(layer, channel) == {"type": "before"}
    assert layer.stats()["reconnects"] == 0
    redis_py.Redis.from_url(own_redis.url).execute_command(
        "CLIENT", "KILL", "TYPE", "normal" if kind == "redis" else "pubsub"
    )
    if kind == "redis":
        await layer.group_send("again", {"type": "after"})
        assert await receive(layer, channel) == {"type": "after"}
        assert layer.stats()["reconnects"] == 1
    else:
        await until(lambda: layer.stats()["reconnects"] == 1, "a reconnect")
    await layer.flush()


def make_own(server, kind):

    kinds = {"redis": RedisChannelLayer, "pubsub": RedisPubSubChannelLayer}
    return kinds[kind](hosts=[server.url])


def _count_in_child(queue):
    layer = _inherited
    before = layer.stats()["messages_sent"]
    layer.send_sync("forked", {"type": "x"})
    queue.put((before, layer.stats()["messages_sent"]))


async def test_a_forked_child_counts_from_zero(redis):
    global _inherited

    _inherited = RedisChannelLayer(hosts=[redis.url], prefix="forkstats")
    for _ in range(3):
        await _inherited.send("forked", {"type": "x"})
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_count_in_child, args=(queue,))
    child.start()
    assert queue.get(timeout=20) == (0, 1)
    child.join(20)
    assert _inherited.stats()["messages_sent"] == 3
    await _inherited.flush()


async def test_prometheus_exports_each_layer_by_alias():
    layer = InMemoryChannelLayer(capacity=1)
    prometheus.watch("alerts", layer)
    registry = CollectorRegistry()
    prometheus.register(registry)
    prometheus.register(registry)  # once is enough; twice must not fail
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    await layer.group_send("g", {"type": "a"})
    await layer.group_send("g", {"type": "b"})
    families = {
        family.name: family
        for family in text_string_to_metric_families(generate_latest(registry).decode())
    }

    def value(name, **labels):
        samples = families[name].samples
        wanted = {"layer": "alerts", **labels}
        return next(s.value for s in samples if s.labels == wanted)

    assert value("channels_rs_group_deliveries") == 1
    assert value("channels_rs_dropped", reason="group_full") == 1
    assert value("channels_rs_dropped", reason="expired") == 0
    assert value("channels_rs_channels") == 1
    assert families["channels_rs_dropped"].type == "counter"
    assert families["channels_rs_waiting_receives"].type == "gauge"


async def test_the_django_app_exports_the_layers_channels_made():
    """testproject has "channels_rs" in INSTALLED_APPS: its ready() put the
    collector in prometheus_client's default registry."""
    from channels.layers import get_channel_layer
    from prometheus_client import REGISTRY

    layer = get_channel_layer()
    await layer.send("scraped", {"type": "x"})
    sent = layer.stats()["messages_sent"]
    samples = [
        sample
        for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())
        for sample in family.samples
        if sample.name == "channels_rs_messages_sent_total"
    ]
    assert [(s.labels, s.value) for s in samples] == [({"layer": "default"}, sent)]
    await layer.flush()
