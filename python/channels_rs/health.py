"""A readiness probe for the channel layer. In urls.py::

    path("health/channels/", channels_rs.health.view)

answers 200 when a message went through the layer and back within the
timeout, 503 otherwise, with a short JSON body. ``check()`` gives the same
answer as a dict, for a probe of your own."""

import asyncio
import re
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import HttpRequest, JsonResponse

# Seconds the round trip may take before the layer counts as unavailable.
TIMEOUT = 2.0


async def _round_trip(layer, timeout: float) -> None:
    async def there_and_back():
        # new_channel() subscribes on the pub/sub layers, so the send arrives.
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "channels_rs.health"})
        await layer.receive(channel)

    await asyncio.wait_for(there_and_back(), timeout)


def _without_secrets(text: str) -> str:
    """`text` with the user and password of any URL in it left out."""
    return re.sub(r"(\w+://)[^@/\s]*@", r"\1", text)


def check(alias: str = "default", timeout: float = TIMEOUT) -> dict[str, Any]:
    """A bounded round trip through the layer `alias` names: {"status":
    "ok", ...} with its time, or {"status": "unavailable", ...} with why."""
    answer: dict[str, Any] = {"layer": alias}
    start = time.perf_counter()
    try:
        layer = get_channel_layer(alias)
        if layer is None:
            raise LookupError(f"CHANNEL_LAYERS has no {alias!r} entry")
        answer["backend"] = type(layer).__name__
        async_to_sync(_round_trip)(layer, timeout)
    except Exception as error:  # noqa: BLE001 - every failure is the answer
        if isinstance(error, asyncio.TimeoutError):
            # The layer is still trying: say what it last heard, if anything.
            troubles: list[str] = getattr(layer, "troubles", list)()
            reason = "; ".join([f"no round trip within {timeout:g} s", *troubles])
        else:
            reason = _without_secrets(f"{type(error).__name__}: {error}")
        return {"status": "unavailable", **answer, "error": reason[:300]}
    elapsed = (time.perf_counter() - start) * 1000
    return {"status": "ok", **answer, "round_trip_ms": round(elapsed, 1)}


def view(request: HttpRequest, alias: str = "default") -> JsonResponse:
    """The readiness answer for `alias`: 200 or 503, as JSON."""
    answer = check(alias)
    return JsonResponse(answer, status=200 if answer["status"] == "ok" else 503)
