"""`python -m channels_rs check`, run as users run it, against real servers:
what it reports when all is well, and the plain words for each failure."""

import os
import subprocess
import sys

import pytest

from redis_server import RedisServer, command, free_port, loading_slowly


def check(*arguments, env=None):
    done = subprocess.run(
        [sys.executable, "-m", "channels_rs", "check", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return done.returncode, done.stdout + done.stderr


def test_a_healthy_server(redis):
    code, output = check(redis.url)
    assert code == 0, output
    assert f"channels-rs check: {redis.url}" in output
    assert "server                       ok: " in output
    assert "(standalone)" in output
    assert "PING median" in output and "20 pings" in output
    assert "ok: normal channel, process-local channel and group" in output
    assert (
        "event loop                   _UnixSelectorEventLoop, woken by eventfd"
        in output
    )
    assert "All checks passed" in output
    # It takes back everything it sent.
    assert b"channels-rs-check" not in command(redis.port, "KEYS", "*")


def test_a_cluster_from_the_environment(cluster):
    env = dict(os.environ, REDIS_CLUSTER_URL=",".join(cluster.urls))
    env.pop("REDIS_URL", None)
    code, output = check(env=env)
    assert code == 0, output
    assert "(cluster)" in output and "All checks passed" in output


def test_the_way_the_loop_is_woken_is_the_one_forced(redis):
    env = {**os.environ, "CHANNELS_RS_WAKEUP": "call_soon_threadsafe"}
    code, output = check(redis.url, env=env)
    assert code == 0, output
    assert "woken by call_soon_threadsafe" in output


def test_nothing_listening():
    code, output = check(f"redis://127.0.0.1:{free_port()}", "--timeout", "0.5")
    assert code == 1
    assert "FAILED: ConnectionError" in output
    assert "Nothing accepted the connection" in output


def test_a_wrong_password_is_explained_and_not_printed():
    server = RedisServer("--requirepass", "right-one")
    try:
        code, output = check(f"redis://:wrong-guess@127.0.0.1:{server.port}")
    finally:
        server.stop()
    assert code == 1
    assert "refused the credentials" in output
    assert "wrong-guess" not in output and "right-one" not in output


def test_an_acl_user_without_the_layers_commands(redis):
    command(redis.port, "ACL", "SETUSER", "pinger", "on", ">pw", "~*", "+ping", "+info")
    try:
        code, output = check(f"redis://pinger:pw@127.0.0.1:{redis.port}")
    finally:
        command(redis.port, "ACL", "DELUSER", "pinger")
    assert code == 1
    assert "server                       ok:" in output
    assert "ACL refuses a command or key the layer needs" in output


def test_no_url_at_all():
    env = {"PATH": "/usr/bin:/bin"}
    code, output = check(env=env)
    assert code == 2
    assert (
        "give a Redis URL, or set REDIS_URL, REDIS_CLUSTER_URL, REDIS_SENTINELS "
        "or REDIS_HOST" in output
    )


@pytest.mark.parametrize(
    ("argument", "words"),
    [
        ("127.0.0.1:6379", "has no scheme: write 'redis://127.0.0.1:6379'"),
        ("localhost", "has no scheme: write 'redis://localhost'"),
        ("http://cache:6379", "has the scheme 'http', which the layer cannot use"),
        ("redis://cache:63x9", "Port could not be cast to integer"),
        ("redis://", "names no host"),
        ("", "the URL is empty"),
    ],
)
def test_any_argument_gets_a_sentence_not_a_traceback(argument, words):
    code, output = check(argument)
    assert code == 1
    assert "Traceback" not in output
    assert words in output
    assert "The settings cannot name a server this way" in output


def test_the_variables_layers_from_env_reads(redis):
    env = {
        "PATH": "/usr/bin:/bin",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis.port),
    }
    code, output = check(env=env)
    assert code == 0, output
    assert f"channels-rs check: redis://127.0.0.1:{redis.port}/0" in output


def test_a_variable_without_the_one_it_goes_with():
    code, output = check(env={"PATH": "/usr/bin:/bin", "REDIS_PORT": "6380"})
    assert code == 1 and "Traceback" not in output
    assert "REDIS_PORT is set without REDIS_HOST" in output


def test_a_server_at_maxmemory_is_explained(own_redis):
    command(own_redis.port, "CONFIG", "SET", "maxmemory", "1")
    code, output = check(own_redis.url)
    assert code == 1
    assert "FAILED: OutOfMemory: " in output
    assert "OOM command not allowed when used memory > 'maxmemory'" in output
    assert "The server is at its maxmemory and takes no more messages" in output


def test_a_server_loading_its_data_is_named(own_redis):
    loading_slowly(own_redis, 4)
    code, output = check(own_redis.url, "--timeout", "1")
    assert code == 1
    assert "failed: LOADING " in output and "is loading the dataset in memory" in output
    assert "The server is loading its data after a restart" in output


@pytest.mark.parametrize("arguments", [[], ["frobnicate"]])
def test_an_unknown_command(arguments):
    done = subprocess.run(
        [sys.executable, "-m", "channels_rs", *arguments],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "usage: python -m channels_rs {check}" in done.stderr
