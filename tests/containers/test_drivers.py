"""Real containers on podman and plain runc through `corral containers`: exit codes, images."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from corral.containers.images import import_image, list_images, remove_image
from corral.containers.settings import (
    RUNROOT_MAX,
    MachinePaths,
    load_settings,
    podman_env,
    save_settings,
)

from .conftest import CORRAL


def containers(root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CORRAL, "containers", "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_output_and_exit_code_propagate(machine: Path) -> None:
    r = containers(
        machine,
        "run",
        "--rm",
        "--name",
        "c1",
        "-e",
        "WHO=corral",
        "busybox",
        "sh",
        "-c",
        "echo hello $WHO; exit 3",
    )
    assert r.stdout == "hello corral\n"
    assert r.returncode == 3


def test_missing_executable_is_127(machine: Path) -> None:
    r = containers(machine, "run", "--rm", "--name", "c2", "busybox", "/no/such/binary")
    assert r.returncode == 127


def test_network_policy_refuses_bridge(machine: Path) -> None:
    r = containers(machine, "run", "--rm", "--network", "bridge", "busybox", "true")
    assert r.returncode == 125
    assert "not allowed" in r.stderr


def test_images_import_list_rm(machine: Path, busybox_tar: Path) -> None:
    settings = load_settings(machine)
    import_image(machine, settings, busybox_tar, "scratch:1")
    names = {i.name for i in list_images(machine, settings)}
    assert {"localhost/busybox:latest", "localhost/scratch:1"} <= names
    remove_image(machine, settings, "scratch:1")
    names = {i.name for i in list_images(machine, settings)}
    assert "localhost/scratch:1" not in names
    assert "localhost/busybox:latest" in names


def test_long_machine_roots_run_without_podmans_cleanup_timeout(busybox_tar: Path) -> None:
    # the usual runroot of this root passes podman's 50-character limit; the short one fits
    base = Path(tempfile.mkdtemp(prefix="crl-"))
    root = base / "machine-with-a-long-name"
    assert len(str(root / "run/containers/storage")) > RUNROOT_MAX
    assert len(str(MachinePaths(root).runroot)) <= RUNROOT_MAX
    settings = save_settings(root, load_settings(root), driver="podman")
    try:
        import_image(root, settings, busybox_tar, "busybox")
        started = time.monotonic()
        r = containers(root, "run", "--rm", "--name", "long", "busybox", "true")
        elapsed = time.monotonic() - started
        assert r.returncode == 0, r.stderr
        assert elapsed < 15, f"podman run took {elapsed:.1f}s (cleanup refused the runroot?)"
    finally:
        subprocess.run(
            [settings.podman, "system", "reset", "--force"],
            env={**os.environ, **podman_env(root)},
            capture_output=True,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)
