"""What channels_redis's own test suite checks, on our layer (our words)."""

import asyncio
import random

import pytest
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull

from channels_rs import RedisChannelLayer
from conftest import receive


@pytest.fixture
async def layer(redis):
    layer = RedisChannelLayer(hosts=[redis.url], capacity=3)
    yield layer
    await layer.flush()


def test_receives_in_two_event_loops(redis):
    layer = RedisChannelLayer(hosts=[redis.url])
    first, second = (async_to_sync(layer.new_channel)() for _ in range(2))
    async_to_sync(layer.send)(first, {"type": "one"})
    async_to_sync(layer.send)(second, {"type": "two"})
    assert async_to_sync(layer.receive)(second) == {"type": "two"}
    assert async_to_sync(layer.receive)(first) == {"type": "one"}
    async_to_sync(layer.flush)()


async def test_specific_channel_capacity(redis):
    layer = RedisChannelLayer(
        hosts=[redis.url], capacity=3, channel_capacity={"one_*": 1}
    )
    await layer.send("one_channel", {"type": "x"})
    with pytest.raises(ChannelFull):
        await layer.send("one_channel", {"type": "x"})
    for _ in range(3):
        await layer.send("other", {"type": "x"})
    with pytest.raises(ChannelFull):
        await layer.send("other", {"type": "x"})
    await layer.flush()


async def test_groups_of_channels_with_one_prefix(layer):
    channels = [await layer.new_channel(prefix="test-gr-chan") for _ in range(3)]
    for channel in channels:
        await layer.group_add("test-group", channel)
    await layer.group_send("test-group", {"type": "message.1"})
    for channel in channels:
        assert await receive(layer, channel) == {"type": "message.1"}


async def test_random_seed_does_not_repeat_names(redis):
    random.seed(1)
    first = RedisChannelLayer(hosts=[redis.url])
    name = await first.new_channel()
    random.seed(1)
    second = RedisChannelLayer(hosts=[redis.url])
    assert first.client_prefix != second.client_prefix
    random.seed(1)
    assert await first.new_channel() != name


async def test_the_oldest_message_expires_on_send(redis):
    layer = RedisChannelLayer(hosts=[redis.url], expiry=1)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "first"})
    await asyncio.sleep(2.1)  # expiry counts whole seconds
    await layer.send(channel, {"type": "second"})
    await layer.send(channel, {"type": "third"})
    assert await receive(layer, channel) == {"type": "second"}
    assert await receive(layer, channel) == {"type": "third"}
    with pytest.raises(asyncio.TimeoutError):
        await receive(layer, channel, timeout=0.5)
    await layer.flush()


async def test_group_send_drops_expired_messages_first(redis):
    layer = RedisChannelLayer(hosts=[redis.url], expiry=1)
    first, second = await layer.new_channel(), "plain-member"
    for channel in (first, second):
        await layer.group_add("expiring", channel)
    await layer.group_send("expiring", {"type": "old"})
    await asyncio.sleep(2.1)
    await layer.group_send("expiring", {"type": "new"})
    assert await receive(layer, first) == {"type": "new"}
    assert await receive(layer, second) == {"type": "new"}
    await layer.flush()


def test_group_key_format(redis):
    assert RedisChannelLayer(hosts=[redis.url])._group_key("g") == b"asgi:group:g"
    custom = RedisChannelLayer(hosts=[redis.url], prefix="test_prefix")
    assert custom._group_key("g") == b"test_prefix:group:g"


async def test_local_buffer_keeps_the_newest_capacity_messages(redis):
    """Messages for a local channel nobody reads are buffered up to capacity;
    beyond that the oldest go."""
    layer = RedisChannelLayer(hosts=[redis.url], capacity=10)
    unread, listening = await layer.new_channel(), await layer.new_channel()
    for batch in range(3):
        # A receive keeps the pump going; the marker, sent after the batch
        # on the same key, arrives once the pump has moved the batch.
        waiting = asyncio.create_task(layer.receive(listening))
        for n in range(batch * 10, batch * 10 + 10):
            await layer.send(unread, {"type": "m", "n": n})
        await layer.send(listening, {"type": "marker"})
        assert await asyncio.wait_for(waiting, 5) == {"type": "marker"}
    got = [(await receive(layer, unread))["n"] for _ in range(10)]
    assert got == list(range(20, 30))
    with pytest.raises(asyncio.TimeoutError):
        await receive(layer, unread, timeout=0.3)
    waiting.cancel()
    await layer.flush()
