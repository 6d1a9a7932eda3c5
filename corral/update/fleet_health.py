"""Fleet's view of a machine after a reboot: do the units scheduled here come back active?

Theory of operation
-------------------
A release can leave the machine itself healthy yet break the workloads fleet put on it.
After every boot the update agent therefore also asks: *are the fleet units scheduled to
this machine active again?* The question goes through a small seam, `FleetView`: an async
callable returning one `UnitObservation` per unit this machine is expected to run, or
raising `FleetUnavailable` when fleet cannot be asked. `KvFleetView` implements it over the
etcd v2 API with fleet's registry layout (reference: fleet registry keys):

* `P/machines/<machineID>/object`: this machine's fleet agent is registered, running the
  booted release (its `version`); until it is, nothing else is judged (the states still in
  the registry are the previous boot's);
* the units fleet's agent would run here (fleet's own rule, `desired_state`): `P/job/<unit>`
  with `target` = this machine, and global units whose `MachineMetadata` this machine
  matches, with `target-state` = `launched` → expected active (`loaded` units are not);
* `P/states/<unit>/<machineID>` = `{"loadState", "activeState", "subState", …}`, published
  by this machine's fleet agent; missing means "not reported yet".

`P` is `/_coreos.com/fleet/` unless configured.
Without fleet configured the agent has no view and this gate is skipped; it is also
skipped for a slot already marked successful (it has nothing to fall back to).

`FleetGate` is the pure judge: given `now` and an observation (None when fleet could not be
asked), it answers OK once every expected unit is `active`, WAIT while the window is open,
and FAIL with the corral error code (`CORRAL_FLEET_UNITS_INACTIVE`, or
`CORRAL_FLEET_UNREACHABLE` if fleet never answered) once `window` seconds have passed. The
window opens at the boot, and opens again at every observation saying the machine's fleet
agent is not back yet (`FLEET_AGENT`): the units get the whole window once fleet runs
again, however slowly the machine came up; the agent's boot deadline bounds that wait.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from corral.update.errors import UpdateError
from corral.update.omaha import ErrorCode

__all__ = [
    "DEFAULT_PREFIX",
    "FLEET_AGENT",
    "FleetGate",
    "FleetUnavailable",
    "FleetView",
    "GateResult",
    "GateVerdict",
    "KvFleetView",
    "UnitObservation",
]

DEFAULT_PREFIX = "/_coreos.com/fleet/"
FLEET_AGENT = "fleet agent"  # the pseudo-unit of a view whose machine's fleet is not back


class FleetUnavailable(UpdateError):
    """Fleet's registry could not be read (the KV store is down or unreachable)."""

    code = ErrorCode.CORRAL_FLEET_UNREACHABLE


@dataclass(frozen=True, slots=True)
class UnitObservation:
    """One unit fleet expects active here; `active_state` None = no state published."""

    name: str
    active_state: str | None = None
    sub_state: str | None = None

    @property
    def active(self) -> bool:
        return self.active_state == "active"


class FleetView(Protocol):
    async def __call__(self) -> Sequence[UnitObservation]: ...


class GateVerdict(enum.Enum):
    OK = "ok"
    WAIT = "wait"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class GateResult:
    """`code`/`detail`: what is wrong (while waiting too), as it would be reported."""

    verdict: GateVerdict
    code: int | None = None
    detail: str = ""


@dataclass
class FleetGate:
    """Judges observations against the window opened at `booted_at` (times in seconds)."""

    window: float
    booted_at: float

    def __post_init__(self) -> None:
        if self.window <= 0:
            raise ValueError("fleet window must be positive")

    def observe(self, now: float, units: Sequence[UnitObservation] | None) -> GateResult:
        if units is not None and any(u.name == FLEET_AGENT for u in units):
            # The machine's fleet agent is not back yet: the units' window opens when it is
            # (a slow boot is the boot deadline's business, not a unit's failure).
            self.booted_at = now
            agent = next(u for u in units if u.name == FLEET_AGENT)
            return GateResult(GateVerdict.WAIT, int(ErrorCode.CORRAL_FLEET_UNITS_INACTIVE),
                              f"fleet agent {agent.active_state or 'not back'}")
        if units is not None:
            bad = [u for u in units if not u.active]
            if not bad:
                return GateResult(GateVerdict.OK)
            detail = "fleet units not active: " + ", ".join(
                f"{u.name} ({u.active_state or 'no state'})" for u in sorted(
                    bad, key=lambda u: u.name))
            code = int(ErrorCode.CORRAL_FLEET_UNITS_INACTIVE)
        else:
            detail = "fleet registry unreachable"
            code = int(ErrorCode.CORRAL_FLEET_UNREACHABLE)
        if now - self.booted_at >= self.window:
            return GateResult(GateVerdict.FAIL, code, detail)
        return GateResult(GateVerdict.WAIT, code, detail)


class KvFleetView:
    """`FleetView` over fleet's registry in an etcd-v2 KV store (corral's or etcd's).

    The units expected here are the ones this machine's fleet agent would take on
    (`corral.fleet.agent.desired_state`: units targeted here and the global units whose
    metadata this machine matches) whose target state is `launched`. Before any of them is
    judged, the machine's fleet agent must be registered again after the boot, and — with
    `expected_version` — be running that version (fleetd runs from the booted slot and
    publishes its version): until then the states in the registry are the previous boot's.
    That wait is reported as the pseudo-unit `FLEET_AGENT`.
    """

    def __init__(self, endpoints: str | list[str], machine_id: str,
                 prefix: str = DEFAULT_PREFIX, timeout: float = 5.0,
                 expected_version: Callable[[], str] | None = None) -> None:
        if not machine_id:
            raise ValueError("machine id is empty")
        self.endpoints = endpoints
        self.machine_id = machine_id
        self.prefix = "/" + prefix.strip("/") + "/"
        self.timeout = timeout
        self.expected_version = expected_version

    async def __call__(self) -> list[UnitObservation]:
        from corral.client.aio import AsyncClient
        from corral.client.errors import ClientError, KeyNotFound
        from corral.client.sync import Timeouts
        from corral.fleet.agent import desired_state
        from corral.fleet.errors import FleetError
        from corral.fleet.registry import JobState
        from corral.fleet.store import Registry

        try:
            timeouts = Timeouts(connect=min(2.0, self.timeout), request=self.timeout)
            async with AsyncClient(self.endpoints, timeouts) as client:
                registry = Registry(client, self.prefix)
                machine = await registry.machine(self.machine_id)
                if machine is None:
                    return [UnitObservation(FLEET_AGENT, "not registered")]
                want = self.expected_version() if self.expected_version else ""
                if want and machine.version != want:
                    return [UnitObservation(FLEET_AGENT, f"runs {machine.version or '?'}")]
                units, _ = await registry.units()
                expected = sorted(name for name, d in desired_state(machine, units).items()
                                  if d.target_state is JobState.LAUNCHED)
                out = []
                for name in expected:
                    try:
                        r = await client.get(f"{self.prefix}states/{name}/{self.machine_id}")
                    except KeyNotFound:
                        out.append(UnitObservation(name))
                        continue
                    out.append(_observation(name, r.value))
                return out
        except (ClientError, FleetError, OSError, TimeoutError) as exc:
            raise FleetUnavailable(f"cannot read fleet's registry: {exc}") from exc


def _observation(name: str, value: str | None) -> UnitObservation:
    try:
        doc = json.loads(value or "")
    except ValueError:
        return UnitObservation(name)
    if not isinstance(doc, dict):
        return UnitObservation(name)
    active, sub = doc.get("activeState"), doc.get("subState")
    return UnitObservation(name, active if isinstance(active, str) else None,
                           sub if isinstance(sub, str) else None)
