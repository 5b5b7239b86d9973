"""What this project exists for: users on different servers, and a background
task in a third process reaching all of them, through one Redis."""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets

from redis_server import command, free_port
from serve import daphne

TESTS = Path(__file__).resolve().parent


def project_environment(redis):
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="testproject.settings",
        PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
        TESTPROJECT_REDIS_URL=redis.url,
    )
    return env


@pytest.fixture
def two_servers(redis):
    env = project_environment(redis)
    ports, processes = [free_port(), free_port()], []
    try:
        for port in ports:
            processes.append(
                daphne(
                    port,
                    env,
                    cwd=TESTS,
                    application="testproject.asgi:application",
                    stderr=subprocess.DEVNULL,
                )
            )
        yield ports
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


async def test_clients_on_two_daphne_servers_get_a_broadcast_from_a_third_process(
    two_servers, redis
):
    first, second = two_servers
    urls = [
        f"ws://127.0.0.1:{first}/ws/async/",
        f"ws://127.0.0.1:{first}/ws/sync/",
        f"ws://127.0.0.1:{second}/ws/async/",
        f"ws://127.0.0.1:{second}/ws/sync/",
    ]
    clients = [await websockets.connect(url) for url in urls]
    try:
        await asyncio.sleep(0.2)  # the consumers' group_add has landed
        broadcast = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "django",
            "broadcast",
            "from a background task",
            env=project_environment(redis),
            cwd=TESTS,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await broadcast.communicate()
        assert broadcast.returncode == 0, err.decode()
        for client in clients:
            assert await asyncio.wait_for(client.recv(), 5) == "from a background task"

        await clients[0].send("typed on the first server")
        for client in clients:
            assert (
                await asyncio.wait_for(client.recv(), 5) == "typed on the first server"
            )
    finally:
        for client in clients:
            await client.close()
        # Stop the servers only once every consumer has left the group: a
        # sync consumer still in disconnect() when SIGTERM stops Daphne's
        # loop waits forever in async_to_sync (a Daphne/asgiref shutdown
        # race, with any channel layer).
        deadline = time.monotonic() + 5
        while command(redis.port, "ZCARD", "asgi:group:broadcast") != b":0\r\n":
            assert time.monotonic() < deadline, "consumers never left the group"
            await asyncio.sleep(0.02)
