"""`corral demo` (what `make demo` runs) completes and shows the watch firing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "corral", "demo", "--root", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "the watch fired" in out.stdout
    assert "[red != blue]" in out.stdout
    assert (tmp_path / "demo" / "demo.etcd" / "member" / "wal").is_dir()


def test_bad_sync_interval_is_a_clear_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "corral", "etcd", f"--data-dir={tmp_path}/d"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "CORRAL_ETCD_SYNC_INTERVAL": "soon"},
    )
    assert out.returncode == 1
    assert "invalid CORRAL_ETCD_SYNC_INTERVAL 'soon'" in out.stderr
    assert "Traceback" not in out.stderr
