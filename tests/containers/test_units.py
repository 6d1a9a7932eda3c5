"""Containers in units on real runtimes (podman and plain runc), through the unit runner.

`.container` units are generated into services, fleet-era `docker` Exec lines are mapped onto
the machine's driver, and stopping a unit always removes its container.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.cli.units import cli as units_cli
from corral.containers.drivers import driver_for
from corral.containers.settings import load_settings
from corral.containers.units import container_name, describe_container
from corral.testing.ports import free_port
from corral.units.api import ControlError, UnitsClient
from corral.units.config import Defaults
from corral.units.supervisor import UnitRunner

from .conftest import CORRAL

Body = Callable[[UnitRunner], Awaitable[None]]


def run(root: Path, body: Body) -> None:
    d = Defaults(timeout_start=60.0, timeout_stop=60.0, restart_sec=0.1)

    async def main() -> None:
        async with UnitRunner(root, hostname="node1", defaults=d) as runner:
            await asyncio.wait_for(body(runner), 120)

    asyncio.run(main())


async def eventually(check: Callable[[], bool], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def journal_has(r: UnitRunner, unit: str, text: str) -> Callable[[], bool]:
    return lambda: any(text in line for line in r.journal.tail(unit, 200))


def test_container_name_is_read_from_run_lines() -> None:
    assert container_name(["/usr/bin/docker", "run", "--name", "web1", "busybox"]) == "web1"
    assert container_name(["podman", "--root", "/r", "run", "--name=x", "bb", "sh"]) == "x"
    assert container_name(["py", "-m", "corral", "containers", "--root", "/r", "run", "bb"]) == ""
    assert container_name(["/usr/bin/docker", "stop", "web1"]) == ""
    assert container_name(["/bin/sleep", "1"]) == ""


GREETER = """\
[Unit]
Description=greeter
[Container]
Image=busybox
Exec=sh -c 'trap "echo bye; exit 0" TERM; echo hello $$WHO; while :; do sleep 0.1; done'
Environment=WHO=quadlet
[Install]
WantedBy=multi-user.target
"""


def test_container_unit_starts_logs_shows_and_stops(machine: Path) -> None:
    driver = driver_for(machine, load_settings(machine))

    async def body(r: UnitRunner) -> None:
        st = r.load_unit("greet.container", GREETER)
        assert (st.name, st.load_state) == ("greet.service", "loaded")
        assert r.enable("greet.service") == ["multi-user.target"]  # [Install] honoured
        assert await r.start_unit("greet.service") == "done"
        await eventually(journal_has(r, "greet.service", "hello quadlet"))
        st = r.status("greet.service")
        assert (st.active_state, st.sub_state) == ("active", "running")
        assert st.container == "systemd-greet"  # Quadlet's default name, systemd-%N
        state = driver.state("systemd-greet")
        assert state is not None and state.status == "running" and state.id
        assert describe_container(machine, "systemd-greet").startswith(
            f"systemd-greet (running, id {state.id[:12]})"
        )
        await r.stop_unit("greet.service")
        st = r.status("greet.service")
        assert (st.active_state, st.result) == ("inactive", "success")
        assert driver.state("systemd-greet") is None
        r.disable("greet.service")
        await r.unload("greet.container")  # either name; the .container file goes too
        assert not _files(machine / "run/corral/units", "greet.*")
        assert r.status("greet.service").load_state == "not-found"

    run(machine, body)


def _files(folder: Path, pattern: str) -> list[Path]:
    return list(folder.glob(pattern))


def test_exit_codes_and_restart_of_a_crashing_container(machine: Path) -> None:
    failing = "[Container]\nImage=busybox\nExec=sh -c 'echo failing; exit 3'\n"
    crashing = (
        "[Container]\nImage=busybox\nExec=sh -c 'echo crashing; exit 4'\n"
        "[Service]\nRestart=on-failure\nRestartSec=100ms\n"
        "StartLimitIntervalSec=0\n"
    )
    done = "[Container]\nImage=busybox\nExec=sh -c 'echo done'\n"

    async def body(r: UnitRunner) -> None:
        for name, text in (("fail", failing), ("crash", crashing), ("done", done)):
            r.load_unit(f"{name}.container", text)
        await asyncio.gather(*(r.start_unit(f"{n}.service") for n in ("fail", "crash", "done")))
        await eventually(lambda: r.status("fail.service").active_state == "failed")
        st = r.status("fail.service")
        assert (st.result, st.exec_main_code, st.exec_main_status) == ("exit-code", "exited", "3")
        assert any("failing" in line for line in r.journal.tail("fail.service", 50))
        await eventually(lambda: r.status("done.service").exec_main_code == "exited")
        await eventually(lambda: r.status("done.service").active_state == "inactive")
        st = r.status("done.service")
        assert (st.active_state, st.result, st.exec_main_status) == ("inactive", "success", "0")
        await eventually(lambda: r.status("crash.service").restart_count >= 1)
        await eventually(
            lambda: sum("crashing" in x for x in r.journal.tail("crash.service", 200)) >= 2
        )
        assert any("Scheduled restart job" in line for line in r.journal.tail("crash.service", 200))
        await r.stop_unit("crash.service")
        assert r.status("crash.service").active_state in ("inactive", "failed")
        for n in ("fail", "crash", "done"):
            await r.unload(f"{n}.service")

    run(machine, body)


def test_stop_of_a_container_that_ignores_sigterm(machine: Path) -> None:
    # busybox sleep as PID 1 has no SIGTERM handler: only the SIGKILL after StopTimeout ends it
    unit = "[Container]\nImage=busybox\nExec=sleep 300\nStopTimeout=1\n"
    driver = driver_for(machine, load_settings(machine))

    async def body(r: UnitRunner) -> None:
        r.load_unit("stubborn.container", unit)
        await r.start_unit("stubborn.service")

        def running() -> bool:
            s = driver.state("systemd-stubborn")
            return s is not None and s.status == "running"

        await eventually(running)
        pid = r.status("stubborn.service").main_pid
        started = time.monotonic()
        await r.stop_unit("stubborn.service")
        assert time.monotonic() - started < 30  # the stop timeout, not the runner's 60 s
        st = r.status("stubborn.service")
        assert st.active_state in ("inactive", "failed") and st.main_pid is None
        assert _gone(pid)
        assert driver.state("systemd-stubborn") is None
        await r.unload("stubborn.service")

    run(machine, body)


def _gone(pid: int | None) -> bool:
    """The process has exited (reaped, or a zombie); a pid of None/0 never ran."""
    if not pid:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[:1] == [b"Z"]
    except OSError:
        return True


def test_container_is_removed_when_the_client_dies(machine: Path) -> None:
    unit = "[Container]\nImage=busybox\nExec=sleep 300\n"
    driver = driver_for(machine, load_settings(machine))

    async def body(r: UnitRunner) -> None:
        r.load_unit("orphan.container", unit)
        await r.start_unit("orphan.service")
        await eventually(lambda: getattr(driver.state("systemd-orphan"), "status", "") == "running")
        pid = r.status("orphan.service").main_pid
        assert pid
        os.kill(pid, signal.SIGKILL)  # the client dies; the container alone would live on
        await eventually(lambda: r.status("orphan.service").active_state == "failed")
        assert r.status("orphan.service").result == "signal"
        assert driver.state("systemd-orphan") is None  # ExecStopPost removed it
        await r.unload("orphan.service")

    run(machine, body)


def test_invalid_container_unit_names_the_line_and_runner_carries_on(machine: Path) -> None:
    async def body(r: UnitRunner) -> None:
        st = r.load_unit("bad.container", "[Container]\nImage=busybox\nBogus=1\n")
        assert st.name == "bad.service" and st.load_state == "error"
        assert "bad.container:3: unsupported key 'Bogus'" in st.load_error
        st = r.load_unit("noimage.container", "[Container]\nExec=true\n")
        assert st.load_state == "error" and "no Image key" in st.load_error
        r.daemon_reload()  # re-reading broken files does not crash the runner either
        assert r.status("bad.service").load_state == "error"
        for n in ("bad", "noimage"):
            await r.unload(f"{n}.service")

    run(machine, body)


# ---- the fleet-era unit from the issue, unchanged, through a real `corral units daemon` --------

FLEET_UNIT = """\
[Unit]
Description=web1 (fleet era)

[Service]
TimeoutStartSec=0
ExecStartPre=-/usr/bin/docker kill web1
ExecStartPre=-/usr/bin/docker rm web1
ExecStartPre=-/usr/bin/docker pull busybox
ExecStart=/usr/bin/docker run --name web1 --network=host busybox httpd -f -p 127.0.0.1:{port}
ExecStop=/usr/bin/docker stop web1
"""


@pytest.fixture
def daemon(machine: Path) -> Iterator[Path]:
    proc = subprocess.Popen(
        [
            *CORRAL,
            "units",
            "--root",
            str(machine),
            "daemon",
            "--no-boot",
            "--default-timeout",
            "60s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                UnitsClient(machine, timeout=5).call("ping")
                break
            except ControlError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    raise AssertionError(f"daemon did not come up: {out}") from None
                time.sleep(0.05)
        yield machine
    finally:
        proc.send_signal(signal.SIGTERM)  # stops every unit, so no container is left
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_fleet_era_docker_unit_runs_unchanged(daemon: Path) -> None:
    port = free_port()
    cr = CliRunner()

    def units(*args: str, input: str | None = None) -> tuple[int, str]:
        r = cr.invoke(units_cli, ["--root", str(daemon), *args], input=input)
        return r.exit_code, r.output

    code, out = units("load", "web1.service", input=FLEET_UNIT.format(port=port))
    assert code == 0, out
    code, out = units("start", "web1")
    assert code == 0, out
    body = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not body:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                body = resp.read()
        except OSError:
            time.sleep(0.1)
    assert body == b"corral busybox image\n"
    code, out = units("status", "web1")
    assert code == 0, out
    assert "Active: active (running)" in out
    assert "  Container: web1 (running, id " in out
    # the ExecStartPre cleanup lines failed (nothing to kill or remove) and were ignored
    assert "Cannot kill container: web1" in out or "No such container: web1" in out
    code, out = units("stop", "web1")
    assert code == 0, out
    assert driver_for(daemon, load_settings(daemon)).state("web1") is None
    code, out = units("status", "web1")
    assert "  Container: web1 (no such container)" in out
    units("unload", "web1")
    # .container units through the CLI: loaded and addressed as NAME.service, [Install] kept
    code, out = units("load", "greet.container", input=GREETER)
    assert code == 0, out
    code, out = units("enable", "greet.container")
    assert code == 0 and out.startswith("Enabled greet.service"), out
    code, out = units("cat", "greet")
    assert "[Container]" in out
    code, out = units("load", "bad.container", input="[Container]\nImage=busybox\nBogus=1\n")
    assert code == 1 and "bad.container:3: unsupported key 'Bogus'" in out
    for name in ("greet.container", "bad.container"):
        assert units("unload", name)[0] == 0


def test_podman_exec_lines_use_the_machines_own_storage(machines: dict[str, Path]) -> None:
    # the image exists only in this machine's storage: found only with its containers.conf
    root = machines["podman"]
    unit = (
        "[Service]\nType=oneshot\n"
        "ExecStart=podman run --rm --name p1 busybox sh -c 'echo via podman on $$HOSTNAME'\n"
    )

    async def body(r: UnitRunner) -> None:
        r.load_unit("p1.service", unit)
        assert r.status("p1.service").container == "p1"
        assert await r.start_unit("p1.service") == "done"
        st = r.status("p1.service")
        assert (st.active_state, st.result) == ("inactive", "success")
        assert any("via podman on" in line for line in r.journal.tail("p1.service", 50))
        await r.unload("p1.service")

    run(root, body)
