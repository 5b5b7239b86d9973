"""The ``hosts`` entries channels_redis accepts, turned into what the Rust
core needs to reach each server."""

import logging
from ssl import CERT_NONE
from urllib.parse import quote

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

log = logging.getLogger("channels_rs")


def host_specs(hosts):
    """What the Rust core needs to reach each ``hosts`` entry, from every form
    channels_redis accepts: URL strings, (host, port) pairs, dicts with an
    "address" or host/port/db/password, and Sentinel dicts."""
    if not hosts:
        hosts = [{"address": "redis://localhost:6379"}]
    if isinstance(hosts, (str, bytes)):
        raise ValueError(
            "You must pass a list of Redis hosts, even if there is only one."
        )
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
        return {"host": entry[0], "port": entry[1]}
    if not isinstance(entry, dict):
        return {"address": entry}
    valid = (*SERVER_KEYS, *CONNECTION_OPTIONS, *IGNORED_OPTIONS)
    unknown = [key for key in entry if key not in valid]
    if unknown:
        raise ValueError(
            f"unknown hosts option {', '.join(map(repr, unknown))}; "
            f"valid ones: {', '.join(sorted(valid))}"
        )
    return entry


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
