"""Property tests: the scheduler never breaks a rule, and reports what it decided truthfully.

Every rule is re-checked here from first principles (not through the scheduler's own code),
on clusters Hypothesis builds from every X-Fleet rule and their valid combinations.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.fleet.errors import RequirementsError
from corral.fleet.registry import JobState, MachineState
from corral.fleet.scheduler import ActionKind, SchedUnit, apply_actions, plan, why
from corral.fleet.xfleet import Requirements, check_combination, glob_match

NAMES = [
    "a.service",
    "b.service",
    "c.service",
    "web@1.service",
    "web@2.service",
    "web@3.service",
    "g1.service",
    "g2.service",
]
IDS = ["m1aaaaaaaaaa", "m2bbbbbbbbbb", "m3cccccccccc", "m4dddddddddd"]
GLOBS = ["a.service", "b*", "web@*.service", "web@[12].service", "*", "g?.service"]


@st.composite
def machines(draw: st.DrawFn) -> list[MachineState]:
    ids = draw(st.lists(st.sampled_from(IDS), min_size=1, max_size=4, unique=True))
    return [
        MachineState(
            i, metadata=draw(st.sampled_from([{}, {"r": "1"}, {"r": "2"}, {"r": "1", "d": "ssd"}]))
        )
        for i in ids
    ]


@st.composite
def sched_unit(draw: st.DrawFn, name: str) -> SchedUnit:
    others = [n for n in NAMES if n != name]
    req = Requirements(
        machine_id=draw(st.sampled_from([None, None, None, IDS[0], IDS[1][:8], "nomatch"])),
        metadata=draw(
            st.sampled_from(
                [
                    (),
                    (),
                    (("r", frozenset({"1"})),),
                    (("r", frozenset({"1", "2"})), ("d", frozenset({"ssd"}))),
                ]
            )
        ),
        peers=tuple(draw(st.lists(st.sampled_from(others), max_size=2, unique=True))),
        conflicts=tuple(draw(st.lists(st.sampled_from(GLOBS), max_size=2, unique=True))),
        replaces=tuple(draw(st.lists(st.sampled_from([*others, "web@*.service"]), max_size=1))),
        is_global=draw(st.booleans()) and name.startswith("g"),
        spread=draw(st.sampled_from([(), ("web@*.service",)])),
    )
    try:
        check_combination(req)
    except RequirementsError:
        # Drop whole rules until the combination is one fleet accepts.
        req = Requirements(
            metadata=req.metadata,
            conflicts=req.conflicts,
            is_global=req.is_global,
            peers=() if req.is_global else req.peers,
        )
    # fleet refuses a peer that matches one of the unit's own Conflicts/Replaces globs.
    peers = tuple(
        p for p in req.peers if not any(glob_match(g, p) for g in (*req.conflicts, *req.replaces))
    )
    req = Requirements(
        req.machine_id, req.metadata, peers, req.conflicts, req.replaces, req.is_global, req.spread
    )
    state = draw(st.sampled_from(list(JobState)))
    target = "" if req.is_global else draw(st.sampled_from(["", "", "gone", *IDS]))
    return SchedUnit(name, req, state, target)


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[MachineState], list[SchedUnit]]:
    ms = draw(machines())
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=7, unique=True))
    return ms, [draw(sched_unit(n)) for n in names]


def placed(ms: list[MachineState], units: list[SchedUnit]) -> dict[str, list[SchedUnit]]:
    live = {m.id for m in ms}
    out: dict[str, list[SchedUnit]] = {m.id: [] for m in ms}
    for u in units:
        if not u.is_global and u.target in live and u.target_state is not JobState.INACTIVE:
            out[u.target].append(u)
    return out


def assert_rules_hold(ms: list[MachineState], units: list[SchedUnit]) -> None:
    """First-principles check of every hard rule on the placements."""
    by_id = {m.id: m for m in ms}
    by_name = {u.name: u for u in units}
    for mid, here in placed(ms, units).items():
        machine = by_id[mid]
        names = {u.name for u in here}
        for u in here:
            if u.req.machine_id is not None:
                assert u.req.machine_id in (mid, mid[:8]), (u, mid)
            assert u.req.metadata_ok(machine.metadata), (u, mid)
            for peer in u.req.peers:
                p = by_name.get(peer)
                present = peer in names or (
                    p is not None and p.is_global and p.req.metadata_ok(machine.metadata)
                )
                assert present, (u.name, "peer", peer, mid)
            for v in here:
                if v.name != u.name:
                    assert not u.req.conflicts_with(v.name), (u.name, v.name, mid)


@settings(max_examples=40)
@given(clusters())
def test_one_round_never_breaks_a_rule_and_why_agrees(
    cluster: tuple[list[MachineState], list[SchedUnit]],
) -> None:
    ms, units = cluster
    p = plan(ms, units)
    live = {m.id for m in ms}
    by_name = {u.name: u for u in units}
    for a in p.actions:
        u = by_name[a.unit]
        assert not u.is_global
        if a.kind is ActionKind.SCHEDULE:
            assert a.machine in live and u.target_state is not JobState.INACTIVE
    after = apply_actions(units, p.actions)
    assert_rules_hold(ms, after)
    for u in after:
        if u in placed(ms, after).get(u.target, []):
            fit = why(ms, after, u.name)[u.target]
            assert fit.ok, (u.name, u.target, fit)


@settings(max_examples=25)
@given(clusters(), st.randoms(use_true_random=False))
def test_fixpoint_is_reached_and_unplaced_units_truly_fit_nowhere(
    cluster: tuple[list[MachineState], list[SchedUnit]], rnd: random.Random
) -> None:
    ms, units = cluster
    for _ in range(12):
        p = plan(ms, units)
        shuffled = plan(rnd.sample(ms, len(ms)), rnd.sample(units, len(units)))
        assert shuffled == p  # deterministic whatever the input order
        if not p.actions:
            break
        units = apply_actions(units, p.actions)
    else:
        raise AssertionError("no fixpoint within 12 rounds")
    assert_rules_hold(ms, units)
    for name in p.unplaced:
        assert not any(f.ok for f in why(ms, units, name).values()), name
    for u in units:
        if not u.is_global and u.target_state is not JobState.INACTIVE and not u.target:
            assert u.name in p.unplaced
