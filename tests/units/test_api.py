"""The control socket, the `corral units` CLI and the daemon, end to end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from corral.cli.units import cli
from corral.units.api import AsyncUnitsClient, ControlServer, UnitsClient
from corral.units.config import Defaults
from corral.units.errors import ControlError, JobError, UnitError, UnitNotFoundError
from corral.units.supervisor import UnitRunner

from .conftest import _carrying


def test_orphan_check_sees_marked_processes(scope: tuple[str, str]) -> None:
    """The suite's orphan check must be able to fail: it finds a process carrying the id."""
    env = {**os.environ, scope[0]: scope[1]}
    p = subprocess.Popen(["sleep", "30"], env=env)
    try:
        assert p.pid in _carrying(f"{scope[0]}={scope[1]}".encode())
    finally:
        p.kill()
        p.wait()
    assert p.pid not in _carrying(f"{scope[0]}={scope[1]}".encode())


def test_control_api_in_process(tmp_path: Path, scope: tuple[str, str]) -> None:
    # A long root exercises the socket-path workaround (sun_path is 108 bytes).
    root = tmp_path / ("r" * 60) / ("s" * 60)

    async def main() -> None:
        d = Defaults(environment=(scope,), timeout_stop=5)
        async with UnitRunner(root, defaults=d) as runner:
            server = ControlServer(runner)
            await server.start()
            try:
                client = AsyncUnitsClient(root)
                info = await client.call("ping")
                assert info["machine_id"] == runner.machine.machine_id
                events: list[dict[str, Any]] = []

                async def listen() -> None:
                    async for ev in client.events():
                        events.append(ev)

                listener = asyncio.ensure_future(listen())
                await asyncio.sleep(0.05)
                st = await client.call(
                    "load",
                    unit="s.service",
                    text="[Service]\nExecStart=/bin/sleep 60\n",
                    runtime=True,
                )
                assert st["load_state"] == "loaded" and st["file_state"] == "linked-runtime"
                assert await client.call("start", unit="s.service", wait=True) == "done"
                st = await client.call("status", unit="s.service", lines=5)
                assert (st["active_state"], st["sub_state"]) == ("active", "running")
                assert any("Started" in line for line in st["journal"])
                assert [u["name"] for u in await client.call("list")] == ["s.service"]
                files = await client.call("files")
                assert files == {
                    "s.service": {
                        "source": "runtime",
                        "text": "[Service]\nExecStart=/bin/sleep 60\n",
                    }
                }
                await client.call("stop", unit="s.service")
                sync = UnitsClient(root)
                st = await asyncio.to_thread(sync.call, "status", unit="s.service")
                assert st["active_state"] == "inactive"
                with pytest.raises(UnitNotFoundError):
                    await client.call("start", unit="nope.service")
                with pytest.raises(ControlError, match="unknown operation"):
                    await client.call("explode", unit="s.service")
                with pytest.raises(ControlError, match="unsupported API version"):
                    await asyncio.to_thread(sync.call, "ping", v=99)
                await client.call("unload", unit="s.service")
                assert not (runner.layout.runtime / "s.service").exists()
                listener.cancel()
                seen = [(e["unit"], e["active"], e["sub"]) for e in events]
                assert ("s.service", "active", "running") in seen
                assert ("s.service", "deactivating", "stop-sigterm") in seen
                assert ("s.service", "inactive", "dead") in seen
                # garbage on the socket gets an error line, and the server keeps serving
                r, w = await asyncio.open_unix_connection(
                    f"/proc/self/fd/{os.open(root / 'run/corral', os.O_PATH)}/units.sock"
                )
                w.write(b"{not json\n")
                await w.drain()
                answer = json.loads(await r.readline())
                assert answer["ok"] is False and "malformed" in answer["error"]["message"]
                w.close()
                assert (await client.call("ping"))["pid"] == os.getpid()
            finally:
                await server.close()

    asyncio.run(main())


def test_client_without_runner_gets_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="is `corral units daemon` running"):
        UnitsClient(tmp_path).call("ping")
    result = CliRunner().invoke(cli, ["--root", str(tmp_path), "status", "x"])
    assert result.exit_code == 1
    assert "cannot reach the unit runner" in result.output
    assert "Traceback" not in result.output


@pytest.fixture
def daemon(tmp_path: Path, scope: tuple[str, str]) -> Iterator[Path]:
    root = tmp_path / "m1"
    env = {**os.environ, scope[0]: scope[1]}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corral",
            "units",
            "--root",
            str(root),
            "daemon",
            "--hostname",
            "node-a",
            "--default-timeout",
            "3s",
            "--setenv",
            f"{scope[0]}={scope[1]}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                UnitsClient(root, timeout=5).call("ping")
                break
            except ControlError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    raise AssertionError(f"daemon did not come up: {out}") from None
                time.sleep(0.05)
        yield root
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_cli_verbs_against_a_daemon(daemon: Path, tmp_path: Path) -> None:
    cr = CliRunner()

    def units(*args: str, input: str | None = None) -> Any:
        return cr.invoke(cli, ["--root", str(daemon), *args], input=input)

    unit = (
        "[Unit]\nDescription=Hello on %H\n[Service]\n"
        "ExecStart=/bin/sh -c 'echo hello; exec sleep 60'\n[Install]\nWantedBy=multi-user.target\n"
    )
    assert units("load", "hello@.service", input=unit).exit_code == 0
    r = units("start", "hello@1")
    assert r.exit_code == 0, r.output
    deadline = time.monotonic() + 10
    while "hello" not in units("journal", "hello@1", "-n", "1").output:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = units("status", "hello@1")
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[0] == "● hello@1.service - Hello on node-a"
    assert lines[1].startswith("     Loaded: loaded (") and "linked-runtime" in lines[1]
    assert lines[2].startswith("     Active: active (running) since ")
    assert lines[3].startswith("   Main PID: ") and lines[3].endswith("(sleep)")
    assert any(line.endswith("hello") for line in lines[4:])
    assert units("is-active", "hello@1").output == "active\n"
    r = units("show", "hello@1.service", "-p", "ActiveState", "-p", "SubState")
    assert r.output == "ActiveState=active\nSubState=running\n"
    r = units("list")
    assert "hello@1.service loaded      active     running" in r.output
    assert units("enable", "hello@1").output.startswith("Enabled hello@1.service")
    assert "[Install]" in units("cat", "hello@1").output
    assert units("stop", "hello@1").exit_code == 0
    r = units("is-active", "hello@1")
    assert (r.exit_code, r.output) == (3, "inactive\n")
    # a malformed unit gets a line-numbered message, and the daemon carries on
    r = units("load", "bad.service", input="[Unit]\nDescription=x\n[Service\n")
    assert r.exit_code == 1 and "bad.service:3: invalid section header" in r.output
    r = units("load", "nostart.service", input="[Service]\nType=simple\n")
    assert r.exit_code == 1 and "bad-setting" in r.output
    r = units("start", "nostart")
    assert r.exit_code == 1 and "bad unit file setting" in r.output
    r = units("start", "ghost")
    assert r.exit_code == 4 and "not found" in r.output
    r = units("status", "ghost")
    assert r.exit_code == 4 and "Loaded: not-found" in r.output
    r = units("load", "fail.service", input="[Service]\nType=oneshot\nExecStart=/bin/false\n")
    r = units("start", "fail")
    assert r.exit_code == 1 and "Job for fail.service failed" in r.output
    r = units("status", "fail")
    assert r.exit_code == 3 and "Active: failed (Result: exit-code)" in r.output
    assert "Main PID: (code=exited, status=1)" in r.output
    r = units("show", "fail", "-p", "ExecMainCode", "-p", "ExecMainStatus", "-p", "Type")
    assert r.output == "Type=oneshot\nExecMainCode=exited\nExecMainStatus=1\n"
    assert units("reset-failed", "fail").exit_code == 0
    assert "Active: inactive (dead)" in units("status", "fail").output
    r = units("start", "--no-block", "hello@2")
    assert r.exit_code == 0
    assert UnitsClient(daemon).call("ping")["hostname"] == "node-a"
    # hello@2 is left running: the daemon's SIGTERM stops it (the orphan check verifies)


def test_enabled_units_start_at_boot(tmp_path: Path, scope: tuple[str, str]) -> None:
    async def main() -> None:
        d = Defaults(environment=(scope,), timeout_stop=5)
        async with UnitRunner(tmp_path, defaults=d) as r:
            r.load_unit(
                "boot.service",
                "[Service]\nExecStart=/bin/sleep 60\n[Install]\nWantedBy=multi-user.target\n",
                runtime=False,
            )
            assert r.enable("boot.service") == ["multi-user.target"]
            r.load_unit("static.service", "[Service]\nExecStart=/bin/sleep 60\n", runtime=False)
            assert r.enable("static.service") == []
        async with UnitRunner(tmp_path, defaults=d) as r:
            assert r.file_state("boot.service") == "enabled"
            await r.boot()
            for _ in range(200):
                if r.status("boot.service").active_state == "active":
                    break
                await asyncio.sleep(0.02)
            assert r.status("boot.service").sub_state == "running"
            assert r.status("static.service").active_state == "inactive"
            with pytest.raises(JobError):
                await r.reload_unit("boot.service")

    asyncio.run(main())


def test_unix_socket_path_stays_private(tmp_path: Path, scope: tuple[str, str]) -> None:
    async def main() -> None:
        async with UnitRunner(tmp_path, defaults=Defaults(environment=(scope,))) as r:
            server = ControlServer(r)
            await server.start()
            try:
                assert (r.layout.socket.stat().st_mode & 0o777) == 0o600
                s = socket.socket(socket.AF_UNIX)
                s.connect(str(r.layout.socket))
                s.close()
            finally:
                await server.close()
            assert not r.layout.socket.exists()

    asyncio.run(main())


def test_one_runner_per_root(tmp_path: Path, scope: tuple[str, str]) -> None:
    async def main() -> None:
        async with UnitRunner(tmp_path, defaults=Defaults(environment=(scope,))):
            second = UnitRunner(tmp_path)
            with pytest.raises(UnitError, match="already runs"):
                await second.start()
        async with UnitRunner(tmp_path):  # released on close
            pass

    asyncio.run(main())
