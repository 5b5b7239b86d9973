"""``python -m channels_rs check [REDIS_URL]``: whether this machine can use
a Redis deployment as a channel layer, in plain words.

It connects, reports the server's version and round-trip latency, then sends
a message through a normal channel, a process-local channel and a group (the
layer's server-side scripts load on the way), and takes each back, so it
leaves nothing behind. Without a URL it reads the variables
``layers_from_env()`` reads (REDIS_CLUSTER_URL, REDIS_SENTINELS, REDIS_URL,
REDIS_HOST and their companions). Output names servers without passwords,
and any failure is a sentence with what to do, never a traceback."""

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid

from . import _core
from .core import RedisChannelLayer
from .exceptions import OutOfMemory, WritesRefused
from .settings import hosts_from_env

PINGS = 20

# What a refusal means, by class: the layer's own error text says the fix.
REFUSALS = [
    (
        OutOfMemory,
        "The server is at its maxmemory and takes no more messages. Received "
        "messages free it; see which channels pile up (redis-cli --bigkeys).",
    ),
    (
        WritesRefused,
        "The server takes no writes now (a replica, a failed save, or too few "
        "replicas): the error above says which.",
    ),
]

# What a failure's text means, in the order to look for it.
EXPLANATIONS = [
    (
        ("authentication", "wrongpass", "noauth", "invalid username-password"),
        "The server refused the credentials. Check the user name and password "
        "in the URL (redis://user:password@host:port), or that the server "
        "needs none.",
    ),
    (
        ("noperm", "no permissions"),
        "The server's ACL refuses a command or key the layer needs. The user "
        "needs the layer's keys (~asgi* for the default prefix) and the "
        "commands the README lists under ACL.",
    ),
    (
        ("certificate", "issuer", "handshake", "tls", "ssl"),
        "The TLS connection failed. Check that ssl_ca_certs names the CA that "
        "signed the server's certificate and that the certificate is for "
        "this host name.",
    ),
    (
        ("loading",),
        "The server is loading its data after a restart, and answers once it "
        "has: try again in a moment.",
    ),
    (
        ("masterdown", "clusterdown", "tryagain"),
        "The server or cluster is between masters (a failover): try again in a moment.",
    ),
    (
        ("refused",),
        "Nothing accepted the connection. Is Redis running there, and are the "
        "host and port right? (Inside a container, localhost is the "
        "container itself.)",
    ),
    (
        ("lookup", "not known", "resolve", "no address"),
        "The host name does not resolve. Check its spelling and this machine's DNS.",
    ),
    (
        ("timed out", "did not answer in time"),
        "No answer in time: a firewall dropping packets, a wrong port, or a "
        "TLS port spoken to without rediss://.",
    ),
]


def explain(error):
    """Plain words for `error`, as the layer raised it."""
    for kind, explanation in REFUSALS:
        if isinstance(error, kind):
            return explanation
    if isinstance(error, (ValueError, TypeError)):
        return "The settings cannot name a server this way: the error says the fix."
    text = str(error).lower()
    for needles, explanation in EXPLANATIONS:
        if any(needle in text for needle in needles):
            return explanation
    if isinstance(error, TimeoutError):
        return EXPLANATIONS[-1][1]
    return "An unexpected failure; the error above says what the server answered."


def with_timeouts(hosts, timeout):
    """`hosts` entries with `timeout` seconds to connect and for each reply."""
    options = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    return [
        {**entry, **options}
        if isinstance(entry, dict)
        else {"address": entry, **options}
        for entry in hosts
    ]


def describe(info):
    """ "Redis 7.0.15 (standalone)" from an INFO server text. Valkey also
    reports a redis_version (the Redis it is compatible with), and names its
    mode server_mode."""
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    if "valkey_version" in fields:
        product = f"Valkey {fields['valkey_version']}"
    else:
        product = f"Redis {fields.get('redis_version', '(version unknown)')}"
    mode = fields.get("server_mode") or fields.get("redis_mode") or "mode unknown"
    return f"{product} ({mode})"


async def message_round_trip(layer):
    """A message through each kind of channel and a group, each taken back."""
    tag = uuid.uuid4().hex
    normal = f"channels-rs-check.{tag}"
    local = await layer.new_channel("channels-rs-check")
    group = f"channels-rs-check.{tag}"
    try:
        for channel in (normal, local):
            await layer.send(channel, {"type": "check.direct"})
            if await layer.receive(channel) != {"type": "check.direct"}:
                raise RuntimeError(f"{channel} returned another message")
            await layer.group_add(group, channel)
        await layer.group_send(group, {"type": "check.group"})
        for channel in (normal, local):
            if await layer.receive(channel) != {"type": "check.group"}:
                raise RuntimeError(f"{channel} returned another group message")
    finally:
        for channel in (normal, local):
            await layer.group_discard(group, channel)


def step(title, outcome):
    print(f"  {title:<28} {outcome}", flush=True)


async def check(hosts, timeout):
    try:
        layer = RedisChannelLayer(hosts=with_timeouts(hosts, timeout))
    except Exception as error:  # noqa: BLE001 - every failure is reported
        return failed(error)
    for name in layer._host_names:
        print(f"channels-rs check: {name}")
    try:
        reports = await asyncio.to_thread(layer._core.server_report_sync, PINGS)
        for name, info, pings in reports:
            prefix = f"{name}: " if len(reports) > 1 else ""
            step("server", f"ok: {prefix}{describe(info)}")
            ms = sorted(ping * 1000 for ping in pings)
            step(
                "round-trip latency",
                f"PING median {statistics.median(ms):.2f} ms "
                f"(min {ms[0]:.2f}, max {ms[-1]:.2f}, {len(ms)} pings)",
            )
        start = time.perf_counter()
        await asyncio.wait_for(message_round_trip(layer), timeout * 4)
        took = (time.perf_counter() - start) * 1000
        step(
            "scripts and messages",
            f"ok: normal channel, process-local channel and group in {took:.1f} ms",
        )
        event_loop = asyncio.get_running_loop()
        step(
            "event loop",
            f"{type(event_loop).__name__}, woken by {_core.wakeup_of(event_loop)}",
        )
    except Exception as error:  # noqa: BLE001 - every failure is reported
        return failed(error)
    finally:
        layer._core.close()
    print("All checks passed: this deployment can carry the channel layer.")
    return 0


def failed(error):
    print(f"\nFAILED: {type(error).__name__}: {error}")
    print(explain(error))
    return 1


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m channels_rs check",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument(
        "url",
        nargs="?",
        help="redis://, rediss://, valkey:// or valkeys:// URL (default: the "
        "variables layers_from_env() reads: REDIS_CLUSTER_URL, REDIS_SENTINELS, "
        "REDIS_URL, REDIS_HOST)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="the URL names startup nodes of a Redis Cluster (comma-separated)",
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait (default 5)"
    )
    options = parser.parse_args(argv)
    if options.url is None:
        try:
            hosts = hosts_from_env(os.environ)
        except ValueError as error:
            return failed(error)
        if not hosts:
            parser.error(
                "give a Redis URL, or set REDIS_URL, REDIS_CLUSTER_URL, "
                "REDIS_SENTINELS or REDIS_HOST"
            )
    else:
        urls = [part.strip() for part in options.url.split(",") if part.strip()]
        if not urls:
            return failed(
                ValueError("the URL is empty: give one, e.g. redis://host:6379")
            )
        hosts = [{"cluster": urls}] if options.cluster else urls
    return asyncio.run(check(hosts, options.timeout))


if __name__ == "__main__":
    sys.exit(main())
