"""The engine's scheduler: (machines, units, placements) → schedule/unschedule actions.

A pure, deterministic port of coreos/fleet ``engine/reconciler.go``, ``engine/scheduler.go``,
``engine/state.go`` and ``agent/state.go`` (fleet reference §1.3, §2.7). Nothing here reads a
clock or the network; the engine shell feeds in a registry snapshot and writes the actions.

Rulebook
--------
1. **Agent state.** The engine's view of machine M is: every non-global unit whose
   ``target`` is M and whose target state is not ``inactive`` (in name order), then every
   global unit whose ``MachineMetadata`` M satisfies and that conflicts with nothing already
   in the view (name order, so of two conflicting globals the alphabetically first wins —
   the agents decide the same way). The *load* of M is the size of its view.
2. **AbleToRun(unit, M)**, first failing rule wins: ``MachineID`` (full or 8-char short ID)
   → ``MachineMetadata`` → ``MachineOf`` (every peer in M's view) → ``Conflicts`` (either
   direction, globs, never with itself) → ``Replaces`` (exactly one direction with a unit in
   M's view: *Reschedule*, an acceptable verdict) → *Schedule*.
3. **Pass 1**, over scheduled units in name order: target state inactive, machine gone, or
   AbleToRun = Unschedule ⇒ unschedule (the snapshot is updated at once). AbleToRun =
   Reschedule ⇒ evict the *other* unit to the least-loaded other machine.
4. **Pass 2**, over unscheduled units whose target state is not inactive, in name order:
   machines sorted by (load, ID); the first whose verdict is not Unschedule gets the unit;
   the snapshot is updated so later decisions see the load. So a unit whose machine died is
   unscheduled and rescheduled in the same round.

Where corral deliberately differs from fleet (each keeps fleet's observable behaviour for
valid clusters and is documented in ``docs/fleet.md``):

* Go iterates units in map order; corral uses name order (fleet's tests never depend on it).
* Pass 1 is repeated until a sweep changes nothing, so a ``MachineOf`` follower whose leader
  was unscheduled later in the same sweep is released in the same round, not the next.
* fleet evicts whichever of the two related units it happens to look at second (Go map
  order), so sometimes the replacing unit moves; corral always moves the replaced unit.
* fleet moves a replaced unit to the least-loaded other machine without checking that unit's
  own rules; corral picks the least-loaded other machine where it fits (verdict Schedule),
  and when there is none it leaves both units where they are rather than flapping.
* ``Spread`` (an opt-in ``[X-Fleet]`` key) puts "fewest matching units" before load in the
  pass-2 machine order. It never overrides a rule.

Beyond fleet: :func:`why` names, per machine, the first rule that fails for a unit, and
:func:`plan_move` moves a unit to a chosen machine only if every rule holds there.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from corral.fleet.errors import MoveRefused
from corral.fleet.registry import JobState, MachineState
from corral.fleet.unitfile import UnitFile
from corral.fleet.xfleet import Requirements, glob_match, requirements

__all__ = [
    "Action",
    "ActionKind",
    "Fit",
    "Plan",
    "Rule",
    "SchedUnit",
    "Verdict",
    "agent_accepts",
    "apply_actions",
    "plan",
    "plan_move",
    "why",
]


class Verdict(enum.StrEnum):
    SCHEDULE = "schedule"
    RESCHEDULE = "reschedule"  # fits, but a Replaces relation will evict the other unit
    UNSCHEDULE = "unschedule"


class Rule(enum.StrEnum):
    """The placement rule a verdict rests on (the order is the checking order)."""

    TARGET_STATE = "TargetState"
    MACHINE_ID = "MachineID"
    METADATA = "MachineMetadata"
    MACHINE_OF = "MachineOf"
    CONFLICTS = "Conflicts"
    REPLACES = "Replaces"


@dataclass(frozen=True, slots=True)
class Fit:
    verdict: Verdict
    rule: Rule | None = None
    message: str = ""  # fleet's reason string

    @property
    def ok(self) -> bool:
        return self.verdict is not Verdict.UNSCHEDULE


_FITS = Fit(Verdict.SCHEDULE)


# (unit hash, name) → requirements: both inputs are immutable, and agents re-read every unit
# every round.
_REQ_CACHE: dict[tuple[bytes, str], Requirements] = {}


def cached_requirements(unit: UnitFile, name: str) -> Requirements:
    """:func:`xfleet.requirements`, memoized on (unit hash, name)."""
    key = (unit.hash, name)
    req = _REQ_CACHE.get(key)
    if req is None:
        if len(_REQ_CACHE) > 50_000:
            _REQ_CACHE.clear()
        req = _REQ_CACHE[key] = requirements(unit, name)
    return req


@dataclass(frozen=True)
class SchedUnit:
    """A unit as the scheduler sees it: name, rules, desired state, current placement."""

    name: str
    req: Requirements = field(default_factory=Requirements)
    target_state: JobState = JobState.LAUNCHED
    target: str = ""

    @classmethod
    def from_unit(
        cls, name: str, unit: UnitFile, target_state: JobState, target: str = ""
    ) -> SchedUnit:
        return cls(name, cached_requirements(unit, name), target_state, target)

    @property
    def is_global(self) -> bool:
        return self.req.is_global


class ActionKind(enum.StrEnum):
    SCHEDULE = "schedule"
    UNSCHEDULE = "unschedule"


@dataclass(frozen=True, slots=True)
class Action:
    """Write ``job/<unit>/target`` = machine (schedule, create-only) or compare-and-delete
    it against machine (unschedule)."""

    kind: ActionKind
    unit: str
    machine: str
    reason: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    # units that stay unscheduled: name → "zero agents available" / "no agents able to run job"
    unplaced: Mapping[str, str]


def _has_relation(a: SchedUnit, b: SchedUnit) -> bool:
    """Exactly one of the two replaces the other (both ways is circular: ignored)."""
    return a.req.replaces_unit(b.name) != b.req.replaces_unit(a.name)


class _Cluster:
    """The engine's mutable in-memory snapshot (``engine/state.go``)."""

    def __init__(self, machines: Iterable[MachineState], units: Iterable[SchedUnit]) -> None:
        self.machines = {m.id: m for m in sorted(machines, key=lambda m: m.id)}
        all_units = sorted(units, key=lambda u: u.name)
        self.jobs = {u.name: u for u in all_units if not u.is_global}
        self.globals = [u for u in all_units if u.is_global]
        self.target = {u.name: u.target for u in self.jobs.values() if u.target}
        self.on: dict[str, set[str]] = {m: set() for m in self.machines}
        for name, mid in self.target.items():
            if mid in self.on and self.jobs[name].target_state is not JobState.INACTIVE:
                self.on[mid].add(name)
        self._views: dict[str, dict[str, SchedUnit]] = {}

    def view(self, mid: str) -> dict[str, SchedUnit]:
        """Rule 1: machine ``mid``'s agent state, name → unit."""
        cached = self._views.get(mid)
        if cached is not None:
            return cached
        ms = self.machines[mid]
        view = {n: self.jobs[n] for n in sorted(self.on[mid])}
        for g in self.globals:
            if g.req.metadata_ok(ms.metadata) and _conflict(view, g) is None:
                view[g.name] = g
        self._views[mid] = view
        return view

    def schedule(self, name: str, mid: str) -> None:
        self.unschedule(name)
        self.target[name] = mid
        if mid in self.on and self.jobs[name].target_state is not JobState.INACTIVE:
            self.on[mid].add(name)
            self._views.pop(mid, None)

    def unschedule(self, name: str) -> None:
        old = self.target.pop(name, "")
        if old in self.on and name in self.on[old]:
            self.on[old].discard(name)
            self._views.pop(old, None)

    def load(self, mid: str) -> int:
        return len(self.view(mid))

    def able_to_run(self, unit: SchedUnit, mid: str) -> Fit:
        """Rule 2 (``AgentState.AbleToRun``) with fleet's reason strings."""
        ms = self.machines[mid]
        req = unit.req
        if req.machine_id is not None and not ms.match_id(req.machine_id):
            return Fit(
                Verdict.UNSCHEDULE,
                Rule.MACHINE_ID,
                f'agent ID "{ms.id}" does not match required "{req.machine_id}"',
            )
        if req.metadata and not req.metadata_ok(ms.metadata):
            return Fit(Verdict.UNSCHEDULE, Rule.METADATA, "local Machine metadata insufficient")
        view = self.view(mid)
        for peer in req.peers:
            if peer not in view:
                return Fit(
                    Verdict.UNSCHEDULE,
                    Rule.MACHINE_OF,
                    f"required peer Unit({peer}) is not scheduled locally",
                )
        other = _conflict(view, unit)
        if other is not None:
            return Fit(
                Verdict.UNSCHEDULE,
                Rule.CONFLICTS,
                f"found conflict with locally-scheduled Unit({other})",
            )
        if self.replaced_by(unit, mid) is not None:
            return Fit(Verdict.RESCHEDULE, Rule.REPLACES, "jobreschedule")
        return _FITS

    def replaced_by(self, unit: SchedUnit, mid: str) -> SchedUnit | None:
        for other in self.view(mid).values():
            if other.name != unit.name and _has_relation(unit, other):
                return other
        return None

    def sorted_agents(self, unit: SchedUnit | None = None) -> list[str]:
        spread = unit.req.spread if unit is not None else ()
        if not spread:
            return sorted(self.machines, key=lambda m: (self.load(m), m))

        me = unit.name if unit is not None else ""

        def siblings(mid: str) -> int:
            return sum(
                1 for n in self.view(mid) if n != me and any(glob_match(g, n) for g in spread)
            )

        return sorted(self.machines, key=lambda m: (siblings(m), self.load(m), m))


def _conflict(view: Mapping[str, SchedUnit], unit: SchedUnit) -> str | None:
    """Name of the first unit in ``view`` that conflicts with ``unit`` (either direction)."""
    for other in view.values():
        if other.name == unit.name:
            continue
        if unit.req.conflicts_with(other.name) or other.req.conflicts_with(unit.name):
            return other.name
    return None


def plan(machines: Iterable[MachineState], units: Iterable[SchedUnit]) -> Plan:
    """One engine reconcile round (rulebook rules 3–4)."""
    c = _Cluster(machines, units)
    actions: list[Action] = []

    def unschedule(name: str, mid: str, reason: str) -> None:
        actions.append(Action(ActionKind.UNSCHEDULE, name, mid, reason))
        c.unschedule(name)

    for _ in range(len(c.jobs) + 1):
        changed = False
        for name, job in c.jobs.items():
            mid = c.target.get(name)
            if not mid:
                continue
            if job.target_state is JobState.INACTIVE:
                unschedule(name, mid, "target state inactive")
                changed = True
                continue
            if mid not in c.machines:
                unschedule(name, mid, f"target Machine({mid}) went away")
                changed = True
                continue
            fit = c.able_to_run(job, mid)
            reason = f"target Machine({mid}) unable to run unit: {fit.message}"
            if fit.verdict is Verdict.UNSCHEDULE:
                unschedule(name, mid, reason)
                changed = True
            elif fit.verdict is Verdict.RESCHEDULE:
                other = c.replaced_by(job, mid)
                if other is None:
                    continue
                # The replaced unit moves, whichever of the two this sweep reached first.
                evicted = other if job.req.replaces_unit(other.name) else job
                if evicted.is_global:
                    continue
                dest = next(
                    (
                        m
                        for m in c.sorted_agents()
                        if m != mid and c.able_to_run(evicted, m).verdict is Verdict.SCHEDULE
                    ),
                    None,
                )
                if dest is None:
                    continue  # nowhere to go: keep both rather than flap (see docstring)
                unschedule(evicted.name, mid, reason)
                actions.append(Action(ActionKind.SCHEDULE, evicted.name, dest, reason))
                c.schedule(evicted.name, dest)
                changed = True
        if not changed:
            break

    unplaced: dict[str, str] = {}
    for name, job in c.jobs.items():
        if c.target.get(name) or job.target_state is JobState.INACTIVE:
            continue
        if not c.machines:
            unplaced[name] = "zero agents available"
            continue
        dest = next((m for m in c.sorted_agents(job) if c.able_to_run(job, m).ok), None)
        if dest is None:
            unplaced[name] = "no agents able to run job"
            continue
        reason = f"target state {job.target_state} and unit not scheduled"
        actions.append(Action(ActionKind.SCHEDULE, name, dest, reason))
        c.schedule(name, dest)
    return Plan(tuple(actions), unplaced)


def apply_actions(units: Iterable[SchedUnit], actions: Iterable[Action]) -> list[SchedUnit]:
    """The units with ``actions`` applied to their targets (for simulations and tests)."""
    by_name = {u.name: u for u in units}
    for a in actions:
        u = by_name[a.unit]
        if a.kind is ActionKind.SCHEDULE:
            by_name[a.unit] = SchedUnit(u.name, u.req, u.target_state, a.machine)
        elif u.target == a.machine:  # compare-and-delete
            by_name[a.unit] = SchedUnit(u.name, u.req, u.target_state, "")
    return sorted(by_name.values(), key=lambda u: u.name)


def why(machines: Iterable[MachineState], units: Sequence[SchedUnit], name: str) -> dict[str, Fit]:
    """Per live machine, the first rule that keeps ``name`` off it (or a fitting verdict).

    For the machine the unit is scheduled on this is the engine's own pass-1 check; for the
    others it is pass 2's. Raises ``KeyError`` for an unknown unit.
    """
    unit = next((u for u in units if u.name == name), None)
    if unit is None:
        raise KeyError(name)
    if unit.target_state is JobState.INACTIVE:
        inactive = Fit(Verdict.UNSCHEDULE, Rule.TARGET_STATE, "target state inactive")
        return {m.id: inactive for m in sorted(machines, key=lambda m: m.id)}
    if unit.is_global:
        return {m.id: _global_fit(m, units, unit) for m in sorted(machines, key=lambda m: m.id)}
    # A scheduled unit is in its own machine's view only, where AbleToRun skips itself.
    c = _Cluster(machines, units)
    return {mid: c.able_to_run(unit, mid) for mid in c.machines}


def agent_accepts(machine: MachineState, units: Iterable[SchedUnit]) -> dict[str, SchedUnit]:
    """The units machine's agent takes on (``agent/reconcile.go desiredAgentState``).

    In name order: a global unit needs the machine's metadata, a non-global unit needs
    ``target`` = this machine (whatever its target state); either is skipped if it conflicts
    with a unit accepted before it. So when a global and a scheduled unit conflict, the one
    whose name sorts first runs here, whatever the engine assumed.
    """
    accepted: dict[str, SchedUnit] = {}
    for u in sorted(units, key=lambda u: u.name):
        if u.is_global:
            if not u.req.metadata_ok(machine.metadata):
                continue
        elif u.target != machine.id:
            continue
        if _conflict(accepted, u) is None:
            accepted[u.name] = u
    return accepted


def _global_fit(ms: MachineState, units: Sequence[SchedUnit], unit: SchedUnit) -> Fit:
    if not unit.req.metadata_ok(ms.metadata):
        return Fit(Verdict.UNSCHEDULE, Rule.METADATA, "local Machine metadata insufficient")
    earlier = agent_accepts(ms, [u for u in units if u.name < unit.name])
    other = _conflict(earlier, unit)
    if other is not None:
        return Fit(
            Verdict.UNSCHEDULE,
            Rule.CONFLICTS,
            f"found conflict with locally-scheduled Unit({other})",
        )
    return _FITS


def plan_move(
    machines: Iterable[MachineState], units: Sequence[SchedUnit], name: str, machine_id: str
) -> list[Action]:
    """Actions that move ``name`` to ``machine_id``; :class:`MoveRefused` if a rule fails."""
    machine_list = list(machines)
    unit = next((u for u in units if u.name == name), None)
    if unit is None:
        raise MoveRefused(f"Unit {name} not found")
    if unit.is_global:
        raise MoveRefused(f"Unit {name} is global: it runs on every matching machine")
    if unit.target_state is JobState.INACTIVE:
        raise MoveRefused(f"Unit {name} is inactive: load or start it before moving it")
    matches = [m.id for m in machine_list if m.id == machine_id or m.id.startswith(machine_id)]
    if machine_id in matches:
        matches = [machine_id]
    if not matches:
        raise MoveRefused(f"Machine {machine_id} not found")
    if len(matches) > 1:
        raise MoveRefused(f"Machine {machine_id} is ambiguous: {', '.join(sorted(matches))}")
    dest = matches[0]
    if unit.target == dest:
        return []
    fit = why(machine_list, units, name)[dest]
    if not fit.ok:
        raise MoveRefused(f"Unit {name} cannot run on Machine({dest}): {fit.rule}: {fit.message}")
    reason = f"moved to Machine({dest}) by request"
    actions = []
    if unit.target:
        actions.append(Action(ActionKind.UNSCHEDULE, name, unit.target, reason))
    actions.append(Action(ActionKind.SCHEDULE, name, dest, reason))
    return actions
