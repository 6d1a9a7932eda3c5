"""Rolling ``corral fleet start --replace --rolling`` across template instances.

Three in-process fleet machines (real engine/agent loops over a real etcd 3.4; the in-memory
runner stands in for processes, whose start can be made to fail) run web@1..3. The roll
replaces each instance with the new template text in argument order, waits until the new text
is active, and stops at the first failure: later instances keep their old text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.cli.fleet import cli as fleet_cli
from corral.client.aio import AsyncClient
from corral.fleet.config import FleetConfig
from corral.fleet.machine import FleetMachine
from corral.fleet.runner import MemoryRunner
from corral.fleet.store import Registry
from corral.fleet.unitfile import UnitFile
from corral.testing.servers import ServerProcess

pytestmark = pytest.mark.interop

V1 = "[Service]\nExecStart=/bin/sleep 1000\nEnvironment=V=1\n"
V2 = "[Service]\nExecStart=/bin/sleep 1000\nEnvironment=V=2\n"
NAMES = ["web@1.service", "web@2.service", "web@3.service"]


def config(urls: list[str]) -> FleetConfig:
    return FleetConfig(
        etcd_servers=tuple(urls),
        engine_reconcile_interval=0.5,
        agent_ttl=5.0,
        agent_reconcile_interval=1.0,
        unit_state_interval=0.3,
    )


async def eventually(cond: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 40
    while True:
        got = cond()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within 40s: {what}")
        await asyncio.sleep(0.1)


def test_rolling_replace_stops_at_first_failure(real_etcd: ServerProcess, tmp_path: Path) -> None:
    urls = [real_etcd.client_url]
    (tmp_path / "web@.service").write_text(V1)
    args = [str(tmp_path / n) for n in NAMES]

    def fleet(*a: str) -> tuple[int, str, str]:
        got = CliRunner().invoke(fleet_cli, ["--endpoint", urls[0], "--block-poll", "0.1", *a])
        return got.exit_code, got.stdout, got.stderr

    async def scenario() -> None:
        runners = {f"m{i}": MemoryRunner() for i in (1, 2, 3)}
        machines = [FleetMachine(mid, config(urls), r) for mid, r in runners.items()]
        for m in machines:
            m.start()
        reg = Registry(AsyncClient(urls))
        try:
            await eventually(lambda: all(m.registered.is_set() for m in machines), what="reg")
            code, out, err = await asyncio.to_thread(
                fleet, "start", "--block-attempts", "20", *args
            )
            assert code == 0, err

            async def hashes() -> dict[str, str]:
                snap = await reg.snapshot()
                return {
                    n: r.unit_hash
                    for (n, _), r in snap.states.items()
                    if r.active_state == "active"
                }

            v1, v2 = UnitFile.parse(V1).hash_hex, UnitFile.parse(V2).hash_hex

            async def all_v1() -> bool:
                return await hashes() == dict.fromkeys(NAMES, v1)

            await eventually(all_v1, what="v1 everywhere")

            # new template text; web@2's new start fails wherever it lands
            (tmp_path / "web@.service").write_text(V2)
            for r in runners.values():
                r.fail_start.add("web@2.service")
            code, out, err = await asyncio.to_thread(
                fleet, "start", "--replace", "--rolling", "--block-attempts", "20", *args
            )
            assert code == 1
            assert "Unit web@1.service launched on" in out
            assert "Error rolling units: unit web@2.service failed on" in err
            assert "not touched: web@3.service" in err
            got = await hashes()
            assert got["web@1.service"] == v2
            assert got["web@3.service"] == v1  # untouched: still the old text, still active
            assert "web@2.service" not in got

            # bad flag combination: a clear usage error
            code, _, err = await asyncio.to_thread(fleet, "start", "--rolling", *args)
            assert code == 2 and "--rolling needs --replace" in err
        finally:
            for m in machines:
                await m.stop()
            await reg.kv.close()

    asyncio.run(asyncio.wait_for(scenario(), 200))
