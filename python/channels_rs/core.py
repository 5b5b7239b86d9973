"""The Redis channel layer, a drop-in for
``channels_redis.core.RedisChannelLayer`` that keeps the same data in Redis."""

import uuid
from ssl import CERT_NONE
from urllib.parse import quote

from . import _core
from .base import CoreLayer


def _host_specs(hosts):
    """What the Rust core needs to reach each ``hosts`` entry, from every form
    channels_redis accepts: URL strings, (host, port) pairs, dicts with an
    "address" or host/port/db/password, and Sentinel dicts. Timeouts use
    redis-py's option names."""
    if not hosts:
        hosts = [{"address": "redis://localhost:6379"}]
    if isinstance(hosts, (str, bytes)):
        raise ValueError(
            "You must pass a list of Redis hosts, even if there is only one."
        )
    return [_host_spec(entry) for entry in hosts]


def _host_spec(entry):
    if isinstance(entry, (tuple, list)):
        entry = {"host": entry[0], "port": entry[1]}
    elif not isinstance(entry, dict):
        entry = {"address": entry}
    spec = {
        "connect_timeout": entry.get("socket_connect_timeout"),
        "timeout": entry.get("socket_timeout"),
        "ca_certs": entry.get("ssl_ca_certs"),
        "certfile": entry.get("ssl_certfile"),
        "keyfile": entry.get("ssl_keyfile"),
    }
    if "cluster" in entry:
        # Startup nodes of a Redis Cluster; the rest is discovered.
        nodes = list(entry["cluster"])
        spec["cluster"] = nodes
        spec["url"] = nodes[0]
        spec["name"] = "cluster " + ", ".join(_printable(url) for url in nodes)
        return spec
    if "sentinels" in entry:
        auth = _auth(entry.get("sentinel_kwargs") or {})
        spec["sentinels"] = [
            f"redis://{auth}{host}:{port}" for host, port in entry["sentinels"]
        ]
        spec["master_name"] = entry["master_name"]
        # Only the master's credentials and db: Sentinel names its address.
        spec["url"] = f"redis://{_auth(entry)}sentinel-master/{entry.get('db', 0)}"
        addresses = ", ".join(f"{host}:{port}" for host, port in entry["sentinels"])
        spec["name"] = f"{entry['master_name']!r} via Sentinel {addresses}"
        return spec
    if "address" in entry:
        spec["url"] = entry["address"]
    else:
        host, port = entry.get("host", "localhost"), entry.get("port", 6379)
        scheme = "rediss" if entry.get("ssl") else "redis"
        spec["url"] = f"{scheme}://{_auth(entry)}{host}:{port}/{entry.get('db', 0)}"
    spec["name"] = _printable(spec["url"])
    # redis-py: ssl_cert_reqs "none", ssl.CERT_NONE or None turns checks off.
    if "ssl_cert_reqs" in entry and entry["ssl_cert_reqs"] in (None, "none", CERT_NONE):
        spec["url"] += "#insecure"
    return spec


def _auth(options):
    """The user:password@ part of a URL, from redis-py style options."""
    password = options.get("password")
    if not password:
        return ""
    return (
        f"{quote(options.get('username') or '', safe='')}:{quote(password, safe='')}@"
    )


def _printable(url):
    """The URL without user name, password or fragment."""
    scheme, sep, rest = url.partition("#")[0].partition("://")
    return scheme + sep + rest.rpartition("@")[2] if sep else url


class RedisLayer(CoreLayer):
    """What both Redis layers share: hosts, prefix, serializer, repr."""

    extensions = ["groups", "flush"]

    def _configure(self, hosts, prefix, keys, serializer_format, prefix_length, age):
        """Checks and keeps the shared options; returns the host specs for the
        Rust core. `age` limits encrypted tokens' age in seconds (None: no limit)."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        self.prefix = prefix
        specs = _host_specs(hosts)
        self._host_names = [spec["name"] for spec in specs]
        if isinstance(keys, (str, bytes)):
            raise ValueError(
                "symmetric_encryption_keys must be a list of possible keys"
            )
        keys = [k.encode() if isinstance(k, str) else k for k in keys or []]
        self._serializer = _core.Serializer(serializer_format, keys, prefix_length, age)
        return specs

    def __repr__(self):
        # Host names carry no user name or password.
        return (
            f"<{type(self).__name__} hosts={self._host_names} prefix={self.prefix!r}>"
        )

    def serialize(self, message):
        return self._serializer.serialize(message)

    def deserialize(self, message):
        return self._serializer.deserialize(message)


class RedisChannelLayer(RedisLayer):
    """Channel layer on Redis, sharing channels_redis's keys and message bytes,
    so both can serve one project during a migration."""

    # Seconds one blocking pop waits before it is issued again.
    brpop_timeout = 5

    def __init__(
        self,
        hosts=None,
        prefix="asgi",
        expiry=60,
        group_expiry=86400,
        capacity=100,
        channel_capacity=None,
        symmetric_encryption_keys=None,
        random_prefix_length=12,
        serializer_format="msgpack",
    ):
        super().__init__(expiry=expiry, capacity=capacity)
        self.group_expiry = group_expiry
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        specs = self._configure(
            hosts,
            prefix,
            symmetric_encryption_keys,
            serializer_format,
            random_prefix_length,
            expiry,
        )
        self.ring_size = len(specs)
        self._core = _core.RedisCore(
            specs,
            prefix,
            expiry,
            group_expiry,
            capacity,
            self.channel_capacity,
            self._serializer,
            self.brpop_timeout,
        )

    @property
    def client_prefix(self):
        """What this process's new_channel() names carry: each process has its
        own, a forked child too, so none receives another's messages."""
        return self._core.client_prefix

    async def send(self, channel, message):
        """Send ``message`` to ``channel``; ChannelFull if it is at capacity."""
        await self._core.send(channel, message)

    async def new_channel(self, prefix="specific"):
        """A new channel name that only this layer instance receives on."""
        return f"{prefix}.{self.client_prefix}!{uuid.uuid4().hex}"

    async def group_add(self, group, channel):
        await self._core.group_add(group, channel)

    async def group_discard(self, group, channel):
        await self._core.group_discard(group, channel)

    async def group_send(self, group, message):
        """Send ``message`` to every member of ``group``; full members miss it
        (logged at INFO on the ``channels_rs`` logger)."""
        members = None
        if self._core.has_capacity_patterns:
            members = self._with_capacities(await self._core.group_members(group))
        await self._core.group_send(group, message, members)

    def send_sync(self, channel, message):
        """``send`` for plain sync code (views, signals, Celery tasks,
        management commands): no event loop, same errors."""
        self._core.send_sync(channel, message)

    def group_send_sync(self, group, message):
        """``group_send`` for plain sync code: no event loop needed."""
        members = None
        if self._core.has_capacity_patterns:
            members = self._with_capacities(self._core.group_members_sync(group))
        self._core.group_send_sync(group, message, members)

    def _with_capacities(self, names):
        return [(name, self.get_capacity(name)) for name in names]

    async def flush(self):
        """Delete every key with this layer's prefix, on every shard."""
        await self._core.flush()
        self._core.close()

    async def close_pools(self):
        """Close this process's connections; the next operation reconnects."""
        self._core.close()

    def _group_key(self, group):
        """The Redis key of ``group``, as channels_redis names it."""
        return f"{self.prefix}:group:{group}".encode()
