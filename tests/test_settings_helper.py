import asyncio

from channels_rs import RedisChannelLayer, layers_from_env


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
