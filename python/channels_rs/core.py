"""The Redis channel layer, a drop-in for
``channels_redis.core.RedisChannelLayer`` that keeps the same data in Redis."""

import uuid
from collections.abc import Iterable, Sequence
from re import Pattern

from . import _core
from .base import RedisLayer
from .types import Hosts, Message


class RedisChannelLayer(RedisLayer):
    """Channel layer on Redis, sharing channels_redis's keys and message bytes,
    so both can serve one project during a migration.

    With ``renew_groups`` (the default), the group memberships this process
    added for channels it still receives on are renewed before
    ``group_expiry`` takes them, and added back to a server that lost them
    (an empty restart, a failover): ``group_expiry`` then only reaps the
    members of consumers that stopped receiving."""

    # Seconds one blocking pop waits before it is issued again.
    brpop_timeout = 5
    _core: _core.RedisCore

    def __init__(
        self,
        hosts: Hosts | None = None,
        prefix: str = "asgi",
        expiry: int = 60,
        group_expiry: int = 86400,
        capacity: int = 100,
        channel_capacity: dict[str | Pattern[str], int] | None = None,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        random_prefix_length: int = 12,
        serializer_format: str = "msgpack",
        renew_groups: bool = True,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity)
        self.group_expiry = group_expiry
        compiled = self.compile_capacities(channel_capacity or {})
        # As channels' layers do; its stubs say this holds the dict given.
        self.channel_capacity = compiled  # type: ignore[assignment]
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
            {
                "hosts": specs,
                "prefix": prefix,
                "expiry": expiry,
                "group_expiry": group_expiry,
                "capacity": capacity,
                "channel_capacity": compiled,
                "serializer": self._serializer,
                "brpop_timeout": self.brpop_timeout,
                "renew_groups": renew_groups,
            }
        )

    @property
    def client_prefix(self) -> str:
        """What this process's new_channel() names carry: each process has its
        own, a forked child too, so none receives another's messages."""
        return self._core.client_prefix

    async def send(self, channel: str, message: Message) -> None:
        """Send ``message`` to ``channel``; ChannelFull if it is at capacity."""
        await self._core.send(channel, message)

    # receive() is CoreLayer's (base.py), the same for every layer.

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new channel name that only this layer instance receives on."""
        return f"{prefix}.{self.client_prefix}!{uuid.uuid4().hex}"

    async def flush(self) -> None:
        """Delete every key with this layer's prefix, on every shard."""
        await self._core.flush()
        self._core.close()

    async def close_pools(self) -> None:
        """Close this process's connections; the next operation reconnects."""
        self._core.close()

    async def group_add(self, group: str, channel: str) -> None:
        await self._core.group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        await self._core.group_discard(group, channel)

    async def group_send(self, group: str, message: Message) -> None:
        """Send ``message`` to every member of ``group``; full members miss it
        (logged at INFO on the ``channels_rs`` logger)."""
        await self._core.group_send(group, message)

    async def send_bulk(self, channel: str, messages: Iterable[Message]) -> None:
        """Send ``messages`` to ``channel`` in one round trip, in order: all
        of them, or ChannelFull (and none) if they would not all fit."""
        await self._core.send_bulk(channel, list(messages))

    async def group_send_bulk(self, group: str, messages: Iterable[Message]) -> None:
        """Send ``messages`` to every member of ``group``, in order: a member
        below capacity gets them all, a full one none."""
        await self._core.group_send_bulk(group, list(messages))

    async def group_send_many(self, groups: Iterable[str], message: Message) -> None:
        """``group_send(group, message)`` for each of ``groups``, in two round
        trips per shard."""
        await self._core.group_send_many(list(groups), message)

    async def group_channels(self, group: str) -> list[str]:
        """The channels in ``group`` now; members past group_expiry are left
        out (and removed, as group_send removes them)."""
        return await self._core.group_channels(group)

    def group_channels_sync(self, group: str) -> list[str]:
        return self._core.group_channels_sync(group)

    def send_sync(self, channel: str, message: Message) -> None:
        """``send`` for plain sync code (views, signals, Celery tasks,
        management commands): no event loop, same errors."""
        self._core.send_sync(channel, message)

    def group_send_sync(self, group: str, message: Message) -> None:
        """``group_send`` for plain sync code: no event loop needed."""
        self._core.group_send_sync(group, message)

    def _group_key(self, group: str) -> bytes:
        """The Redis key of ``group``, as channels_redis names it."""
        return f"{self.prefix}:group:{group}".encode()
