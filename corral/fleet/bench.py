"""Scheduling benchmark: N units over M in-process machines against a KV store.

Every machine is a full :class:`~corral.fleet.machine.FleetMachine` (heart, engine, agent,
publisher, watch) with the in-memory runner, talking HTTP to the store under test. Reported:
seconds until every unit runs somewhere, and KV requests spent (all machines plus the
submitting client). Run it against corral and etcd in the same process to compare.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from corral.client import ClientError, Timeouts
from corral.client.aio import AsyncClient
from corral.fleet.config import FleetConfig
from corral.fleet.machine import FleetMachine
from corral.fleet.registry import JobState
from corral.fleet.runner import MemoryRunner
from corral.fleet.store import Registry
from corral.fleet.unitfile import UnitFile

__all__ = ["BenchResult", "run_bench"]


@dataclass(frozen=True)
class BenchResult:
    machines: int
    units: int
    seconds_to_placed: float
    kv_requests: int


async def run_bench(
    endpoints: Sequence[str],
    machines: int = 100,
    units: int = 1000,
    prefix: str = "/_corral_bench/fleet/",
    limit: float = 600.0,
) -> BenchResult:
    cfg = FleetConfig(
        etcd_servers=tuple(endpoints),
        etcd_key_prefix=prefix,
        engine_reconcile_interval=2.0,  # fleet's default (lease TTL 10 s)
        agent_ttl=30.0,
        agent_reconcile_interval=5.0,
        unit_state_interval=2.0,
        etcd_request_timeout=10.0,
    )
    runners = [MemoryRunner() for _ in range(machines)]
    fleet = [FleetMachine(f"bench{i:04d}", cfg, r) for i, r in enumerate(runners)]
    reg = Registry(AsyncClient(list(endpoints), Timeouts(request=10.0)), prefix)
    for m in fleet:
        m.start()
    try:
        await asyncio.gather(*(m.registered.wait() for m in fleet))
        uf = UnitFile.parse("[Service]\nExecStart=/bin/sleep infinity\n")
        start = time.monotonic()
        for i in range(units):
            if time.monotonic() - start > limit:
                raise TimeoutError(f"only {i} of {units} units submitted within {limit:g}s")
            for attempt in range(5):  # an overloaded store times out; creating is idempotent
                try:
                    await reg.create_unit(f"bench{i:05d}.service", uf, JobState.LAUNCHED)
                    break
                except ClientError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(1.0)
        while (placed := sum(len(r.active) for r in runners)) < units:
            if time.monotonic() - start > limit:
                raise TimeoutError(f"{placed} of {units} units placed within {limit}s")
            await asyncio.sleep(0.2)
        took = time.monotonic() - start
        requests = reg.kv.requests + sum(m.registry.kv.requests for m in fleet)
    finally:
        for m in fleet:
            await m.kill()  # the whole prefix is deleted below; no per-unit cleanup needed
        await reg.kv.delete(prefix.rstrip("/"), recursive=True)
        await reg.kv.close()
    return BenchResult(machines, units, took, requests)
