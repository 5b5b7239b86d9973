"""What the layers share on the Python side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from channels.layers import BaseChannelLayer

from . import _core, serializers
from .hosts import host_specs
from .types import Hosts, Message

if TYPE_CHECKING:
    from ._core import HostSpec, MemoryCore, PubSubCore, RedisCore


class CoreLayer(BaseChannelLayer):
    """A layer whose Rust core's receive() returns a queued message at once,
    or a future of the next one."""

    _core: MemoryCore | RedisCore | PubSubCore

    async def receive(self, channel: str) -> Message:
        """The next message on ``channel``, waiting for one if none is queued."""
        waiter = self._core.receive(channel)
        if isinstance(waiter, dict):
            return waiter
        try:
            message = await waiter
        except BaseException:
            # Cancelled, possibly after a message was handed over: put it back.
            self._core.finish(channel, waiter, False)
            raise
        # Only now is it this consumer's: till here a kill -9 loses nothing.
        self._core.finish(channel, waiter, True)
        return message

    def stats(self) -> dict[str, int]:
        """This process's counters and gauges for the layer: messages sent,
        received and delivered by group_send, drops by reason, ChannelFull
        raised, reconnects, and the channels, groups and receives held now.
        docs/configuration.md names each key."""
        return self._core.stats()

    async def group_channels(self, group: str) -> list[str]:
        """The channels in ``group`` now, members past group_expiry left out."""
        raise NotImplementedError

    def group_channels_sync(self, group: str) -> list[str]:
        """``group_channels`` for plain sync code: no event loop needed."""
        raise NotImplementedError

    async def group_size(self, group: str) -> int:
        """How many channels ``group`` holds now."""
        return len(await self.group_channels(group))

    def group_size_sync(self, group: str) -> int:
        """``group_size`` for plain sync code: no event loop needed."""
        return len(self.group_channels_sync(group))


class RedisLayer(CoreLayer):
    """What both Redis layers share: hosts, prefix, serializer, repr."""

    extensions = ["groups", "flush"]
    _core: RedisCore | PubSubCore

    def _configure(
        self,
        hosts: Hosts | None,
        prefix: str,
        keys: Sequence[str | bytes] | None,
        serializer_format: str,
        prefix_length: int,
        age: float | None,
    ) -> list[HostSpec]:
        """Checks and keeps the shared options; returns the host specs for the
        Rust core. `age` limits encrypted tokens' age in seconds (None: no limit)."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        self.prefix = prefix
        specs = host_specs(hosts)
        self._host_names = [spec["name"] for spec in specs]
        if isinstance(keys, (str, bytes)):
            raise ValueError(
                "symmetric_encryption_keys must be a list of possible keys"
            )
        if serializer_format in serializers.BUILT_IN:
            encoded = [k.encode() if isinstance(k, str) else k for k in keys or []]
            self._serializer = _core.Serializer(
                serializer_format, encoded, prefix_length, age
            )
        else:
            custom = serializers.make(
                serializer_format, list(keys or []), prefix_length, age
            )
            self._serializer = _core.Serializer(serializer_format, [], 0, None, custom)
        return specs

    def troubles(self) -> list[str]:
        """Why each server that is failing now failed last, in the server's
        or the system's words ("Connection refused", "LOADING ..."): empty
        once every server has answered since. The health view names them."""
        return self._core.troubles()

    def __repr__(self) -> str:
        # Host names carry no user name or password.
        return (
            f"<{type(self).__name__} hosts={self._host_names} prefix={self.prefix!r}>"
        )

    def serialize(self, message: Message) -> bytes:
        return self._serializer.serialize(message)

    def deserialize(self, message: bytes) -> Message:
        return self._serializer.deserialize(message)
