"""Build CHANNEL_LAYERS from the environment, the way most deployments do by
hand: Redis when a URL is set, the in-memory layer otherwise."""

import os
from collections.abc import Mapping
from typing import Any


def _listed(environ: Mapping[str, str], variable: str) -> list[str]:
    """The comma-separated, non-empty entries of `variable`."""
    entries = [entry.strip() for entry in environ.get(variable, "").split(",")]
    return [entry for entry in entries if entry]


def layers_from_env(
    environ: Mapping[str, str] | None = None,
    *,
    url_variable: str = "REDIS_URL",
    cluster_variable: str = "REDIS_CLUSTER_URL",
    keys_variable: str = "CHANNEL_LAYERS_ENCRYPTION_KEYS",
    **config: Any,
) -> dict[str, dict[str, Any]]:
    """A CHANNEL_LAYERS dict for settings.py::

        from channels_rs.settings import layers_from_env
        CHANNEL_LAYERS = layers_from_env()

    ``REDIS_URL`` set: ``channels_rs.RedisChannelLayer`` on it (several URLs
    separated by commas shard over those servers). ``REDIS_CLUSTER_URL``
    set instead (it wins if both are): the same layer on the Redis Cluster
    reached through those startup nodes (comma-separated). Neither:
    ``channels_rs.InMemoryChannelLayer``. ``CHANNEL_LAYERS_ENCRYPTION_KEYS``,
    if set, is a comma-separated list of keys for Redis (the first encrypts,
    all decrypt); the in-memory layer ignores it, as its messages never leave
    the process. Other keyword arguments go into CONFIG as they are.
    """
    environ = os.environ if environ is None else environ
    nodes = _listed(environ, cluster_variable)
    hosts = [{"cluster": nodes}] if nodes else _listed(environ, url_variable)
    if not hosts:
        layer = {"BACKEND": "channels_rs.InMemoryChannelLayer"}
        return {"default": {**layer, "CONFIG": config} if config else layer}
    config = {"hosts": hosts, **config}
    keys = _listed(environ, keys_variable)
    if keys:
        config["symmetric_encryption_keys"] = keys
    return {"default": {"BACKEND": "channels_rs.RedisChannelLayer", "CONFIG": config}}
