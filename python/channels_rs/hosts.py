"""The ``hosts`` entries channels_redis accepts, turned into what the Rust
core needs to reach each server."""

import logging
from numbers import Real
from ssl import CERT_NONE
from urllib.parse import quote, urlsplit

# redis-py's options that the Rust core reads from an entry as they are.
CONNECTION_OPTIONS = (
    "socket_connect_timeout",
    "socket_timeout",
    "socket_keepalive",
    "health_check_interval",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
)


# What a dict entry may name besides CONNECTION_OPTIONS: the server itself.
SERVER_KEYS = (
    "address",
    "host",
    "port",
    "db",
    "username",
    "password",
    "ssl",
    "ssl_cert_reqs",
    "sentinels",
    "master_name",
    "sentinel_kwargs",
    "cluster",
)
# redis-py's connection-pool and client options, which channels_redis passes
# on: settings written for it carry them, and here they mean nothing (one
# multiplexed connection per server, no client-side retries or decoding).
IGNORED_OPTIONS = (
    "max_connections",
    "retry_on_timeout",
    "retry_on_error",
    "retry",
    "client_name",
    "encoding",
    "encoding_errors",
    "decode_responses",
    "single_connection_client",
    "socket_keepalive_options",
    "ssl_check_hostname",
)

# The URL schemes a hosts entry may use, and how errors list them.
SCHEMES = ("redis", "rediss", "unix", "redis+unix", "valkey", "valkeys", "valkey+unix")
SCHEMES_TEXT = (
    "redis://, rediss:// (TLS), unix:// (a socket), valkey://, valkeys:// (TLS)"
)
# The forms an entry takes, for errors that must say what would do.
FORMS = (
    'a URL string ("redis://host:6379/0"), a (host, port) pair, or a dict '
    '({"address": url, ...}, {"host": ..., "port": ...}, {"sentinels": '
    '[(host, port)], "master_name": ...} or {"cluster": [url, ...]})'
)
# Options holding seconds.
SECONDS = ("socket_connect_timeout", "socket_timeout", "health_check_interval")

log = logging.getLogger("channels_rs")


def host_specs(hosts):
    """What the Rust core needs to reach each ``hosts`` entry, from every form
    channels_redis accepts: URL strings, (host, port) pairs, dicts with an
    "address" or host/port/db/password, and Sentinel dicts. An entry the
    layer could not use raises ValueError or TypeError naming it and the fix."""
    if not hosts:
        hosts = [{"address": "redis://localhost:6379"}]
    if isinstance(hosts, (str, bytes)):
        raise ValueError(
            "You must pass a list of Redis hosts, even if there is only one."
        )
    if isinstance(hosts, dict):
        raise TypeError(f"hosts must be a list of entries: write [{hosts!r}]")
    if not isinstance(hosts, (list, tuple)):
        raise TypeError(f"hosts must be a list of entries, not {type(hosts).__name__}")
    entries = [_entry(entry) for entry in hosts]
    ignored = sorted({key for entry in entries for key in entry} & set(IGNORED_OPTIONS))
    if ignored:
        log.info(
            "hosts options that mean nothing to channels-rs, ignored: %s",
            ", ".join(ignored),
        )
    return [_host_spec(entry) for entry in entries]


def _entry(entry):
    """`entry` as a dict of redis-py style options, every key checked."""
    if isinstance(entry, (tuple, list)):
        if len(entry) != 2:
            raise ValueError(
                f"hosts entry {entry!r} is not a (host, port) pair: give {FORMS}"
            )
        return _checked({"host": entry[0], "port": entry[1]})
    if isinstance(entry, str):
        return _checked({"address": entry})
    if not isinstance(entry, dict):
        raise TypeError(
            f"hosts entry {entry!r} is not one the layer can use: give {FORMS}"
        )
    valid = (*SERVER_KEYS, *CONNECTION_OPTIONS, *IGNORED_OPTIONS)
    unknown = [key for key in entry if key not in valid]
    if unknown:
        raise ValueError(
            f"unknown hosts option {', '.join(map(repr, unknown))}; "
            f"valid ones: {', '.join(sorted(valid))}"
        )
    return _checked(entry)


def _checked(entry):
    """`entry`, once each of its parts is one the layer can use."""
    kinds = [key for key in ("address", "host", "sentinels", "cluster") if key in entry]
    if len(kinds) > 1:
        raise ValueError(
            f"hosts entry {_shown(entry)} names its server twice "
            f"({' and '.join(kinds)}): keep one"
        )
    if "address" in entry:
        _check_url(entry["address"])
    if "host" in entry and not (isinstance(entry["host"], str) and entry["host"]):
        raise TypeError(f"hosts entry {_shown(entry)}: host must be a non-empty str")
    for key, low, high in (("port", 1, 65535), ("db", 0, None)):
        value = entry.get(key, low)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"hosts entry {_shown(entry)}: {key} must be a number")
        if high is not None and value > high:
            raise ValueError(f"hosts entry {_shown(entry)}: no port {value}")
    if "sentinels" in entry:
        sentinels = entry["sentinels"]
        if not sentinels or not all(
            isinstance(s, (tuple, list)) and len(s) == 2 for s in sentinels
        ):
            raise ValueError(
                f"hosts entry {_shown(entry)}: sentinels must be a list of "
                '(host, port) pairs, e.g. [("sentinel1", 26379)]'
            )
        if not isinstance(entry.get("master_name"), str):
            raise ValueError(
                f"hosts entry {_shown(entry)} needs master_name: the name the "
                'Sentinels monitor the master by (often "mymaster")'
            )
    elif "master_name" in entry:
        raise ValueError(
            f"hosts entry {_shown(entry)} has master_name but no sentinels: "
            'add "sentinels": [(host, port), ...]'
        )
    if "cluster" in entry:
        nodes = entry["cluster"]
        if isinstance(nodes, str) or not nodes:
            raise ValueError(
                f"hosts entry {_shown(entry)}: cluster must be a list of startup "
                'node URLs, e.g. ["redis://node1:7000"]'
            )
        for node in nodes:
            _check_url(node)
    for key in SECONDS:
        value = entry.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, Real) or value < 0
        ):
            raise ValueError(
                f"hosts entry {_shown(entry)}: {key} must be a number of seconds, "
                f"not {value!r}"
            )
    return entry


def _check_url(url):
    """Raises, naming the fix, unless `url` is a URL the layer can reach."""
    if not isinstance(url, str):
        raise TypeError(f"a Redis URL must be a str, not {type(url).__name__}: {url!r}")
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError(
            f"hosts entry {url!r} has no scheme: write 'redis://{url}' "
            f"(schemes: {SCHEMES_TEXT})"
        )
    if scheme.lower() not in SCHEMES:
        raise ValueError(
            f"hosts entry {_printable(url)!r} has the scheme {scheme!r}, which "
            f"the layer cannot use: use {SCHEMES_TEXT}"
        )
    if scheme.endswith("unix"):
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as error:
        raise ValueError(f"hosts entry {_printable(url)!r}: {error}") from None
    if not parts.hostname:
        raise ValueError(
            f"hosts entry {_printable(url)!r} names no host: write redis://host:6379"
        )


def _shown(entry):
    """`entry` for an error message: no password."""
    hidden = {"password", "sentinel_kwargs"}
    shown = {k: "..." if k in hidden else v for k, v in entry.items()}
    if isinstance(shown.get("address"), str):
        shown["address"] = _printable(shown["address"])
    return repr(shown)


def _host_spec(entry):
    spec = {name: entry[name] for name in CONNECTION_OPTIONS if name in entry}
    if "cluster" in entry:
        # Startup nodes of a Redis Cluster; the rest is discovered.
        nodes = list(entry["cluster"])
        spec["cluster"] = nodes
        spec["url"] = nodes[0]
        spec["name"] = "cluster " + ", ".join(_printable(url) for url in nodes)
        return spec
    if "sentinels" in entry:
        auth = _auth(entry.get("sentinel_kwargs") or {})
        spec["sentinels"] = [
            f"redis://{auth}{host}:{port}" for host, port in entry["sentinels"]
        ]
        spec["master_name"] = entry["master_name"]
        # Only the master's credentials and db: Sentinel names its address.
        spec["url"] = f"redis://{_auth(entry)}sentinel-master/{entry.get('db', 0)}"
        addresses = ", ".join(f"{host}:{port}" for host, port in entry["sentinels"])
        spec["name"] = f"{entry['master_name']!r} via Sentinel {addresses}"
        return spec
    if "address" in entry:
        spec["url"] = entry["address"]
    else:
        host, port = entry.get("host", "localhost"), entry.get("port", 6379)
        scheme = "rediss" if entry.get("ssl") else "redis"
        spec["url"] = f"{scheme}://{_auth(entry)}{host}:{port}/{entry.get('db', 0)}"
    spec["name"] = _printable(spec["url"])
    # redis-py: ssl_cert_reqs "none", ssl.CERT_NONE or None turns checks off.
    if "ssl_cert_reqs" in entry and entry["ssl_cert_reqs"] in (None, "none", CERT_NONE):
        spec["url"] += "#insecure"
    return spec


def _auth(options):
    """The user:password@ part of a URL, from redis-py style options."""
    password = options.get("password")
    if not password:
        return ""
    return (
        f"{quote(options.get('username') or '', safe='')}:{quote(password, safe='')}@"
    )


def _printable(url):
    """The URL without user name, password or fragment."""
    scheme, sep, rest = url.partition("#")[0].partition("://")
    return scheme + sep + rest.rpartition("@")[2] if sep else url
