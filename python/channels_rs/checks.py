"""System checks of CHANNEL_LAYERS, run by ``manage.py check``: each entry's
CONFIG keys against what its backend takes (a misspelt key is named, with
the key it most likely means), its hosts entries, and with ``--deploy``,
the settings that are fine on a laptop and wrong in production."""

import difflib
import inspect
import ipaddress
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from .base import CoreLayer, RedisLayer
from .hosts import host_specs
from .layers import InMemoryChannelLayer


def register() -> None:
    checks.register(config_keys, "channels_rs")
    checks.register(deployment, "channels_rs", deploy=True)


def _entries():
    """(alias, BACKEND, its class or None, CONFIG) for each CHANNEL_LAYERS
    entry; a malformed entry gives no class."""
    for alias, entry in getattr(settings, "CHANNEL_LAYERS", {}).items():
        if not isinstance(entry, dict):
            yield alias, entry, None, {}
            continue
        try:
            backend = import_string(entry["BACKEND"])
        except (ImportError, KeyError, TypeError, ValueError):
            backend = None
        if not isinstance(backend, type):
            backend = None
        yield alias, entry.get("BACKEND"), backend, entry.get("CONFIG") or {}


def _keywords(backend):
    """The options `backend` takes by name, or None if it takes any."""
    parameters = inspect.signature(backend.__init__).parameters.values()
    named = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    open_ended = any(p.kind is p.VAR_KEYWORD for p in parameters)
    # Ours take **kwargs only to ignore what channels' own layers ignore.
    if open_ended and not issubclass(backend, CoreLayer):
        return None
    return [name for name in named if name != "self"]


def config_keys(app_configs=None, **kwargs):
    problems = []
    for alias, name, backend, config in _entries():
        where = f"CHANNEL_LAYERS[{alias!r}]"
        if backend is None:
            problems.append(
                checks.Error(
                    f"{where}['BACKEND'] = {name!r} cannot be imported.",
                    hint="Use channels_rs.RedisChannelLayer, "
                    "channels_rs.RedisPubSubChannelLayer or "
                    "channels_rs.InMemoryChannelLayer.",
                    id="channels_rs.E001",
                )
            )
            continue
        if not isinstance(config, dict):
            problems.extend(_made(where, backend, config))
            continue
        valid = _keywords(backend)
        for key in [] if valid is None else [k for k in config if k not in valid]:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"Did you mean {close[0]!r}? " if close else ""
            problems.append(
                checks.Error(
                    f"{where}['CONFIG'] has {key!r}, which {backend.__name__} "
                    "does not take.",
                    hint=f"{hint}Its options: {', '.join(valid)}.",
                    id="channels_rs.E002",
                )
            )
        if issubclass(backend, RedisLayer):
            try:
                host_specs(config.get("hosts"))
            except Exception as error:  # noqa: BLE001 - every way is reported
                problems.append(
                    checks.Error(
                        f"{where}['CONFIG']['hosts'] is not valid: {error}",
                        id="channels_rs.E003",
                    )
                )
                continue
        if issubclass(backend, CoreLayer) and not any(
            problem.msg.startswith(where) for problem in problems
        ):
            problems.extend(_made(where, backend, config))
    return problems


def _made(where, backend, config):
    """Makes the layer as Channels would, which connects to nothing: what it
    refuses at startup (a bad option value, an unreadable certificate) is
    reported here rather than at the first message."""
    if not isinstance(config, dict):
        return [
            checks.Error(
                f"{where}['CONFIG'] must be a dict of options, not "
                f"{type(config).__name__}",
                id="channels_rs.E004",
            )
        ]
    try:
        backend(**config)
    except Exception as error:  # noqa: BLE001 - every way is reported
        return [
            checks.Error(
                f"{where}['CONFIG'] is not valid: {type(error).__name__}: {error}",
                id="channels_rs.E004",
            )
        ]
    return []


def _hosts_named(config):
    """Every host name the hosts entries of `config` reach."""
    for spec in host_specs(config.get("hosts")):
        urls = spec.get("cluster") or spec.get("sentinels") or [spec["url"]]
        for url in urls:
            parts = urlsplit(url)
            yield "localhost" if parts.scheme == "unix" else parts.hostname or ""


def _loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def deployment(app_configs=None, **kwargs):
    problems = []
    for alias, _, backend, config in _entries():
        where = f"CHANNEL_LAYERS[{alias!r}]"
        if backend is None:
            continue
        if issubclass(backend, InMemoryChannelLayer):
            problems.append(
                checks.Warning(
                    f"{where} is the in-memory layer: a message reaches only "
                    "the process that sent it, so other workers, management "
                    "commands and Celery tasks never get it.",
                    hint="Use channels_rs.RedisChannelLayer in production.",
                    id="channels_rs.W001",
                )
            )
        if not issubclass(backend, RedisLayer) or config.get(
            "symmetric_encryption_keys"
        ):
            continue
        try:
            remote = [host for host in _hosts_named(config) if not _loopback(host)]
        except Exception:  # noqa: BLE001 - config_keys reports it
            continue
        if remote:
            problems.append(
                checks.Warning(
                    f"{where} sends messages unencrypted to {', '.join(remote)}: "
                    "anyone who can read that Redis, or the network to it, "
                    "reads them.",
                    hint="Set symmetric_encryption_keys (e.g. [SECRET_KEY]).",
                    id="channels_rs.W002",
                )
            )
    return problems
