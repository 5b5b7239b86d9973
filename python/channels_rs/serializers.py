"""``serializer_format`` names beyond msgpack and json.

A name registered here, or with channels_redis's
``channels_redis.serializers.registry``, selects that serializer class. It is
made as channels_redis makes it, with ``symmetric_encryption_keys``,
``random_prefix_length`` and ``expiry``, and its ``serialize`` and
``deserialize`` make and read the stored bytes, so they match channels_redis's
with the same class. "msgpack" and "json" always stay in Rust."""

from __future__ import annotations

import importlib
from typing import Any, Protocol

BUILT_IN = ("msgpack", "json")


class MessageSerializer(Protocol):
    """What a registered class's instances do (channels_redis's
    ``BaseMessageSerializer`` subclasses do it)."""

    def serialize(self, message: dict[str, Any]) -> bytes: ...

    def deserialize(self, message: bytes) -> dict[str, Any]: ...


class SerializerRegistry:
    """Format names and their serializer classes, as channels_redis keeps them."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def register_serializer(self, format: str, serializer_class: type) -> None:
        if not (
            isinstance(serializer_class, type)
            and callable(getattr(serializer_class, "serialize", None))
            and callable(getattr(serializer_class, "deserialize", None))
        ):
            raise TypeError(
                f"{serializer_class!r} is not a serializer class: it needs "
                "serialize() and deserialize() methods"
            )
        if format in BUILT_IN:
            raise ValueError(f"{format!r} is built in and cannot be replaced")
        self._classes[format] = serializer_class

    def get(self, format: str) -> type | None:
        return self._classes.get(format)


registry = SerializerRegistry()


def serializer_class(format: str) -> type:
    """The class registered for ``format``: ours first, then channels_redis's."""
    found = registry.get(format)
    if found is None:
        try:
            upstream = importlib.import_module("channels_redis.serializers")
        except ImportError:
            pass
        else:
            found = upstream.registry._registry.get(format)
    if found is None:
        raise ValueError(
            f"unknown serializer_format {format!r}: use 'msgpack' or 'json', or "
            "register a serializer class under that name with "
            "channels_rs.serializers.registry.register_serializer() (or "
            "channels_redis.serializers.registry)"
        )
    return found


def make(
    format: str,
    keys: list[str | bytes] | None,
    random_prefix_length: int,
    expiry: float | None,
) -> MessageSerializer:
    """An instance of the class registered for ``format``, made as
    channels_redis makes it."""
    return serializer_class(format)(
        symmetric_encryption_keys=keys or None,
        random_prefix_length=random_prefix_length,
        expiry=expiry,
    )
