"""``layer.stats()`` as Prometheus metrics, labelled by layer alias
(``pip install channels-rs[prometheus]``).

With ``"channels_rs"`` in INSTALLED_APPS the collector is registered when
Django starts; elsewhere call ``register()``. It reads the layers Channels has
made (``channels.layers.channel_layers``) at each scrape, plus any given to
``watch()``, so it never makes a layer or a connection itself."""

from __future__ import annotations

import weakref
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from .base import CoreLayer

COUNTERS = {
    "messages_sent": "Messages sent to a channel.",
    "messages_received": "Messages received.",
    "group_sends": "group_send calls.",
    "group_deliveries": "Channels a group_send delivered to.",
    "channel_full": "ChannelFull raised by send.",
    "reconnects": "Connections to Redis made again after one was lost.",
    "failovers": "Moves to a new master that Sentinel named.",
}
DROP_REASONS = ("capacity", "expired", "unreadable", "group_full")
REFUSAL_CAUSES = ("out_of_memory", "writes", "access", "other")
GAUGES = {
    "channels": "Channels holding messages or receivers in this process.",
    "groups": "Groups this process's channels are in.",
    "waiting_receives": "receive() calls waiting now.",
}

_watched: weakref.WeakValueDictionary[str, CoreLayer] = weakref.WeakValueDictionary()
_registered: set[int] = set()


def watch(alias: str, layer: CoreLayer) -> None:
    """Export ``layer`` under ``alias`` too: for a layer not made by Channels."""
    _watched[alias] = layer


def _layers() -> dict[str, CoreLayer]:
    from channels.layers import channel_layers

    layers = {
        alias: layer
        for alias, layer in channel_layers.backends.items()
        if isinstance(layer, CoreLayer)
    }
    layers.update(_watched)
    return layers


class LayerCollector(Collector):
    """Collects every known channels-rs layer's stats() at scrape time."""

    def collect(self) -> Iterator[Metric]:
        counters = {
            name: CounterMetricFamily(f"channels_rs_{name}", text, labels=["layer"])
            for name, text in COUNTERS.items()
        }
        dropped = CounterMetricFamily(
            "channels_rs_dropped",
            "Messages the layer gave up on, by reason.",
            labels=["layer", "reason"],
        )
        refused = CounterMetricFamily(
            "channels_rs_refused",
            "Commands Redis refused, by cause (channels_rs.exceptions).",
            labels=["layer", "cause"],
        )
        gauges = {
            name: GaugeMetricFamily(f"channels_rs_{name}", text, labels=["layer"])
            for name, text in GAUGES.items()
        }
        for alias, layer in sorted(_layers().items()):
            stats = layer.stats()
            for name, family in counters.items():
                family.add_metric([alias], stats[name])
            for reason in DROP_REASONS:
                dropped.add_metric([alias, reason], stats[f"dropped_{reason}"])
            for cause in REFUSAL_CAUSES:
                refused.add_metric([alias, cause], stats[f"refused_{cause}"])
            for name, gauge in gauges.items():
                gauge.add_metric([alias], stats[name])
        yield from counters.values()
        yield dropped
        yield refused
        yield from gauges.values()


def register(registry: CollectorRegistry = REGISTRY) -> None:
    """Adds the collector to ``registry`` (prometheus_client's default one
    unless told), once."""
    if id(registry) not in _registered:
        registry.register(LayerCollector())
        _registered.add(id(registry))
