"""The Rust half of channels-rs. Use the layer classes in channels_rs instead."""

import asyncio
import re
from typing import Any, Literal, TypedDict, final, type_check_only

from typing_extensions import NotRequired, Self

from .serializers import MessageSerializer

__all__ = [
    "Bridge",
    "MemoryCore",
    "PubSubCore",
    "RedisCore",
    "Serializer",
    "python_exits",
    "random_letters",
    "wakeup_of",
]

def random_letters(count: int) -> str:
    """`count` random ASCII letters, as channels' new_channel() uses."""

def python_exits() -> None:
    """Tells the runtime threads that the interpreter is shutting down."""

def wakeup_of(
    event_loop: asyncio.AbstractEventLoop,
) -> Literal["eventfd", "pipe", "call_soon_threadsafe"]:
    """How the bridge wakes `event_loop` (CHANNELS_RS_WAKEUP forces one)."""

@type_check_only
class MemoryOptions(TypedDict):
    expiry: float
    group_expiry: float
    capacity: int
    channel_capacity: list[tuple[re.Pattern[str], int]]
    require_serializable: bool
    renew_groups: bool

@final
class MemoryCore:
    """The in-memory layer's channels and groups, for one process."""

    def __new__(cls, options: MemoryOptions) -> Self: ...
    def send(self, channel: str, message: dict[str, Any]) -> None:
        """Queues a copy of `message`; ChannelFull if the channel is full."""
    def receive(self, channel: str) -> dict[str, Any] | asyncio.Future[dict[str, Any]]:
        """The next message, or a future of it; await it, then call `finish`."""
    def finish(
        self, channel: str, future: asyncio.Future[dict[str, Any]], taken: bool
    ) -> None:
        """After an await of `receive`'s future: put back what was not taken."""
    def group_add(self, group: str, channel: str) -> None:
        """Adds `channel` to `group`, renewing its membership."""
    def group_discard(self, group: str, channel: str) -> None:
        """Removes `channel` from `group`, if it is there."""
    def group_send(self, group: str, message: dict[str, Any]) -> None:
        """A copy of `message` to every member with room for it."""
    def group_channels(self, group: str) -> list[str]:
        """The members of `group` that joined within group_expiry."""
    def send_bulk(self, channel: str, messages: list[dict[str, Any]]) -> None:
        """Copies of all of `messages` queued on `channel`, or ChannelFull."""
    def group_send_each(
        self, groups: list[str], messages: list[dict[str, Any]]
    ) -> None:
        """Each of `messages` to every member of each of `groups`."""
    def stats(self) -> dict[str, int]:
        """This process's counters and gauges (see docs/configuration.md)."""
    def flush(self) -> None:
        """Forgets every channel, message and group."""
    def channel_names(self) -> list[str]:
        """The channels that hold messages or receivers."""
    def has_channel(self, name: str) -> bool:
        """Whether `name` holds messages or receivers."""
    def channel_count(self) -> int:
        """How many channels hold messages or receivers."""
    def queued(self, name: str) -> list[dict[str, Any]] | None:
        """Copies of the messages waiting on `name`, oldest first."""
    def discard_queue(self, name: str) -> None:
        """Drops the messages waiting on `name`."""
    def group_names(self) -> list[str]:
        """The groups that have members."""
    def group_count(self) -> int:
        """How many groups have members."""
    def group_members(self, name: str) -> dict[str, float] | None:
        """Each member of `name` with when it joined."""
    def remove_group(self, name: str) -> bool:
        """Drops the group `name`; whether there was one."""

@final
class Serializer:
    """Messages to the bytes Redis stores, and back: msgpack or json, with
    an optional random prefix and Fernet encryption, as channels_redis; or
    through `custom`, a registered serializer object."""

    def __new__(
        cls,
        format: str,
        keys: list[bytes],
        random_prefix_length: int,
        expiry: float | None,
        custom: MessageSerializer | None = None,
    ) -> Self: ...
    def serialize(self, message: dict[str, Any]) -> bytes:
        """The bytes channels_redis would store for `message`."""
    def deserialize(self, data: bytes) -> dict[str, Any]:
        """The message in bytes that channels_redis or channels-rs stored."""

@type_check_only
class HostSpec(TypedDict):
    """One hosts entry as channels_rs.hosts works it out."""

    name: str
    url: str
    sentinels: NotRequired[list[str]]
    master_name: NotRequired[str]
    cluster: NotRequired[list[str]]
    socket_connect_timeout: NotRequired[float | None]
    socket_keepalive: NotRequired[bool]
    health_check_interval: NotRequired[float | None]
    socket_timeout: NotRequired[float | None]
    ssl_ca_certs: NotRequired[str | None]
    ssl_certfile: NotRequired[str | None]
    ssl_keyfile: NotRequired[str | None]

@type_check_only
class RedisOptions(TypedDict):
    hosts: list[HostSpec]
    prefix: str
    expiry: float
    group_expiry: float
    capacity: int
    channel_capacity: list[tuple[re.Pattern[str], int]]
    serializer: Serializer
    brpop_timeout: float
    renew_groups: bool

@final
class RedisCore:
    """RedisChannelLayer's Rust half: its queues and groups in Redis."""

    @property
    def client_prefix(self) -> str:
        """What this process's new_channel() names carry."""
    def __new__(cls, options: RedisOptions) -> Self: ...
    def send(self, channel: str, message: dict[str, Any]) -> asyncio.Future[None]:
        """Queues `message` on `channel`; ChannelFull if it is full."""
    def send_sync(self, channel: str, message: dict[str, Any]) -> None:
        """`send` from code without an event loop."""
    def receive(self, channel: str) -> dict[str, Any] | asyncio.Future[dict[str, Any]]:
        """The next message, or a future of it; await it, then call `finish`."""
    def finish(
        self, channel: str, future: asyncio.Future[dict[str, Any]], taken: bool
    ) -> None:
        """After an await of `receive`'s future: forget or put back its message."""
    def group_add(self, group: str, channel: str) -> asyncio.Future[None]:
        """Adds `channel` to `group`, renewing its membership."""
    def group_discard(self, group: str, channel: str) -> asyncio.Future[None]:
        """Removes `channel` from `group`, if it is there."""
    def group_send(self, group: str, message: dict[str, Any]) -> asyncio.Future[None]:
        """A copy of `message` to every member with room for it."""
    def group_send_sync(self, group: str, message: dict[str, Any]) -> None:
        """`group_send` from code without an event loop."""
    def group_channels(self, group: str) -> asyncio.Future[list[str]]:
        """The members of `group` that joined within group_expiry."""
    def group_channels_sync(self, group: str) -> list[str]:
        """`group_channels` from code without an event loop."""
    def send_bulk(
        self, channel: str, messages: list[dict[str, Any]]
    ) -> asyncio.Future[None]:
        """All of `messages` to `channel` in one script, or ChannelFull."""
    def group_send_bulk(
        self, group: str, messages: list[dict[str, Any]]
    ) -> asyncio.Future[None]:
        """Each of `messages` to every member of `group` with room."""
    def group_send_many(
        self, groups: list[str], message: dict[str, Any]
    ) -> asyncio.Future[None]:
        """`message` to every member of each of `groups`."""
    def troubles(self) -> list[str]:
        """Why each server failing now failed last, in its own words."""
    def stats(self) -> dict[str, int]:
        """This process's counters and gauges (see docs/configuration.md)."""
    def flush(self) -> asyncio.Future[None]:
        """Deletes every key with the layer's prefix, on every shard."""
    def server_report_sync(self, pings: int) -> list[tuple[str, str, list[float]]]:
        """Each shard's name, INFO server text and `pings` PING times."""
    def close(self) -> None:
        """Drops this process's connections; the next operation reconnects."""

@final
class Bridge:
    """Completes one event loop's futures from the runtime's threads."""

    def drain(self) -> None:
        """Completes every finished operation; the loop calls it."""

@type_check_only
class PubSubOptions(TypedDict):
    hosts: list[HostSpec]
    prefix: str
    serializer: Serializer
    capacity: int
    expiry: float
    on_disconnect: str | None
    on_reconnect: str | None

@final
class PubSubCore:
    """RedisPubSubChannelLayer's Rust half: its subscriptions and publishes."""

    def __new__(cls, options: PubSubOptions) -> Self: ...
    def subscribe(self, channel: str) -> asyncio.Future[None]:
        """Makes `channel` this process's and subscribes to it."""
    def publish(self, channel: str, message: dict[str, Any]) -> asyncio.Future[None]:
        """Publishes `message` to whoever is subscribed to `channel`."""
    def publish_sync(self, channel: str, message: dict[str, Any]) -> None:
        """`publish` from code without an event loop."""
    def group_publish(
        self, group: str, message: dict[str, Any]
    ) -> asyncio.Future[None]:
        """Publishes `message` to the group's pub/sub channel."""
    def group_publish_sync(self, group: str, message: dict[str, Any]) -> None:
        """`group_publish` from code without an event loop."""
    def receive(self, channel: str) -> dict[str, Any] | asyncio.Future[dict[str, Any]]:
        """The next message, or a future of it; await it, then call `finish`."""
    def finish(self, channel: str, future: asyncio.Future[Any], taken: bool) -> None:
        """After an await of `receive`'s future: if not taken, unsubscribe."""
    def group_add(self, group: str, channel: str) -> asyncio.Future[None]:
        """Subscribes this process to `group` for `channel`."""
    def group_discard(self, group: str, channel: str) -> None:
        """Drops `channel` from `group`; the last one out unsubscribes."""
    def publish_bulk(
        self, targets: list[str], messages: list[dict[str, Any]], group: bool
    ) -> asyncio.Future[None]:
        """Each of `messages` to each of `targets`, in order, pipelined."""
    def troubles(self) -> list[str]:
        """Why each server failing now failed last, in its own words."""
    def stats(self) -> dict[str, int]:
        """This process's counters and gauges (see docs/configuration.md)."""
    def flush(self) -> asyncio.Future[None]:
        """Unsubscribes from every channel and group of this process."""
