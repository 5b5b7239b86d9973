"""Secrets stay secret (repr, logs, errors), and the layer runs as a Redis
ACL user that may do only what it needs."""

import asyncio
import logging
import time
from pathlib import Path

import pytest

from channels_rs import RedisChannelLayer, RedisPubSubChannelLayer
from channels_rs.exceptions import AccessDenied
from conftest import until
from redis_cluster import ask
from redis_server import Monitor, RedisServer, command

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


async def test_a_wrong_password_fails_without_showing_it(guarded):
    layer = RedisChannelLayer(
        hosts=[f"redis://:wrong-s3cret@127.0.0.1:{guarded.port}/0"],
        symmetric_encryption_keys=["fernet-s3cret"],
    )
    with pytest.raises(AccessDenied) as error:
        await layer.send("chan", {"type": "x"})
    with pytest.raises(AccessDenied) as blocking:
        await asyncio.wait_for(layer.receive("chan"), 5)
    assert "refused the layer's credentials" in str(error.value)
    assert error.value.reply.startswith("WRONGPASS")
    assert f"127.0.0.1:{guarded.port}" in str(error.value)
    assert_no_secret(repr(layer), str(layer), str(error.value), str(blocking.value))


def refusal_lines(caplog):
    return [
        r for r in caplog.records if r.name == "channels_rs" and r.levelname == "ERROR"
    ]


@pytest.mark.parametrize("kind", ["process-local", "normal"])
async def test_a_receive_with_a_wrong_password_ends_saying_why(guarded, kind, caplog):
    """Waiting mends no refused password: the receive raises AccessDenied at
    once (as channels_redis's does, which closes the websocket so its client
    comes back), and one ERROR line, without the password, says why."""
    layer = RedisChannelLayer(hosts=[f"redis://:wrong-s3cret@127.0.0.1:{guarded.port}"])
    channel = await layer.new_channel() if kind == "process-local" else "jobs"
    start = time.monotonic()
    with caplog.at_level(logging.ERROR, "channels_rs"):
        for _ in range(3):
            with pytest.raises(AccessDenied) as refused:
                await asyncio.wait_for(layer.receive(channel), 5)
    assert time.monotonic() - start < 1
    assert refused.value.reply.startswith("WRONGPASS")
    [line] = refusal_lines(caplog)
    assert "WRONGPASS" in line.getMessage() and guarded.url in line.getMessage()
    assert layer.stats()["refused_access"] == 3
    assert layer.stats()["waiting_receives"] == 0
    assert_no_secret(caplog.text, str(refused.value), *layer.troubles())


@pytest.mark.parametrize("layer_class", [RedisChannelLayer, RedisPubSubChannelLayer])
async def test_waiting_receives_hear_of_a_password_changed_under_them(
    guarded, layer_class, caplog
):
    """The server's password changes and its clients are dropped: every
    receive waiting on it ends with AccessDenied within a second."""
    layer = layer_class(hosts=[f"redis://:the-real-one@127.0.0.1:{guarded.port}"])
    channels = [await layer.new_channel() for _ in range(2)]
    if layer_class is RedisChannelLayer:
        channels.append("jobs")
    waiting = [asyncio.ensure_future(layer.receive(c)) for c in channels]
    await asyncio.sleep(0.2)
    command(
        guarded.port, "CONFIG", "SET", "requirepass", "rotated", password="the-real-one"
    )
    for kind in ("normal", "pubsub"):
        command(guarded.port, "CLIENT", "KILL", "TYPE", kind, password="rotated")
    start = time.monotonic()
    with caplog.at_level(logging.ERROR, "channels_rs"):
        for receiving in waiting:
            with pytest.raises(AccessDenied, match="WRONGPASS"):
                await asyncio.wait_for(receiving, 5)
    assert time.monotonic() - start < 1
    assert len(refusal_lines(caplog)) == 1
    assert "the-real-one" not in caplog.text


async def test_an_acl_that_denies_the_blocking_pop_ends_the_receive(redis, caplog):
    rules = [rule for rule in readme_acl() if rule != "+bzpopmin"]
    assert ask(redis, "ACL", "SETUSER", "nopop", *rules) == b"+OK\r\n"
    try:
        layer = RedisChannelLayer(
            hosts=[f"redis://nopop:layer-pass@127.0.0.1:{redis.port}"]
        )
        local = await layer.new_channel()
        with caplog.at_level(logging.ERROR, "channels_rs"):
            for channel in (local, "acl-jobs"):
                with pytest.raises(AccessDenied, match="NOPERM.*bzpopmin"):
                    await asyncio.wait_for(layer.receive(channel), 5)
        [line] = refusal_lines(caplog)
        assert "ACL line" in line.getMessage()
        assert layer.stats()["refused_access"] == 2
    finally:
        ask(redis, "ACL", "DELUSER", "nopop")


async def test_unknown_credentials_end_receives_in_every_deployment(deployment, caplog):
    """One server, Sentinel or a cluster: a user the servers do not know
    gets AccessDenied from every receive, not a wait. (Through Sentinel,
    redis-rs's words: it checks the master's role itself, and keeps only
    "Password authentication failed" of the server's reply.)"""
    servers, hosts = deployment

    def wrong(url):
        return url.replace("layer-pass", "wrong-s3cret")

    [entry] = hosts
    if isinstance(entry, str):
        entry = wrong(entry)
    elif "cluster" in entry:
        entry = {"cluster": [wrong(url) for url in entry["cluster"]]}
    else:
        entry = {**entry, "password": "wrong-s3cret"}
    layer = RedisChannelLayer(hosts=[entry])
    local = await layer.new_channel()
    with caplog.at_level(logging.ERROR, "channels_rs"):
        for channel in (local, "jobs"):
            with pytest.raises(AccessDenied, match="WRONGPASS|authentication failed"):
                await asyncio.wait_for(layer.receive(channel), 5)
    assert refusal_lines(caplog)
    assert_no_secret(caplog.text)


async def test_log_lines_name_the_server_without_its_password(caplog):
    """Each line that names a server, produced with a password in its URL:
    an outage starting and ending for both layers, and the pub/sub
    connection dropping (Sentinel's move: test_redis_sentinel). The client
    library's own records, at DEBUG, are checked too."""
    server = RedisServer("--requirepass", "log-s3cret")
    hosts = [
        {
            "address": f"redis://:log-s3cret@127.0.0.1:{server.port}",
            "socket_connect_timeout": 0.5,
        }
    ]
    core, pubsub = RedisChannelLayer(hosts=hosts), RedisPubSubChannelLayer(hosts=hosts)
    local, subscribed = await core.new_channel(), await pubsub.new_channel()
    waiting = [
        asyncio.ensure_future(core.receive(local)),
        asyncio.ensure_future(pubsub.receive(subscribed)),
    ]
    lines = lambda: [r.getMessage() for r in caplog.records if r.name == "channels_rs"]  # noqa: E731
    said = lambda words: sum(words in line for line in lines())  # noqa: E731
    try:
        await asyncio.sleep(0.1)
        with caplog.at_level(logging.DEBUG):
            server.kill()
            await until(lambda: said("failed, retrying") == 2, "both layers to say so")
            assert said("pub/sub connection to Redis at") == 1
            server.start()
            await core.send(local, {"type": "back"})
            await until(lambda: said("works again after") == 2, "both to be back")
        assert await asyncio.wait_for(waiting[0], 5) == {"type": "back"}
        for line in lines():
            assert f"redis://127.0.0.1:{server.port}" in line, line
        assert caplog.records and "log-s3cret" not in caplog.text
    finally:
        for task in waiting:
            task.cancel()
        await pubsub.flush()
        server.stop()


async def test_sentinel_passwords_stay_out_of_sight(guarded):
    watcher = RedisServer(monitor=guarded)
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
        with pytest.raises(ConnectionError) as error:
            await layer.group_add("room", "chan")
        assert "mymaster" in str(error.value)
        assert_no_secret(repr(layer), str(layer), str(error.value))
    finally:
        watcher.stop()


def test_repr_names_the_servers(redis):
    layer = RedisChannelLayer(
        hosts=[f"redis://user:wrong-s3cret@127.0.0.1:{redis.port}/2"]
    )
    assert f"redis://127.0.0.1:{redis.port}/2" in repr(layer)
    assert_no_secret(repr(layer))


def readme_acl():
    """The ACL rules README.md gives the layers' user, with its password."""
    readme = Path(__file__).parents[1].joinpath("README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("ACL SETUSER"))
    return [">layer-pass" if rule == ">password" else rule for rule in line.split()[3:]]


@pytest.fixture(params=["server", "sentinel", "cluster"])
def deployment(request):
    """Each way of reaching Redis: its servers, and hosts that reach them as
    the user `layer`."""
    if request.param == "cluster":
        cluster = request.getfixturevalue("cluster")
        nodes = [
            f"redis://layer:layer-pass@127.0.0.1:{s.port}" for s in cluster.servers
        ]
        yield cluster.servers, [{"cluster": nodes}]
        return
    redis = request.getfixturevalue("redis")
    if request.param == "server":
        yield [redis], [f"redis://layer:layer-pass@127.0.0.1:{redis.port}"]
        return
    watcher = RedisServer(monitor=redis)
    try:
        sentinel = {
            "sentinels": [("127.0.0.1", watcher.port)],
            "master_name": "mymaster",
            "username": "layer",
            "password": "layer-pass",
        }
        yield [redis], [sentinel]
    finally:
        watcher.stop()


async def use_both_layers(hosts):
    layer = RedisChannelLayer(hosts=hosts)
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
    pubsub = RedisPubSubChannelLayer(hosts=hosts)
    channel = await pubsub.new_channel()
    await pubsub.group_add("acl-room", channel)
    await pubsub.group_send("acl-room", {"type": "published"})
    assert await asyncio.wait_for(pubsub.receive(channel), 3) == {"type": "published"}
    await pubsub.flush()


async def test_runs_as_an_acl_user_with_only_what_the_readme_grants(deployment):
    """On Redis 7.0, 7.2+ and Valkey alike: nothing denied (the layers send
    no CLIENT SETINFO, which 7.0 cannot grant), and nothing outside its keys."""
    servers, hosts = deployment
    try:
        for server in servers:
            reply = ask(server, "ACL", "SETUSER", "layer", *readme_acl())
            assert reply == b"+OK\r\n"
            ask(server, "SCRIPT", "FLUSH")  # so the layer must load its own
            ask(server, "ACL", "LOG", "RESET")
        await use_both_layers(hosts)
        for server in servers:
            denied = ask(server, "ACL", "LOG")
            assert b"layer" not in denied, denied
            assert b"lib-name=redis-rs" not in ask(server, "CLIENT", "LIST")
        other = RedisChannelLayer(hosts=hosts, prefix="other")
        with pytest.raises(ConnectionError, match="NoPerm|NOPERM|permission"):
            await other.send("chan", {"type": "x"})
    finally:
        for server in servers:
            ask(server, "ACL", "DELUSER", "layer")
            ask(server, "ACL", "LOG", "RESET")


@pytest.mark.parametrize(
    "denied, each_send",
    [
        # Members read on each call, as channels_redis does.
        (["+client|tracking"], ["ZREMRANGEBYSCORE", "ZRANGE", "EVALSHA"]),
        # Members kept, a PING before each write (older READMEs' line).
        (["+watch", "+multi", "+exec"], ["PING", "EVALSHA"]),
        (["+multi", "+exec"], ["PING", "EVALSHA"]),
    ],
    ids=["no-tracking", "no-transactions", "watch-only"],
)
async def test_a_user_denied_an_optional_command_asks_once(
    own_redis, denied, each_send
):
    """The README's line less what only saves round trips: group_send works
    as before, each message arrives once, and the server is asked for the
    first denied command once only."""
    rules = [rule for rule in readme_acl() if rule not in denied]
    assert len(rules) == len(readme_acl()) - len(denied)
    assert ask(own_redis, "ACL", "SETUSER", "limited", *rules) == b"+OK\r\n"
    url = f"redis://limited:layer-pass@127.0.0.1:{own_redis.port}"
    layer = RedisChannelLayer(hosts=[url])
    await layer.group_add("room", "worker.one")
    await layer.group_send("room", {"type": "m", "n": 0})
    monitor = Monitor(own_redis)
    for n in (1, 2):
        await layer.group_send("room", {"type": "m", "n": n})
    sent = [name for name, _ in monitor.commands()]
    assert sent == each_send * 2, sent
    for n in range(3):
        assert (await layer.receive("worker.one"))["n"] == n
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive("worker.one"), 0.3)
    stats = ask(own_redis, "INFO", "commandstats").decode()
    refused = denied[0][1:]
    assert f"cmdstat_{refused}:calls=0," in stats, stats
    assert "rejected_calls=1," in stats.split(f"cmdstat_{refused}:")[1].split()[0]
