"""Fixtures for the units tests, and the check that no test leaves a process behind.

Every runner started by these tests puts `CORRAL_TEST_SCOPE=<id>` into its units'
environment (DefaultEnvironment=), and daemons get it in their own environment; after each
test we wait until no process carries the test's id, and fail the test if one does.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _carrying(marker: bytes) -> dict[int, str]:
    found: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry.name}/environ").read_bytes()
            if marker not in env.split(b"\0"):
                continue
            stat = Path(f"/proc/{entry.name}/stat").read_bytes()
            if stat.rpartition(b")")[2].split()[:1] == [b"Z"]:
                continue
            cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        found[int(entry.name)] = cmd.decode(errors="replace").strip()
    return found


@pytest.fixture(autouse=True)
def scope() -> Iterator[tuple[str, str]]:
    """(name, value) of the environment variable that marks this test's processes."""
    value = uuid.uuid4().hex
    yield ("CORRAL_TEST_SCOPE", value)
    marker = f"CORRAL_TEST_SCOPE={value}".encode()
    deadline = time.monotonic() + 10
    left = _carrying(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _carrying(marker)
    if left:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail(f"processes left behind by the test: {left}")
