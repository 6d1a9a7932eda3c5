"""Rollout policy on a virtual clock, with many simulated instances."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.update.omaha import Event
from corral.update.policy import GroupPolicy, InstanceStatus, Rollout
from corral.update.schedule import CheckScheduler

MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
SATURDAY_10 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC).timestamp()


def _ok_sequence(r: Rollout, iid: str, now: float) -> None:
    for t, res in ((13, 1), (14, 1), (3, 1)):
        r.event(iid, Event(t, res), now)


def _simulate(r: Rollout, n: int, until: float, step: float, start: float, seed: int,
              fail: set[str] | None = None) -> list[tuple[float, str]]:
    """n instances at 1.0.0 checking every `step` s (jittered); returns (time, id) grants."""
    rng = random.Random(seed)
    fail = fail or set()
    version = {f"m{i}": "1.0.0" for i in range(n)}
    next_check = {iid: start + rng.uniform(0, step) for iid in version}
    grants: list[tuple[float, str]] = []
    now = start
    while now < until:
        iid = min(next_check, key=next_check.__getitem__)
        now = next_check[iid]
        d = r.check(iid, version[iid], now)
        if d.grant and d.version is not None:
            grants.append((now, iid))
            if iid in fail:
                r.event(iid, Event(3, 0, 9 | 0x10000000), now)
            else:
                _ok_sequence(r, iid, now)
                version[iid] = d.version
                r.complete_on_reboot(iid, "1.0.0", d.version)
        next_check[iid] = now + step + rng.uniform(-step / 10, step / 10)
    return grants


def test_max_updates_per_period_with_a_hundred_instances() -> None:
    policy = GroupPolicy(period_seconds=60, max_updates_per_period=5, update_timeout_seconds=30)
    r = Rollout(policy, "1.1.0")
    grants = _simulate(r, 100, until=MONDAY_10 + 3600, step=20, start=MONDAY_10, seed=1)
    times = sorted(t for t, _ in grants)
    for t in times:
        assert sum(1 for u in times if t <= u < t + 60) <= 5
    assert len({i for _, i in grants}) == 100
    assert all(s.status == InstanceStatus.COMPLETE for s in r.instances.values())
    assert all(s.version == "1.1.0" for s in r.instances.values())


def test_safe_mode_one_at_a_time_then_halts_after_the_first_failure() -> None:
    policy = GroupPolicy(safe_mode=True, period_seconds=60, max_updates_per_period=10)
    r = Rollout(policy, "1.1.0")
    # Only one grant until somebody completes the target.
    first = r.check("m0", "1.0.0", MONDAY_10)
    assert first.grant
    assert not r.check("m1", "1.0.0", MONDAY_10 + 1).grant
    r.event("m0", Event(13, 1), MONDAY_10 + 2)
    r.event("m0", Event(3, 0, 268435465), MONDAY_10 + 3)
    assert r.halted and "m0" in r.halt_reason
    grants = _simulate(r, 50, until=MONDAY_10 + 3600, step=30, start=MONDAY_10 + 4, seed=2)
    assert grants == []
    assert r.instances["m0"].status == InstanceStatus.ERROR
    # A new version starts a new rollout.
    r.set_target("1.1.1")
    assert r.check("m1", "1.0.0", MONDAY_10 + 4000).grant


def test_safe_mode_success_opens_the_rollout() -> None:
    policy = GroupPolicy(safe_mode=True, period_seconds=60, max_updates_per_period=3)
    r = Rollout(policy, "1.1.0")
    grants = _simulate(r, 30, until=MONDAY_10 + 3600, step=10, start=MONDAY_10, seed=3)
    assert len(grants) == 30
    assert grants[1][0] - grants[0][0] >= 0  # the first completes before a second is granted
    assert not r.halted


def test_safe_mode_halts_in_a_fleet_with_one_bad_machine() -> None:
    policy = GroupPolicy(safe_mode=True, period_seconds=60, max_updates_per_period=4)
    r = Rollout(policy, "1.1.0")
    grants = _simulate(r, 40, until=MONDAY_10 + 7200, step=15, start=MONDAY_10, seed=4,
                       fail={"m7", "m8", "m9"})
    failed = [i for _, i in grants if i in {"m7", "m8", "m9"}]
    assert len(failed) == 1  # halted right after the first failure
    last = max(t for t, _ in grants)
    assert all(r.check(f"m{i}", "1.0.0", last + 100 + i).grant is False for i in range(40))


def test_office_hours() -> None:
    policy = GroupPolicy(office_hours=True, timezone="America/New_York")
    r = Rollout(policy, "1.1.0")
    d = r.check("m0", "1.0.0", SATURDAY_10)
    assert not d.grant and d.reason == "outside office hours"
    assert r.instances["m0"].status == InstanceStatus.ON_HOLD
    assert not r.check("m0", "1.0.0", MONDAY_10).grant  # 05:00 in New York
    assert r.check("m0", "1.0.0", MONDAY_10 + 5 * 3600).grant  # 10:00 in New York


def test_never_reoffer_a_version_an_instance_failed_on() -> None:
    r = Rollout(GroupPolicy(), "1.2.0")
    assert r.check("m0", "1.1.0", 0).grant
    _ok_sequence(r, "m0", 1)
    # The machine rebooted, fell back and reports 3/0 code 44 with its old version.
    r.event("m0", Event(3, 0, 44), 100)
    d = r.check("m0", "1.1.0", 100)
    assert not d.grant and "failed on 1.2.0" in d.reason
    assert r.instances["m0"].failed_versions == frozenset({"1.2.0"})
    assert all(not r.check("m0", "1.1.0", 200 + t).grant for t in range(10))
    r.set_target("1.2.1")
    assert r.check("m0", "1.1.0", 500).grant


def test_update_timeout_frees_the_slot() -> None:
    r = Rollout(GroupPolicy(max_updates_per_period=1, period_seconds=10,
                            update_timeout_seconds=100), "1.1.0")
    assert r.check("m0", "1.0.0", 0).grant
    r.event("m0", Event(13, 1), 1)
    assert not r.check("m1", "1.0.0", 50).grant  # one in flight
    assert r.check("m1", "1.0.0", 101).grant  # m0 timed out


def test_grant_is_repeated_and_completion_detected() -> None:
    r = Rollout(GroupPolicy(max_updates_per_period=1), "1.1.0")
    assert r.check("m0", "1.0.0", 0).reason == "granted"
    assert r.check("m0", "1.0.0", 1).reason == "already granted"
    assert r.check("m0", "1.1.0", 2).reason == "up to date"
    assert r.instances["m0"].status == InstanceStatus.COMPLETE


def test_disabled_and_non_semver() -> None:
    r = Rollout(GroupPolicy(updates_enabled=False), "1.1.0")
    assert r.check("m0", "1.0.0", 0).reason == "updates disabled"
    assert "not semver" in r.check("m1", "ForcedUpdate", 0).reason
    with pytest.raises(ValueError, match="time zone"):
        GroupPolicy(timezone="Mars/Olympus")


def test_check_schedule_jitter_and_backoff() -> None:
    s = CheckScheduler(random.Random(7))
    firsts = [s.first_delay() for _ in range(200)]
    assert all(120 <= d <= 720 for d in firsts) and max(firsts) - min(firsts) > 300
    periodic = [s.next_delay() for _ in range(200)]
    assert all(2400 <= d <= 3000 for d in periodic)
    backoffs = [s.next_delay(failed=True) for _ in range(8)]
    # Doubling 90 min, 180, 240 (cap), each fuzzed by ± half.
    assert 2700 <= backoffs[0] <= 8100 and all(7200 <= d <= 21600 for d in backoffs[3:])
    assert 2400 <= s.next_delay() <= 3000  # success resets the backoff
    assert 300 <= s.next_delay(poll_interval=600) <= 900


def _check_invariants(r: Rollout, grants: list[tuple[float, str]], period: float,
                      limit: int, failing: set[str]) -> None:
    times = sorted(t for t, _ in grants)
    for t in times:
        assert sum(1 for u in times if t <= u < t + period) <= limit
    per_instance: dict[str, int] = {}
    for _, iid in grants:
        per_instance[iid] = per_instance.get(iid, 0) + 1
    # A failed machine was granted exactly once: its failed version is never offered again.
    assert all(per_instance[i] == 1 for i in failing if i in per_instance)
    for iid, s in r.instances.items():
        if iid in failing and iid in per_instance:
            assert s.status == InstanceStatus.ERROR and s.failed_versions == {"1.1.0"}


@settings(max_examples=15)
@given(n=st.integers(1, 40), limit=st.integers(1, 6), period=st.sampled_from([30.0, 60.0, 300.0]),
       seed=st.integers(0, 2**16), failing=st.sets(st.integers(0, 39), max_size=5))
def test_rollout_invariants_hold_for_any_fleet(n: int, limit: int, period: float, seed: int,
                                               failing: set[int]) -> None:
    r = Rollout(GroupPolicy(period_seconds=period, max_updates_per_period=limit,
                            update_timeout_seconds=period), "1.1.0")
    bad = {f"m{i}" for i in failing if i < n}
    grants = _simulate(r, n, until=MONDAY_10 + 1800, step=25, start=MONDAY_10, seed=seed,
                       fail=bad)
    _check_invariants(r, grants, period, limit, bad)


@pytest.mark.slow
def test_rollout_soak_hundreds_of_machines() -> None:
    for seed in range(3):
        r = Rollout(GroupPolicy(period_seconds=60, max_updates_per_period=10,
                                halt_after_failures=0), "1.1.0")
        bad = {f"m{i}" for i in range(0, 500, 37)}
        grants = _simulate(r, 500, until=MONDAY_10 + 2 * 3600, step=270, start=MONDAY_10,
                           seed=seed, fail=bad)
        _check_invariants(r, grants, 60, 10, bad)
        assert len({i for _, i in grants}) == 500
