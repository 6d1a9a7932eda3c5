"""Boot assessment and the per-check event, on a virtual clock."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from corral.update.agent import service_reported
from corral.update.health import BootHealth, Verdict, check_event, fell_back
from corral.update.omaha import Event


def test_good_after_a_continuous_healthy_period() -> None:
    h = BootHealth(period=45, deadline=300, booted_at=1000)
    assert h.observe(1000, True) == Verdict.WAIT
    assert h.observe(1044, True) == Verdict.WAIT
    assert h.observe(1045, True) == Verdict.CHECK
    h.mark_good()
    assert h.observe(2000, False) == Verdict.GOOD


def test_a_dead_service_restarts_the_count() -> None:
    h = BootHealth(period=10, deadline=300, booted_at=0)
    for t in range(0, 9):
        assert h.observe(t, True) == Verdict.WAIT
    assert h.observe(9, False) == Verdict.WAIT
    assert h.observe(10, True) == Verdict.WAIT
    assert h.observe(19, True) == Verdict.WAIT
    assert h.observe(20, True) == Verdict.CHECK


def test_never_healthy_means_reboot_at_the_deadline() -> None:
    h = BootHealth(period=1, deadline=30, booted_at=0)
    verdicts = [h.observe(t / 2, t % 3 != 0) for t in range(0, 61)]
    assert Verdict.CHECK not in verdicts[:-1]
    assert verdicts[-1] == Verdict.REBOOT
    assert h.check_failed(10) == Verdict.WAIT and h.check_failed(30) == Verdict.REBOOT


def test_a_service_that_exits_ends_the_boot_at_once() -> None:
    h = BootHealth(period=5, deadline=300, booted_at=0)
    assert h.observe(1, False, exited=True) == Verdict.REBOOT
    h.mark_good()
    assert h.observe(2, False, exited=True) == Verdict.GOOD  # later exits are not a rollback


def test_check_event_is_update_engines() -> None:
    assert check_event(None, "1.0.0") == Event(3, 2, None, "0.0.0.0")
    assert check_event("", "1.1.0") == Event(3, 2, None, "")
    assert check_event("1.0.0", "1.1.0") == Event(3, 2, None, "1.0.0")
    assert check_event("1.1.0", "1.1.0") == Event(3, 0, 44)


def test_fell_back() -> None:
    assert fell_back("1.2.0", "1.1.0")
    assert not fell_back("1.2.0", "1.2.0") and not fell_back(None, "1.1.0")


def test_the_default_service_is_ready_once_it_reported_a_live_pid(tmp_path: Path) -> None:
    status = tmp_path / "service-status.json"
    assert not service_reported(status)
    status.write_text(json.dumps({"pid": os.getpid(), "version": "1.0.0"}))
    assert service_reported(status)
    gone = subprocess.Popen(["true"])
    gone.wait()
    status.write_text(json.dumps({"pid": gone.pid}))
    assert not service_reported(status)
    status.write_text("{torn")
    assert not service_reported(status)
