"""What works in development works in production: every layer has the same
sync twins, and a message the Redis layers could not send is told of by the
in-memory layer at the send (a WARNING once per place, or with
require_serializable=True the TypeError the Redis layers raise)."""

import asyncio
import datetime
import inspect
import logging
import threading

import pytest

from channels_rs import InMemoryChannelLayer, RedisChannelLayer, RedisPubSubChannelLayer
from conftest import receive

LAYERS = [InMemoryChannelLayer, RedisChannelLayer, RedisPubSubChannelLayer]
# Nothing listens here: serializing needs no server.
NOWHERE = ["redis://127.0.0.1:1"]


def sync_twins(layer_class):
    return {
        name
        for name, member in inspect.getmembers(layer_class, inspect.isfunction)
        if name.endswith("_sync") and not name.startswith("_")
    }


def test_every_layer_has_every_sync_twin():
    twins = [sync_twins(layer_class) for layer_class in LAYERS]
    assert twins[0] == twins[1] == twins[2], twins
    assert {"send_sync", "group_send_sync", "group_channels_sync"} <= twins[0]
    for name in twins[0]:
        assert name.removesuffix("_sync") in dir(InMemoryChannelLayer)


async def test_the_in_memory_sync_twins_from_plain_sync_code():
    """As a view or a Celery task calls them: in a thread with no loop."""
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("room", channel)

    def view():
        layer.send_sync(channel, {"type": "direct"})
        layer.group_send_sync("room", {"type": "grouped"})
        return layer.group_channels_sync("room"), layer.group_size_sync("room")

    members, size = await asyncio.to_thread(view)
    assert members == [channel] and size == 1
    assert await receive(layer, channel) == {"type": "direct"}
    assert await receive(layer, channel) == {"type": "grouped"}
    # With a receive waiting on this loop, from another thread.
    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.01)
    threading.Thread(target=layer.send_sync, args=(channel, {"type": "woke"})).start()
    assert await asyncio.wait_for(waiting, 2) == {"type": "woke"}


UNSENDABLE = [
    (
        {"type": "x", "when": datetime.datetime(2026, 1, 2)},
        "'datetime.datetime'",
        "['when']",
    ),
    ({"type": "x", "a": {"b": [1, {2, 3}]}}, "'set' object", "['a']['b'][1]"),
    ({"type": "x", "who": object()}, "'object' object", "['who']"),
    ({"type": "x", "ids": {1: "one"}}, "keys must be str, not int", "['ids']"),
]


def redis_error(message):
    """The error the Redis layer raises for `message`, and its text."""
    with pytest.raises((TypeError, OverflowError)) as raised:
        RedisChannelLayer(hosts=NOWHERE).serialize(message)
    return type(raised.value), str(raised.value)


@pytest.mark.parametrize("layer_class", [RedisChannelLayer, RedisPubSubChannelLayer])
@pytest.mark.parametrize(("message", "kind", "place"), UNSENDABLE)
async def test_the_redis_layers_name_where_a_message_cannot_be_sent(
    layer_class, message, kind, place
):
    layer = layer_class(hosts=NOWHERE)
    for call in (
        lambda: layer.send("chan", message),
        lambda: layer.group_send("room", message),
        lambda: layer.send_bulk("chan", [{"type": "fine"}, message]),
    ):
        with pytest.raises(TypeError) as raised:
            await call()
        assert kind in str(raised.value)
        assert str(raised.value).endswith(f" at message{place}")


@pytest.mark.parametrize(("message", "kind", "place"), UNSENDABLE)
async def test_in_memory_warns_once_per_place_and_delivers(
    message, kind, place, caplog
):
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    with caplog.at_level(logging.WARNING, "channels_rs"):
        await layer.send(channel, message)
        await layer.group_send("room", message)
        layer.send_sync(channel, message)
    [warning] = [r for r in caplog.records if r.name == "channels_rs"]
    assert warning.levelname == "WARNING"
    text = warning.getMessage()
    assert redis_error(message)[1] in text and kind in text
    assert "require_serializable=True" in text
    # Delivered as channels' own layer would.
    for _ in range(3):
        assert (await receive(layer, channel))["type"] == "x"
    assert layer.stats()["messages_sent"] == 2


async def test_in_memory_warns_again_for_another_place(caplog):
    layer = InMemoryChannelLayer()
    with caplog.at_level(logging.WARNING, "channels_rs"):
        for place in ("a", "b", "a"):
            await layer.send("chan", {"type": "x", place: {1, 2}})
    said = [r.getMessage() for r in caplog.records if r.name == "channels_rs"]
    assert len(said) == 2
    assert "at message['a']" in said[0] and "at message['b']" in said[1]


@pytest.mark.parametrize(("message", "kind", "place"), UNSENDABLE)
async def test_require_serializable_raises_what_redis_raises(message, kind, place):
    layer = InMemoryChannelLayer(require_serializable=True)
    channel = await layer.new_channel()
    kind_raised, text = redis_error(message)
    calls = [
        lambda: layer.send(channel, message),
        lambda: layer.send_bulk(channel, [{"type": "fine"}, message]),
        # Also to a group with no members: the Redis layers check first.
        lambda: layer.group_send("empty", message),
        lambda: layer.group_send_many(["empty"], message),
    ]
    for call in calls:
        with pytest.raises(kind_raised) as raised:
            await call()
        assert str(raised.value) == text
    with pytest.raises(kind_raised):
        layer.send_sync(channel, message)
    # Nothing of a refused call was sent.
    assert layer.stats()["messages_sent"] == 0
    with pytest.raises(asyncio.TimeoutError):
        await receive(layer, channel, timeout=0.05)


async def test_plain_messages_pass_without_a_word(caplog):
    layer = InMemoryChannelLayer(require_serializable=True)
    plain = {
        "type": "x",
        "text": "héllo",
        "n": 2**63,
        "neg": -(2**63),
        "f": 1.5,
        "b": b"\x00",
        "none": None,
        "ok": True,
        "items": [1, (2, 3), {"k": []}],
    }
    with caplog.at_level(logging.WARNING, "channels_rs"):
        await layer.send("chan", plain)
    assert await receive(layer, "chan") == plain
    assert not [r for r in caplog.records if r.name == "channels_rs"]


async def test_an_int_too_big_for_msgpack_is_told_of(caplog):
    message = {"type": "x", "n": 2**64}
    layer = InMemoryChannelLayer(require_serializable=True)
    with pytest.raises(OverflowError, match=r"out of range at message\['n'\]"):
        await layer.send("chan", message)
    assert redis_error(message) == (
        OverflowError,
        "Integer value out of range at message['n']",
    )
