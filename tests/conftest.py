import channels.layers
import pytest

import channels_rs
from redis_cluster import RedisCluster
from redis_server import RedisServer

# Serializer settings interop tests run with, ours and channels_redis's alike.
INTEROP_CONFIGS = [
    {},
    {"serializer_format": "json"},
    {"symmetric_encryption_keys": ["new-key", "old-key"]},
]
INTEROP_IDS = ["msgpack", "json", "encrypted"]

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
def cluster():
    """One real Redis Cluster (3 masters, 3 replicas) for the session."""
    cluster = RedisCluster()
    yield cluster
    cluster.stop()
