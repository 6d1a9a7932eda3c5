"""Several fleet machines in one process against a real etcd 3.4 and a 3-member corral cluster.

The machines are real engine/agent/publisher/watch loops talking HTTP to etcd; only the unit
runner is the in-memory :class:`MemoryRunner` (no processes), so placement, presence expiry,
rescheduling and agent reconciliation are exercised end to end through the registry.
TTLs stay ≥ 5× etcd's default 1 s election timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from corral.client.aio import AsyncClient
from corral.fleet.config import FleetConfig
from corral.fleet.machine import FleetMachine
from corral.fleet.registry import JobState
from corral.fleet.runner import MemoryRunner
from corral.fleet.store import Registry
from corral.fleet.unitfile import UnitFile

pytestmark = pytest.mark.interop

TTL = 5.0


def config(urls: list[str], **meta: str) -> FleetConfig:
    return FleetConfig(
        etcd_servers=tuple(urls),
        etcd_key_prefix="/_coreos.com/fleet/",
        engine_reconcile_interval=0.5,
        agent_ttl=TTL,
        agent_reconcile_interval=1.0,
        unit_state_interval=0.3,
        metadata=meta,
    )


def unit(xfleet: str = "") -> UnitFile:
    text = "[Service]\nExecStart=/bin/sleep 1000\n"
    if xfleet:
        text += "\n[X-Fleet]\n" + xfleet.replace(";", "\n") + "\n"
    return UnitFile.parse(text)


async def eventually(
    cond: Callable[[], bool | Awaitable[bool]], limit: float = 40.0, what: str = ""
) -> float:
    start = time.monotonic()
    while True:
        got = cond()
        if not isinstance(got, bool):
            got = await got
        if got:
            return time.monotonic() - start
        if time.monotonic() - start > limit:
            raise AssertionError(f"not within {limit}s: {what}")
        await asyncio.sleep(0.1)


def running(runners: dict[str, MemoryRunner], name: str) -> list[str]:
    return sorted(mid for mid, r in runners.items() if name in r.active)


def test_submit_start_stop_destroy_global_conflicts_machineof(kv_endpoints: list[str]) -> None:
    async def scenario() -> None:
        runners = {f"m{i}": MemoryRunner() for i in (1, 2, 3)}
        meta = {"m1": {"role": "web"}, "m2": {"role": "web"}, "m3": {"role": "db"}}
        machines = [
            FleetMachine(mid, config(kv_endpoints, **meta[mid]), r) for mid, r in runners.items()
        ]
        for m in machines:
            m.start()
        reg = Registry(AsyncClient(kv_endpoints))
        try:
            await eventually(
                lambda: all(m.registered.is_set() for m in machines), what="registered"
            )
            await reg.create_unit("a.service", unit(), JobState.LAUNCHED)
            await reg.create_unit("side.service", unit("MachineOf=a.service"), JobState.LAUNCHED)
            for i in (1, 2, 3):
                await reg.create_unit(
                    f"web@{i}.service", unit("Conflicts=web@*.service"), JobState.LAUNCHED
                )
            await reg.create_unit(
                "g.service", unit("Global=true;MachineMetadata=role=web"), JobState.LAUNCHED
            )
            await reg.create_unit("idle.service", unit(), JobState.INACTIVE)

            await eventually(lambda: len(running(runners, "a.service")) == 1, what="a running")
            await eventually(
                lambda: running(runners, "side.service") == running(runners, "a.service"),
                what="MachineOf",
            )
            await eventually(
                lambda: (
                    sorted(x for i in (1, 2, 3) for x in running(runners, f"web@{i}.service"))
                    == ["m1", "m2", "m3"]
                ),
                what="Conflicts spread web instances",
            )
            await eventually(
                lambda: running(runners, "g.service") == ["m1", "m2"], what="Global on role=web"
            )
            assert all("idle.service" not in r.written for r in runners.values())

            # Registry view: current state launched, unit states published by the machine.
            async def a_launched() -> bool:
                snap = await reg.snapshot()
                u = next(x for x in snap.units if x.name == "a.service")
                return snap.current_state(u) is JobState.LAUNCHED

            await eventually(a_launched, what="a.service launched in the registry")

            # stop = desired loaded: the file stays, the unit is stopped.
            host = running(runners, "a.service")[0]
            await reg.set_target_state("a.service", JobState.LOADED)
            await eventually(lambda: "a.service" not in runners[host].active, what="a stopped")
            assert "a.service" in runners[host].written
            # destroy: the agent unloads it.
            await reg.destroy_unit("web@1.service")
            await eventually(
                lambda: all("web@1.service" not in r.written for r in runners.values()),
                what="destroyed",
            )
            # Rules held throughout: never two web instances on one machine.
            for r in runners.values():
                assert len([n for n in r.active if n.startswith("web@")]) <= 1
        finally:
            for m in machines:
                await m.stop()
            await reg.kv.close()
        # Graceful stop purged everything.
        assert all(not r.written for r in runners.values())

    asyncio.run(asyncio.wait_for(scenario(), 240))


def test_machine_death_reschedules_and_restarted_agent_cleans_up(kv_endpoints: list[str]) -> None:
    async def scenario() -> None:
        runners = {f"m{i}": MemoryRunner() for i in (1, 2, 3)}
        machines = {mid: FleetMachine(mid, config(kv_endpoints), r) for mid, r in runners.items()}
        for m in machines.values():
            m.start()
        reg = Registry(AsyncClient(kv_endpoints))
        try:
            await eventually(
                lambda: all(m.registered.is_set() for m in machines.values()), what="registered"
            )
            await reg.create_unit("x.service", unit(), JobState.LAUNCHED)
            await reg.create_unit("y.service", unit("MachineOf=x.service"), JobState.LAUNCHED)
            await eventually(lambda: len(running(runners, "x.service")) == 1, what="x running")
            await eventually(
                lambda: running(runners, "y.service") == running(runners, "x.service"),
                what="y with x",
            )
            victim = running(runners, "x.service")[0]

            # Hard kill: no cleanup; the units keep running on the dead machine's runner.
            await machines[victim].kill()
            took = await eventually(
                lambda: [m for m in running(runners, "x.service") if m != victim] != [],
                limit=TTL + 5 * 0.5 + 30,
                what="x rescheduled after presence expiry",
            )
            assert took >= TTL / 2  # it waited for the presence key to expire
            new_host = next(m for m in running(runners, "x.service") if m != victim)
            await eventually(lambda: new_host in running(runners, "y.service"), what="y follows x")
            assert "x.service" in runners[victim].active  # left running while cut off

            # The machine comes back with the same runner: units now elsewhere are removed.
            machines[victim] = FleetMachine(victim, config(kv_endpoints), runners[victim])
            machines[victim].start()
            await eventually(
                lambda: not runners[victim].written, what="restarted agent unloads stale units"
            )
            assert running(runners, "x.service") == [new_host]  # nothing moved back

            # Graceful stop: rescheduled without waiting for the TTL.
            await machines[new_host].stop()
            took = await eventually(
                lambda: any(m != new_host for m in running(runners, "x.service")),
                what="rescheduled after stop",
            )
            assert took < TTL
        finally:
            for m in machines.values():
                await m.stop()
            await reg.kv.close()

    asyncio.run(asyncio.wait_for(scenario(), 240))
