"""layers_from_env(): each variable it reads, and what it builds working
on real servers."""

import asyncio

from channels_rs import RedisChannelLayer, layers_from_env
from conftest import receive
from redis_server import command


def test_without_redis_url_the_in_memory_layer():
    assert layers_from_env({}) == {
        "default": {"BACKEND": "channels_rs.InMemoryChannelLayer"}
    }
    assert layers_from_env({"REDIS_URL": " "}, capacity=10) == {
        "default": {
            "BACKEND": "channels_rs.InMemoryChannelLayer",
            "CONFIG": {"capacity": 10},
        }
    }


def test_redis_url_shards_keys_and_extra_config():
    environ = {
        "REDIS_URL": "redis://a:6379/0, rediss://b:6380/1",
        "CHANNEL_LAYERS_ENCRYPTION_KEYS": "new,old",
    }
    assert layers_from_env(environ, prefix="app") == {
        "default": {
            "BACKEND": "channels_rs.RedisChannelLayer",
            "CONFIG": {
                "hosts": ["redis://a:6379/0", "rediss://b:6380/1"],
                "prefix": "app",
                "symmetric_encryption_keys": ["new", "old"],
            },
        }
    }


def test_keys_alone_keep_the_in_memory_layer():
    environ = {"CHANNEL_LAYERS_ENCRYPTION_KEYS": "secret"}
    assert layers_from_env(environ)["default"]["BACKEND"].endswith(
        "InMemoryChannelLayer"
    )


def test_other_variable_names():
    environ = {"CACHE_URL": "redis://x:1"}
    config = layers_from_env(environ, url_variable="CACHE_URL")["default"]["CONFIG"]
    assert config == {"hosts": ["redis://x:1"]}


def test_cluster_url_names_startup_nodes_and_wins():
    environ = {
        "REDIS_URL": "redis://single:6379",
        "REDIS_CLUSTER_URL": "redis://n1:7000,redis://n2:7001",
    }
    assert layers_from_env(environ)["default"]["CONFIG"] == {
        "hosts": [{"cluster": ["redis://n1:7000", "redis://n2:7001"]}]
    }


async def test_cluster_settings_reach_a_real_cluster(cluster):
    environ = {"REDIS_CLUSTER_URL": ",".join(cluster.urls)}
    settings = layers_from_env(environ, prefix="fromenv")["default"]
    assert settings["BACKEND"] == "channels_rs.RedisChannelLayer"
    layer = RedisChannelLayer(**settings["CONFIG"])
    await layer.send("fromenv-chan", {"type": "via.env"})
    assert await asyncio.wait_for(layer.receive("fromenv-chan"), 5) == {
        "type": "via.env"
    }
    await layer.flush()


def test_reads_the_process_environment_by_default(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://from-env:6379")
    monkeypatch.delenv("REDIS_CLUSTER_URL", raising=False)
    monkeypatch.delenv("CHANNEL_LAYERS_ENCRYPTION_KEYS", raising=False)
    assert layers_from_env()["default"]["CONFIG"] == {
        "hosts": ["redis://from-env:6379"]
    }


def test_other_names_for_the_cluster_and_keys_variables():
    environ = {"NODES": "redis://n1:7000", "SECRETS": "k1,k2"}
    config = layers_from_env(environ, cluster_variable="NODES", keys_variable="SECRETS")
    assert config["default"]["CONFIG"] == {
        "hosts": [{"cluster": ["redis://n1:7000"]}],
        "symmetric_encryption_keys": ["k1", "k2"],
    }


async def test_url_and_keys_reach_a_real_server_encrypted(redis):
    environ = {
        "REDIS_URL": redis.url,
        "CHANNEL_LAYERS_ENCRYPTION_KEYS": "new-key,old-key",
    }
    config = layers_from_env(environ, prefix="fromenv")["default"]["CONFIG"]
    layer = RedisChannelLayer(**config)
    await layer.send("fromenv-secret", {"type": "plain-marker"})
    stored = command(redis.port, "ZRANGE", "fromenvfromenv-secret", 0, -1)
    assert stored.startswith(b"*1\r\n") and b"plain-marker" not in stored
    # The old key still reads what it wrote.
    old = RedisChannelLayer(
        hosts=[redis.url], prefix="fromenv", symmetric_encryption_keys=["old-key"]
    )
    await old.send("fromenv-old", {"type": "from the old key"})
    assert await receive(layer, "fromenv-secret") == {"type": "plain-marker"}
    assert await receive(layer, "fromenv-old") == {"type": "from the old key"}
    await layer.flush()
