"""Scheduling benchmark: N units over M in-process machines against a KV store.

Every machine is a full :class:`~corral.fleet.machine.FleetMachine` (heart, engine, agent,
publisher, followers) with the in-memory runner, talking HTTP to the store under test. The
units are submitted with ``in_flight`` submissions running concurrently. Reported: seconds
until all are submitted and until every unit runs somewhere, and KV requests spent (all
machines plus the submitting client; watch events and tree re-reads included, and also
given apart). Run it against corral and etcd in the same process to compare.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
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
    seconds_to_submit: float = 0.0
    watch_events: int = 0  # events the machines' watches received (counted in kv_requests)
    rereads: int = 0  # job-tree re-reads by watches that fell behind


async def _submit(reg: Registry, name: str, uf: UnitFile) -> None:
    for attempt in range(5):  # an overloaded store times out; creating is idempotent
        try:
            await reg.create_unit(name, uf, JobState.LAUNCHED)
            return
        except ClientError:
            if attempt == 4:
                raise
            await asyncio.sleep(1.0)


async def run_bench(
    endpoints: Sequence[str],
    machines: int = 100,
    units: int = 1000,
    prefix: str = "/_corral_bench/fleet/",
    limit: float = 600.0,
    in_flight: int = 32,
    lag_limit: int = 0,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """``in_flight`` submissions run concurrently (each is fleet's three writes in order,
    as ``fleetctl start`` does per unit; units are independent of each other)."""
    cfg = FleetConfig(
        etcd_servers=tuple(endpoints),
        etcd_key_prefix=prefix,
        engine_reconcile_interval=2.0,  # fleet's default (lease TTL 10 s)
        agent_ttl=30.0,
        agent_reconcile_interval=5.0,
        unit_state_interval=2.0,
        etcd_request_timeout=10.0,
        watch_lag_limit=lag_limit,
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
        names = iter([f"bench{i:05d}.service" for i in range(units)])

        async def worker() -> None:
            for name in names:  # a shared iterator: each name is taken by one worker
                await _submit(reg, name, uf)

        submitting = asyncio.gather(*(worker() for _ in range(max(1, in_flight))))
        try:
            await asyncio.wait_for(asyncio.shield(submitting), limit)
        except TimeoutError:
            submitting.cancel()
            raise TimeoutError(f"units not all submitted within {limit:g}s") from None
        submitted = time.monotonic() - start
        said = time.monotonic()
        while (placed := sum(len(r.active) for r in runners)) < units:
            now = time.monotonic()
            if now - start > limit:
                raise TimeoutError(f"{placed} of {units} units placed within {limit:g}s")
            if progress is not None and now - said >= 30:
                progress(f"{now - start:.0f} s: {placed} of {units} units running")
                said = now
            await asyncio.sleep(0.2)
        took = time.monotonic() - start
        requests = reg.kv.requests + sum(m.registry.kv.requests for m in fleet)
        events = sum(m.jobs_follower.events + m.me_follower.events for m in fleet)
        rereads = sum(m.jobs_follower.rereads + m.me_follower.rereads for m in fleet)
    finally:
        # all at once: one by one, each kill waits behind the others' ongoing work
        await asyncio.gather(*(m.kill() for m in fleet))  # no per-unit cleanup: see below
        await reg.kv.delete(prefix.rstrip("/"), recursive=True)
        await reg.kv.close()
    return BenchResult(machines, units, took, requests, submitted, events, rereads)
