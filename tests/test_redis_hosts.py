"""Every form of `hosts` entry the docs give, against real servers, for
both Redis layers: URLs with a db, a unix socket, a (host, port) pair, a
dict of parts with a user name; valkey:// and valkeys:// wherever redis://
and rediss:// go (an "address", cluster startup nodes, layers_from_env()
and `python -m channels_rs check`). TLS options: test_redis_tls."""

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tcp_proxy import SilencingProxy

from channels_rs import RedisChannelLayer, RedisPubSubChannelLayer, layers_from_env
from channels_rs.exceptions import AccessDenied
from conftest import group_round_trip, publish_until_received, receive, require_tls
from redis_server import Certificates, RedisServer, command

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


@pytest.fixture(scope="module")
def socket_server(tmp_path_factory):
    """A server on a unix socket as well as on its port."""
    path = tmp_path_factory.mktemp("socket") / "redis.sock"
    server = RedisServer("--unixsocket", str(path), "--unixsocketperm", "700")
    server.socket = path
    yield server
    server.stop()


def forms(server):
    """Each way to name db 3 of `server`, by form."""
    return {
        "url": f"redis://127.0.0.1:{server.port}/3",
        "parts": {"host": "127.0.0.1", "port": server.port, "db": 3},
        "unix": f"unix://{server.socket}?db=3",
    }


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", ["url", "parts", "unix"])
async def test_a_db_in_each_form(socket_server, kind, form):
    layer = kind(hosts=[forms(socket_server)[form]])
    await group_round_trip(layer)
    if kind is RedisChannelLayer:
        await layer.send("hosts-db", {"type": "in db 3"})
        assert command(socket_server.port, "EXISTS", "asgihosts-db", db=3) == b":1\r\n"
        assert command(socket_server.port, "EXISTS", "asgihosts-db") == b":0\r\n"
        await layer.flush()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pair", [tuple, list])
async def test_a_host_and_port_pair(redis, kind, pair):
    await group_round_trip(kind(hosts=[pair(("127.0.0.1", redis.port))]))


@pytest.fixture
def user(redis):
    """A Redis user with its own password, allowed everything."""
    reply = command(
        redis.port,
        "ACL",
        "SETUSER",
        "hosts-user",
        "on",
        ">hosts-pw",
        "~*",
        "&*",
        "+@all",
    )
    assert reply == b"+OK\r\n"
    yield "hosts-user", "hosts-pw"
    command(redis.port, "ACL", "DELUSER", "hosts-user")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_user_name_and_password_in_parts(redis, user, kind):
    name, password = user
    entry = {
        "host": "127.0.0.1",
        "port": redis.port,
        "username": name,
        "password": password,
    }
    await group_round_trip(kind(hosts=[entry]))
    wrong = {**entry, "password": "not-it"}
    with pytest.raises(AccessDenied, match="WRONGPASS"):
        await kind(hosts=[wrong]).send("hosts-refused", {"type": "x"})


@pytest.mark.parametrize("kind", KINDS)
def test_an_unknown_option_is_named_with_the_valid_ones(kind):
    entry = {"address": "redis://localhost:6379", "sockt_timeout": 2}
    with pytest.raises(ValueError) as raised:
        kind(hosts=[entry])
    message = str(raised.value)
    assert message.startswith("unknown hosts option 'sockt_timeout'; valid ones: ")
    assert "socket_timeout" in message and "max_connections" in message


@pytest.mark.parametrize("kind", KINDS)
async def test_redis_py_pool_options_are_accepted_and_named_once(redis, kind, caplog):
    """Settings written for channels_redis (Azure guides set these) work
    unchanged; one INFO line says which of their options do nothing here."""
    entry = {
        "address": redis.url,
        "max_connections": 1000,
        "retry_on_timeout": True,
        "client_name": "web",
    }
    with caplog.at_level(logging.INFO, logger="channels_rs"):
        layer = kind(hosts=[entry, {**entry, "address": redis.url}])
    lines = [r.getMessage() for r in caplog.records if "mean nothing" in r.getMessage()]
    assert lines == [
        "hosts options that mean nothing to channels-rs, ignored: "
        "client_name, max_connections, retry_on_timeout"
    ]
    await group_round_trip(layer)


def keepalive_of_connections_to(port):
    """SO_KEEPALIVE of each of this process's TCP connections to `port`."""
    found = []
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            connection = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            continue
        with connection:
            try:
                if connection.getpeername()[1] != port:
                    continue
            except (OSError, IndexError):
                continue
            on = connection.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            found.append(bool(on))
    return found


@pytest.mark.skipif(
    not Path("/proc/self/fd").exists(), reason="lists descriptors in /proc/self/fd"
)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("keepalive", [True, False])
async def test_socket_keepalive_turns_on_tcp_keepalive(own_redis, kind, keepalive):
    layer = kind(hosts=[{"address": own_redis.url, "socket_keepalive": keepalive}])
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "connect"})
    assert await receive(layer, channel) == {"type": "connect"}
    found = keepalive_of_connections_to(own_redis.port)
    assert found and all(on is keepalive for on in found), found
    await layer.flush()


@pytest.fixture
def proxy(redis):
    proxy = SilencingProxy(redis.port)
    yield proxy
    proxy.close()


@pytest.mark.parametrize("interval", [0.3, None])
async def test_health_check_interval_replaces_a_silent_idle_connection(proxy, interval):
    """A connection a firewall forgot answers nothing; with
    health_check_interval the layer PINGs it after an idle spell, and sends
    the command on a new connection instead of timing out on the old one."""
    entry = {"address": proxy.url, "socket_timeout": 1}
    if interval:
        entry["health_check_interval"] = interval
    layer = RedisChannelLayer(hosts=[entry], prefix="health")
    await layer.send("idle", {"type": "first"})
    proxy.silence()
    await asyncio.sleep(0.5)
    if interval:
        await layer.send("idle", {"type": "second"})
        assert [await receive(layer, "idle") for _ in range(2)] == [
            {"type": "first"},
            {"type": "second"},
        ]
        assert layer.stats()["reconnects"] == 1
    else:
        with pytest.raises(TimeoutError):
            await layer.send("idle", {"type": "second"})
    await layer.flush()


@pytest.mark.parametrize("interval", [0.3, None])
async def test_health_check_interval_covers_the_kept_group_members(proxy, interval):
    """group_send keeps a group's members on a connection of its own; with
    health_check_interval, one idle past it is made anew, so the call waits
    once (on the shared connection's PING), not twice."""
    entry = {"address": proxy.url, "socket_timeout": 1}
    if interval:
        entry["health_check_interval"] = interval
    layer = RedisChannelLayer(hosts=[entry], prefix="health-group")
    await layer.group_add("room", "idle")
    await layer.group_send("room", {"type": "first"})
    proxy.silence()
    await asyncio.sleep(0.5)
    started = time.monotonic()
    if interval:
        await layer.group_send("room", {"type": "second"})
        assert time.monotonic() - started < 1.8
        assert [await receive(layer, "idle") for _ in range(2)] == [
            {"type": "first"},
            {"type": "second"},
        ]
    else:
        with pytest.raises(TimeoutError):
            await layer.group_send("room", {"type": "second"})
        assert time.monotonic() - started < 1.8
    await layer.flush()


async def test_health_check_interval_pings_a_quiet_subscriber(proxy):
    """A pub/sub subscriber that stopped hearing is found by its PING and
    subscribes again on a new connection."""
    entry = {"address": proxy.url, "socket_timeout": 0.5, "health_check_interval": 0.3}
    layer = RedisPubSubChannelLayer(hosts=[entry])
    channel = await layer.new_channel()
    # A healthy connection answers each PING and stays.
    await asyncio.sleep(1)
    assert layer.stats()["reconnects"] == 0
    proxy.silence()
    await publish_until_received(layer, channel, {"type": "heard"}, timeout=10)
    assert layer.stats()["reconnects"] == 1
    await layer.flush()


def test_a_bad_health_check_interval_is_refused():
    with pytest.raises(
        ValueError, match="health_check_interval must be a number of seconds"
    ):
        RedisChannelLayer(hosts=[{"address": "redis://x", "health_check_interval": -1}])
