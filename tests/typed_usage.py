"""Code written the way projects use channels-rs, for mypy (`nox -s lint`),
not for pytest: a signature change that would break a typed project fails
lint. Each `type: ignore` marks a misuse that mypy must catch; with
warn_unused_ignores, a layer whose annotations went missing fails too."""

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import BaseChannelLayer, get_channel_layer

from channels_rs import (
    InMemoryChannelLayer,
    RedisChannelLayer,
    RedisPubSubChannelLayer,
    layers_from_env,
)
from channels_rs.health import check

CHANNEL_LAYERS: dict[str, dict[str, Any]] = layers_from_env()


async def chat_round(layer: BaseChannelLayer) -> dict[str, Any]:
    """What a consumer does, through channels' own base class."""
    channel: str = await layer.new_channel()
    await layer.group_add("room", channel)
    await layer.group_send("room", {"type": "chat.message", "text": "hi"})
    message = await layer.receive(channel)
    await layer.group_discard("room", channel)
    await layer.flush()
    return message


async def each_layer(url: str) -> list[dict[str, Any]]:
    layers: list[BaseChannelLayer] = [
        InMemoryChannelLayer(capacity=10, channel_capacity={"http.*": 50}),
        RedisChannelLayer(hosts=[url, ("localhost", 6380)], prefix="typed"),
        RedisPubSubChannelLayer(hosts=[{"address": url}], on_reconnect="catch.up"),
    ]
    return [await chat_round(layer) for layer in layers]


def from_a_view(layer: RedisChannelLayer | RedisPubSubChannelLayer) -> None:
    """What views and Celery tasks do: no event loop."""
    layer.send_sync("jobs", {"type": "job.start"})
    layer.group_send_sync("room", {"type": "chat.message"})
    async_to_sync(layer.group_send)("room", {"type": "chat.message"})


async def who_is_in(layer: RedisChannelLayer | InMemoryChannelLayer) -> int:
    members: list[str] = await layer.group_channels("room")
    size: int = await layer.group_size("room")
    return size + len(members) + layer.group_size_sync("room")


def probe() -> bool:
    return check("default", timeout=1.0)["status"] == "ok"


async def misuses(layer: RedisChannelLayer) -> None:
    await layer.send(42, {"type": "x"})  # type: ignore[arg-type]
    await layer.group_send("room", ["not", "a", "dict"])  # type: ignore[arg-type]
    name: int = await layer.new_channel()  # type: ignore[assignment]
    RedisChannelLayer(capacity="100")  # type: ignore[arg-type]
    InMemoryChannelLayer(expiry="60")  # type: ignore[arg-type]
    del name


def the_default_layer() -> BaseChannelLayer | None:
    return get_channel_layer()
