"""fleet: schedule systemd units across machines through the KV store.

Pure cores (no I/O, no clock): :mod:`~corral.fleet.unitfile` (fleet's unit model and hash),
:mod:`~corral.fleet.xfleet` (``[X-Fleet]`` rules), :mod:`~corral.fleet.registry` (key layout
and value codecs), :mod:`~corral.fleet.scheduler` (the engine's decisions, ``why``, ``move``)
and :mod:`~corral.fleet.agent` (one machine's load/start/stop/unload plan).

Shells (asyncio): :mod:`~corral.fleet.store` (registry operations over
:class:`corral.client.AsyncClient`), :mod:`~corral.fleet.machine` (heart, engine, agent,
publisher, watch), :mod:`~corral.fleet.units_runner` (units run by the machine's units daemon;
:mod:`~corral.fleet.runner` holds the contract and the in-memory stand-in) and
:mod:`~corral.fleet.api` (fleetd's HTTP API v1 subset and status/journal extension).
"""

from corral.fleet.agent import (
    AgentTask,
    CurrentUnit,
    DesiredUnit,
    TaskType,
    desired_state,
    plan_tasks,
)
from corral.fleet.errors import (
    FleetError,
    MoveRefused,
    RegistryFormatError,
    RequirementsError,
    UnitFileError,
    UnitNameError,
)
from corral.fleet.registry import JobState, Keys, MachineState, RegistryUnit, UnitStateRecord
from corral.fleet.scheduler import (
    Action,
    ActionKind,
    Fit,
    Plan,
    Rule,
    SchedUnit,
    Verdict,
    plan,
    plan_move,
    why,
)
from corral.fleet.unitfile import UnitFile, UnitNameInfo, UnitOption, mangle_name, validate_name
from corral.fleet.xfleet import Requirements, requirements, validate_options

__all__ = [
    "Action",
    "ActionKind",
    "AgentTask",
    "CurrentUnit",
    "DesiredUnit",
    "Fit",
    "FleetError",
    "JobState",
    "Keys",
    "MachineState",
    "MoveRefused",
    "Plan",
    "RegistryFormatError",
    "RegistryUnit",
    "Requirements",
    "RequirementsError",
    "Rule",
    "SchedUnit",
    "TaskType",
    "UnitFile",
    "UnitFileError",
    "UnitNameError",
    "UnitNameInfo",
    "UnitOption",
    "UnitStateRecord",
    "Verdict",
    "desired_state",
    "mangle_name",
    "plan",
    "plan_move",
    "plan_tasks",
    "requirements",
    "validate_name",
    "validate_options",
    "why",
]
