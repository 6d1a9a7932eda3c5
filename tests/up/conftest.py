"""Helpers for `corral up` tests: run corral commands, find a cluster's processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral.up import load_state, stop_cluster
from corral.up.cluster import machine_processes

__all__ = ["corral", "eventually", "leftovers"]


def corral(*args: str, timeout: float = 280, wide: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `corral ARGS`; `wide` gives rich a 250-column terminal, so the lines a test looks
    for are not wrapped."""
    env = dict(os.environ, COLUMNS="250") if wide else None
    return subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)


def eventually(check: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def leftovers(directory: Path) -> list[int]:
    """Processes still running for the cluster in `directory` (by root marker or command)."""
    roots = [directory / f"m{i}" for i in range(1, 10)]
    return machine_processes(roots, directory)


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    """A cluster folder; whatever a failed test left running in it is stopped."""
    d = tmp_path / "cluster"
    yield d
    if (d / "corral-up.json").exists() and leftovers(d):
        stop_cluster(load_state(d), timeout=10, say=lambda _: None)
