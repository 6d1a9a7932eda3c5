"""Dependencies and ordering between units (systemd.unit(5) [Unit] section), as pure functions.

A start request for one unit becomes a *transaction*: the unit, everything it pulls in through
Requires=/Requisite=/BindsTo=/Wants= (transitively), and the units to stop because of
Conflicts=. Ordering is a separate relation: `After=B` on A (or `Before=A` on B) means A's job
waits until B's job has finished. A stop transaction holds the unit and everything that
Requires=/BindsTo=/PartOf= it (transitively), and runs in reverse order.

These functions only look at the `UnitConfig`s they are given; the runner executes the jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from corral.units.config import UnitConfig

__all__ = ["StartPlan", "after_of", "plan_start", "plan_stop", "strong_requirements"]


@dataclass(frozen=True, slots=True)
class StartPlan:
    start: tuple[str, ...]  # the requested unit first, then what it pulls in
    stop: tuple[str, ...]  # units that conflict with something being started


def plan_start(name: str, units: Mapping[str, UnitConfig]) -> StartPlan:
    order = [name]
    seen = {name}
    i = 0
    while i < len(order):
        cfg = units.get(order[i])
        i += 1
        if cfg is None:
            continue
        for dep in (*cfg.requires, *cfg.binds_to, *cfg.wants):
            if dep not in seen:
                seen.add(dep)
                order.append(dep)
    stop: list[str] = []
    for n in order:
        cfg = units.get(n)
        for other in cfg.conflicts if cfg else ():
            if other not in seen and other not in stop:
                stop.append(other)
    for other_name, other_cfg in units.items():
        if other_name not in seen and other_name not in stop and seen & set(other_cfg.conflicts):
            stop.append(other_name)
    return StartPlan(tuple(order), tuple(stop))


def plan_stop(name: str, units: Mapping[str, UnitConfig]) -> tuple[str, ...]:
    """The unit and every unit that requires, binds to or is part of it, transitively."""
    order = [name]
    seen = {name}
    i = 0
    while i < len(order):
        target = order[i]
        i += 1
        for other_name, other in units.items():
            if other_name in seen:
                continue
            if target in (*other.requires, *other.binds_to, *other.part_of):
                seen.add(other_name)
                order.append(other_name)
    return tuple(order)


def after_of(name: str, units: Mapping[str, UnitConfig]) -> set[str]:
    """Units that `name` is ordered after (its After= plus others' Before=name)."""
    cfg = units.get(name)
    result = set(cfg.after) if cfg else set()
    for other_name, other in units.items():
        if name in other.before:
            result.add(other_name)
    result.discard(name)
    return result


def strong_requirements(name: str, units: Mapping[str, UnitConfig]) -> set[str]:
    """Units whose failure to start fails `name`'s start (when also ordered after them)."""
    cfg = units.get(name)
    if cfg is None:
        return set()
    return {*cfg.requires, *cfg.binds_to, *cfg.requisite}
