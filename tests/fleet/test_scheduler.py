"""The engine's pure scheduler, rule by rule (fleet engine/*_test.go, agent/state_test.go)."""

from __future__ import annotations

import pytest

from corral.fleet.errors import MoveRefused
from corral.fleet.registry import JobState, MachineState
from corral.fleet.scheduler import (
    Action,
    ActionKind,
    Rule,
    SchedUnit,
    Verdict,
    apply_actions,
    plan,
    plan_move,
    why,
)
from corral.fleet.unitfile import UnitFile

L, LD, IN = JobState.LAUNCHED, JobState.LOADED, JobState.INACTIVE
S, U = ActionKind.SCHEDULE, ActionKind.UNSCHEDULE


def unit(name: str, xfleet: str = "", state: JobState = L, target: str = "") -> SchedUnit:
    text = "[Service]\nExecStart=/bin/true\n"
    if xfleet:
        text += "\n[X-Fleet]\n" + xfleet.replace(";", "\n") + "\n"
    return SchedUnit.from_unit(name, UnitFile.parse(text), state, target)


def m(mid: str, **meta: str) -> MachineState:
    return MachineState(mid, metadata=meta)


def acts(p: object) -> list[tuple[str, str, str]]:
    return [(a.kind.value, a.unit, a.machine) for a in p.actions]  # type: ignore[attr-defined]


def converge(
    machines: list[MachineState], units: list[SchedUnit], rounds: int = 10
) -> list[SchedUnit]:
    for _ in range(rounds):
        p = plan(machines, units)
        if not p.actions:
            return units
        units = apply_actions(units, p.actions)
    raise AssertionError("scheduler did not converge")


# --- fleet's TestCalculateClusterTasks -------------------------------------------------------


def test_no_work() -> None:
    assert plan([], []).actions == ()


def test_scheduled_on_live_machine_is_kept() -> None:
    assert plan([m("XXX")], [unit("foo.service", target="XXX")]).actions == ()


def test_machine_gone_unschedule_and_reschedule_same_round() -> None:
    p = plan([m("XXX")], [unit("foo.service", target="ZZZ")])
    assert p.actions == (
        Action(U, "foo.service", "ZZZ", "target Machine(ZZZ) went away"),
        Action(S, "foo.service", "XXX", "target state launched and unit not scheduled"),
    )


def test_inactive_scheduled_unit_is_unscheduled() -> None:
    p = plan([m("XXX")], [unit("foo.service", state=IN, target="XXX")])
    assert p.actions == (Action(U, "foo.service", "XXX", "target state inactive"),)


def test_unscheduled_unit_is_scheduled() -> None:
    p = plan([m("XXX")], [unit("foo.service")])
    assert acts(p) == [("schedule", "foo.service", "XXX")]
    assert p.actions[0].reason == "target state launched and unit not scheduled"


def test_loaded_units_are_scheduled_inactive_are_not() -> None:
    p = plan([m("a")], [unit("x.service", state=LD), unit("y.service", state=IN)])
    assert acts(p) == [("schedule", "x.service", "a")]


def test_no_machines_and_no_fit_reasons() -> None:
    assert plan([], [unit("a.service")]).unplaced == {"a.service": "zero agents available"}
    p = plan([m("a")], [unit("b.service", "MachineID=zzz")])
    assert p.unplaced == {"b.service": "no agents able to run job"}


# --- least loaded ---------------------------------------------------------------------------


def test_fewest_units_then_machine_id() -> None:
    machines = [m("m3"), m("m1"), m("m2")]
    units = [unit("busy.service", target="m1")] + [unit(f"u{i}.service") for i in range(4)]
    p = plan(machines, units)
    assert acts(p) == [
        ("schedule", "u0.service", "m2"),
        ("schedule", "u1.service", "m3"),
        ("schedule", "u2.service", "m1"),
        ("schedule", "u3.service", "m2"),
    ]


def test_machine_ids_compare_bytewise() -> None:
    p = plan([m("b"), m("B"), m("a")], [unit("x.service")])
    assert acts(p) == [("schedule", "x.service", "B")]


def test_global_units_count_as_load_where_they_match() -> None:
    units = [unit("g.service", "Global=true;MachineMetadata=role=web"), unit("x.service")]
    p = plan([m("a", role="web"), m("b")], units)
    assert acts(p) == [("schedule", "x.service", "b")]


def test_engine_never_schedules_global_units() -> None:
    assert plan([m("a")], [unit("g.service", "Global=true")]).actions == ()


def test_inactive_or_unscheduled_units_are_not_load() -> None:
    units = [unit("idle.service", state=IN, target="a"), unit("x.service")]
    p = plan([m("a"), m("b")], units)
    assert acts(p) == [("unschedule", "idle.service", "a"), ("schedule", "x.service", "a")]


# --- MachineID --------------------------------------------------------------------------------

FULL = "c31e44e1f7f5420289a0b7f3bd65e3a9"


@pytest.mark.parametrize("wanted", [FULL, FULL[:8]])
def test_machine_id_full_or_short(wanted: str) -> None:
    p = plan([m("0" * 32), m(FULL)], [unit("x.service", f"MachineID={wanted}")])
    assert acts(p) == [("schedule", "x.service", FULL)]


def test_machine_id_prefix_other_than_8_chars_does_not_match() -> None:
    assert plan([m(FULL)], [unit("x.service", f"MachineID={FULL[:7]}")]).actions == ()


def test_machine_id_mismatch_unschedules_with_fleet_reason() -> None:
    p = plan([m("a"), m("b")], [unit("x.service", "MachineID=b", target="a")])
    assert p.actions[0] == Action(
        U,
        "x.service",
        "a",
        'target Machine(a) unable to run unit: agent ID "a" does not match required "b"',
    )
    assert acts(p)[1] == ("schedule", "x.service", "b")


# --- MachineMetadata ------------------------------------------------------------------------


def test_metadata_and_or() -> None:
    machines = [
        m("a", region="us", disk="hdd"),
        m("b", region="eu", disk="ssd"),
        m("c", region="asia", disk="ssd"),
    ]
    units = [unit("x.service", 'MachineMetadata="region=us" "region=eu";MachineMetadata=disk=ssd')]
    assert acts(plan(machines, units)) == [("schedule", "x.service", "b")]


def test_metadata_change_unschedules() -> None:
    units = [unit("x.service", "MachineMetadata=role=db", target="a")]
    p = plan([m("a", role="web"), m("b", role="db")], units)
    assert (
        p.actions[0].reason
        == "target Machine(a) unable to run unit: local Machine metadata insufficient"
    )
    assert acts(p)[1] == ("schedule", "x.service", "b")


# --- MachineOf ----------------------------------------------------------------------------------


def test_machine_of_follows_leader_same_round_when_leader_sorts_first() -> None:
    units = [unit("a-db.service"), unit("b-web.service", "MachineOf=a-db.service")]
    p = plan([m("m1"), m("m2")], units)
    assert acts(p) == [("schedule", "a-db.service", "m1"), ("schedule", "b-web.service", "m1")]


def test_machine_of_waits_for_leader() -> None:
    units = [unit("a-web.service", "MachineOf=z-db.service"), unit("z-db.service", target="m2")]
    p = plan([m("m1"), m("m2")], units)
    assert acts(p) == [("schedule", "a-web.service", "m2")]
    units = [unit("a-web.service", "MachineOf=z-db.service"), unit("z-db.service")]
    p = plan([m("m1"), m("m2")], units)
    assert acts(p) == [("schedule", "z-db.service", "m1")]
    assert p.unplaced == {"a-web.service": "no agents able to run job"}
    assert converge([m("m1"), m("m2")], units)[0].target == "m1"


def test_machine_of_leader_moves_follower_released_same_round() -> None:
    # The follower sorts first: fleet would release it a round later; corral repeats pass 1.
    units = [
        unit("a-web.service", "MachineOf=z-db.service", target="m1"),
        unit("z-db.service", "MachineMetadata=ok=1", target="m1"),
    ]
    p = plan([m("m1"), m("m2", ok="1")], units)
    assert acts(p)[:2] == [
        ("unschedule", "z-db.service", "m1"),
        ("unschedule", "a-web.service", "m1"),
    ]
    assert p.actions[1].reason == (
        "target Machine(m1) unable to run unit: required peer Unit(z-db.service) is not scheduled locally"
    )
    assert acts(p)[2:] == [("schedule", "z-db.service", "m2")]


def test_machine_of_after_machine_death() -> None:
    units = [
        unit("db.service", target="dead"),
        unit("web.service", "MachineOf=db.service", target="dead"),
    ]
    p = plan([m("m1"), m("m2")], units)
    assert acts(p) == [
        ("unschedule", "db.service", "dead"),
        ("unschedule", "web.service", "dead"),
        ("schedule", "db.service", "m1"),
        ("schedule", "web.service", "m1"),
    ]


def test_machine_of_a_global_unit() -> None:
    units = [
        unit("g.service", "Global=true;MachineMetadata=r=1"),
        unit("x.service", "MachineOf=g.service"),
    ]
    assert acts(plan([m("a"), m("b", r="1")], units)) == [("schedule", "x.service", "b")]


# --- Conflicts ------------------------------------------------------------------------------------


def test_conflicts_glob_spreads_instances() -> None:
    units = [unit(f"web@{i}.service", "Conflicts=web@*.service") for i in (1, 2, 3)]
    p = plan([m("a"), m("b")], units)
    assert acts(p) == [("schedule", "web@1.service", "a"), ("schedule", "web@2.service", "b")]
    assert p.unplaced == {"web@3.service": "no agents able to run job"}
    # Room appears (a machine joins): the waiting unit is placed.
    after = apply_actions(units, p.actions)
    assert acts(plan([m("a"), m("b"), m("c")], after)) == [("schedule", "web@3.service", "c")]


def test_one_way_conflict_is_symmetric() -> None:
    units = [unit("a.service", "Conflicts=b.service", target="m1"), unit("b.service")]
    assert acts(plan([m("m1"), m("m2")], units)) == [("schedule", "b.service", "m2")]
    units = [unit("a.service", target="m1"), unit("b.service", "Conflicts=a.service")]
    assert acts(plan([m("m1"), m("m2")], units)) == [("schedule", "b.service", "m2")]


def test_unit_never_conflicts_with_itself() -> None:
    assert (
        plan([m("a")], [unit("web@1.service", "Conflicts=web@*.service", target="a")]).actions == ()
    )


def test_conflict_on_target_unschedules_later_unit() -> None:
    units = [unit("a.service", "Conflicts=b.service", target="m1"), unit("b.service", target="m1")]
    p = plan([m("m1"), m("m2")], units)
    assert p.actions[0] == Action(
        U,
        "a.service",
        "m1",
        "target Machine(m1) unable to run unit: found conflict with locally-scheduled Unit(b.service)",
    )
    assert acts(p)[1:] == [("schedule", "a.service", "m2")]


def test_conflict_with_global_unit_keeps_away() -> None:
    units = [
        unit("g.service", "Global=true;MachineMetadata=r=1"),
        unit("x.service", "Conflicts=g.service"),
    ]
    assert acts(plan([m("a", r="1"), m("b")], units)) == [("schedule", "x.service", "b")]


# --- Replaces ----------------------------------------------------------------------------------------


def test_replaces_lands_then_evicts_other() -> None:
    machines = [m("m1"), m("m2")]
    units = [
        unit("old.service", target="m1"),
        unit("filler.service", target="m2"),
        unit("new.service", "Replaces=old.service"),
    ]
    p = plan(machines, units)
    assert acts(p) == [("schedule", "new.service", "m1")]  # tie on load, m1 first; Reschedule is OK
    units = apply_actions(units, p.actions)
    p = plan(machines, units)
    reason = "target Machine(m1) unable to run unit: jobreschedule"
    assert p.actions == (
        Action(U, "old.service", "m1", reason),
        Action(S, "old.service", "m2", reason),
    )
    assert plan(machines, apply_actions(units, p.actions)).actions == ()


def test_replaces_other_direction() -> None:
    units = [
        unit("old.service", "Replaces=new.service", target="m1"),
        unit("new.service", target="m1"),
    ]
    assert acts(plan([m("m1"), m("m2")], units)) == [
        ("unschedule", "new.service", "m1"),
        ("schedule", "new.service", "m2"),
    ]


def test_circular_replaces_is_ignored() -> None:
    units = [
        unit("a.service", "Replaces=b.service", target="m1"),
        unit("b.service", "Replaces=a.service", target="m1"),
    ]
    assert plan([m("m1"), m("m2")], units).actions == ()


def test_replaced_unit_only_moves_where_it_fits() -> None:
    units = [
        unit("old.service", "MachineMetadata=r=1", target="m1"),
        unit("new.service", "Replaces=old.service", target="m1"),
    ]
    # m2 lacks the metadata old.service needs: both stay (fleet would push it there anyway).
    assert plan([m("m1", r="1"), m("m2")], units).actions == ()
    assert acts(plan([m("m1", r="1"), m("m2"), m("m3", r="1")], units)) == [
        ("unschedule", "old.service", "m1"),
        ("schedule", "old.service", "m3"),
    ]


# --- Spread (corral's opt-in hint) ------------------------------------------------------------------


def test_spread_prefers_machines_without_siblings() -> None:
    machines = [m("m1"), m("m2"), m("m3")]
    base = [unit("x.service", target="m2"), unit("y.service", target="m3")]
    plain = base + [unit(f"web@{i}.service") for i in (1, 2)]
    assert acts(plan(machines, plain)) == [
        ("schedule", "web@1.service", "m1"),
        ("schedule", "web@2.service", "m1"),
    ]
    spread = base + [unit(f"web@{i}.service", "Spread=true") for i in (1, 2)]
    assert acts(plan(machines, spread)) == [
        ("schedule", "web@1.service", "m1"),
        ("schedule", "web@2.service", "m2"),
    ]


def test_spread_never_overrides_a_rule() -> None:
    machines = [m("m1", r="1"), m("m2")]
    units = [unit(f"web@{i}.service", "Spread=true;MachineMetadata=r=1") for i in (1, 2)]
    assert acts(plan(machines, units)) == [
        ("schedule", "web@1.service", "m1"),
        ("schedule", "web@2.service", "m1"),
    ]


# --- determinism ------------------------------------------------------------------------------------


def test_input_order_does_not_matter() -> None:
    machines = [m("m1"), m("m2", r="1"), m("m3")]
    units = [
        unit("a.service", "Conflicts=b*"),
        unit("b1.service"),
        unit("b2.service", target="gone"),
        unit("c.service", "MachineMetadata=r=1"),
        unit("d.service", "MachineOf=a.service"),
    ]
    assert plan(machines, units) == plan(list(reversed(machines)), list(reversed(units)))


# --- why ---------------------------------------------------------------------------------------------


def test_why_names_first_failing_rule_per_machine() -> None:
    machines = [m("m1"), m("m2", r="1"), m("m3", r="1"), m("m4", r="1")]
    units = [
        unit("db.service", target="m3"),
        unit("db.service".replace("db", "db2"), target="m4"),
        unit("other.service", "Conflicts=x.service", target="m4"),
        unit("x.service", "MachineMetadata=r=1;MachineOf=db2.service"),
    ]
    w = why(machines, units, "x.service")
    assert {k: (v.verdict, v.rule) for k, v in w.items()} == {
        "m1": (Verdict.UNSCHEDULE, Rule.METADATA),
        "m2": (Verdict.UNSCHEDULE, Rule.MACHINE_OF),
        "m3": (Verdict.UNSCHEDULE, Rule.MACHINE_OF),
        "m4": (Verdict.UNSCHEDULE, Rule.CONFLICTS),
    }
    assert w["m2"].message == "required peer Unit(db2.service) is not scheduled locally"
    assert w["m4"].message == "found conflict with locally-scheduled Unit(other.service)"


def test_why_ok_replaces_inactive_and_unknown() -> None:
    units = [
        unit("old.service", target="m1"),
        unit("new.service", "Replaces=old.service"),
        unit("idle.service", state=IN),
    ]
    w = why([m("m1"), m("m2")], units, "new.service")
    assert (w["m1"].verdict, w["m1"].rule) == (Verdict.RESCHEDULE, Rule.REPLACES)
    assert w["m2"].verdict is Verdict.SCHEDULE and w["m2"].ok
    assert why([m("m1")], units, "idle.service")["m1"].rule is Rule.TARGET_STATE
    with pytest.raises(KeyError):
        why([m("m1")], units, "nope.service")


def test_why_ignores_the_units_own_placement() -> None:
    units = [unit("web@1.service", "Conflicts=web@*", target="m1")]
    assert why([m("m1")], units, "web@1.service")["m1"].ok


def test_why_global_units_use_the_agents_rule() -> None:
    units = [
        unit("a-global.service", "Global=true;Conflicts=b-global.service"),
        unit("b-global.service", "Global=true"),
        unit("c.service", "Conflicts=b-global.service", target="m2"),
    ]
    machines = [m("m1"), m("m2")]
    assert why(machines, units, "a-global.service")["m1"].ok
    w = why(machines, units, "b-global.service")
    assert w["m1"].message == "found conflict with locally-scheduled Unit(a-global.service)"
    # On m2, c.service sorts after b-global.service, so the agent accepts b-global first.
    assert w["m2"].rule is Rule.CONFLICTS
    units.append(unit("g2.service", "Global=true;MachineMetadata=r=1"))
    assert why(machines, units, "g2.service")["m1"].rule is Rule.METADATA


# --- move ----------------------------------------------------------------------------------------------


def test_move_respects_constraints() -> None:
    machines = [m("aaaa1111"), m("bbbb2222", r="1"), m("cccc3333")]
    units = [
        unit("x.service", "MachineMetadata=r=1", target="bbbb2222"),
        unit("y.service", target="aaaa1111"),
        unit("z.service", "Conflicts=y.service", target="cccc3333"),
    ]
    with pytest.raises(MoveRefused, match=r"cannot run on Machine\(aaaa1111\): MachineMetadata"):
        plan_move(machines, units, "x.service", "aaaa1111")
    with pytest.raises(MoveRefused, match="Conflicts: found conflict with locally-scheduled Unit"):
        plan_move(machines, units, "y.service", "cccc")
    got = plan_move(machines, units, "y.service", "bbbb")
    assert [(a.kind, a.unit, a.machine) for a in got] == [
        (U, "y.service", "aaaa1111"),
        (S, "y.service", "bbbb2222"),
    ]
    assert plan_move(machines, units, "y.service", "aaaa1111") == []
    # The engine keeps a moved unit where it was put.
    assert plan(machines, apply_actions(units, got)).actions == ()


@pytest.mark.parametrize(
    ("name", "machine", "message"),
    [
        ("nope.service", "a", "Unit nope.service not found"),
        ("g.service", "a", "is global"),
        ("idle.service", "a", "is inactive"),
        ("x.service", "zz", "Machine zz not found"),
        ("x.service", "a", "is ambiguous"),
    ],
)
def test_move_refusals(name: str, machine: str, message: str) -> None:
    units = [unit("x.service"), unit("g.service", "Global=true"), unit("idle.service", state=IN)]
    with pytest.raises(MoveRefused, match=message):
        plan_move([m("a1"), m("a2")], units, name, machine)
