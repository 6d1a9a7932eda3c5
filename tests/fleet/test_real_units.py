"""fleet on real units: several machines, each a `corral units` daemon plus a `corral fleetd`.

Each machine is its own process tree (units daemon, fleetd, the units' processes), marked by an
environment variable, against a real etcd 3.4 and a 3-member `corral etcd` cluster. Units run
as real processes; `corral fleet status/journal` read them through fleetd's HTTP extension;
fleet's API v1 is read over HTTP. Machine death kills the whole tree with SIGKILL, and the
unit must then run on another machine within max(agent_ttl, engine lease TTL) plus one
reconcile (asserted "eventually", with a generous bound). TTLs are 5 s: ≥ 5× the stores'
1 s election timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from corral.cli.fleet import cli as fleet_cli
from corral.testing.ports import free_ports
from corral.units.api import UnitsClient, socket_path

pytestmark = pytest.mark.interop

AGENT_TTL = 5.0
ENGINE_INTERVAL = 1.0  # lease TTL = 5 s
AGENT_INTERVAL = 1.0
MARK = "CORRAL_FLEET_TEST_MACHINE"


def _marked(value: str) -> list[int]:
    want = f"{MARK}={value}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if want in Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0"):
                stat = Path(f"/proc/{entry.name}/stat").read_bytes()
                if stat.rpartition(b")")[2].split()[:1] != [b"Z"]:
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rpartition(b")")[2].split()[:1] != [b"Z"]


@dataclass
class Machine:
    root: Path
    id: str
    api_port: int
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {**os.environ, MARK: self.marker}

    def start_units(self) -> None:
        (self.root / "etc").mkdir(parents=True, exist_ok=True)
        (self.root / "etc/machine-id").write_text(self.id + "\n")
        log = (self.root / "units.log").open("wb")
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "corral", "units", "--root", str(self.root), "daemon",
                 "--setenv", f"{MARK}={self.marker}", "--default-timeout", "10"],
                env=self.env(), stdout=log, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip

    def start_fleetd(self, urls: list[str]) -> None:
        wait_for(lambda: socket_path(self.root).exists(), 30, "units daemon socket")
        log = (self.root / "fleetd.log").open("wb")
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "corral", "fleetd", "--root", str(self.root),
                 "--etcd-servers", ",".join(urls), "--agent-ttl", f"{AGENT_TTL:g}s",
                 "--engine-reconcile-interval", str(ENGINE_INTERVAL),
                 "--agent-reconcile-interval", str(AGENT_INTERVAL),
                 "--api-listen", f"127.0.0.1:{self.api_port}"],
                env={**self.env(), "FLEET_UNIT_STATE_INTERVAL": "0.3"},
                stdout=log, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def unit_state(self, name: str) -> dict[str, Any] | None:
        try:
            got = UnitsClient(self.root, timeout=5).call("status", unit=name, lines=0)
        except Exception:
            return None
        return None if got.get("load_state") == "not-found" else dict(got)

    def running(self, name: str) -> bool:
        st = self.unit_state(name)
        return bool(st and st["active_state"] == "active" and st.get("main_pid"))

    def kill_tree(self) -> None:
        """Machine death: SIGKILL every process of this machine (fleetd, daemon, units)."""
        for _ in range(5):
            pids = _marked(self.marker)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for p in self.procs:
            p.wait(10)

    def stop(self) -> None:
        for p in reversed(self.procs):  # fleetd first (stops its units), then the daemon
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    pass
        self.kill_tree()

    def logs(self) -> str:
        return "\n".join(
            f"--- {self.id[:8]} {f} ---\n" + (self.root / f).read_text(errors="replace")[-3000:]
            for f in ("fleetd.log", "units.log")
            if (self.root / f).exists()
        )


def _holds(cond: Callable[[], bool]) -> bool:
    try:
        return cond()
    except OSError:  # not listening yet, or a store hiccup: not yet
        return False


def wait_for(cond: Callable[[], bool], limit: float, what: str) -> float:
    start = time.monotonic()
    while not _holds(cond):
        if time.monotonic() - start > limit:
            raise AssertionError(f"not within {limit}s: {what}")
        time.sleep(0.2)
    return time.monotonic() - start


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def fleet(urls: list[str], *args: str) -> Ran:
    """`corral fleet …` in-process (the fleetds are real processes; the CLI needs none)."""
    got = CliRunner().invoke(fleet_cli, ["--endpoint", ",".join(urls), *args])
    return Ran(got.exit_code, got.stdout, got.stderr)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def machines(tmp_path: Path, kv_endpoints: list[str]) -> Iterator[list[Machine]]:
    ports = free_ports(3)
    ms = [Machine(tmp_path / f"m{i}", f"{i}{uuid.uuid4().hex[1:]}", ports[i]) for i in range(3)]
    try:
        for m in ms:
            m.start_units()
        for m in ms:
            m.start_fleetd(kv_endpoints)
        yield ms
    finally:
        for m in ms:
            m.stop()
        if any(_marked(m.marker) for m in ms):
            pytest.fail("processes left behind by the test")


def test_units_run_as_processes_and_move_when_a_machine_dies(
    machines: list[Machine], kv_endpoints: list[str], tmp_path: Path
) -> None:
    urls = kv_endpoints
    unit = tmp_path / "hello.service"
    unit.write_text(
        "[Unit]\nDescription=Hello\n\n[Service]\n"
        "ExecStart=/bin/sh -c 'echo hello from %m; exec sleep 1000'\n"
    )
    try:
        wait_for(
            lambda: len(get_json(machines[0].api + "/fleet/v1/machines")["machines"]) == 3,
            40,
            "all machines registered",
        )
        done = fleet(urls, "start", "--block-attempts", "60", str(unit))
        assert done.returncode == 0, done.stderr
        assert "Unit hello.service launched on" in done.stdout

        def holder() -> list[Machine]:
            return [m for m in machines if m.running("hello.service")]

        wait_for(lambda: len(holder()) == 1, 40, "hello running on one machine")
        first = holder()[0]
        others = [m for m in machines if m is not first]
        assert not any(m.unit_state("hello.service") for m in others)

        # fleet API v1 (read subset), served by every fleetd
        api = get_json(others[0].api + "/fleet/v1/units/hello.service")
        assert api["machineID"] == first.id
        assert api["desiredState"] == "launched"
        listed = get_json(others[0].api + "/fleet/v1/units")["units"]
        assert [u["name"] for u in listed] == ["hello.service"]
        with pytest.raises(urllib.error.HTTPError) as missing_unit:
            get_json(others[0].api + "/fleet/v1/units/nope.service")
        assert missing_unit.value.code == 404
        assert {"section": "Service", "name": "ExecStart",
                "value": "/bin/sh -c 'echo hello from %m; exec sleep 1000'"} in api["options"]  # fmt: skip
        wait_for(
            lambda: any(
                s["systemdActiveState"] == "active" and s["machineID"] == first.id
                for s in get_json(others[0].api + "/fleet/v1/state?unitName=hello.service")[
                    "states"
                ]
            ),
            30,
            "state published",
        )

        # status/journal come from the unit's own machine, through its fleetd
        st = fleet(urls, "status", "hello.service")
        assert st.returncode == 0, st.stderr
        assert "Active: active (running)" in st.stdout
        assert first.id in st.stdout
        wait_for(
            lambda: f"hello from {first.id}" in fleet(urls, "journal", "hello.service").stdout,
            20,
            "journal line",
        )
        missing = fleet(urls, "journal", "nope.service")
        assert missing.returncode == 1
        assert "Unit nope.service does not exist." in missing.stderr

        # machine death: the whole process tree of the unit's machine
        old_pid = first.unit_state("hello.service")["main_pid"]  # type: ignore[index]
        first.kill_tree()
        wait_for(lambda: not _alive(old_pid), 10, "the unit's process is dead")
        bound = max(AGENT_TTL, 5 * ENGINE_INTERVAL) + ENGINE_INTERVAL + AGENT_INTERVAL
        took = wait_for(
            lambda: any(m.running("hello.service") for m in others),
            bound + 40,  # generous: a loaded 2-core host
            "hello rescheduled after machine death",
        )
        assert sum(m.running("hello.service") for m in others) == 1
        print(f"rescheduled in {took:.1f}s (bound {bound:.0f}s + slack)")

        new = next(m for m in others if m.running("hello.service"))

        # the dead machine comes back: its fleetd adopts the runtime file it had loaded and,
        # the unit being scheduled elsewhere now, unloads it
        runtime_file = first.root / "run/corral/units/hello.service"
        assert runtime_file.exists()
        first.procs = []
        first.start_units()
        first.start_fleetd(urls)
        wait_for(lambda: not runtime_file.exists(), 40, "stale unit unloaded on return")
        assert first.unit_state("hello.service") is None
        assert [m.id for m in machines if m.running("hello.service")] == [new.id]

        # graceful stop through fleet: the process goes away
        assert fleet(urls, "stop", "hello.service").returncode == 0
        wait_for(lambda: not new.running("hello.service"), 30, "stopped")
        assert fleet(urls, "destroy", "hello.service").returncode == 0
        wait_for(lambda: new.unit_state("hello.service") is None, 30, "unloaded")
    except BaseException:
        for m in machines:
            print(m.logs())
        raise
