"""Fleet's view of a machine after a reboot: do the units scheduled here come back active?

Theory of operation
-------------------
A release can leave the machine itself healthy yet break the workloads fleet put on it.
After every boot the update agent therefore also asks: *are the fleet units scheduled to
this machine active again?* The question goes through a small seam, `FleetView`: an async
callable returning one `UnitObservation` per unit this machine is expected to run, or
raising `FleetUnavailable` when fleet cannot be asked. `KvFleetView` implements it over the
etcd v2 API with fleet's registry layout (reference: fleet registry keys):

* `P/job/<unit>/target` = this machine's ID and `P/job/<unit>/target-state` = `launched`
  → the unit is expected to be active here (`loaded`/`inactive` units are not);
* `P/states/<unit>/<machineID>` = `{"loadState", "activeState", "subState", …}`, published
  by this machine's fleet agent; missing means "not reported yet".

`P` is `/_coreos.com/fleet/` unless configured. Global units (no `target`) are not judged.
Without fleet configured the agent has no view and this gate is skipped; it is also
skipped for a slot already marked successful (it has nothing to fall back to).

`FleetGate` is the pure judge: given `now` and an observation (None when fleet could not be
asked), it answers OK once every expected unit is `active`, WAIT while the window since boot
is open, and FAIL with the corral error code (`CORRAL_FLEET_UNITS_INACTIVE`, or
`CORRAL_FLEET_UNREACHABLE` if fleet never answered) once `window` seconds have passed.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from corral.update.errors import UpdateError
from corral.update.omaha import ErrorCode

__all__ = [
    "DEFAULT_PREFIX",
    "FleetGate",
    "FleetUnavailable",
    "FleetView",
    "GateResult",
    "GateVerdict",
    "KvFleetView",
    "UnitObservation",
]

DEFAULT_PREFIX = "/_coreos.com/fleet/"


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
    """`FleetView` over fleet's registry in an etcd-v2 KV store (corral's or etcd's)."""

    def __init__(self, endpoints: str | list[str], machine_id: str,
                 prefix: str = DEFAULT_PREFIX, timeout: float = 5.0) -> None:
        if not machine_id:
            raise ValueError("machine id is empty")
        self.endpoints = endpoints
        self.machine_id = machine_id
        self.prefix = "/" + prefix.strip("/") + "/"
        self.timeout = timeout

    async def __call__(self) -> list[UnitObservation]:
        from corral.client.aio import AsyncClient
        from corral.client.errors import ClientError, KeyNotFound
        from corral.client.protocol import Node
        from corral.client.sync import Timeouts

        def children(node: Node | None) -> dict[str, Node]:
            if node is None:
                return {}
            return {n.key.rsplit("/", 1)[-1]: n for n in node.nodes}

        try:
            timeouts = Timeouts(connect=min(2.0, self.timeout), request=self.timeout)
            async with AsyncClient(self.endpoints, timeouts) as client:
                try:
                    jobs = await client.get(self.prefix + "job", recursive=True)
                except KeyNotFound:
                    return []
                expected = []
                for name, job in sorted(children(jobs.node).items()):
                    fields = children(job)
                    target = fields.get("target")
                    state = fields.get("target-state")
                    if (target is not None and target.value == self.machine_id
                            and state is not None and state.value == "launched"):
                        expected.append(name)
                out = []
                for name in expected:
                    try:
                        r = await client.get(f"{self.prefix}states/{name}/{self.machine_id}")
                    except KeyNotFound:
                        out.append(UnitObservation(name))
                        continue
                    out.append(_observation(name, r.value))
                return out
        except (ClientError, OSError, TimeoutError) as exc:
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
