"""`corral fleet` (fleetctl verbs) and `corral fleetd` processes against a real etcd 3.4.

fleetd runs as real processes with the in-memory unit runner (no unit processes); machine
death is SIGKILL of a fleetd process. The CLI runs in-process through click's runner.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from corral.cli.fleet import cli
from corral.fleet.ctl import tabwrite
from corral.testing.servers import ServerProcess

HELLO = (
    "[Unit]\nDescription=Hello World\n\n[Service]\n"
    'ExecStart=/bin/bash -c "while true; do echo \\"Hello, world\\"; sleep 1; done"\n'
)


def test_tabwriter_matches_published_fleetctl_output() -> None:
    out = tabwrite(
        [
            ["UNIT", "MACHINE", "ACTIVE", "SUB"],
            ["hello.service", "d16f9669.../10.0.33.214", "failed", "failed"],
        ]
    )
    assert (
        out
        == "UNIT\t\tMACHINE\t\t\tACTIVE\tSUB\nhello.service\td16f9669.../10.0.33.214\tfailed\tfailed\n"
    )
    assert tabwrite([]) == ""
    assert tabwrite([["a"], ["bb"]]) == "a\nbb\n"


def test_usage_errors_without_a_cluster(tmp_path: Path) -> None:
    r = CliRunner()
    assert r.invoke(cli, ["version"]).output == "fleetctl version 0.1.0\n"
    res = r.invoke(cli, ["verify", "x"])
    assert res.exit_code == 2 and "DEPRECATED" in res.output
    res = r.invoke(cli, ["submit"])
    assert res.exit_code == 0 and "No units given" in res.output
    res = r.invoke(cli, ["cat", "a", "b"])
    assert res.exit_code == 1 and "One unit file must be provided" in res.output
    res = r.invoke(cli, ["list-units", "--fields", "unit,bogus"])
    assert res.exit_code == 1 and 'Invalid key in output format: "bogus"' in res.output
    res = r.invoke(cli, ["list-units", "--fields", ""])
    assert res.exit_code == 1 and "Must define output format" in res.output
    res = r.invoke(cli, ["--endpoint", "http://127.0.0.1:9", "list-machines"])
    assert res.exit_code == 1 and "Error retrieving list of active machines" in res.output
    assert "Traceback" not in res.output


def start_fleetd(url: str, mid: str, log: Path, meta: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "corral", "fleetd", "--runner", "memory",
            "--machine-id", mid, "--etcd-servers", url, "--metadata", meta,
            "--public-ip", f"10.0.0.{mid[-1]}", "--agent-ttl", "5s",
            "--engine-reconcile-interval", "0.5", "--agent-reconcile-interval", "1",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip


@pytest.fixture
def fleet_cluster(
    real_etcd: ServerProcess, tmp_path: Path
) -> Iterator[tuple[str, dict[str, subprocess.Popen[bytes]]]]:
    ids = {
        "aaaaaaaa1111111111111111111111a1": "role=web",
        "bbbbbbbb2222222222222222222222b2": "role=db",
    }
    procs = {
        mid: start_fleetd(real_etcd.client_url, mid, tmp_path / f"{mid[:8]}.log", meta)
        for mid, meta in ids.items()
    }
    try:
        yield real_etcd.client_url, procs
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def poll(fn: Callable[[], bool], limit: float = 40.0, what: str = "") -> None:
    deadline = time.monotonic() + limit
    while not fn():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit}s: {what}")
        time.sleep(0.2)


@pytest.mark.interop
def test_fleetctl_verbs_end_to_end(
    fleet_cluster: tuple[str, dict[str, subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    url, procs = fleet_cluster
    r = CliRunner()

    def fleet(*args: str) -> Result:
        return r.invoke(cli, ["--endpoint", url, "--block-poll", "0.1", *args])

    poll(lambda: fleet("list-machines", "--no-legend").output.count("\n") == 2, what="machines up")
    assert fleet("list-machines").output == (
        "MACHINE\t\tIP\t\tMETADATA\n"
        "aaaaaaaa...\t10.0.0.1\trole=web\n"
        "bbbbbbbb...\t10.0.0.2\trole=db\n"
    )
    (tmp_path / "hello.service").write_text("# comment\n" + HELLO)
    res = fleet("submit", str(tmp_path / "hello.service"))
    assert (res.exit_code, res.output) == (0, "Unit hello.service inactive\n")
    assert fleet("submit", str(tmp_path / "hello.service")).output == ""
    assert fleet("cat", "hello").output == HELLO
    assert fleet("list-unit-files").output == (
        "UNIT\t\tHASH\tDSTATE\t\tSTATE\t\tTARGET\nhello.service\te55c0ae\tinactive\tinactive\t-\n"
    )

    res = fleet("start", "--block-attempts", "20", str(tmp_path / "hello.service"))
    assert res.exit_code == 0, res.output
    assert res.output == "Unit hello.service launched on aaaaaaaa.../10.0.0.1\n"
    assert fleet("list-units").output == (
        "UNIT\t\tMACHINE\t\t\tACTIVE\tSUB\nhello.service\taaaaaaaa.../10.0.0.1\tactive\trunning\n"
    )
    assert fleet("list-units", "--no-legend", "--full", "--fields", "unit,hash").output == (
        "hello.service\te55c0aeb44ba0b68004ceb8a200e685194448b45\n"
    )

    # A unit no machine can take: start gives up after its attempts and says why.
    (tmp_path / "nope.service").write_text(
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nMachineMetadata=role=gpu\n"
    )
    res = fleet(
        "--block-window", "0.5", "start", "--block-attempts", "1", str(tmp_path / "nope.service")
    )
    assert res.exit_code == 1
    assert "timed out waiting for unit nope.service to report state launched" in res.output
    assert (
        "cannot run on aaaaaaaa.../10.0.0.1: MachineMetadata: local Machine metadata insufficient"
        in res.output
    )
    res = fleet("why", "nope")
    assert res.output.splitlines()[1].split("\t")[0] == "aaaaaaaa.../10.0.0.1"
    assert "MachineMetadata" in res.output
    assert fleet("destroy", "nope").output == "Destroyed nope.service\n"

    # move respects rules and the engine leaves the unit where it was put.
    res = fleet("move", "hello", "bbbb")
    assert (res.exit_code, res.output) == (0, "Unit hello.service moved to bbbbbbbb.../10.0.0.2\n")
    poll(
        lambda: (
            fleet("list-units", "--no-legend").output
            == "hello.service\tbbbbbbbb.../10.0.0.2\tactive\trunning\n"
        ),
        what="moved",
    )

    res = fleet("stop", "hello")
    assert res.exit_code == 0
    assert res.stdout == "Unit hello.service loaded on bbbbbbbb.../10.0.0.2\n"
    assert "Successfully stopped units [hello.service]." in res.output
    res = fleet("stop", "ghost")
    assert (res.exit_code, res.output) == (0, "Units not found in registry\n")
    res = fleet("unload", "hello")
    assert res.exit_code == 0 and "Unit hello.service inactive" in res.output
    res = fleet("stop", "hello")
    assert (res.exit_code, res.output) == (
        1,
        "Unable to stop unit hello.service in state inactive\n",
    )

    # Machine death: SIGKILL the fleetd running the unit; it comes back on the other machine.
    assert fleet("start", "--block-attempts", "20", "hello").exit_code == 0
    where = fleet("list-units", "--no-legend", "--full", "--fields", "machine").output.strip()
    victim = where.split("/")[0]
    procs[victim].kill()
    procs[victim].wait()
    poll(
        lambda: (
            (
                out := fleet(
                    "list-units", "--no-legend", "--full", "--fields", "machine,active"
                ).output
            )
            != ""
            and victim not in out
            and "active" in out
        ),
        limit=60,
        what="rescheduled after SIGKILL",
    )
    assert fleet("destroy", "hello").output == "Destroyed hello.service\n"
