"""The optional Django app ("channels_rs" in INSTALLED_APPS): its system
checks, run as `manage.py check` in the test project, and the health view,
through Django's test client."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.test import Client, override_settings

from channels_rs import RedisChannelLayer
from channels_rs.health import check as health_check
from redis_server import RedisServer, free_port, loading_slowly

TESTS = Path(__file__).resolve().parent


def manage_check(layers, *arguments):
    """`manage.py check` on CHANNEL_LAYERS = `layers`: exit code, output."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testproject.settings_checks",
        "TESTPROJECT_CHANNEL_LAYERS": json.dumps(layers),
        "PYTHONPATH": str(TESTS),
    }
    done = subprocess.run(
        [sys.executable, "-m", "django", "check", *arguments],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


def layer(backend, **config):
    return {"default": {"BACKEND": backend, "CONFIG": config}}


REDIS = "channels_rs.RedisChannelLayer"
MEMORY = "channels_rs.InMemoryChannelLayer"


def test_a_valid_configuration_passes():
    code, output = manage_check(layer(REDIS, hosts=["redis://cache:6379"]))
    assert code == 0, output
    assert "System check identified no issues" in output


@pytest.mark.parametrize(
    ("backend", "key", "meant", "name"),
    [
        (REDIS, "capactiy", "capacity", "RedisChannelLayer"),
        (MEMORY, "expirey", "expiry", "InMemoryChannelLayer"),
        ("channels_rs.RedisPubSubChannelLayer", "on_reconect", "on_reconnect", None),
        ("channels_redis.core.RedisChannelLayer", "group_expiri", "group_expiry", None),
    ],
)
def test_a_misspelt_config_key_is_named_with_the_one_meant(backend, key, meant, name):
    code, output = manage_check(layer(backend, **{key: 1}))
    assert code == 1, output
    name = name or backend.rsplit(".", 1)[1]
    assert (
        f"(channels_rs.E002) CHANNEL_LAYERS['default']['CONFIG'] has {key!r}, "
        f"which {name} does not take." in output
    )
    assert f"HINT: Did you mean {meant!r}? Its options: " in output


def test_an_unimportable_backend_and_a_bad_hosts_entry():
    layers = {
        "default": {"BACKEND": "channels_rs.RedisLayer9"},
        "other": {"BACKEND": REDIS, "CONFIG": {"hosts": [{"adress": "redis://x"}]}},
    }
    code, output = manage_check(layers)
    assert code == 1, output
    assert (
        "(channels_rs.E001) CHANNEL_LAYERS['default']['BACKEND'] = "
        "'channels_rs.RedisLayer9' cannot be imported." in output
    )
    assert (
        "(channels_rs.E003) CHANNEL_LAYERS['other']['CONFIG']['hosts'] is not "
        "valid: unknown hosts option 'adress'; valid ones: address, " in output
    )


BAD_HOSTS = [
    (["127.0.0.1:6379"], "has no scheme: write 'redis://127.0.0.1:6379'"),
    (["localhost"], "has no scheme: write 'redis://localhost'"),
    (["http://cache:6379"], "has the scheme 'http', which the layer cannot use"),
    ([42], "hosts entry 42 is not one the layer can use: give a URL string"),
    ([None], "hosts entry None is not one the layer can use"),
    ({"address": "redis://cache"}, "hosts must be a list of entries: write ["),
    (7, "hosts must be a list of entries, not int"),
    ([("cache",)], "is not a (host, port) pair"),
    ([("cache", "port")], "port must be a number"),
    ([("cache", 99999)], "no port 99999"),
    (["redis://:s3cret@cache:63x9"], "Port could not be cast to integer"),
    (["redis://"], "names no host"),
    ([{"address": 6379}], "a Redis URL must be a str, not int"),
    ([{"host": ""}], "host must be a non-empty str"),
    ([{"host": "cache", "db": "zero"}], "db must be a number"),
    ([{"address": "redis://a", "host": "b"}], "names its server twice"),
    ([{"sentinels": [("s", 26379)]}], "needs master_name"),
    ([{"sentinels": "s:26379", "master_name": "m"}], "list of (host, port) pairs"),
    (
        [{"address": "redis://a", "master_name": "m"}],
        "has master_name but no sentinels",
    ),
    ([{"cluster": "redis://n:7000"}], "cluster must be a list of startup node URLs"),
    ([{"cluster": ["n:7000"]}], "'n:7000' has no scheme"),
    ([{"address": "redis://a", "socket_timeout": "5"}], "must be a number of seconds"),
    ([{"address": "redis://a", "adress": 1}], "unknown hosts option 'adress'"),
]


@pytest.mark.parametrize(("hosts", "words"), BAD_HOSTS)
def test_every_bad_hosts_shape_is_named_and_never_crashes(hosts, words):
    code, output = manage_check(layer(REDIS, hosts=hosts))
    assert code == 1, output
    assert "Traceback" not in output
    assert (
        "(channels_rs.E003) CHANNEL_LAYERS['default']['CONFIG']['hosts'] is not "
        in output
    )
    assert words in output, output
    assert "s3cret" not in output
    # The layer itself refuses them with the same words.
    with pytest.raises((ValueError, TypeError), match=re.escape(words)):
        RedisChannelLayer(hosts=hosts)


def test_what_only_making_the_layer_finds_is_reported():
    """An unreadable certificate and a bad option value: the layer refuses
    them when made, so the check makes it (which connects to nothing)."""
    layers = {
        "default": {
            "BACKEND": REDIS,
            "CONFIG": {
                "hosts": [{"address": "rediss://a", "ssl_ca_certs": "/no/ca.pem"}]
            },
        },
        "other": {"BACKEND": MEMORY, "CONFIG": {"capacity": "lots"}},
        "third": {"BACKEND": REDIS, "CONFIG": ["hosts"]},
        "fourth": "channels_rs.RedisChannelLayer",
    }
    code, output = manage_check(layers)
    assert code == 1 and "Traceback" not in output, output
    assert (
        "(channels_rs.E004) CHANNEL_LAYERS['default']['CONFIG'] is not valid: "
        'ValueError: cannot read ssl_ca_certs "/no/ca.pem"' in output
    )
    assert (
        "(channels_rs.E004) CHANNEL_LAYERS['other']['CONFIG'] is not valid: " in output
    )
    assert (
        "CHANNEL_LAYERS['third']['CONFIG'] must be a dict of options, not list"
        in output
    )
    assert "CHANNEL_LAYERS['fourth']['BACKEND'] = " in output


def ours(output):
    """The channels_rs lines of a check's output (Django adds its own)."""
    return [line for line in output.splitlines() if "channels_rs." in line]


def test_deploy_warns_of_the_in_memory_layer():
    code, output = manage_check(layer(MEMORY), "--deploy")
    assert ours(output) == [
        "?: (channels_rs.W001) CHANNEL_LAYERS['default'] is the in-memory layer: "
        "a message reaches only the process that sent it, so other workers, "
        "management commands and Celery tasks never get it.",
        "\tHINT: Use channels_rs.RedisChannelLayer in production.",
    ]


def test_deploy_warns_of_unencrypted_messages_to_a_remote_redis():
    remote = layer(REDIS, hosts=["redis://:pw@cache.internal:6379", "redis://[::1]:1"])
    code, output = manage_check(remote, "--deploy")
    assert ours(output) == [
        "?: (channels_rs.W002) CHANNEL_LAYERS['default'] sends messages "
        "unencrypted to cache.internal: anyone who can read that Redis, or the "
        "network to it, reads them."
    ]
    assert "pw" not in output.replace("password", "")
    for quiet in [
        layer(REDIS, hosts=["redis://127.0.0.1:6379", "unix:///tmp/redis.sock"]),
        layer(REDIS, hosts=["redis://cache:6379"], symmetric_encryption_keys=["k"]),
    ]:
        code, output = manage_check(quiet, "--deploy")
        assert ours(output) == [], output


def test_health_view_answers_200_through_the_layer():
    response = Client().get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["backend"] == "InMemoryChannelLayer"
    assert set(body) == {"status", "layer", "backend", "round_trip_ms"}


def test_health_view_through_a_real_redis(redis):
    with override_settings(CHANNEL_LAYERS=layer(REDIS, hosts=[redis.url])):
        response = Client().get("/health/")
    assert response.status_code == 200, response.content
    assert response.json()["backend"] == "RedisChannelLayer"


def test_health_view_answers_503_in_bounded_time_without_the_password():
    dead = f"redis://admin:hunter2@127.0.0.1:{free_port()}"
    start = time.monotonic()
    with override_settings(CHANNEL_LAYERS=layer(REDIS, hosts=[dead])):
        response = Client().get("/health/")
    assert time.monotonic() - start < 4
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["layer"] == "default"
    # What the layer heard while it tried, in the system's words.
    assert body["error"].startswith("no round trip within 2 s; Redis at ")
    assert "Connection refused" in body["error"]
    assert b"hunter2" not in response.content and b"admin" not in response.content


def test_health_view_names_refused_credentials():
    server = RedisServer("--requirepass", "right-one")
    wrong = f"redis://:hunter2@127.0.0.1:{server.port}"
    try:
        with override_settings(CHANNEL_LAYERS=layer(REDIS, hosts=[wrong])):
            response = Client().get("/health/")
    finally:
        server.stop()
    assert response.status_code == 503
    error = response.json()["error"]
    assert error.startswith("AccessDenied: Redis at ")
    assert "WRONGPASS" in error and "hunter2" not in error


def test_health_view_names_a_server_loading_its_data(own_redis):
    loading_slowly(own_redis, 4)
    with override_settings(CHANNEL_LAYERS=layer(REDIS, hosts=[own_redis.url])):
        response = Client().get("/health/")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error.startswith("no round trip within 2 s; Redis at ")
    assert "LOADING" in error and "is loading the dataset in memory" in error


def test_health_check_of_an_alias_that_is_not_configured():
    assert health_check("nowhere") == {
        "status": "unavailable",
        "layer": "nowhere",
        "error": "LookupError: CHANNEL_LAYERS has no 'nowhere' entry",
    }
    assert Client().get("/health/nowhere/").status_code == 503
