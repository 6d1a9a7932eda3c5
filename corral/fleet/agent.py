"""The agent's reconciler: desired vs actual units on one machine → tasks (pure).

A port of coreos/fleet ``agent/reconcile.go`` and ``agent/task.go`` (fleet reference §1.4).

* **Desired** (:func:`desired_state`): from a fresh registry read and this machine's state as
  published (so dynamic metadata applies): the units :func:`scheduler.agent_accepts` gives
  this machine, each with its target state and unit file.
* **Current**: the units whose files the agent wrote, each ``loaded`` or ``launched`` per
  the agent's own record (else ``inactive``), plus the hash of the file it wrote.
* **Per unit**, in name order (:func:`tasks_for_unit`)::

      desired absent/inactive, current present   → Unload
      desired loaded/launched, current absent    → Load (+ Start if launched)
      hash differs                               → Unload, Load (+ Start if launched)
      same state, same hash                      → nothing
      launched vs inactive                       → Load, Start
      launched vs loaded                         → Start
      loaded vs launched                         → Stop

* All tasks are then stable-sorted Unload < Load < ReloadUnitFiles < Stop < Start, with one
  ReloadUnitFiles (a daemon-reload) only when some Load/Unload is present. The shell runs
  them in order and abandons the round at the first failure (the next round retries).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from corral.fleet.registry import JobState, MachineState, RegistryUnit
from corral.fleet.scheduler import SchedUnit, agent_accepts
from corral.fleet.unitfile import UnitFile

__all__ = [
    "AgentTask",
    "CurrentUnit",
    "DesiredUnit",
    "TaskType",
    "desired_state",
    "plan_tasks",
    "purge_tasks",
    "tasks_for_unit",
]


class TaskType(enum.IntEnum):
    """Task kinds; the value is the execution order within a round."""

    UNLOAD = 1
    LOAD = 2
    RELOAD_UNIT_FILES = 3
    STOP = 4
    START = 5

    @property
    def label(self) -> str:
        return {1: "UnloadUnit", 2: "LoadUnit", 3: "ReloadUnitFiles", 4: "StopUnit"}.get(
            self.value, "StartUnit"
        )


REASON_SCHEDULED_BUT_UNLOADED = "unit scheduled here but not loaded"
REASON_LOADED_BUT_NOT_SCHEDULED = "unit loaded but not scheduled here"
REASON_HASH_DIFFERS = "unit loaded but hash differs to expected"
REASON_DESIRED_LAUNCHED = "unit currently loaded but desired state is launched"
REASON_DESIRED_LOADED = "unit currently launched but desired state is loaded"
REASON_PURGING = "purging agent"
REASON_RELOAD = "always reload unit files"


@dataclass(frozen=True)
class AgentTask:
    type: TaskType
    unit: str  # "" for ReloadUnitFiles
    reason: str
    unit_file: UnitFile | None = None  # what Load writes

    def __str__(self) -> str:
        return f"{self.type.label} {self.unit or '-'} ({self.reason})"


@dataclass(frozen=True)
class DesiredUnit:
    name: str
    unit_file: UnitFile
    target_state: JobState


@dataclass(frozen=True)
class CurrentUnit:
    state: JobState
    hash_hex: str


def desired_state(machine: MachineState, units: Iterable[RegistryUnit]) -> dict[str, DesiredUnit]:
    """What this machine should run, name → desired unit."""
    by_name = {u.name: u for u in units}
    sched = [
        SchedUnit.from_unit(u.name, u.unit, u.target_state, u.target) for u in by_name.values()
    ]
    return {
        name: DesiredUnit(name, by_name[name].unit, by_name[name].target_state)
        for name in agent_accepts(machine, sched)
    }


def tasks_for_unit(
    name: str, desired: DesiredUnit | None, current: CurrentUnit | None
) -> list[AgentTask]:
    """The tasks that bring one unit from ``current`` to ``desired`` (table above)."""
    if desired is None or desired.target_state is JobState.INACTIVE:
        if current is None:
            return []
        return [AgentTask(TaskType.UNLOAD, name, REASON_LOADED_BUT_NOT_SCHEDULED)]
    uf = desired.unit_file
    load = AgentTask(TaskType.LOAD, name, REASON_SCHEDULED_BUT_UNLOADED, uf)
    start = AgentTask(TaskType.START, name, REASON_DESIRED_LAUNCHED, uf)
    launched = desired.target_state is JobState.LAUNCHED
    if current is None:
        return [load, start] if launched else [load]
    if current.hash_hex != uf.hash_hex:
        unload = AgentTask(TaskType.UNLOAD, name, REASON_HASH_DIFFERS)
        return [unload, load, start] if launched else [unload, load]
    if current.state is desired.target_state:
        return []
    tasks: list[AgentTask] = []
    if current.state is JobState.INACTIVE:
        tasks.append(load)
    if launched:
        tasks.append(start)
    if current.state is JobState.LAUNCHED and desired.target_state is JobState.LOADED:
        tasks.append(AgentTask(TaskType.STOP, name, REASON_DESIRED_LOADED, uf))
    return tasks


def plan_tasks(
    desired: Mapping[str, DesiredUnit], current: Mapping[str, CurrentUnit]
) -> list[AgentTask]:
    """One agent round: every unit's tasks, ordered by type, daemon-reload only if needed."""
    tasks: list[AgentTask] = []
    for name in sorted(set(desired) | set(current)):
        tasks.extend(tasks_for_unit(name, desired.get(name), current.get(name)))
    if any(t.type in (TaskType.LOAD, TaskType.UNLOAD) for t in tasks):
        tasks.append(AgentTask(TaskType.RELOAD_UNIT_FILES, "", REASON_RELOAD))
    return sorted(tasks, key=lambda t: t.type)  # stable: name order within a type


def purge_tasks(current: Mapping[str, CurrentUnit]) -> list[AgentTask]:
    """Graceful shutdown: stop and unload everything this agent manages."""
    return [AgentTask(TaskType.UNLOAD, name, REASON_PURGING) for name in sorted(current)]
