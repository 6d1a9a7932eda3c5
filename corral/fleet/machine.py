"""One fleet machine: presence, engine, agent, unit-state publisher, watch (asyncio shell).

The loops of coreos/fleet ``server/server.go`` around the pure cores (fleet reference §1):

* **heart** registers ``machines/<id>/object`` (create-only, retried until it succeeds: a
  live duplicate machine ID never registers) and refreshes it every ``agent_ttl/2``;
* **engine** (unless ``disable_engine``) holds the leader lease ``lease/engine-leader``
  (TTL 5 × ``engine_reconcile_interval``) and, while leader, applies
  :func:`corral.fleet.scheduler.plan` to a fresh snapshot every interval;
* **agent** applies :func:`corral.fleet.agent.plan_tasks` every
  ``agent_reconcile_interval``; the first failing task ends the round;
* **publisher** writes ``states/<unit>/<id>`` (TTL ``agent_ttl``) when systemd's view of a
  unit changes and every ``heartbeat_interval``; it also refreshes launched heartbeats;
* **watch** (unless ``disable_watches``): a change of a ``target`` or ``target-state`` key wakes
  the engine and the agent at once.

:meth:`FleetMachine.stop` is fleet's graceful shutdown (purge: units stopped and unloaded,
states and presence deleted, lease released). :meth:`FleetMachine.kill` is a hard kill: the
loops stop and nothing is cleaned up, so units keep running and the cluster notices only when
the presence key expires. A KV outage never stops units: rounds fail and are retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from corral.client import ClientError, Timeouts
from corral.client.aio import AsyncClient
from corral.fleet.agent import CurrentUnit, TaskType, desired_state, plan_tasks, purge_tasks
from corral.fleet.config import FleetConfig
from corral.fleet.errors import FleetError
from corral.fleet.registry import JobState, MachineState, UnitStateRecord
from corral.fleet.runner import RunnerError, UnitRunner
from corral.fleet.scheduler import ActionKind, Plan, SchedUnit, plan
from corral.fleet.store import Registry, sleep_or

__all__ = ["FleetMachine"]

log = logging.getLogger("corral.fleet")

_WATCH_POLL = 30.0  # a watch that saw nothing for this long is re-issued (dead connections)

_ERRORS = (FleetError, RunnerError, ClientError, OSError)


class FleetMachine:
    def __init__(
        self,
        machine_id: str,
        config: FleetConfig,
        runner: UnitRunner,
        client: AsyncClient | None = None,
        version: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.state = MachineState(
            machine_id, config.public_ip, dict(config.metadata), None, version
        )
        self.runner = runner
        self.client = client or AsyncClient(
            list(config.etcd_servers),
            Timeouts(
                connect=config.etcd_request_timeout,
                request=config.etcd_request_timeout,
                watch=_WATCH_POLL,
            ),
        )
        self.registry = Registry(self.client, config.etcd_key_prefix)
        self.clock = clock
        self.is_leader = False
        self._version_checked = float("-inf")
        self.registered = asyncio.Event()
        self.last_plan: Plan | None = None
        self._agent_cache: dict[str, JobState] = {}
        self._published: dict[str, tuple[UnitStateRecord, float]] = {}
        self._beats: dict[str, float] = {}
        self._wake_engine = asyncio.Event()
        self._wake_agent = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.api_url = ""  # set by fleetd when it serves HTTP; published next to presence

    @property
    def id(self) -> str:
        return self.state.id

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        loops: list[Callable[[], Coroutine[Any, Any, None]]] = [
            self._heart,
            self._agent,
            self._publisher,
        ]
        if not self.config.disable_engine:
            loops.append(self._engine)
        if not self.config.disable_watches:
            loops.append(self._watch)
        self._tasks = [
            asyncio.create_task(f(), name=f"fleet-{self.id}-{f.__name__}") for f in loops
        ]

    async def _cancel(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []

    async def kill(self) -> None:
        """Hard stop: no cleanup at all (units keep running, keys expire by TTL)."""
        await self._cancel()
        await self.client.aclose()

    async def stop(self) -> None:
        """Graceful shutdown: purge units, states, lease and presence."""
        await self._cancel()
        try:
            for _ in range(10):
                current = self._current()
                if not current:
                    break
                await self._run_tasks(purge_tasks(current))
            for name in list(self._published):
                await self.registry.remove_unit_state(name, self.id)
            if self.is_leader:
                await self.registry.release_lease(self.id)
            await self.registry.remove_machine(self.id)
            if self.api_url:
                await self.registry.remove_api(self.id)
        except _ERRORS as exc:
            log.warning("machine %s: cleanup incomplete: %s", self.id, exc)
        finally:
            await self.client.aclose()

    # --- heart --------------------------------------------------------------------------------

    async def _heart(self) -> None:
        ttl = self.config.agent_ttl
        backoff = min(1.0, ttl / 4)
        while not self.registered.is_set():
            try:
                await self.registry.register_machine(self.state, ttl)
                await self._publish_api(ttl)
                self.registered.set()
                log.info("machine %s registered", self.id)
            except _ERRORS as exc:
                log.info("machine %s: registration failed, retrying: %s", self.id, exc)
                await asyncio.sleep(backoff)
        self._wake_engine.set()
        self._wake_agent.set()
        while True:
            await asyncio.sleep(ttl / 2)
            try:
                await self.registry.beat(self.state, ttl)
                await self._publish_api(ttl)
            except _ERRORS as exc:
                log.warning("machine %s: heartbeat failed: %s", self.id, exc)

    async def _publish_api(self, ttl: float) -> None:
        if self.api_url:
            await self.registry.publish_api(self.id, self.api_url, ttl)

    # --- engine -------------------------------------------------------------------------------

    async def _engine(self) -> None:
        await self.registered.wait()
        interval = self.config.engine_reconcile_interval
        while True:
            try:
                await self.engine_round()
            except _ERRORS as exc:
                log.warning("engine %s: round failed: %s", self.id, exc)
            if await sleep_or(self._wake_engine, interval):
                await asyncio.sleep(self.config.watch_coalesce)
            self._wake_engine.clear()

    async def engine_round(self) -> None:
        ttl = self.config.lease_ttl
        if self.clock() >= self._version_checked + ttl:
            if not await self.registry.ensure_engine_version():
                self.is_leader = False
                return
            self._version_checked = self.clock()
        if self.is_leader and not await self.registry.renew_lease(self.id, ttl):
            log.warning("Engine leadership lost, renewal failed")
            self.is_leader = False
        if not self.is_leader and await self.registry.acquire_lease(self.id, ttl):
            log.info("Engine leadership acquired")
            self.is_leader = True
        if not self.is_leader:
            return
        started = self.clock()
        snap = await self.registry.snapshot()
        units = [SchedUnit.from_unit(u.name, u.unit, u.target_state, u.target) for u in snap.units]
        p = plan(snap.machines, units)
        self.last_plan = p
        for a in p.actions:
            if self.clock() - started > ttl:
                log.warning("engine %s: reconcile exceeded the lease TTL, aborting", self.id)
                return
            if a.kind is ActionKind.SCHEDULE:
                await self.registry.schedule_unit(a.unit, a.machine)
            else:
                await self.registry.unschedule_unit(a.unit, a.machine)
            log.info(
                "EngineReconciler completed task: %s %s %s (%s)",
                a.kind,
                a.unit,
                a.machine,
                a.reason,
            )

    # --- agent --------------------------------------------------------------------------------

    def _current(self) -> dict[str, CurrentUnit]:
        return {
            name: CurrentUnit(self._agent_cache.get(name, JobState.INACTIVE), h)
            for name, h in self.runner.files().items()
        }

    async def _agent(self) -> None:
        await self.registered.wait()
        interval = self.config.agent_reconcile_interval
        while True:
            try:
                await self.agent_round()
            except _ERRORS as exc:
                log.warning("agent %s: round failed: %s", self.id, exc)
            if await sleep_or(self._wake_agent, interval):
                await asyncio.sleep(self.config.watch_coalesce)
            self._wake_agent.clear()

    async def agent_round(self) -> None:
        await self.runner.refresh()  # first call adopts the files a previous fleetd loaded
        units, _ = await self.registry.units()
        ms = await self.registry.machine(self.id)
        if ms is None:
            return  # not registered (yet): nothing is known to be ours
        tasks = plan_tasks(desired_state(ms, units), self._current())
        await self._run_tasks(tasks)

    async def _run_tasks(self, tasks: list[Any]) -> None:
        for t in tasks:
            name = t.unit
            if t.type is TaskType.LOAD:
                self._agent_cache[name] = JobState.LOADED
                await self.runner.write(name, t.unit_file)
            elif t.type is TaskType.START:
                self._agent_cache[name] = JobState.LAUNCHED
                await self.registry.set_heartbeat(name, self.id, self.config.agent_ttl)
                self._beats[name] = self.clock()
                await self.runner.start(name)
            elif t.type is TaskType.STOP:
                self._agent_cache[name] = JobState.LOADED
                self._beats.pop(name, None)
                await self.registry.clear_heartbeat(name, self.id)
                await self.runner.stop(name)
            elif t.type is TaskType.UNLOAD:
                self._beats.pop(name, None)
                self._agent_cache.pop(name, None)
                await self.registry.clear_heartbeat(name, self.id)
                await self.runner.stop(name)
                await self.runner.remove(name)
            else:
                await self.runner.reload()
            log.info("AgentReconciler completed task: %s", t)

    # --- unit states --------------------------------------------------------------------------

    async def _publisher(self) -> None:
        await self.registered.wait()
        while True:
            try:
                await self.publish_states()
            except _ERRORS as exc:
                log.warning("publisher %s: %s", self.id, exc)
            await asyncio.sleep(self.config.unit_state_interval)

    async def publish_states(self) -> None:
        now = self.clock()
        period = self.config.heartbeat_interval
        ttl = self.config.agent_ttl
        await self.runner.refresh()
        files = self.runner.files()
        for name, h in sorted(files.items()):
            st = self.runner.state(name)
            rec = UnitStateRecord(st.load, st.active, st.sub, self.id, h)
            prev = self._published.get(name)
            if prev is None or prev[0] != rec or now - prev[1] >= period:
                await self.registry.save_unit_state(name, rec, ttl)
                self._published[name] = (rec, now)
        for name in [n for n in self._published if n not in files]:
            await self.registry.remove_unit_state(name, self.id)
            del self._published[name]
        for name, last in list(self._beats.items()):
            if now - last >= period and self._agent_cache.get(name) is JobState.LAUNCHED:
                await self.registry.set_heartbeat(name, self.id, ttl)
                self._beats[name] = now

    # --- watch --------------------------------------------------------------------------------

    async def _watch(self) -> None:
        await self.registered.wait()
        while True:
            try:
                # index None: from now on; the client re-reads and goes on after error 401
                async for event in self.client.watch(self.registry.keys.jobs, recursive=True):
                    self.registry.kv.requests += 1
                    key = event.node.key if event.node is not None else ""
                    if key.rsplit("/", 1)[-1] in ("target", "target-state"):
                        self._wake_engine.set()
                        self._wake_agent.set()
            except _ERRORS as exc:
                log.warning("watch %s: %s", self.id, exc)
                await asyncio.sleep(1.0)
