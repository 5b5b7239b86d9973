"""What every channels-rs layer does alike, run on each of them: the
in-memory layer, and Redis and Redis pub/sub, each on one server and on a
cluster. Layers whose channels keep messages until someone receives them
(all but pub/sub) share more: normal channels and capacity."""

import asyncio
import logging
import re

import pytest
from channels.exceptions import ChannelFull

from channels_rs import (
    InMemoryChannelLayer,
    InvalidMessage,
    RedisChannelLayer,
    RedisPubSubChannelLayer,
)
from conftest import receive

QUEUED = ["memory", "redis", "cluster"]


def make(request, kind, **config):
    """The layer `kind` names, with `config`."""
    if kind == "memory":
        return InMemoryChannelLayer(**config)
    if kind.endswith("cluster"):
        hosts = [{"cluster": request.getfixturevalue("cluster").urls}]
    else:
        hosts = [request.getfixturevalue("redis").url]
    layer = RedisPubSubChannelLayer if kind.startswith("pubsub") else RedisChannelLayer
    return layer(hosts=hosts, prefix="behaviour", **config)


@pytest.fixture(params=[*QUEUED, "pubsub", "pubsub-cluster"])
async def layer(request):
    layer = make(request, request.param)
    yield layer
    await layer.flush()


@pytest.fixture(params=QUEUED)
async def queued(request):
    """Makes layers whose channels hold messages until received."""
    made = []

    def factory(**config):
        made.append(make(request, request.param, **config))
        return made[-1]

    yield factory
    for layer in made:
        await layer.flush()


async def test_extensions(layer):
    assert {"groups", "flush"} <= set(layer.extensions)


async def test_new_channels_are_unique_and_carry_messages_exactly(layer):
    names = {await layer.new_channel() for _ in range(20)}
    assert len(names) == 20
    channel = names.pop()
    message = {"type": "exact", "text": "é", "n": [1, 2.5, None, True], "b": b"\x00"}
    await layer.send(channel, message)
    assert await receive(layer, channel) == message


async def test_messages_keep_their_order(layer):
    channel = await layer.new_channel()
    for n in range(20):
        await layer.send(channel, {"type": "m", "n": n})
    assert [(await receive(layer, channel))["n"] for n in range(20)] == list(range(20))


async def test_groups_reach_members_until_discarded(layer):
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("behaviour-room", first)
    await layer.group_add("behaviour-room", second)
    await layer.group_send("behaviour-room", {"type": "both"})
    assert await receive(layer, first) == {"type": "both"}
    assert await receive(layer, second) == {"type": "both"}
    await layer.group_discard("behaviour-room", first)
    await layer.group_send("behaviour-room", {"type": "second only"})
    assert await receive(layer, second) == {"type": "second only"}
    await layer.send(first, {"type": "direct"})
    assert await receive(layer, first) == {"type": "direct"}


@pytest.mark.parametrize("name", ["", "x" * 101, "bad name", "bad\u00e9"])
async def test_invalid_names_are_refused(layer, name):
    with pytest.raises(TypeError):
        await layer.send(name, {"type": "x"})
    with pytest.raises(TypeError):
        await layer.group_send(name, {"type": "x"})


async def test_messages_must_be_dicts(layer):
    channel = await layer.new_channel()
    for bad in (["a list"], "text", None):
        said = f"^message must be a dict, not {type(bad).__name__}$"
        with pytest.raises(InvalidMessage, match=said):
            await layer.send(channel, bad)
        with pytest.raises(InvalidMessage, match=said):
            await layer.group_send("behaviour-room", bad)


async def test_usable_after_flush(layer):
    await layer.flush()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "after.flush"})
    assert await receive(layer, channel) == {"type": "after.flush"}


# Layers whose channels hold messages until someone receives them


async def test_normal_channels_keep_order_and_wait_for_receivers(queued):
    layer = queued()
    for n in range(20):
        await layer.send("behaviour-normal", {"type": "m", "n": n})
    got = [(await receive(layer, "behaviour-normal"))["n"] for _ in range(20)]
    assert got == list(range(20))
    waiting = asyncio.ensure_future(layer.receive("behaviour-later"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await layer.send("behaviour-later", {"type": "late"})
    assert await asyncio.wait_for(waiting, 3) == {"type": "late"}


async def test_groups_reach_normal_and_process_local_members(queued):
    layer = queued()
    local = [await layer.new_channel(prefix=f"p{n}") for n in range(3)]
    normal = [f"behaviour-member-{n}" for n in range(3)]
    for member in local + normal:
        await layer.group_add("behaviour-mixed", member)
    await layer.group_discard("behaviour-mixed", normal[0])
    await layer.group_send("behaviour-mixed", {"type": "hello"})
    for member in local + normal[1:]:
        assert await receive(layer, member) == {"type": "hello"}
    with pytest.raises(asyncio.TimeoutError):
        await receive(layer, normal[0], timeout=0.2)


async def test_group_send_gives_members_their_pattern_capacity(queued):
    """A member whose name matches a channel_capacity pattern (a glob, or a
    compiled regex) has that capacity in group_send, as in send."""
    roomy = {"behaviour-roomy-*": 2, re.compile(r"^behaviour-huge"): 3}
    layer = queued(capacity=1, channel_capacity=roomy)
    members = ["behaviour-roomy-1", "behaviour-huge-1", "behaviour-tight-1"]
    for member in members:
        await layer.send(member, {"type": "first"})
        await layer.group_add("behaviour-patterns", member)
    await layer.group_send("behaviour-patterns", {"type": "broadcast"})
    for member in members:
        assert await receive(layer, member) == {"type": "first"}
    for member in members[:2]:
        assert await receive(layer, member) == {"type": "broadcast"}
    with pytest.raises(asyncio.TimeoutError):
        await receive(layer, members[2], timeout=0.05)


async def test_group_send_skips_full_members(queued, caplog):
    """Full members, normal and process-local of another prefix, miss the
    message; the others get it; the layer says so at INFO and counts them."""
    layer = queued(capacity=1)
    full = [f"behaviour-full-{n}" for n in range(6)] + [
        await layer.new_channel(prefix="busy")
    ]
    idle = await layer.new_channel()
    for member in full:
        await layer.send(member, {"type": "first"})
    for member in full + [idle]:
        await layer.group_add("behaviour-crowd", member)
    with caplog.at_level(logging.INFO, logger="channels_rs"):
        await layer.group_send("behaviour-crowd", {"type": "broadcast"})
    assert await receive(layer, idle) == {"type": "broadcast"}
    for member in full:
        assert await receive(layer, member) == {"type": "first"}
        with pytest.raises(asyncio.TimeoutError):
            await receive(layer, member, timeout=0.05)
    lines = [
        r.getMessage() for r in caplog.records if "behaviour-crowd" in r.getMessage()
    ]
    assert lines == [
        "dropped 7 messages on group behaviour-crowd: 7 of 8 channels over capacity"
    ]
    assert layer.stats()["dropped_group_full"] == 7


async def test_group_channels_and_size_follow_adds_discards_and_expiry(queued):
    layer = queued(group_expiry=2)
    normal, local = "behaviour-member", await layer.new_channel()
    assert await layer.group_channels("behaviour-members") == []
    assert await layer.group_size("behaviour-members") == 0
    await layer.group_add("behaviour-members", normal)
    await layer.group_add("behaviour-members", local)
    await layer.group_add("behaviour-members", local)  # once, however often
    assert sorted(await layer.group_channels("behaviour-members")) == sorted(
        [normal, local]
    )
    assert await layer.group_size("behaviour-members") == 2
    # The sync twins, from a thread with no event loop, as a view calls them.
    assert sorted(
        await asyncio.to_thread(layer.group_channels_sync, "behaviour-members")
    ) == sorted([normal, local])
    assert await asyncio.to_thread(layer.group_size_sync, "behaviour-members") == 2
    await layer.group_discard("behaviour-members", normal)
    assert await layer.group_channels("behaviour-members") == [local]
    # A member that joined longer than group_expiry ago is no member. Redis
    # counts expiry in whole seconds, as channels_redis does: hence 3.1 s.
    await asyncio.sleep(1.5)
    await layer.group_add("behaviour-members", normal)
    await asyncio.sleep(1.6)
    assert await layer.group_channels("behaviour-members") == [normal]
    assert await layer.group_size("behaviour-members") == 1


async def test_group_queries_refuse_invalid_names(queued):
    layer = queued()
    for bad in ["", "x" * 101, "bad name"]:
        with pytest.raises(TypeError):
            await layer.group_channels(bad)
        with pytest.raises(TypeError):
            layer.group_size_sync(bad)


async def test_pubsub_says_why_it_cannot_list_a_group(request):
    layer = make(request, "pubsub")
    said = (
        "^RedisPubSubChannelLayer cannot list a group's channels: membership "
        "lives in each process's subscriptions"
    )
    with pytest.raises(NotImplementedError, match=said):
        await layer.group_channels("behaviour-room")
    with pytest.raises(NotImplementedError, match=said):
        await layer.group_size("behaviour-room")
    with pytest.raises(NotImplementedError, match=said):
        layer.group_size_sync("behaviour-room")


# Bulk operations (channels_redis #399/#400): many messages to one channel or
# group, or one message to many groups, in one round trip per shard.


async def test_send_bulk_delivers_every_message_in_order(layer):
    channel = await layer.new_channel()
    messages = [{"type": "bulk", "n": n} for n in range(20)]
    await layer.send_bulk(channel, iter(messages))
    assert [await receive(layer, channel) for _ in messages] == messages
    await layer.send_bulk(channel, [])


async def test_group_send_bulk_gives_each_member_every_message_in_order(layer):
    members = [await layer.new_channel() for _ in range(3)]
    for member in members:
        await layer.group_add("bulk-room", member)
    messages = [{"type": "bulk", "n": n} for n in range(5)]
    await layer.group_send_bulk("bulk-room", messages)
    for member in members:
        assert [await receive(layer, member) for _ in messages] == messages
    assert layer.stats()["group_deliveries"] == 15


async def test_group_send_many_is_a_group_send_to_each_group(layer):
    first, second, both = [await layer.new_channel() for _ in range(3)]
    for group, channel in [("g1", first), ("g2", second), ("g1", both), ("g2", both)]:
        await layer.group_add(group, channel)
    await layer.group_send_many(["g1", "g2", "empty"], {"type": "news"})
    for channel in (first, second, both):
        assert await receive(layer, channel) == {"type": "news"}
    # As two group_send calls would: a member of both hears it twice.
    assert await receive(layer, both) == {"type": "news"}
    with pytest.raises(asyncio.TimeoutError):
        await receive(layer, first, timeout=0.1)


async def test_a_bad_message_in_a_bulk_send_sends_none(layer):
    channel = await layer.new_channel()
    with pytest.raises(TypeError, match="dict"):
        await layer.send_bulk(channel, [{"type": "fine"}, "not a dict"])
    with pytest.raises(TypeError, match="dict"):
        await layer.group_send_many(["g"], "not a dict")
    await layer.send(channel, {"type": "after"})
    assert await receive(layer, channel) == {"type": "after"}


async def test_send_bulk_is_all_or_nothing_at_capacity(queued):
    layer = queued(capacity=3)
    await layer.send_bulk("bulk-full", [{"type": "a"}, {"type": "b"}])
    with pytest.raises(ChannelFull):
        await layer.send_bulk("bulk-full", [{"type": "c"}, {"type": "d"}])
    await layer.send_bulk("bulk-full", [{"type": "c"}])
    got = [await receive(layer, "bulk-full") for _ in range(3)]
    assert got == [{"type": "a"}, {"type": "b"}, {"type": "c"}]
