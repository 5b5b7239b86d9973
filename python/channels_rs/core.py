"""The Redis channel layer, a drop-in for
``channels_redis.core.RedisChannelLayer`` that keeps the same data in Redis."""

import uuid
from urllib.parse import quote

from channels.layers import BaseChannelLayer

from . import _core


def _host_urls(hosts):
    """(connection URL, name safe to print) for each ``hosts`` entry, in the
    forms channels_redis accepts."""
    if not hosts:
        hosts = [{"address": "redis://localhost:6379"}]
    if isinstance(hosts, (str, bytes)):
        raise ValueError(
            "You must pass a list of Redis hosts, even if there is only one."
        )
    urls = []
    for entry in hosts:
        if isinstance(entry, dict):
            if "sentinels" in entry:
                raise NotImplementedError("Redis Sentinel hosts are not supported yet")
            if "address" in entry:
                url = entry["address"]
            else:
                host, port = entry.get("host", "localhost"), entry.get("port", 6379)
                password = entry.get("password")
                auth = f":{quote(password, safe='')}@" if password else ""
                url = f"redis://{auth}{host}:{port}/{entry.get('db', 0)}"
        elif isinstance(entry, (tuple, list)):
            url = f"redis://{entry[0]}:{entry[1]}"
        else:
            url = entry
        urls.append((url, _printable(url)))
    return urls


def _printable(url):
    """The URL without user name or password."""
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.rpartition("@")[2] if sep else url


class RedisChannelLayer(BaseChannelLayer):
    """Channel layer on Redis, sharing channels_redis's keys and message bytes,
    so both can serve one project during a migration."""

    brpop_timeout = 5
    extensions = ["groups", "flush"]

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
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        self.prefix = prefix
        urls = _host_urls(hosts)
        self.ring_size = len(urls)
        if isinstance(symmetric_encryption_keys, (str, bytes)):
            raise ValueError(
                "symmetric_encryption_keys must be a list of possible keys"
            )
        keys = [
            k.encode() if isinstance(k, str) else k
            for k in symmetric_encryption_keys or []
        ]
        self._serializer = _core.Serializer(
            serializer_format, keys, random_prefix_length, expiry
        )
        self.client_prefix = uuid.uuid4().hex
        self._core = _core.RedisCore(
            urls,
            prefix,
            expiry,
            group_expiry,
            capacity,
            self.channel_capacity,
            self._serializer,
            self.client_prefix,
        )

    async def send(self, channel, message):
        """Send ``message`` to ``channel``; ChannelFull if it is at capacity."""
        await self._core.send(channel, message)

    async def receive(self, channel):
        """The next message on ``channel``, waiting for one as long as it takes."""
        waiter = self._core.receive(channel)
        if isinstance(waiter, dict):
            return waiter
        try:
            return await waiter
        except BaseException:
            # Cancelled, possibly after a message arrived: put it back.
            self._core.abandon(channel, waiter)
            raise

    async def new_channel(self, prefix="specific"):
        """A new channel name that only this layer instance receives on."""
        if prefix != "specific":
            raise NotImplementedError(
                "new_channel() supports only the default prefix yet"
            )
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

    def serialize(self, message):
        return self._serializer.serialize(message)

    def deserialize(self, message):
        return self._serializer.deserialize(message)
