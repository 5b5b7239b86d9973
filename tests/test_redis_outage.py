"""A server or a cluster gone for good: the layers keep trying, less and
less often, and say so once per step, not once per attempt or per receiver;
the client library's own complaints stay at DEBUG; and a program whose
servers are gone exits without a word."""

import asyncio
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import redis_server
from channels_rs import RedisChannelLayer, RedisPubSubChannelLayer
from conftest import publish_until_received
from redis_cluster import RedisCluster
from redis_server import Doorman


class Outage:
    """Layers waiting on `hosts` (a normal, a process-local and a pub/sub
    receive) while `servers` are killed and doormen take their ports."""

    def __init__(self, servers, hosts):
        self.servers = servers
        self.core = RedisChannelLayer(hosts=hosts)
        self.pubsub = RedisPubSubChannelLayer(hosts=hosts)

    async def start(self):
        self.local = await self.core.new_channel()
        self.subscribed = await self.pubsub.new_channel()
        self.waiting = [
            asyncio.ensure_future(self.core.receive("outage-normal")),
            asyncio.ensure_future(self.core.receive(self.local)),
            asyncio.ensure_future(self.pubsub.receive(self.subscribed)),
        ]
        await asyncio.sleep(0.2)
        for server in self.servers:
            server.kill()
        self.doormen = [Doorman(server.port) for server in self.servers]
        self.gone = time.monotonic()

    async def watch(self, caplog, names):
        """Kills the servers, then checks what the layers do for 5 s."""
        with caplog.at_level(logging.WARNING):
            await self.start()
            try:
                await asyncio.sleep(5)
            finally:
                self.end()
            check_pace_and_words(self, caplog, names)
        assert not any(task.done() for task in self.waiting)

    def attempts(self, start, end):
        """Connections the layers made from `start` to `end` s into it."""
        begin = self.gone + start
        return sum(door.between(begin, self.gone + end) for door in self.doormen)

    def end(self):
        for door in self.doormen:
            door.close()

    async def close(self):
        """Leaves nothing trying: receives cancelled, pub/sub unsubscribed."""
        for task in self.waiting:
            task.cancel()
        await self.pubsub.flush()


def warnings_in(caplog):
    return [record for record in caplog.records if record.levelno >= logging.WARNING]


def check_pace_and_words(outage, caplog, names):
    """Each connection tried every 0.1 s at first, every 0.5 s from 2 s on;
    said once per layer, then once more when the pause grows."""
    early, late = outage.attempts(0, 2), outage.attempts(3, 5)
    ports = len(outage.servers)
    # A connection tried every 0.1 s makes 20 attempts in 2 s; each port
    # serves up to 7 that retry (the core layer's shared and blocking ones,
    # its pump's, the pub/sub subscriber's; a cluster client reconnects to
    # every node), which measured 230-300 attempts on 3 cluster ports.
    assert 10 <= early <= 140 * ports, early
    assert 1 <= late <= early / 4, (early, late)
    lines = warnings_in(caplog)
    assert {record.name for record in lines} == {"channels_rs"}, lines
    # Per layer: when it began, when the pause grew; the pub/sub connection
    # dropping.
    texts = [record.getMessage() for record in lines]
    assert len(texts) <= 6, texts
    assert sum("failed, retrying every 0.1 s" in text for text in texts) == 2, texts
    assert sum("still failing after 2 s" in text for text in texts) == 2, texts
    assert all(any(name in text for name in names) for text in texts), texts


async def test_a_server_gone_for_good_is_tried_less_and_less_often(own_redis, caplog):
    outage = Outage([own_redis], [own_redis.url])
    try:
        await outage.watch(caplog, [f"127.0.0.1:{own_redis.port}"])
        # Back: the receives carry on, and each layer says so once.
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            own_redis.start()
            core, pubsub = outage.core, outage.pubsub
            await core.send("outage-normal", {"type": "normal"})
            await core.send(outage.local, {"type": "local"})
            core_got = await asyncio.wait_for(asyncio.gather(*outage.waiting[:2]), 5)
            assert core_got == [{"type": "normal"}, {"type": "local"}]
            message = {"type": "published"}
            waiting = outage.waiting[2]
            await publish_until_received(pubsub, outage.subscribed, message, waiting)
        texts = [record.getMessage() for record in warnings_in(caplog)]
        assert sum("works again after" in text for text in texts) == 2, texts
    finally:
        await outage.close()


async def test_a_cluster_gone_for_good_is_tried_less_and_less_often(caplog):
    cluster = RedisCluster(masters=3, replicas_per_master=0)
    outage = Outage(cluster.servers, [{"cluster": cluster.urls}])
    try:
        await outage.watch(caplog, ["cluster redis://127.0.0.1"])
    finally:
        await outage.close()
        cluster.stop()


# Used its layers, cancelled a receive of each kind, flushed, and kept the
# layers: then its servers die and it exits.
PROGRAM = """
import asyncio, sys, time
sys.path.insert(0, {tests!r})
import redis_server
redis_server.use({family!r})
from conftest import publish_until_received
from redis_cluster import RedisCluster
from redis_server import RedisServer
from channels_rs import RedisChannelLayer, RedisPubSubChannelLayer

server = RedisServer()
cluster = RedisCluster(masters=3, replicas_per_master=0)
kept = []

async def use(layer):
    channel = await layer.new_channel()
    await layer.send(channel, {{"type": "m"}})
    assert await layer.receive(channel) == {{"type": "m"}}
    for name in (channel, "normal"):
        try:
            await asyncio.wait_for(layer.receive(name), 0.1)
        except asyncio.TimeoutError:
            pass
    await layer.flush()
    kept.append(layer)

async def main():
    for hosts in ([server.url], [{{"cluster": cluster.urls}}]):
        for kind in (RedisChannelLayer, RedisPubSubChannelLayer):
            await use(kind(hosts=hosts))

asyncio.run(main())
server.stop()
cluster.stop()
time.sleep(3)
print("exiting")
"""


def test_nothing_is_printed_once_the_servers_are_gone():
    redis_server.server_binary()  # Missing, if the program would find none
    tests = str(Path(__file__).parent)
    program = PROGRAM.format(tests=tests, family=redis_server.current())
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(program)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "exiting\n"
    assert done.stderr == ""
