"""Read-mostly dict views of the in-memory layer's channels and groups, for
code and tests that inspect ``layer.channels`` and ``layer.groups``."""

from collections.abc import Mapping


class ChannelsView(Mapping):
    """Channel name -> list of its queued messages, for every channel that has
    queued messages or a waiting receiver. ``del view[name]`` drops the queued
    messages, if any; receivers already waiting on it keep waiting."""

    def __init__(self, core):
        self._core = core

    def __getitem__(self, name):
        queued = self._core.queued(name) if isinstance(name, str) else None
        if queued is None:
            raise KeyError(name)
        return queued

    def __delitem__(self, name):
        # No KeyError for a channel whose last message was just handed to a
        # receiver: channels' layer still listed it at that point.
        if isinstance(name, str):
            self._core.discard_queue(name)

    def __contains__(self, name):
        return isinstance(name, str) and self._core.has_channel(name)

    def __iter__(self):
        return iter(self._core.channel_names())

    def __len__(self):
        return self._core.channel_count()

    def __repr__(self):
        return f"<channels {self._core.channel_names()!r}>"


class GroupsView(Mapping):
    """Group name -> {channel name: time it joined (seconds since the epoch)}.
    ``del view[name]`` removes the group."""

    def __init__(self, core):
        self._core = core

    def __getitem__(self, name):
        members = self._core.group_members(name) if isinstance(name, str) else None
        if members is None:
            raise KeyError(name)
        return members

    def __delitem__(self, name):
        if not (isinstance(name, str) and self._core.remove_group(name)):
            raise KeyError(name)

    def __iter__(self):
        return iter(self._core.group_names())

    def __len__(self):
        return self._core.group_count()

    def __repr__(self):
        return f"<groups {dict(self)!r}>"
