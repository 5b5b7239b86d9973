"""The in-memory channel layer, a drop-in for
``channels.layers.InMemoryChannelLayer`` with its state kept in Rust."""

from collections.abc import Iterable
from re import Pattern
from typing import Any

from . import _core
from .base import CoreLayer
from .types import Message
from .views import ChannelsView, GroupsView


class InMemoryChannelLayer(CoreLayer):
    """Channel layer that lives in this process's memory: for development and
    tests, or a single-process deployment. One instance serves every thread
    and event loop of the process.

    A message the Redis layers could not send (a datetime, a set, a model
    instance) is delivered as channels' layer would, with a WARNING naming
    the type and where in the message it sits, once per place; with
    ``require_serializable=True`` it raises the TypeError the Redis layers
    raise instead, so development fails where production would.

    With ``renew_groups`` (the default), a member whose channel a receive
    waits on, or received within a quarter of ``group_expiry``, stays in
    its groups past ``group_expiry``, as the Redis layer renews it."""

    extensions = ["groups", "flush"]
    _core: _core.MemoryCore

    def __init__(
        self,
        expiry: int = 60,
        group_expiry: int = 86400,
        capacity: int = 100,
        channel_capacity: dict[str | Pattern[str], int] | None = None,
        require_serializable: bool = False,
        renew_groups: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            expiry=expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
            **kwargs,
        )
        self.group_expiry = group_expiry
        # channels' own layer forgets this step and crashes on the first send.
        compiled = self.compile_capacities(self.channel_capacity)
        # Where channels keeps it; its stubs say this holds the dict given.
        self.channel_capacity = compiled  # type: ignore[assignment]
        self._core = _core.MemoryCore(
            {
                "expiry": expiry,
                "group_expiry": group_expiry,
                "capacity": capacity,
                "channel_capacity": compiled,
                "require_serializable": require_serializable,
                "renew_groups": renew_groups,
            }
        )
        self.channels = ChannelsView(self._core)
        self.groups = GroupsView(self._core)

    async def send(self, channel: str, message: Message) -> None:
        """Queue a copy of ``message`` on ``channel``; ChannelFull if it is full."""
        self._core.send(channel, message)

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A new, unique channel name for this process to receive on."""
        return f"{prefix}.inmemory!{_core.random_letters(12)}"

    async def send_bulk(self, channel: str, messages: Iterable[Message]) -> None:
        """Queue copies of ``messages`` on ``channel`` in order: all of them,
        or ChannelFull (and none) if they would not all fit."""
        self._core.send_bulk(channel, list(messages))

    async def group_send_bulk(self, group: str, messages: Iterable[Message]) -> None:
        """``group_send`` of each of ``messages``, in order."""
        self._core.group_send_each([group], list(messages))

    async def group_send_many(self, groups: Iterable[str], message: Message) -> None:
        """``group_send(group, message)`` for each of ``groups``."""
        self._core.group_send_each(list(groups), [message])

    async def group_add(self, group: str, channel: str) -> None:
        self._core.group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self._core.group_discard(group, channel)

    async def group_send(self, group: str, message: Message) -> None:
        """Send a copy of ``message`` to every member; full members miss it."""
        self._core.group_send(group, message)

    async def group_channels(self, group: str) -> list[str]:
        """The channels in ``group`` now; members past group_expiry are left
        out (and removed, as group_send removes them)."""
        return self._core.group_channels(group)

    def group_channels_sync(self, group: str) -> list[str]:
        return self._core.group_channels(group)

    def send_sync(self, channel: str, message: Message) -> None:
        """``send`` for plain sync code, as the Redis layers have it."""
        self._core.send(channel, message)

    def group_send_sync(self, group: str, message: Message) -> None:
        """``group_send`` for plain sync code, as the Redis layers have it."""
        self._core.group_send(group, message)

    async def flush(self) -> None:
        """Drop every queued message and group."""
        self._core.flush()

    async def close(self) -> None:
        """Nothing to release: the layer holds no connections."""
