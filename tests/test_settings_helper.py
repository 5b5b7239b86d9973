"""layers_from_env(): each variable it reads, and what it builds working
on real servers."""

import asyncio

import pytest

from channels_rs import RedisChannelLayer, RedisPubSubChannelLayer, layers_from_env
from conftest import group_round_trip, receive
from redis_server import command

MEMORY = "channels_rs.InMemoryChannelLayer"
REDIS = "channels_rs.RedisChannelLayer"


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


def test_host_and_port_with_password_and_db_when_no_url_is_set():
    environ = {
        "REDIS_HOST": "cache.internal",
        "REDIS_PORT": "6380",
        "REDIS_PASSWORD": "p@ss:word",
        "REDIS_DB": "2",
    }
    assert layers_from_env(environ)["default"]["CONFIG"] == {
        "hosts": [
            {"host": "cache.internal", "port": 6380, "db": 2, "password": "p@ss:word"}
        ]
    }
    # A URL names the server more fully, so it wins.
    environ["REDIS_URL"] = "redis://other:6379"
    assert layers_from_env(environ)["default"]["CONFIG"] == {
        "hosts": ["redis://other:6379"]
    }


async def test_host_and_port_reach_a_real_server(redis):
    environ = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis.port)}
    settings = layers_from_env(environ, prefix="byhost")["default"]
    assert settings["CONFIG"]["hosts"] == [
        {"host": "127.0.0.1", "port": redis.port, "db": 0}
    ]
    layer = RedisChannelLayer(**settings["CONFIG"])
    await layer.send("byhost-chan", {"type": "via.host"})
    assert await receive(layer, "byhost-chan") == {"type": "via.host"}
    await layer.flush()


@pytest.mark.parametrize(
    ("environ", "error"),
    [
        ({"REDIS_HOST": "h", "REDIS_PORT": "63a"}, "REDIS_PORT='63a' is not a number"),
        ({"REDIS_HOST": "h", "REDIS_DB": "one"}, "REDIS_DB='one' is not a number"),
        ({"REDIS_SENTINELS": "s1"}, "REDIS_SENTINELS: 's1' is not host:port"),
        # Set without the variable they go with, they would be ignored.
        (
            {"REDIS_PORT": "6380"},
            "REDIS_PORT is set without REDIS_HOST, so it would be ignored: set "
            "REDIS_HOST too, or unset REDIS_PORT",
        ),
        (
            {"REDIS_URL": "redis://x", "REDIS_PASSWORD": "p"},
            "REDIS_PASSWORD is set without REDIS_HOST or REDIS_SENTINELS, so it "
            "would be ignored: set REDIS_HOST or REDIS_SENTINELS too, or unset "
            "REDIS_PASSWORD (with REDIS_URL, the URL carries it: "
            "redis://:password@host:port/db)",
        ),
        (
            {"REDIS_HOST": "h", "REDIS_SENTINEL_MASTER": "cache"},
            "REDIS_SENTINEL_MASTER is set without REDIS_SENTINELS, so it would be "
            "ignored: set REDIS_SENTINELS too, or unset REDIS_SENTINEL_MASTER",
        ),
        (
            {"REDIS_URL": "redis://x", "CHANNEL_LAYERS_BACKEND": "kafka"},
            "CHANNEL_LAYERS_BACKEND='kafka': use one of redis, pubsub",
        ),
        (
            {"USE_INMEMORY_CHANNELS": "maybe"},
            "USE_INMEMORY_CHANNELS='maybe' is not a yes or no: use one of 1, true, "
            "yes, on, 0, false, no, off",
        ),
    ],
)
def test_a_bad_value_names_its_variable(environ, error):
    with pytest.raises(ValueError) as raised:
        layers_from_env(environ)
    assert str(raised.value) == error


@pytest.mark.parametrize("value", ["true", "1", "YES", " on "])
def test_the_in_memory_flag_wins_over_any_server(value):
    environ = {"REDIS_URL": "redis://x:6379", "USE_INMEMORY_CHANNELS": value}
    assert layers_from_env(environ, capacity=5) == {
        "default": {"BACKEND": MEMORY, "CONFIG": {"capacity": 5}}
    }


@pytest.mark.parametrize("value", ["false", "0", "no", "off", ""])
def test_the_in_memory_flag_off_leaves_the_server(value):
    environ = {"REDIS_URL": "redis://x:6379", "USE_INMEMORY_CHANNELS": value}
    assert layers_from_env(environ)["default"]["BACKEND"] == REDIS


async def test_the_pubsub_layer_by_variable_reaches_a_real_server(redis):
    environ = {"REDIS_URL": redis.url, "CHANNEL_LAYERS_BACKEND": "pubsub"}
    settings = layers_from_env(environ)["default"]
    assert settings == {
        "BACKEND": "channels_rs.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [redis.url]},
    }
    await group_round_trip(RedisPubSubChannelLayer(**settings["CONFIG"]))


def test_sentinels_with_master_name_and_passwords():
    environ = {
        "REDIS_SENTINELS": "s1:26379, s2:26380",
        "REDIS_SENTINEL_MASTER": "cache",
        "REDIS_SENTINEL_PASSWORD": "sentinel-secret",
        "REDIS_PASSWORD": "master-secret",
        "REDIS_DB": "1",
        "REDIS_URL": "redis://ignored:6379",
    }
    assert layers_from_env(environ)["default"]["CONFIG"] == {
        "hosts": [
            {
                "sentinels": [("s1", 26379), ("s2", 26380)],
                "master_name": "cache",
                "db": 1,
                "password": "master-secret",
                "sentinel_kwargs": {"password": "sentinel-secret"},
            }
        ]
    }
    # channels_redis's conventional master name when none is set.
    hosts = layers_from_env({"REDIS_SENTINELS": "s1:26379"})["default"]["CONFIG"]
    assert hosts["hosts"][0]["master_name"] == "mymaster"


async def test_secret_key_encrypts_unless_keys_are_set(redis):
    environ = {"REDIS_URL": redis.url}
    config = layers_from_env(environ, secret_key="django-secret", prefix="sk")
    config = config["default"]["CONFIG"]
    assert config["symmetric_encryption_keys"] == ["django-secret"]
    layer = RedisChannelLayer(**config)
    await layer.send("sk-chan", {"type": "plain-marker"})
    stored = command(redis.port, "ZRANGE", "sksk-chan", 0, -1)
    assert stored.startswith(b"*1\r\n") and b"plain-marker" not in stored
    assert await receive(layer, "sk-chan") == {"type": "plain-marker"}
    await layer.flush()
    environ["CHANNEL_LAYERS_ENCRYPTION_KEYS"] = "rotated"
    config = layers_from_env(environ, secret_key="django-secret")["default"]["CONFIG"]
    assert config["symmetric_encryption_keys"] == ["rotated"]
    # The in-memory layer's messages never leave the process: no keys.
    assert layers_from_env({}, secret_key="django-secret") == {
        "default": {"BACKEND": MEMORY}
    }
