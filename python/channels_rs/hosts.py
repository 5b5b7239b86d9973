"""The ``hosts`` entries channels_redis accepts, turned into what the Rust
core needs to reach each server."""

from ssl import CERT_NONE
from urllib.parse import quote

# redis-py's options that the Rust core reads from an entry as they are.
CONNECTION_OPTIONS = (
    "socket_connect_timeout",
    "socket_timeout",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
)


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
    return [_host_spec(entry) for entry in hosts]


def _host_spec(entry):
    if isinstance(entry, (tuple, list)):
        entry = {"host": entry[0], "port": entry[1]}
    elif not isinstance(entry, dict):
        entry = {"address": entry}
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
