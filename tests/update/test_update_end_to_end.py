"""End to end on real processes: `corral update-server` and `corral update-agent run`.

1.0.0 → 1.1.0: the machine updates, "reboots" (its service restarts from slot b and really
runs 1.1.0's code), is marked good and reports 3/2 with previousversion 1.0.0. Then 1.2.0,
whose service exits at start: the boot is given up, the machine falls back to 1.1.0 by
itself and reports 3/0 with corral code 3001 (a service exited); the server records the
failure, halts 1.2.0's rollout and offers nothing more.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner

from corral.cli.update import cli as update_cli
from corral.cli.update_agent import cli as agent_cli
from corral.cli.updatectl import cli as updatectl_cli
from corral.testing.ports import free_port
from corral.update.payload import build_payload, load_private_key, sign_payload

from .conftest import SOURCE

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float = 60.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "corral", *args], stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in reversed(started):
        _stop(p)


def _json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_update_reboot_good_then_fallback(tmp_path: Path, release_key: tuple[bytes, bytes],
                                          procs: list[subprocess.Popen[bytes]]) -> None:
    key = load_private_key(release_key[0])
    (tmp_path / "release.pub").write_bytes(release_key[1])
    for version in ("1.0.0", "1.1.0"):
        (tmp_path / f"{version}.payload").write_bytes(
            sign_payload(build_payload(SOURCE, version), key))
    broken = tmp_path / "broken-src"
    shutil.copytree(SOURCE / "corral", broken / "corral",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (broken / "corral/__main__.py").write_text("raise SystemExit(3)\n")
    (tmp_path / "1.2.0.payload").write_bytes(sign_payload(build_payload(broken, "1.2.0"), key))

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs.append(_spawn(["update-server", "--data-dir", str(tmp_path / "srv"), "--port",
                         str(port)], tmp_path / "server.log"))

    def server_up() -> bool:
        try:
            _json(base + "/api/apps")
            return True
        except OSError:
            return False

    eventually(server_up, 30, "the update server")
    ctl = CliRunner()

    def updatectl(*args: str) -> str:
        r = ctl.invoke(updatectl_cli, ["--server", base, *args])
        assert r.exit_code == 0, r.output
        return r.output

    updatectl("package", "upload", str(tmp_path / "1.0.0.payload"))
    updatectl("package", "upload", str(tmp_path / "1.1.0.payload"))
    updatectl("channel", "set", "stable", "1.0.0")

    root = tmp_path / "m"
    r = ctl.invoke(agent_cli, ["provision", "--root", str(root), "--payload",
                               str(tmp_path / "1.0.0.payload"), "--trusted-key",
                               str(tmp_path / "release.pub")])
    assert r.exit_code == 0, r.output
    procs.append(_spawn([
        "update-agent", "run", "--root", str(root), "--server", base + "/v1/update/",
        "--health-period", "0.5", "--boot-deadline", "30", "--initial-check", "0.2",
        "--initial-fuzz", "0", "--interval", "0.4", "--interval-fuzz", "0.1",
        "--reboot-strategy", "reboot", "--seed", "1",
    ], tmp_path / "agent.log"))

    def agent_status() -> dict[str, Any] | None:
        r = ctl.invoke(update_cli, ["status", "--root", str(root), "--json"])
        return json.loads(r.output) if r.exit_code == 0 else None

    def service() -> dict[str, Any] | None:
        try:
            return dict(json.loads((root / "run/service-status.json").read_text()))
        except (OSError, ValueError):
            return None

    def status_where(cond: Callable[[dict[str, Any]], bool]) -> Callable[[], Any]:
        return lambda: (s := agent_status()) is not None and cond(s) and s

    eventually(status_where(lambda s: s["slot_good"] and s["LAST_CHECKED_TIME"] > 0), 60,
               "1.0.0 to be good and checking")
    eventually(lambda: (s := service()) is not None and s["version"] == "1.0.0", 30,
               "the service to run 1.0.0")
    plain = ctl.invoke(update_cli, ["status", "--root", str(root)]).output
    assert "CURRENT_OP=UPDATE_STATUS_IDLE" in plain and "NEW_VERSION=0.0.0" in plain

    # ---- 1.1.0: update, reboot into slot b running 1.1.0's code, marked good.
    watcher = _spawn(["update", "watch", "--root", str(root), "--json"], tmp_path / "watch.log")
    procs.append(watcher)
    eventually(lambda: (tmp_path / "watch.log").stat().st_size > 0, 30, "the watcher")
    updatectl("channel", "set", "stable", "1.1.0")
    eventually(status_where(lambda s: s["version"] == "1.1.0" and s["slot_good"]), 60,
               "the machine to run 1.1.0 and be good")
    svc = eventually(lambda: (s := service()) is not None and s["version"] == "1.1.0" and s,
                     30, "the service to run 1.1.0")
    assert Path(svc["file"]).resolve() == (root / "slots/b/corral/__init__.py").resolve()

    def events() -> list[dict[str, Any]]:
        return list(_json(base + "/api/events"))

    def lifecycle() -> list[tuple[int, int, int | None, str | None, str]]:
        # Everything except routine "3/2, no previous version" check-ins.
        return [(e["type"], e["result"], e["error_code"], e["previous_version"], e["version"])
                for e in events() if (e["type"], e["result"], e["previous_version"]) != (3, 2, "")]

    eventually(lambda: any(e[3] == "1.0.0" for e in lifecycle()), 30, "3/2 after reboot")
    assert lifecycle() == [
        (3, 2, None, "0.0.0.0", "1.0.0"),
        (13, 1, None, None, "1.0.0"),
        (14, 1, None, None, "1.0.0"),
        (3, 1, None, None, "1.0.0"),
        (3, 2, None, "1.0.0", "1.1.0"),
    ]
    instance = _json(base + "/api/instances")[0]
    assert (instance["status_name"], instance["version"]) == ("COMPLETE", "1.1.0")
    _stop(watcher)
    ops = [json.loads(line)["CURRENT_OP"].removeprefix("UPDATE_STATUS_")
           for line in (tmp_path / "watch.log").read_text().splitlines()]
    start = ops.index("UPDATE_AVAILABLE")
    assert ops[start - 1:start + 5] == ["CHECKING_FOR_UPDATE", "UPDATE_AVAILABLE", "DOWNLOADING",
                                        "FINALIZING", "UPDATED_NEED_REBOOT", "IDLE"]
    assert "COMPLETE" in updatectl("instance", "list")
    assert "1.1.0" in updatectl("group", "list")

    # ---- 1.2.0: its service exits at start; the machine falls back by itself.
    updatectl("package", "upload", str(tmp_path / "1.2.0.payload"))
    updatectl("channel", "set", "stable", "1.2.0")
    st = eventually(status_where(lambda s: s["fell_back_from"] == ["1.2.0"] and s["slot_good"]),
                    90, "the fallback to 1.1.0")
    assert st["version"] == "1.1.0" and st["slot"] == "b"
    slot_a = next(s for s in st["slots"] if s["name"] == "a")
    assert (slot_a["version"], slot_a["successful"], slot_a["tries"]) == ("1.2.0", False, 0)
    assert service()["version"] == "1.1.0"  # type: ignore[index]
    eventually(lambda: any(e[:3] == (3, 0, 3001) for e in lifecycle()), 30, "3/0 code 3001")
    assert lifecycle()[5:] == [
        (13, 1, None, None, "1.1.0"),
        (14, 1, None, None, "1.1.0"),
        (3, 1, None, None, "1.1.0"),
        (3, 0, 3001, None, "1.1.0"),
    ]
    instance = _json(base + "/api/instances")[0]
    assert instance["status_name"] == "ERROR" and instance["failed_versions"] == ["1.2.0"]
    rollout = _json(base + "/v1/rollout/stable")
    assert rollout["halted"] and rollout["halts"][0]["code_name"] == "CORRAL_SERVICE_EXITED"

    # Further checks install nothing.
    seen = len(events())
    eventually(lambda: len(events()) >= seen + 3, 30, "three more checks")
    assert lifecycle()[-1][:3] == (3, 0, 3001)
    r = ctl.invoke(update_cli, ["check", "--root", str(root), "--wait", "20"])
    assert r.exit_code == 0 and "No update available." in r.output, r.output
    final = agent_status()
    assert final is not None and final["version"] == "1.1.0" and final["boots"] == 4
    activity = [a["message"] for a in _json(base + "/api/activity")]
    assert "check at 1.1.0: instance failed on 1.2.0 before" in activity
    assert "INSTALLED -> ERROR" in updatectl("activity")
    listed = updatectl("events").splitlines()
    assert listed[0].split()[:3] == ["SEQ", "INSTANCE", "VERSION"] and len(listed) > 10
