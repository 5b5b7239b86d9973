"""Secrets stay secret (repr, logs, errors), and the layer runs as a Redis
ACL user that may do only what it needs."""

import asyncio
import logging

import pytest

from channels_rs import RedisChannelLayer
from redis_server import RedisServer, command

SECRETS = ("wrong-s3cret", "sentinel-s3cret", "master-s3cret", "fernet-s3cret")


def assert_no_secret(*texts):
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked into {text!r}"


@pytest.fixture
def guarded():
    server = RedisServer("--requirepass", "the-real-one")
    yield server
    server.stop()


async def test_a_wrong_password_fails_without_showing_it(guarded, caplog):
    layer = RedisChannelLayer(
        hosts=[f"redis://:wrong-s3cret@127.0.0.1:{guarded.port}/0"],
        symmetric_encryption_keys=["fernet-s3cret"],
    )
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ConnectionError) as error:
            await layer.send("chan", {"type": "x"})
        with pytest.raises(ConnectionError) as blocking:
            await asyncio.wait_for(layer.receive("chan"), 5)
    assert "authentication failed" in str(error.value)
    assert f"127.0.0.1:{guarded.port}" in str(error.value)
    assert_no_secret(
        repr(layer), str(layer), str(error.value), str(blocking.value), caplog.text
    )


async def test_sentinel_passwords_stay_out_of_sight(caplog):
    master = RedisServer("--requirepass", "the-real-one")
    watcher = RedisServer(monitor=master)
    try:
        hosts = [
            {
                "sentinels": [("127.0.0.1", watcher.port)],
                "master_name": "mymaster",
                "password": "master-s3cret",
                "sentinel_kwargs": {"password": "sentinel-s3cret"},
                "socket_connect_timeout": 0.5,
            }
        ]
        layer = RedisChannelLayer(hosts=hosts)
        with caplog.at_level(logging.DEBUG):
            with pytest.raises(ConnectionError) as error:
                await layer.group_add("room", "chan")
        assert "mymaster" in str(error.value)
        assert_no_secret(repr(layer), str(layer), str(error.value), caplog.text)
    finally:
        watcher.stop()
        master.stop()


def test_repr_names_the_servers(redis):
    layer = RedisChannelLayer(
        hosts=[f"redis://user:wrong-s3cret@127.0.0.1:{redis.port}/2"]
    )
    assert f"redis://127.0.0.1:{redis.port}/2" in repr(layer)
    assert_no_secret(repr(layer))


# What the layer needs: its scripts and the sorted-set commands they and the
# receive path run, on its own keys only.
LAYER_ACL = (
    "on >layer-pass resetkeys ~asgi* resetchannels -@all "
    "+evalsha +script|load +bzpopmin +zpopmin +zadd +zrem +scan +del "
    "+zcount +zrange +zremrangebyscore +expire"
)


async def test_runs_as_an_acl_user_with_only_what_it_needs(redis):
    reply = command(redis.port, "ACL", "SETUSER", "layer", *LAYER_ACL.split())
    assert reply == b"+OK\r\n"
    command(redis.port, "SCRIPT", "FLUSH")  # so the layer must load its own
    layer = RedisChannelLayer(
        hosts=[f"redis://layer:layer-pass@127.0.0.1:{redis.port}"]
    )
    local = await layer.new_channel()
    await layer.send("acl-normal", {"type": "normal"})
    assert await layer.receive("acl-normal") == {"type": "normal"}
    await layer.group_add("acl-room", local)
    await layer.group_send("acl-room", {"type": "grouped"})
    assert await asyncio.wait_for(layer.receive(local), 3) == {"type": "grouped"}
    waiting = asyncio.ensure_future(layer.receive("acl-blocking"))
    await asyncio.sleep(0.05)
    await layer.send("acl-blocking", {"type": "blocked"})
    assert await asyncio.wait_for(waiting, 3) == {"type": "blocked"}
    await layer.group_discard("acl-room", local)
    await layer.flush()
    denied = command(redis.port, "ACL", "LOG")
    assert b"layer" not in denied, denied
    # ...and nothing outside its keys.
    other = RedisChannelLayer(
        hosts=[f"redis://layer:layer-pass@127.0.0.1:{redis.port}"], prefix="other"
    )
    with pytest.raises(Exception, match="NOPERM|permission"):
        await other.send("chan", {"type": "x"})
    command(redis.port, "ACL", "DELUSER", "layer")
    command(redis.port, "ACL", "LOG", "RESET")
