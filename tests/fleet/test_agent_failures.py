"""An agent round that fails half-way is planned again, never forgotten.

Found by the rollout test: a StartUnit whose heartbeat write timed out ("outcome unknown")
had already marked the unit launched in the agent's cache, so no later round started it and
the unit stayed inactive on its machine for good. fleet's agent ignores the heartbeat's error.
"""

from __future__ import annotations

import asyncio

from corral.client.aio import AsyncClient
from corral.client.errors import OutcomeUnknown
from corral.fleet.machine import FleetMachine
from corral.fleet.registry import JobState
from corral.fleet.runner import MemoryRunner, RunnerError
from corral.fleet.store import Registry
from corral.testing.servers import ServerProcess

from .test_cluster import config, eventually, unit


def test_a_failed_heartbeat_or_start_does_not_lose_the_start(real_etcd: ServerProcess) -> None:
    urls = [real_etcd.client_url]

    async def scenario() -> None:
        runner = MemoryRunner()
        machine = FleetMachine("m1", config(urls), runner)
        failures = {"heartbeat": 2, "start": 1}
        set_heartbeat, start = machine.registry.set_heartbeat, runner.start

        async def flaky_heartbeat(name: str, machine_id: str, ttl: float) -> None:
            if failures["heartbeat"] > 0:
                failures["heartbeat"] -= 1
                raise OutcomeUnknown(urls[0], "PUT", f"/v2/keys/.../{name}/job-state", "timeout")
            await set_heartbeat(name, machine_id, ttl)

        async def flaky_start(name: str) -> None:
            if failures["start"] > 0:
                failures["start"] -= 1
                raise RunnerError(f"start {name}: the runner did not answer")
            await start(name)

        machine.registry.set_heartbeat = flaky_heartbeat  # type: ignore[method-assign]
        runner.start = flaky_start  # type: ignore[method-assign]
        machine.start()
        reg = Registry(AsyncClient(urls))
        try:
            await eventually(machine.registered.is_set, what="registered")
            await reg.create_unit("a.service", unit(), JobState.LAUNCHED)
            await eventually(lambda: "a.service" in runner.active, what="a.service started")
            assert failures == {"heartbeat": 0, "start": 0}
            # the heartbeat the failed writes skipped is there once the publisher has run
            await eventually(
                lambda: _heartbeat_is(reg, "a.service", "m1"),
                what="heartbeat written",
            )
        finally:
            await machine.stop()
            await reg.close()

    asyncio.run(scenario())


async def _heartbeat_is(reg: Registry, name: str, machine_id: str) -> bool:
    node = await reg.kv.get(reg.keys.job_heartbeat(name))
    return bool(node) and node.get("value") == machine_id
