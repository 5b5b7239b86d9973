"""The three ways the bridge wakes an event loop with Redis results, each
chosen or forced on Linux: eventfd, the self-pipe other POSIX systems use,
and call_soon_threadsafe for loops without add_reader (Windows' Proactor).
The whole suite runs on each too (`nox -s loops`); this checks the choice,
the errors, and what each path must keep: order, cancellation, batching."""

import asyncio

import pytest
import uvloop

from channels_rs import RedisChannelLayer, RedisPubSubChannelLayer
from channels_rs._core import wakeup_of
from conftest import group_round_trip, receive
from event_loops import NoReaderEventLoop

WAKEUPS = ["eventfd", "pipe", "call_soon_threadsafe"]


def run(make_loop, work):
    """`work()` to completion on a new loop from `make_loop`, then closed."""
    loop = make_loop()
    try:
        return loop.run_until_complete(work())
    finally:
        loop.close()


async def wakeup_now():
    return wakeup_of(asyncio.get_running_loop())


@pytest.mark.parametrize(
    ("make_loop", "expected"),
    [
        (asyncio.SelectorEventLoop, "eventfd"),
        (uvloop.new_event_loop, "eventfd"),
        (NoReaderEventLoop, "call_soon_threadsafe"),
    ],
    ids=["asyncio", "uvloop", "noreader"],
)
def test_each_loop_gets_the_first_way_it_can_watch(make_loop, expected, monkeypatch):
    monkeypatch.delenv("CHANNELS_RS_WAKEUP", raising=False)
    assert run(make_loop, wakeup_now) == expected


@pytest.mark.parametrize("wakeup", WAKEUPS)
def test_each_way_keeps_order_cancellation_and_pubsub(wakeup, redis, monkeypatch):
    monkeypatch.setenv("CHANNELS_RS_WAKEUP", wakeup)

    async def work():
        assert await wakeup_now() == wakeup
        layer = RedisChannelLayer(
            hosts=[redis.url], prefix=f"wake-{wakeup}", capacity=1000
        )
        for channel in ["normal", await layer.new_channel()]:
            for n in range(200):
                await layer.send(channel, {"type": "m", "n": n})
            assert [(await receive(layer, channel))["n"] for _ in range(200)] == [
                *range(200)
            ]
            # A receive cancelled while it waits loses nothing.
            waiting = asyncio.ensure_future(layer.receive(channel))
            await asyncio.sleep(0.05)
            waiting.cancel()
            await layer.send(channel, {"type": "after.cancel"})
            assert await receive(layer, channel) == {"type": "after.cancel"}
        await layer.flush()
        await group_round_trip(
            RedisPubSubChannelLayer(hosts=[redis.url], prefix=f"wake-{wakeup}")
        )

    run(asyncio.SelectorEventLoop, work)


class CountingNoReaderLoop(NoReaderEventLoop):
    """Counts the wake-ups the bridge asks of it."""

    wakeups = 0

    def call_soon_threadsafe(self, callback, *args, context=None):
        if getattr(callback, "__name__", "") == "drain":
            self.wakeups += 1
        return super().call_soon_threadsafe(callback, *args, context=context)


def test_call_soon_threadsafe_wakes_once_per_batch_not_per_result(redis, monkeypatch):
    monkeypatch.delenv("CHANNELS_RS_WAKEUP", raising=False)
    members = 200

    async def work():
        layer = RedisChannelLayer(hosts=[redis.url], prefix="batched")
        channels = [await layer.new_channel() for _ in range(members)]
        for channel in channels:
            await layer.group_add("everyone", channel)
        waiting = [asyncio.ensure_future(layer.receive(c)) for c in channels]
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        before = loop.wakeups
        await layer.group_send("everyone", {"type": "to.all"})
        assert (
            await asyncio.wait_for(asyncio.gather(*waiting), 5)
            == [{"type": "to.all"}] * members
        )
        await layer.flush()
        return loop.wakeups - before

    wakeups = run(CountingNoReaderLoop, work)
    # The group_send's own reply and one batch of deliveries, give or take
    # a batch split by timing: far fewer than one per message.
    assert 1 <= wakeups <= members // 10


def test_an_unknown_way_is_named_with_the_ones_there_are(monkeypatch):
    monkeypatch.setenv("CHANNELS_RS_WAKEUP", "epoll")
    with pytest.raises(ValueError) as raised:
        run(asyncio.SelectorEventLoop, wakeup_now)
    assert str(raised.value) == (
        'CHANNELS_RS_WAKEUP="epoll" is not a way to wake an event loop; '
        "use auto, eventfd, pipe, call_soon_threadsafe"
    )


@pytest.mark.parametrize("wakeup", ["eventfd", "pipe"])
def test_forcing_a_descriptor_on_a_loop_that_cannot_watch_one_says_so(
    wakeup, monkeypatch
):
    monkeypatch.setenv("CHANNELS_RS_WAKEUP", wakeup)
    with pytest.raises(RuntimeError) as raised:
        run(NoReaderEventLoop, wakeup_now)
    assert str(raised.value) == (
        f"CHANNELS_RS_WAKEUP={wakeup} needs loop.add_reader, which "
        "NoReaderEventLoop does not have: unset it, or set it to call_soon_threadsafe"
    )
