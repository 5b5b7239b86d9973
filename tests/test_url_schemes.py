"""valkey:// and valkeys:// go wherever redis:// and rediss:// do: hosts
entries of both layers, an "address", cluster startup nodes,
layers_from_env() and `python -m channels_rs check`."""

import os
import subprocess
import sys

import pytest

from channels_rs import RedisChannelLayer, RedisPubSubChannelLayer, layers_from_env
from conftest import group_round_trip, require_tls
from redis_server import Certificates, RedisServer

KINDS = [RedisChannelLayer, RedisPubSubChannelLayer]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", ["url", "address"])
async def test_valkey_urls(redis, kind, form):
    url = f"valkey://127.0.0.1:{redis.port}/0"
    layer = kind(hosts=[url if form == "url" else {"address": url}])
    assert f"valkey://127.0.0.1:{redis.port}/0" in repr(layer)
    await group_round_trip(layer)


@pytest.mark.parametrize("kind", KINDS)
async def test_valkey_cluster_startup_nodes(cluster, kind):
    nodes = [url.replace("redis://", "valkey://") for url in cluster.urls]
    await group_round_trip(kind(hosts=[{"cluster": nodes}]))


async def test_layers_from_env(redis):
    settings = layers_from_env({"REDIS_URL": f"valkey://127.0.0.1:{redis.port}"})
    config = settings["default"]["CONFIG"]
    await group_round_trip(RedisChannelLayer(**config))


def test_check(redis):
    url = f"valkey://127.0.0.1:{redis.port}"
    done = subprocess.run(
        [sys.executable, "-m", "channels_rs", "check", url],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All checks passed" in done.stdout


@pytest.mark.parametrize("kind", KINDS)
async def test_valkeys_over_tls(tmp_path, kind):
    require_tls()
    certificates = Certificates(tmp_path)
    server = RedisServer(tls=certificates)
    try:
        url = f"valkeys://127.0.0.1:{server.port}"
        await group_round_trip(
            kind(hosts=[{"address": url, "ssl_ca_certs": certificates.ca}])
        )
    finally:
        server.stop()
