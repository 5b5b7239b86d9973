"""The pub/sub channel layer, a drop-in for
``channels_redis.pubsub.RedisPubSubChannelLayer`` that publishes the same
bytes on the same Redis pub/sub channels."""

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from . import _core
from .base import RedisLayer
from .types import Hosts, Message

NO_MEMBERSHIP = (
    "RedisPubSubChannelLayer cannot list a group's channels: membership lives "
    "in each process's subscriptions, not in Redis, so no process sees "
    "another's members. Use channels_rs.RedisChannelLayer for group_channels "
    "and group_size."
)


class RedisPubSubChannelLayer(RedisLayer):
    """Channel layer on Redis pub/sub: every process subscribed to a name gets
    each message sent to it, and a message sent while nobody listens is gone.

    One subscriber connection per shard serves the whole process. Messages
    wait in a queue of at most ``capacity`` per channel (the oldest is
    dropped when it is full) for at most ``expiry`` seconds. When a
    subscriber connection drops, the layer reconnects and subscribes again by
    itself; with ``on_disconnect`` / ``on_reconnect`` set to a message type,
    every channel of this process gets ``{"type": ...}`` at those moments, so
    consumers can catch up on what was published in between."""

    _core: _core.PubSubCore

    def __init__(
        self,
        hosts: Hosts | None = None,
        prefix: str = "asgi",
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        serializer_format: str = "msgpack",
        on_disconnect: str | None = None,
        on_reconnect: str | None = None,
        capacity: int = 100,
        expiry: int = 60,
        **kwargs: Any,
    ) -> None:
        # channels_redis passes other options on and ignores them: so do we.
        super().__init__(expiry=expiry, capacity=capacity)
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        # No random prefix and no age limit on tokens, as channels_redis.pubsub.
        specs = self._configure(
            hosts, prefix, symmetric_encryption_keys, serializer_format, 0, None
        )
        self._core = _core.PubSubCore(
            {
                "hosts": specs,
                "prefix": prefix,
                "serializer": self._serializer,
                "capacity": capacity,
                "expiry": expiry,
                "on_disconnect": on_disconnect,
                "on_reconnect": on_reconnect,
            }
        )

    async def send(self, channel: str, message: Message) -> None:
        """Publish ``message`` to everyone subscribed to ``channel``."""
        await self._core.publish(channel, message)

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A new channel name, already subscribed to by this process."""
        channel = f"{self.prefix}{prefix}{uuid.uuid4().hex}"
        await self._core.subscribe(channel)
        return channel

    async def group_add(self, group: str, channel: str) -> None:
        """Add one of this process's channels to ``group`` (RuntimeError for
        a channel this process did not make or receive on)."""
        await self._core.group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self._core.group_discard(group, channel)

    async def group_send(self, group: str, message: Message) -> None:
        """Publish ``message`` to every process with members in ``group``."""
        await self._core.group_publish(group, message)

    async def send_bulk(self, channel: str, messages: Iterable[Message]) -> None:
        """Publish ``messages`` to ``channel`` in order, in one round trip."""
        await self._core.publish_bulk([channel], list(messages), False)

    async def group_send_bulk(self, group: str, messages: Iterable[Message]) -> None:
        """Publish ``messages`` to ``group`` in order, in one round trip."""
        await self._core.publish_bulk([group], list(messages), True)

    async def group_send_many(self, groups: Iterable[str], message: Message) -> None:
        """Publish ``message`` to each of ``groups``: one round trip per shard."""
        await self._core.publish_bulk(list(groups), [message], True)

    async def group_channels(self, group: str) -> list[str]:
        raise NotImplementedError(NO_MEMBERSHIP)

    def group_channels_sync(self, group: str) -> list[str]:
        raise NotImplementedError(NO_MEMBERSHIP)

    def send_sync(self, channel: str, message: Message) -> None:
        """``send`` for plain sync code: no event loop needed."""
        self._core.publish_sync(channel, message)

    def group_send_sync(self, group: str, message: Message) -> None:
        """``group_send`` for plain sync code: no event loop needed."""
        self._core.group_publish_sync(group, message)

    async def flush(self) -> None:
        """Forget this process's channels and groups, and unsubscribe."""
        await self._core.flush()

    async def close_pools(self) -> None:
        """Nothing to close per event loop: connections belong to the layer."""
