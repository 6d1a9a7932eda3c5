"""locksmithd's decisions on virtual time: a simulated fleet of machines sharing one semaphore."""

from __future__ import annotations

import heapq
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.locksmith import (
    NEED_REBOOT,
    Action,
    CoordinatorState,
    DaemonSettings,
    Exit,
    HolderExists,
    HolderNotExist,
    Lock,
    LockOutcome,
    LockRequest,
    Periodic,
    Reboot,
    RebootCoordinator,
    Semaphore,
    SemaphoreError,
    SetTimer,
    Strategy,
    Unlock,
    UnlockRequest,
    cas_step,
)

T0 = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # a Monday


def _settings(strategy: Strategy, window: Periodic | None = None) -> DaemonSettings:
    return DaemonSettings(strategy, window, "", ("http://127.0.0.1:2379",))


def test_off_exits_and_reboot_reboots_at_once() -> None:
    c = RebootCoordinator(_settings(Strategy.OFF))
    assert Exit(0) in c.start(T0) and c.state is CoordinatorState.EXITED
    c = RebootCoordinator(_settings(Strategy.REBOOT))
    acts = c.start(T0)
    assert not any(isinstance(a, UnlockRequest) for a in acts)
    assert c.status("UPDATE_STATUS_IDLE", T0) == []
    assert c.status(NEED_REBOOT, T0) == [Reboot()]
    assert c.state is CoordinatorState.REBOOTING


def test_etcd_lock_backs_off_until_the_lock_is_free() -> None:
    c = RebootCoordinator(_settings(Strategy.ETCD_LOCK))
    c.start(T0)
    assert c.status(NEED_REBOOT, T0) == [LockRequest()]
    waits = []
    now = T0
    for _ in range(8):
        acts = c.locked(LockOutcome.REFUSED, now)
        (timer,) = [a for a in acts if isinstance(a, SetTimer)]
        waits.append(timer.at - now)
        assert c.timer(timer.at - timedelta(seconds=1)) == []  # not yet
        now = timer.at
        assert c.timer(now) == [LockRequest()]
    assert waits[:3] == [timedelta(seconds=10), timedelta(seconds=20), timedelta(seconds=40)]
    assert waits[-1] == timedelta(minutes=5)
    assert c.locked(LockOutcome.ALREADY_HELD, now) == [Reboot()]


def test_window_delays_the_reboot_until_it_opens() -> None:
    window = Periodic.parse("wed 03:00", "1h")
    c = RebootCoordinator(_settings(Strategy.REBOOT, window))
    c.start(T0)
    acts = c.status(NEED_REBOOT, T0)
    (timer,) = [a for a in acts if isinstance(a, SetTimer)]
    assert timer.at == datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
    assert c.timer(timer.at - timedelta(minutes=1)) == []
    assert c.timer(timer.at) == [Reboot()]


def test_release_after_reboot_waits_for_health_and_retries() -> None:
    c = RebootCoordinator(_settings(Strategy.ETCD_LOCK))
    assert not any(isinstance(a, UnlockRequest) for a in c.start(T0))
    assert c.healthy(T0) == [UnlockRequest()]
    acts = c.unlocked(False, T0)
    (timer,) = [a for a in acts if isinstance(a, SetTimer)]
    assert timer.at == T0 + timedelta(seconds=10)
    assert c.timer(timer.at) == [UnlockRequest()]
    c.unlocked(True, timer.at)
    assert c.timer(timer.at + timedelta(hours=1)) == []
    # locksmith's own behaviour: release at once on start
    eager = RebootCoordinator(_settings(Strategy.ETCD_LOCK), release_when_healthy=False)
    assert UnlockRequest() in eager.start(T0)


class Fleet:
    """Machines sharing one semaphore (a model store with CAS), driven by an event queue."""

    def __init__(
        self,
        n: int,
        max_: int,
        window: Periodic | None,
        reboot: timedelta,
        boot_to_healthy: timedelta,
        need_at: list[timedelta],
    ) -> None:
        self.value = Semaphore().set_max(max_).to_json()
        self.index = 1
        self.max = max_
        self.window = window
        self.reboot_time = reboot
        self.boot_to_healthy = boot_to_healthy
        self.queue: list[tuple[datetime, int, int, str]] = []
        self.seq = itertools.count()
        self.coord = {i: RebootCoordinator(_settings(Strategy.ETCD_LOCK, window)) for i in range(n)}
        self.down_or_unhealthy: set[int] = set()
        self.rebooted: dict[int, datetime] = {}
        self.peak = 0
        for i, c in self.coord.items():
            self.perform(i, c.start(T0), T0)
            self.push(T0 + need_at[i % len(need_at)], i, "need")

    def push(self, at: datetime, machine: int, what: str) -> None:
        heapq.heappush(self.queue, (at, next(self.seq), machine, what))

    def cas(self, op: Lock | Unlock) -> None:
        w = cas_step(op, self.value, self.index)  # single-threaded: the CAS always lands
        self.value, self.index = w.value, self.index + 1

    def perform(self, i: int, actions: list[Action], now: datetime) -> None:
        for a in actions:
            c = self.coord[i]
            if isinstance(a, SetTimer):
                self.push(a.at, i, "timer")
            elif isinstance(a, LockRequest):
                try:
                    self.cas(Lock(f"m{i}"))
                    outcome = LockOutcome.ACQUIRED
                except HolderExists:
                    outcome = LockOutcome.ALREADY_HELD
                except SemaphoreError:
                    outcome = LockOutcome.REFUSED
                self.perform(i, c.locked(outcome, now), now)
            elif isinstance(a, UnlockRequest):
                try:
                    self.cas(Unlock(f"m{i}"))
                except HolderNotExist:
                    pass
                self.down_or_unhealthy.discard(i)
                self.perform(i, c.unlocked(True, now), now)
            elif isinstance(a, Reboot):
                if self.window is not None:
                    assert self.window.in_window(now), f"m{i} rebooted outside its window at {now}"
                assert f"m{i}" in Semaphore.from_json(self.value).holder_list
                self.down_or_unhealthy.add(i)
                self.peak = max(self.peak, len(self.down_or_unhealthy))
                assert len(self.down_or_unhealthy) <= self.max
                self.rebooted[i] = now
                self.push(now + self.reboot_time, i, "boot")

    def run(self, until: datetime) -> None:
        while self.queue and self.queue[0][0] <= until:
            now, _, i, what = heapq.heappop(self.queue)
            c = self.coord[i]
            if what == "need":
                self.perform(i, c.status(NEED_REBOOT, now), now)
            elif what == "timer":
                self.perform(i, c.timer(now), now)
            elif what == "boot":  # a fresh locksmithd on the new slot
                self.coord[i] = c = RebootCoordinator(_settings(Strategy.ETCD_LOCK, self.window))
                self.perform(i, c.start(now), now)
                self.push(now + self.boot_to_healthy, i, "healthy")
            elif what == "healthy":
                self.perform(i, c.healthy(now), now)


@pytest.mark.parametrize("max_", [1, 2])
def test_fleet_reboots_at_most_max_at_a_time(max_: int) -> None:
    fleet = Fleet(6, max_, None, timedelta(minutes=2), timedelta(minutes=3), [timedelta(0)])
    fleet.run(T0 + timedelta(days=1))
    assert sorted(fleet.rebooted) == list(range(6))
    assert fleet.peak == max_
    assert Semaphore.from_json(fleet.value) == Semaphore(max_, max_, ())


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 5),
    max_=st.integers(1, 3),
    reboot_min=st.integers(1, 20),
    healthy_min=st.integers(0, 20),
    needs=st.lists(st.integers(0, 3000), min_size=1, max_size=5),
    window_day=st.sampled_from(["", "tue ", "sat "]),
)
def test_fleet_respects_max_and_windows_on_virtual_time(
    n: int, max_: int, reboot_min: int, healthy_min: int, needs: list[int], window_day: str
) -> None:
    window = Periodic.parse(f"{window_day}02:00", "2h")
    fleet = Fleet(
        n,
        max_,
        window,
        timedelta(minutes=reboot_min),
        timedelta(minutes=healthy_min),
        [timedelta(minutes=m) for m in needs],
    )
    fleet.run(T0 + timedelta(days=21))
    assert sorted(fleet.rebooted) == list(range(n))  # everyone got its turn
    assert Semaphore.from_json(fleet.value).holder_list == ()


def test_lock_retries_stop_when_the_window_closes() -> None:
    window = Periodic.parse("02:00", "1h")
    c = RebootCoordinator(_settings(Strategy.ETCD_LOCK, window))
    c.start(T0)
    inside = T0 + timedelta(hours=2, minutes=59, seconds=55)
    assert c.status(NEED_REBOOT, inside) == [LockRequest()]
    (timer,) = [a for a in c.locked(LockOutcome.REFUSED, inside) if isinstance(a, SetTimer)]
    acts = c.timer(timer.at)  # 03:00:05: the window has closed
    (wait,) = [a for a in acts if isinstance(a, SetTimer)]
    assert wait.at == T0 + timedelta(days=1, hours=2)
    assert c.timer(wait.at) == [LockRequest()]
    # the lock arrives a moment after the window closed: give it back, wait again
    late = T0 + timedelta(days=1, hours=3, seconds=1)
    assert UnlockRequest() in c.locked(LockOutcome.ACQUIRED, late)
    (again,) = [a for a in c.unlocked(True, late) if isinstance(a, SetTimer)]
    assert again.at == T0 + timedelta(days=2, hours=2)
    assert c.timer(again.at) == [LockRequest()]
    assert c.locked(LockOutcome.ACQUIRED, again.at) == [Reboot()]
