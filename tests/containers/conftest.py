"""Machines with their own container storage, a busybox image, and the leftover checks.

Importing an image into podman's storage costs seconds, so each test worker keeps one machine
per driver for the whole session. Every test must remove its containers (checked after each
test), and at the end of the session no machine may hold a container (checked, then the
machine's storage is reset).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.containers.drivers import driver_for
from corral.containers.images import build_busybox_tar, import_image
from corral.containers.settings import load_settings, save_settings

CORRAL = [sys.executable, "-m", "corral"]
DRIVERS = ("podman", "runc")


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_tar(tmp_path_factory.mktemp("img") / "busybox.tar")


def _leftovers(root: Path) -> list[str]:
    return [c.name for c in driver_for(root, load_settings(root)).list()]


@pytest.fixture(scope="session")
def machines(
    tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path
) -> Iterator[dict[str, Path]]:
    """One machine root per driver, busybox imported; session-wide check for leftovers."""
    # short roots: podman 4.3 needs a runroot of at most 50 characters (settings.RUNROOT_MAX),
    # which pytest's own temporary folders are too deep for
    base = Path(tempfile.mkdtemp(prefix="crl-"))
    roots: dict[str, Path] = {}
    for name in DRIVERS:
        root = base / name
        # a short stop timeout: busybox PID 1 ignores SIGTERM, so every stop waits it out
        settings = save_settings(root, load_settings(root), driver=name, stop_timeout=2)
        import_image(root, settings, busybox_tar, "busybox")
        roots[name] = root
    yield roots
    left: dict[str, list[str]] = {}
    for name, root in roots.items():
        settings = load_settings(root)
        driver = driver_for(root, settings)
        names = _leftovers(root)
        if names:
            left[name] = names
        for n in names:
            driver.remove(n, force=True)
        if name == "podman":
            subprocess.run(
                [settings.podman, "system", "reset", "--force"],
                env={**os.environ, **driver.env()},
                capture_output=True,
                check=False,
            )
    shutil.rmtree(base, ignore_errors=True)
    assert left == {}, f"containers left behind by the suite: {left}"


@pytest.fixture(params=DRIVERS)
def machine(request: pytest.FixtureRequest, machines: dict[str, Path]) -> Iterator[Path]:
    """The session machine for one driver; the test must leave no container behind."""
    root = machines[request.param]
    yield root
    leftovers = _leftovers(root)
    driver = driver_for(root, load_settings(root))
    for n in leftovers:
        driver.remove(n, force=True)
    assert leftovers == [], f"containers left behind: {leftovers}"
