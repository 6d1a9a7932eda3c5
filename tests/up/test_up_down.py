"""`corral up` starts real `corral node` machines; `corral down` and Ctrl-C leave nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from .conftest import corral, eventually, leftovers


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return bool(json.load(resp).get("health") == "true")
    except (OSError, ValueError):
        return False


def test_up_detached_then_down_leaves_nothing_running(cluster_dir: Path) -> None:
    out = corral("up", "--machines", "2", "--dir", str(cluster_dir), "--detach",
                 "--no-updates")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "corral down --dir" in out.stdout
    state = json.loads((cluster_dir / "corral-up.json").read_text())
    assert state["version"] == 1
    ports = [m["client_port"] for m in state["machines"]]
    assert not {2379, 2380} & set(ports)
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    # One KV cluster of two members, each machine with its fleetd registered.
    with urllib.request.urlopen(urls[0] + "/v2/members", timeout=5) as resp:
        assert len(json.load(resp)["members"]) == 2
    fleet = corral("fleet", "--endpoint", ",".join(urls), "list-machines", "--no-legend")
    assert fleet.returncode == 0, fleet.stderr
    eventually(lambda: len(corral("fleet", "--endpoint", ",".join(urls), "list-machines",
                                  "--no-legend").stdout.splitlines()) == 2, 60, "2 fleet machines")
    assert leftovers(cluster_dir)

    again = corral("up", "--machines", "2", "--dir", str(cluster_dir), "--detach")
    assert again.returncode == 1
    assert "already running" in again.stderr

    down = corral("down", "--dir", str(cluster_dir))
    assert down.returncode == 0, down.stderr
    assert leftovers(cluster_dir) == []
    assert not any(_healthy(u) for u in urls)
    missing = corral("down", "--dir", str(cluster_dir / "nothing"))
    assert missing.returncode == 1 and "no cluster here" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_ctrl_c_stops_a_foreground_up(cluster_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "up", "-n", "1", "--dir", str(cluster_dir),
         "--no-updates", "--fleet", "off", "--refresh", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        state = cluster_dir / "corral-up.json"
        eventually(state.exists, 60, "the state file")

        def healthy() -> bool:
            doc = json.loads(state.read_text())
            return bool(doc["machines"]) and _healthy(
                f"http://127.0.0.1:{doc['machines'][0]['client_port']}")

        eventually(healthy, 90, "the member healthy")
        assert leftovers(cluster_dir)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "stopping" in out
    assert leftovers(cluster_dir) == []


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    out = corral("up", "--machines", "12", "--dir", str(tmp_path / "c"))
    assert out.returncode == 1
    assert "between 1 and 9" in out.stderr and "Traceback" not in out.stderr
    out = corral("demo", "--steps", "kv,nope", "--dir", str(tmp_path / "d"))
    assert out.returncode == 2 and "unknown step" in out.stderr
