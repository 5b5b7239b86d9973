"""A test that needs what this machine lacks skips with a reason naming what
to install, the end of the run lists it, and under CI it fails instead."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
NEEDS_CHROMIUM = f"{TESTS}/test_chat_browser.py::test_two_pages_on_one_server"
WANTED = (
    "missing on this machine: Chromium and ChromeDriver "
    "(Debian: apt-get install chromium chromium-driver)"
)


def run_without_chromium(empty_path, ci):
    env = {k: v for k, v in os.environ.items() if k != "CHANNELS_RS_CI"}
    env["PATH"] = str(empty_path)
    if ci:
        env["CHANNELS_RS_CI"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", NEEDS_CHROMIUM],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=TESTS.parent,
        env=env,
    )
    return done.returncode, done.stdout


@pytest.mark.parametrize("ci", [False, True], ids=["here", "under-ci"])
def test_chromium_missing(tmp_path, ci):
    code, output = run_without_chromium(tmp_path, ci)
    if ci:
        assert code == 1, output
        assert WANTED in output and "1 error" in output, output
        assert "SKIPPED" not in output, output
    else:
        assert code == 0, output
        assert f"SKIPPED 1 tests: {WANTED}" in output, output
        assert "1 skipped" in output, output
