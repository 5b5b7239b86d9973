"""Build CHANNEL_LAYERS from the environment, the way deployments do by
hand: a Redis layer when a server is named, the in-memory layer otherwise.
docs/configuration.md lists every variable."""

import os
from collections.abc import Mapping
from typing import Any

MEMORY = "channels_rs.InMemoryChannelLayer"
# CHANNEL_LAYERS_BACKEND's values: the layer used once a server is named.
BACKENDS = {
    "redis": "channels_rs.RedisChannelLayer",
    "pubsub": "channels_rs.RedisPubSubChannelLayer",
}
# Variables that only say something beside another (their "leaders"):
# set without any of those, they would be ignored without a word.
COMPANIONS = {
    "REDIS_PORT": ("REDIS_HOST",),
    "REDIS_PASSWORD": ("REDIS_HOST", "REDIS_SENTINELS"),
    "REDIS_DB": ("REDIS_HOST", "REDIS_SENTINELS"),
    "REDIS_SENTINEL_MASTER": ("REDIS_SENTINELS",),
    "REDIS_SENTINEL_PASSWORD": ("REDIS_SENTINELS",),
}
FLAGS = {"1": True, "true": True, "yes": True, "on": True}
FLAGS.update({"": False, "0": False, "false": False, "no": False, "off": False})


def _listed(environ: Mapping[str, str], variable: str) -> list[str]:
    """The comma-separated, non-empty entries of `variable`."""
    entries = [entry.strip() for entry in environ.get(variable, "").split(",")]
    return [entry for entry in entries if entry]


def _flag(environ: Mapping[str, str], variable: str) -> bool:
    value = environ.get(variable, "").strip().lower()
    if value not in FLAGS:
        raise ValueError(
            f"{variable}={environ[variable]!r} is not a yes or no: use one of "
            f"{', '.join(name for name in FLAGS if name)}"
        )
    return FLAGS[value]


def _number(environ: Mapping[str, str], variable: str, default: int) -> int:
    value = environ.get(variable, "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise ValueError(f"{variable}={value!r} is not a number")
    return int(value)


def _address(entry: str, variable: str) -> tuple[str, int]:
    host, _, port = entry.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{variable}: {entry!r} is not host:port")
    return host, int(port)


def _server(environ: Mapping[str, str]) -> dict[str, Any]:
    """The password and db of a server named by REDIS_HOST or by Sentinel."""
    options: dict[str, Any] = {"db": _number(environ, "REDIS_DB", 0)}
    if environ.get("REDIS_PASSWORD"):
        options["password"] = environ["REDIS_PASSWORD"]
    return options


def _set(environ: Mapping[str, str], variable: str) -> bool:
    return bool(environ.get(variable, "").strip())


def _check_companions(environ: Mapping[str, str], url_variable: str) -> None:
    """Raises for a variable set without the one it goes with."""
    for variable, leaders in COMPANIONS.items():
        if not _set(environ, variable) or any(_set(environ, v) for v in leaders):
            continue
        needs = " or ".join(leaders)
        fix = f"set {needs} too, or unset {variable}"
        if _set(environ, url_variable) and "SENTINEL" not in variable:
            fix += f" (with {url_variable}, the URL carries it: redis://:password@host:port/db)"
        raise ValueError(
            f"{variable} is set without {needs}, so it would be ignored: {fix}"
        )


def hosts_from_env(
    environ: Mapping[str, str],
    url_variable: str = "REDIS_URL",
    cluster_variable: str = "REDIS_CLUSTER_URL",
) -> list[Any] | None:
    """The hosts entries the environment names, if any: a cluster's startup
    nodes, else Sentinels, else URLs, else a host and port. A variable set
    without the one it goes with (REDIS_PORT without REDIS_HOST) raises
    ValueError rather than leave the server unnamed."""
    _check_companions(environ, url_variable)
    nodes = _listed(environ, cluster_variable)
    if nodes:
        return [{"cluster": nodes}]
    sentinels = _listed(environ, "REDIS_SENTINELS")
    if sentinels:
        entry = {
            "sentinels": [_address(s, "REDIS_SENTINELS") for s in sentinels],
            "master_name": environ.get("REDIS_SENTINEL_MASTER") or "mymaster",
            **_server(environ),
        }
        if environ.get("REDIS_SENTINEL_PASSWORD"):
            entry["sentinel_kwargs"] = {"password": environ["REDIS_SENTINEL_PASSWORD"]}
        return [entry]
    urls = _listed(environ, url_variable)
    if urls:
        return urls
    host = environ.get("REDIS_HOST", "").strip()
    if host:
        port = _number(environ, "REDIS_PORT", 6379)
        return [{"host": host, "port": port, **_server(environ)}]
    return None


def layers_from_env(
    environ: Mapping[str, str] | None = None,
    *,
    url_variable: str = "REDIS_URL",
    cluster_variable: str = "REDIS_CLUSTER_URL",
    keys_variable: str = "CHANNEL_LAYERS_ENCRYPTION_KEYS",
    secret_key: str | None = None,
    **config: Any,
) -> dict[str, dict[str, Any]]:
    """A CHANNEL_LAYERS dict for settings.py::

        from channels_rs.settings import layers_from_env
        CHANNEL_LAYERS = layers_from_env(secret_key=SECRET_KEY)

    The first of these that is set names the server: ``REDIS_CLUSTER_URL``
    (a cluster's startup nodes, comma-separated), ``REDIS_SENTINELS``
    (``host:port`` list, with ``REDIS_SENTINEL_MASTER``), ``REDIS_URL``
    (comma-separated URLs shard), ``REDIS_HOST`` (with ``REDIS_PORT``).
    ``REDIS_PASSWORD`` and ``REDIS_DB`` go with a host or Sentinel. With a
    server, ``CHANNEL_LAYERS_BACKEND`` picks ``redis`` (the default) or
    ``pubsub``; ``USE_INMEMORY_CHANNELS=true``, or no server, gives the
    in-memory layer. Redis messages are encrypted with
    ``CHANNEL_LAYERS_ENCRYPTION_KEYS`` (comma-separated; the first
    encrypts, all decrypt), else with ``secret_key`` if given. Other
    keyword arguments go into CONFIG as they are.
    """
    environ = os.environ if environ is None else environ
    in_memory = _flag(environ, "USE_INMEMORY_CHANNELS")
    hosts = (
        None if in_memory else hosts_from_env(environ, url_variable, cluster_variable)
    )
    if not hosts:
        layer = {"BACKEND": MEMORY}
        return {"default": {**layer, "CONFIG": config} if config else layer}
    backend = environ.get("CHANNEL_LAYERS_BACKEND", "").strip().lower() or "redis"
    if backend not in BACKENDS:
        raise ValueError(
            f"CHANNEL_LAYERS_BACKEND={backend!r}: use one of {', '.join(BACKENDS)}"
        )
    config = {"hosts": hosts, **config}
    keys = _listed(environ, keys_variable) or ([secret_key] if secret_key else [])
    if keys:
        config["symmetric_encryption_keys"] = keys
    return {"default": {"BACKEND": BACKENDS[backend], "CONFIG": config}}
