"""The demo's story end to end on real machines: states asserted, not timings.

A shorter tour than `make demo` (no rolling update): the KV store with a member killed,
service discovery through a sidekick's TTL key, and fleet placing units by metadata,
Conflicts and Global, then moving a unit off a machine that was powered off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import leftovers


def test_the_tour_tells_its_story_and_stops_cleanly(cluster_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "corral", "demo", "--dir", str(cluster_dir),
         "--steps", "kv,discovery,fleet", "--stop", "--timeout", "90"],
        capture_output=True, text=True, timeout=280, stdin=subprocess.DEVNULL,
        env=dict(os.environ, COLUMNS="250"),
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    for line in (
        "written on m1, read on m3",
        "a watch on m2 fired for a write on m1",
        "killed; the cluster kept serving writes",
        "was restarted by its unit runner and caught up",
        "m3 found hello at 127.0.0.1:",
        "sidekick stopped: the announcement expired with its TTL",
        "web@1/web@2 on the two role=web machines",
        "web@3 stays unplaced",
        "worker.service now runs on",
        "booted again and rejoined the KV cluster",
    ):
        assert line in text, f"missing {line!r} in:\n{text}"
    assert "FAILED" not in text
    assert leftovers(cluster_dir) == []
