"""The agent's pure reconciler: desired units on one machine and the task plan."""

from __future__ import annotations

import pytest

from corral.fleet.agent import (
    AgentTask,
    CurrentUnit,
    DesiredUnit,
    TaskType,
    desired_state,
    plan_tasks,
    purge_tasks,
    tasks_for_unit,
)
from corral.fleet.registry import JobState, MachineState, RegistryUnit
from corral.fleet.unitfile import UnitFile

L, LD, IN = JobState.LAUNCHED, JobState.LOADED, JobState.INACTIVE
UF = UnitFile.parse("[Service]\nExecStart=/bin/true\n")
UF2 = UnitFile.parse("[Service]\nExecStart=/bin/false\n")
H = UF.hash_hex


def reg(name: str, xfleet: str = "", state: JobState = L, target: str = "") -> RegistryUnit:
    text = "[Service]\nExecStart=/bin/true\n" + (
        f"\n[X-Fleet]\n{xfleet.replace(';', chr(10))}\n" if xfleet else ""
    )
    return RegistryUnit(name, UnitFile.parse(text), state, target)


def kinds(tasks: list[AgentTask]) -> list[tuple[str, str]]:
    return [(t.type.label, t.unit) for t in tasks]


@pytest.mark.parametrize(
    ("desired", "current", "expected"),
    [
        (None, None, []),
        (None, CurrentUnit(LD, H), ["UnloadUnit"]),
        (IN, CurrentUnit(L, H), ["UnloadUnit"]),
        (IN, None, []),
        (LD, None, ["LoadUnit"]),
        (L, None, ["LoadUnit", "StartUnit"]),
        (LD, CurrentUnit(LD, "0" * 40), ["UnloadUnit", "LoadUnit"]),
        (L, CurrentUnit(L, "0" * 40), ["UnloadUnit", "LoadUnit", "StartUnit"]),
        (LD, CurrentUnit(LD, H), []),
        (L, CurrentUnit(L, H), []),
        (L, CurrentUnit(IN, H), ["LoadUnit", "StartUnit"]),
        (L, CurrentUnit(LD, H), ["StartUnit"]),
        (LD, CurrentUnit(L, H), ["StopUnit"]),
        (LD, CurrentUnit(IN, H), ["LoadUnit"]),
    ],
)
def test_tasks_for_unit_table(
    desired: JobState | None, current: CurrentUnit | None, expected: list[str]
) -> None:
    d = DesiredUnit("a.service", UF, desired) if desired is not None else None
    assert [t.type.label for t in tasks_for_unit("a.service", d, current)] == expected


def test_reasons_are_fleets() -> None:
    t = tasks_for_unit("a.service", DesiredUnit("a.service", UF, L), CurrentUnit(LD, "x"))
    assert [x.reason for x in t] == [
        "unit loaded but hash differs to expected",
        "unit scheduled here but not loaded",
        "unit currently loaded but desired state is launched",
    ]
    assert t[1].unit_file is UF  # Load carries the file to write


def test_plan_sorts_by_type_and_reloads_once() -> None:
    desired = {
        "a.service": DesiredUnit("a.service", UF, L),
        "b.service": DesiredUnit("b.service", UF2, LD),
        "c.service": DesiredUnit("c.service", UF, L),
    }
    current = {
        "a.service": CurrentUnit(LD, H),  # start
        "b.service": CurrentUnit(L, H),  # hash differs: unload + load
        "d.service": CurrentUnit(L, H),  # not here any more: unload
    }
    assert kinds(plan_tasks(desired, current)) == [
        ("UnloadUnit", "b.service"),
        ("UnloadUnit", "d.service"),
        ("LoadUnit", "b.service"),
        ("LoadUnit", "c.service"),
        ("ReloadUnitFiles", ""),
        ("StartUnit", "a.service"),
        ("StartUnit", "c.service"),
    ]


def test_no_reload_without_load_or_unload() -> None:
    desired = {"a.service": DesiredUnit("a.service", UF, LD)}
    assert kinds(plan_tasks(desired, {"a.service": CurrentUnit(L, H)})) == [
        ("StopUnit", "a.service")
    ]
    assert plan_tasks(desired, {"a.service": CurrentUnit(LD, H)}) == []


def test_purge_unloads_everything() -> None:
    tasks = purge_tasks({"b.service": CurrentUnit(L, H), "a.service": CurrentUnit(LD, H)})
    assert kinds(tasks) == [("UnloadUnit", "a.service"), ("UnloadUnit", "b.service")]
    assert {t.reason for t in tasks} == {"purging agent"}
    assert all(t.type is TaskType.UNLOAD for t in tasks)


def test_desired_state_scheduled_here_and_globals() -> None:
    me = MachineState("m1", metadata={"role": "web"})
    units = [
        reg("a.service", target="m1"),
        reg("b.service", target="m2"),
        reg("c.service", state=IN, target="m1"),  # kept so it is unloaded
        reg("g.service", "Global=true;MachineMetadata=role=web"),
        reg("h.service", "Global=true;MachineMetadata=role=db"),
        reg("u.service"),
    ]
    got = desired_state(me, units)
    assert sorted(got) == ["a.service", "c.service", "g.service"]
    assert got["c.service"].target_state is IN
    assert kinds(plan_tasks(got, {"c.service": CurrentUnit(LD, H)}))[0] == (
        "UnloadUnit",
        "c.service",
    )


def test_conflicting_globals_first_name_wins() -> None:
    units = [
        reg("b-g.service", "Global=true;Conflicts=a-g.service"),
        reg("a-g.service", "Global=true"),
    ]
    assert sorted(desired_state(MachineState("m1"), units)) == ["a-g.service"]


def test_global_before_conflicting_scheduled_unit_wins_on_the_agent() -> None:
    units = [
        reg("a-g.service", "Global=true"),
        reg("z.service", "Conflicts=a-g.service", target="m1"),
    ]
    assert sorted(desired_state(MachineState("m1"), units)) == ["a-g.service"]


def test_dynamic_metadata_applies() -> None:
    units = [reg("g.service", "Global=true;MachineMetadata=role=web")]
    assert desired_state(MachineState("m1", metadata={"role": "db"}), units) == {}
    assert list(desired_state(MachineState("m1", metadata={"role": "web"}), units)) == ["g.service"]
