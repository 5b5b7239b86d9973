"""Redis killed (SIGKILL) and started again on the same port, mid-traffic:
receivers carry on by themselves, senders get clear errors while it is down
and succeed once it is back, and no acknowledged message is lost but the
one a blocked pop may have held at the kill."""

import asyncio
import os
import random
import time

import pytest

from channels_rs import RedisChannelLayer
from conftest import until
from redis_server import RedisServer

DURABLE = ("--appendonly", "yes", "--appendfsync", "always")


@pytest.fixture
def server():
    server = RedisServer(*DURABLE)
    yield server
    server.stop()


def layer_on(server, connect_timeout=0.5):
    hosts = [{"address": server.url, "socket_connect_timeout": connect_timeout}]
    return RedisChannelLayer(hosts=hosts, capacity=100_000)


async def test_pending_receives_resume_after_a_restart(server):
    layer = layer_on(server)
    local = await layer.new_channel()
    waiting = [
        asyncio.ensure_future(layer.receive(local)),
        asyncio.ensure_future(layer.receive("normal")),
    ]
    await asyncio.sleep(0.1)
    server.kill()
    await asyncio.sleep(0.5)
    assert not any(task.done() for task in waiting)
    server.start()
    await send_until_accepted(layer, local, {"type": "after", "to": "local"})
    await send_until_accepted(layer, "normal", {"type": "after", "to": "normal"})
    got = await asyncio.wait_for(asyncio.gather(*waiting), 10)
    assert got == [{"type": "after", "to": "local"}, {"type": "after", "to": "normal"}]


async def test_first_send_after_a_restart_succeeds(server):
    """The connection made before the crash is dead; an idle layer must not
    fail its next operation because of it."""
    layer = layer_on(server)
    await layer.send("before", {"type": "kept"})
    server.kill()
    server.start()
    back = time.monotonic()
    await layer.send("after", {"type": "sent"})
    await layer.group_add("room", "after")
    assert time.monotonic() - back < 2
    assert await asyncio.wait_for(layer.receive("before"), 2) == {"type": "kept"}
    assert await asyncio.wait_for(layer.receive("after"), 2) == {"type": "sent"}


async def test_operations_fail_clearly_and_in_time_while_down(server):
    layer = layer_on(server, connect_timeout=0.5)
    await layer.send("warm", {"type": "connects"})
    server.kill()
    for operation in (
        layer.send("down", {"type": "lost"}),
        layer.group_send("room", {"type": "lost"}),
        layer.group_add("room", "down"),
    ):
        started = time.monotonic()
        with pytest.raises(ConnectionError, match=f"127.0.0.1:{server.port}"):
            await operation
        # It kept trying for socket_connect_timeout, and no longer.
        assert 0.5 <= time.monotonic() - started < 1.5


async def send_until_accepted(layer, channel, message, deadline=10):
    """A sender that tries again after a connection error, as an application
    would; returns once Redis acknowledged the message."""
    give_up = time.monotonic() + deadline
    while True:
        try:
            return await layer.send(channel, message)
        except ConnectionError:
            if time.monotonic() > give_up:
                raise
            await asyncio.sleep(0.05)


# A message that a blocked pop had taken when Redis was killed dies with
# the connection: Redis has no blocking pop that keeps a copy. Redis 7.0
# can acknowledge the send that unblocked the pop, then die before writing
# the pop's reply (about one run in six here); Valkey 9 has not been seen
# to. So one message may be lost, and only one acknowledged as Redis died.
IN_FLIGHT_AT_KILL = 0.005


async def loss_accounting(server, total, channels=20, restart_after=500):
    """Sends `total` messages to process-local channels while consumers
    cancel one receive in ten, restarting Redis once `restart_after` have
    been acknowledged. Returns the count of each message received."""
    layer = layer_on(server)
    names = [await layer.new_channel() for _ in range(channels)]
    received = {}
    acknowledged = {}

    async def consume(name):
        while True:
            try:
                timeout = 0.0005 if random.random() < 0.1 else 5
                message = await asyncio.wait_for(layer.receive(name), timeout)
            except asyncio.TimeoutError:
                continue
            received[message["n"]] = received.get(message["n"], 0) + 1

    async def produce():
        for n in range(total):
            await send_until_accepted(layer, names[n % channels], {"type": "m", "n": n})
            acknowledged[n] = time.monotonic()

    async def restart():
        await until(lambda: len(acknowledged) >= restart_after, "traffic to start")
        killed = time.monotonic()
        server.kill()
        await asyncio.sleep(0.3)
        server.start()
        return killed, len(acknowledged)

    consumers = [asyncio.ensure_future(consume(name)) for name in names]
    _, (killed, sent_before_restart) = await asyncio.gather(produce(), restart())
    assert sent_before_restart < total, "the restart missed the traffic"
    at_kill = {n for n, at in acknowledged.items() if at >= killed - IN_FLIGHT_AT_KILL}
    await until(
        lambda: acknowledged.keys() - at_kill <= received.keys(),
        "every message acknowledged before the kill",
        timeout=15,
    )
    await asyncio.sleep(0.5)  # for those acknowledged as Redis died, if they come
    for consumer in consumers:
        consumer.cancel()
    missing = sorted(acknowledged.keys() - received.keys())
    in_flight = [n for n in missing if n in at_kill]
    assert len(in_flight) <= 1 and missing == in_flight, (
        f"{len(missing)} acknowledged messages never arrived: {missing}, "
        f"acknowledged {[round(acknowledged[n] - killed, 4) for n in missing]} s "
        "after the kill"
    )
    return received


async def test_redis_killed_under_traffic_loses_no_acknowledged_message(server):
    """But for the one a blocked pop may have held as Redis was killed."""
    received = await loss_accounting(server, 3000)
    duplicates = sum(count - 1 for count in received.values())
    print(f"3,000 messages, one kill -9 restart: {duplicates} received twice")


@pytest.mark.soak
async def test_soak_loss_accounting_20000_messages(server):
    total = int(os.environ.get("SOAK_MESSAGES", 20_000))
    started = time.monotonic()
    received = await loss_accounting(server, total, restart_after=total // 3)
    duplicates = sum(count - 1 for count in received.values())
    print(
        f"\n{total:,} messages to 20 process-local channels, 10% of receives "
        f"cancelled, one kill -9 restart: {total - len(received)} lost, "
        f"{duplicates} duplicates, "
        f"{time.monotonic() - started:.1f} s"
    )
