"""The test project deployed as Django projects are, with the Redis core and
pub/sub layers: Django's own test runner on WebsocketCommunicator tests and
then a ChannelsLiveServerTestCase (alone, and with --parallel), and
gunicorn --preload with uvicorn workers and the layer made in the master.
Every one forks after the layer exists."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from websockets.sync.client import connect

from channels_rs import RedisChannelLayer, RedisPubSubChannelLayer
from redis_server import free_port

TESTS = Path(__file__).parent
KINDS = {"redis": RedisChannelLayer, "pubsub": RedisPubSubChannelLayer}


@pytest.fixture(params=list(KINDS))
def project(request, tmp_path):
    """The environment the project runs in, and the layer it uses."""
    kind = KINDS[request.param]
    redis = request.getfixturevalue("own_redis")  # nothing else's keys there
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "TEST"))}
    env.update(
        DJANGO_SETTINGS_MODULE="testproject.settings_deployments",
        TESTPROJECT_REDIS_URL=redis.url,
        TESTPROJECT_LAYER=f"channels_rs.{kind.__name__}",
        TESTPROJECT_DATABASE=str(tmp_path / "db.sqlite3"),
        PYTHONPATH=str(TESTS),
    )
    return env, kind(hosts=[redis.url])


def django_test(env, *arguments):
    """`python -m django test` on the deployment test cases; its report."""
    done = subprocess.run(
        [sys.executable, "-m", "django", "test", *arguments],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stderr


def test_django_test_runner_communicators_then_a_live_server(project):
    env, _ = project
    report = django_test(env, "testproject.deployments")
    assert "Ran 5 tests" in report and "\nOK" in report, report


def test_django_test_runner_in_parallel(project):
    """Workers forked after the import; the live server cannot run in one
    (daemonic processes may have no children), so communicators only."""
    env, _ = project
    classes = ("", "More", "YetMore", "Last")
    labels = [f"testproject.deployments.{c}CommunicatorTests" for c in classes]
    report = django_test(env, "--parallel", "2", *labels)
    assert "Ran 4 tests" in report and "\nOK" in report, report


def serving(port, process, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "gunicorn stopped"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("gunicorn never listened")


def clients_on_every_worker(sockets, port, workers, most=40):
    """Websockets to the pid consumer, entered into `sockets` (an
    ExitStack), until every worker serves some."""
    clients, pids = [], set()
    while len(pids) < workers:
        assert len(clients) < most, f"only {pids} of {workers} workers seen"
        url = f"ws://127.0.0.1:{port}/ws/pid/"
        client = sockets.enter_context(connect(url, open_timeout=5))
        pids.add(client.recv(timeout=5))
        clients.append(client)
    return clients


def test_gunicorn_preload_reaches_clients_on_every_worker(project):
    env, layer = project
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "--preload", "--workers", "2"),
            *("--worker-class", "uvicorn_worker.UvicornWorker"),
            *("--bind", f"127.0.0.1:{port}", "testproject.preloaded:application"),
        ],
        cwd=TESTS,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        serving(port, server)
        with contextlib.ExitStack() as sockets:
            clients = clients_on_every_worker(sockets, port, workers=2)
            sent = [f"broadcast-{n}" for n in range(20)]
            for text in sent:
                message = {"type": "broadcast.message", "text": text}
                async_to_sync(layer.group_send)("broadcast", message)
            for client in clients:
                assert [client.recv(timeout=5) for _ in sent] == sent
    finally:
        server.terminate()
        server.wait(15)
