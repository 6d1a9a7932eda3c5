"""One fleet machine: presence, engine, agent, unit-state publisher, watch (asyncio shell).

The loops of coreos/fleet ``server/server.go`` around the pure cores (fleet reference §1):

* **heart** registers ``machines/<id>/object`` (create-only, retried until it succeeds: a
  live duplicate machine ID never registers) and refreshes it every ``agent_ttl/2``;
* **engine** (unless ``disable_engine``) holds the leader lease ``lease/engine-leader``
  (TTL 5 × ``engine_reconcile_interval``) and, while leader, applies
  :func:`corral.fleet.scheduler.plan` every interval (its writes pipelined, the lease renewed
  during a long round);
* **agent** applies :func:`corral.fleet.agent.plan_tasks` every
  ``agent_reconcile_interval``; the first failing task ends the round;
* **publisher** writes ``states/<unit>/<id>`` (TTL ``agent_ttl``) when systemd's view of a
  unit changes and every ``heartbeat_interval``; it also refreshes launched heartbeats;
* **watch** (unless ``disable_watches``): ``job/`` and this machine's ``machines/<id>`` are
  read once and then followed by recursive watches into cached views
  (:mod:`corral.fleet.follow`); the agent and the engine reconcile from those views instead
  of re-reading the job tree every round (fleet did; with M machines every change cost M
  reads of the whole tree). A change of a ``target``, ``target-state`` or ``object`` key
  wakes the engine and the agent; wake-ups within ``watch_coalesce`` are one round. The engine
  still reads the machine list every round (presence keys are refreshed every ``agent_ttl/2``
  by every machine: following them would cost more requests than reading them), and overlays
  its own scheduling writes that the view does not show yet. With
  ``disable_watches`` every round reads the registry afresh, as fleet does.

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
from corral.fleet.follow import Follower
from corral.fleet.registry import (
    JobState,
    MachineState,
    RegistryUnit,
    UnitStateRecord,
    decode_job_object,
    decode_machines,
)
from corral.fleet.runner import RunnerError, UnitRunner
from corral.fleet.scheduler import (
    Action,
    ActionKind,
    Plan,
    SchedUnit,
    cached_requirements,
    plan,
)
from corral.fleet.store import Registry, sleep_or
from corral.fleet.unitfile import UnitFile
from corral.fleet.view import JobsView, TreeView, WatchEvent, overlay_targets

__all__ = ["FleetMachine"]

log = logging.getLogger("corral.fleet")

# A watch that saw nothing for this long is re-issued (dead connections). Long: re-issued
# after the store's 1000-event history has moved on, it gets 401 and re-reads the tree.
_WATCH_POLL = 120.0

_ENGINE_IN_FLIGHT = 16  # scheduling writes the engine keeps in flight

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
        self._here: set[str] = set()  # jobs the view shows scheduled to this machine
        self._wake_agent = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.api_url = ""  # set by fleetd when it serves HTTP; published next to presence
        keys = self.registry.keys
        self.jobs = JobsView(keys.jobs)
        self.me = TreeView(keys.machine(machine_id))
        self.jobs_follower = Follower(
            self.registry.kv,
            self.jobs,
            self._on_job_event,
            lag_limit=config.watch_lag_limit or None,
        )
        self.me_follower = Follower(self.registry.kv, self.me, self._on_me_event)

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
            loops += [self.jobs_follower.run, self.me_follower.run]
        self._tasks = [
            asyncio.create_task(f(), name=f"fleet-{self.id}-{i}") for i, f in enumerate(loops)
        ]

    async def _cancel(self) -> None:
        # cancelled again until done: a library may swallow one cancellation
        while pending := [t for t in self._tasks if not t.done()]:
            for t in pending:
                t.cancel()
            await asyncio.wait(pending, timeout=1.0)
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                t.result()
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
                await self._settle(self._wake_engine)
            self._wake_engine.clear()

    async def _settle(self, wake: asyncio.Event) -> None:
        """Coalesce a burst: after a wake-up, wait until no new one came for
        ``watch_coalesce`` seconds, at most 20 × ``watch_coalesce`` in all."""
        quiet = self.config.watch_coalesce
        deadline = self.clock() + 20 * quiet
        while (left := deadline - self.clock()) > 0:
            wake.clear()
            if not await sleep_or(wake, min(quiet, left)):
                return

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
        found = await self._units()
        if found is None:
            return  # the view is not there yet: next round
        if not self.config.disable_watches:
            found, self.registry.target_writes = overlay_targets(
                found, self.registry.target_writes, self.jobs.index
            )
        machines = await self.registry.machines()
        units = [SchedUnit.from_unit(u.name, u.unit, u.target_state, u.target) for u in found]
        p = plan(machines, units)
        self.last_plan = p
        # Pass 1's unschedules land before pass 2's schedules; within a pass the writes are
        # independent keys (create-only / compare-and-delete), so they are pipelined. fleet
        # wrote them one by one and aborted a round longer than the lease TTL; here the lease
        # is renewed every TTL/2 during a long round and the round stops if that fails.
        renewed = started
        if self.clock() - renewed >= ttl / 2:  # planning alone took that long
            if not await self.registry.renew_lease(self.id, ttl):
                log.warning("Engine leadership lost, renewal failed")
                self.is_leader = False
                return
            renewed = self.clock()
        for kind in (ActionKind.UNSCHEDULE, ActionKind.SCHEDULE):
            pending: set[asyncio.Task[None]] = set()
            try:
                for a in [a for a in p.actions if a.kind is kind]:
                    if self.clock() - renewed >= ttl / 2:
                        if not await self.registry.renew_lease(self.id, ttl):
                            log.warning("Engine leadership lost, renewal failed")
                            self.is_leader = False
                            return
                        renewed = self.clock()
                    while len(pending) >= _ENGINE_IN_FLIGHT:
                        done, pending = await asyncio.wait(
                            pending, return_when=asyncio.FIRST_COMPLETED
                        )
                        failed = [t.exception() for t in done]  # each one retrieved
                        for exc in failed:
                            if exc is not None:
                                raise exc  # the first failed write fails the round
                    pending.add(asyncio.create_task(self._engine_write(a)))
                for r in await asyncio.gather(*pending, return_exceptions=True):
                    if isinstance(r, BaseException):
                        raise r
            finally:
                for t in pending:
                    t.cancel()

    async def _engine_write(self, a: Action) -> None:
        if a.kind is ActionKind.SCHEDULE:
            await self.registry.schedule_unit(a.unit, a.machine)
        else:
            await self.registry.unschedule_unit(a.unit, a.machine)
        log.info(
            "EngineReconciler completed task: %s %s %s (%s)", a.kind, a.unit, a.machine, a.reason
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
                await self._settle(self._wake_agent)
            self._wake_agent.clear()

    async def agent_round(self) -> None:
        await self.runner.refresh()  # first call adopts the files a previous fleetd loaded
        units = await self._units()
        if units is None:
            return
        if self.config.disable_watches:
            ms = await self.registry.machine(self.id)
        elif self.me_follower.ready.is_set():
            found = decode_machines({"nodes": [self.me.tree()]})
            ms = found[0] if found else None
        else:
            return
        if ms is None:
            return  # not registered (yet): nothing is known to be ours
        # Only units scheduled here or global can be accepted (agent_accepts skips the rest
        # before looking at conflicts), so the others need not be examined at all.
        units = [u for u in units if u.target == ms.id or self._is_global(u.name, u.unit)]
        tasks = plan_tasks(desired_state(ms, units), self._current())
        await self._run_tasks(tasks)

    async def _units(self) -> list[RegistryUnit] | None:
        """The registry's units: a fresh read with ``disable_watches``, else the followed
        view; None if the view is not there yet."""
        if self.config.disable_watches:
            return (await self.registry.units())[0]
        if not self.jobs_follower.ready.is_set():
            return None
        return (await self.registry.units_from_view(self.jobs))[0]

    async def _run_tasks(self, tasks: list[Any]) -> None:
        for t in tasks:
            name = t.unit
            if t.type is TaskType.LOAD:
                self._agent_cache[name] = JobState.LOADED
                await self.runner.write(name, t.unit_file)
            elif t.type is TaskType.START:
                # fleet's startUnit ignores the heartbeat's error (the publisher writes it
                # again next period); the cache says "launched" only once the runner has
                # started the unit, so a failed round is planned again, never forgotten.
                await self._heartbeat(name, set_it=True)
                await self.runner.start(name)
                self._agent_cache[name] = JobState.LAUNCHED
                self._beats[name] = self.clock()
            elif t.type is TaskType.STOP:
                self._beats.pop(name, None)
                await self._heartbeat(name, set_it=False)
                await self.runner.stop(name)
                self._agent_cache[name] = JobState.LOADED
            elif t.type is TaskType.UNLOAD:
                self._beats.pop(name, None)
                await self._heartbeat(name, set_it=False)
                await self.runner.stop(name)
                await self.runner.remove(name)
                self._agent_cache.pop(name, None)
            else:
                await self.runner.reload()
            log.info("AgentReconciler completed task: %s", t)

    async def _heartbeat(self, name: str, *, set_it: bool) -> None:
        """Set or clear a unit's "launched here" heartbeat, best effort as fleet's agent does
        (UnitHeartbeat / ClearUnitHeartbeat errors are not the task's)."""
        try:
            if set_it:
                await self.registry.set_heartbeat(name, self.id, self.config.agent_ttl)
            else:
                await self.registry.clear_heartbeat(name, self.id)
        except (FleetError, ClientError, OSError) as exc:
            log.warning("agent %s: heartbeat of %s: %s", self.id, name, exc)

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
                await self.registry.refresh_heartbeat(name, self.id, ttl)
                self._beats[name] = now

    # --- watch --------------------------------------------------------------------------------

    def _on_job_event(self, ev: WatchEvent | None, groups: set[str]) -> None:
        """Wake the reconcilers a change concerns (fleet woke both on every ``target`` or
        ``target-state`` change: with M machines each change cost M agent rounds).

        The engine wakes on new or changed units and desired states, not on ``target``
        writes (its own, or a ``move``'s, which it must not undo). The agent wakes when the
        unit was or is scheduled here, is loaded here, or is (or may be) global; everything
        else is also seen by its periodic round."""
        if ev is None:
            self._here = {
                name for name, g in self.jobs.groups.items() if g.get("target") == self.id
            }
            if groups:
                self._wake_engine.set()
                self._wake_agent.set()
            return
        parent, _, field = ev.key.rpartition("/")
        if parent == self.jobs.root:
            field = "object"  # the whole job went (destroy) or came
        if field not in ("target", "target-state", "object"):
            return  # job-state heartbeats and anything else: nobody's round changes
        if field != "target":
            self._wake_engine.set()
        for name in groups:
            was = name in self._here
            now = self.jobs.groups.get(name, {}).get("target") == self.id
            if now:
                self._here.add(name)
            else:
                self._here.discard(name)
            if was or now or name in self.runner.files() or self._maybe_global(name):
                self._wake_agent.set()

    def _maybe_global(self, name: str) -> bool:
        obj = self.jobs.groups.get(name, {}).get("object")
        if obj is None:
            return False
        try:
            _, digest = decode_job_object(obj)
        except FleetError:
            return True  # undecodable: let the round report it
        unit = self.registry.parsed(digest.hex())
        return unit is None or self._is_global(name, unit)

    def _is_global(self, name: str, unit: UnitFile) -> bool:
        return cached_requirements(unit, name).is_global

    def _on_me_event(self, ev: WatchEvent | None, groups: set[str]) -> None:
        # presence refreshes rewrite the same object: only a registration or a metadata
        # change can change what this machine should run
        if ev is None or not (ev.key.endswith("/object") and ev.action == "update"):
            self._wake_agent.set()
