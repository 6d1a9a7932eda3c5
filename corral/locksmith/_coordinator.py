"""locksmithd's decisions as a pure state machine (locksmith v0.6 `locksmithctl/daemon.go`).

The shell feeds events in — `start(now)`, `healthy(now)`, `status(op, now)` from the update
agent, `unlocked(ok, now)`, `locked(outcome, now)`, `timer(now)` — and performs the actions
that come out: `Unlock` (release this machine's lock), `Lock` (try to take it), `Reboot`,
`SetTimer(at)`, `Exit(code)`, `Log(level, message)`. No clock, no I/O, no randomness.

Flow, as in locksmith:

1. `off` → exit 0 at once. Otherwise wait for the update agent's status
   `UPDATE_STATUS_UPDATED_NEED_REBOOT`.
2. With `etcd-lock`, a machine that (re)started still holds the lock from before its reboot:
   release it. locksmith does this immediately; corral waits until the machine reports
   `healthy` (its services run again from the new slot), so the next machine does not reboot
   while this one is still coming up. Failed releases retry after 5 s, doubling to 5 min.
3. On need-reboot: stop releasing; if a reboot window is set and `now` is outside it, wait
   for its next start.
4. `etcd-lock`: try to lock; already being a holder counts as success; a refusal or error
   retries with backoff (10 s, 20 s, … capped at 5 min — locksmith doubles before sleeping;
   both intervals are parameters).
   `reboot`: no lock.
5. Reboot. (locksmith's 5-minute delay for logged-in users is the shell's business.)

One deliberate difference: locksmith keeps retrying the lock after the window has closed and
may reboot outside it. Here lock retries stop at the window's end, and a lock obtained just
after it closed is given back; either way the machine waits for the next window.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from corral.locksmith._strategy import DaemonSettings, Strategy

__all__ = [
    "NEED_REBOOT",
    "Action",
    "CoordinatorState",
    "Exit",
    "LockOutcome",
    "LockRequest",
    "Log",
    "Reboot",
    "RebootCoordinator",
    "SetTimer",
    "UnlockRequest",
]

NEED_REBOOT = "UPDATE_STATUS_UPDATED_NEED_REBOOT"
INITIAL_INTERVAL = timedelta(seconds=5)
MAX_INTERVAL = timedelta(minutes=5)


class CoordinatorState(enum.Enum):
    """Also what locksmithd writes to coordinator.conf (`starting`, `running`, …)."""

    STARTING = "starting"
    RUNNING = "running"
    REBOOT_PLANNED = "reboot-planned"
    REBOOTING = "rebooting"
    EXITED = "exited"


class LockOutcome(enum.Enum):
    ACQUIRED = "acquired"
    ALREADY_HELD = "already-held"  # "holder exists": counts as success
    REFUSED = "refused"  # semaphore full
    ERROR = "error"  # the KV store failed


@dataclass(frozen=True, slots=True)
class UnlockRequest:
    """Release this machine's lock (treat "holder does not exist" as success)."""


@dataclass(frozen=True, slots=True)
class LockRequest:
    """Try to take the lock for this machine."""


@dataclass(frozen=True, slots=True)
class Reboot:
    pass


@dataclass(frozen=True, slots=True)
class SetTimer:
    at: datetime


@dataclass(frozen=True, slots=True)
class Exit:
    code: int


@dataclass(frozen=True, slots=True)
class Log:
    level: str
    message: str


Action = UnlockRequest | LockRequest | Reboot | SetTimer | Exit | Log


class RebootCoordinator:
    """One machine's reboot coordination; feed events, perform the returned actions."""

    def __init__(
        self,
        settings: DaemonSettings,
        *,
        release_when_healthy: bool = True,
        initial_interval: timedelta = INITIAL_INTERVAL,
        max_interval: timedelta = MAX_INTERVAL,
    ) -> None:
        self.settings = settings
        self.release_when_healthy = release_when_healthy
        self.initial_interval = initial_interval
        self.max_interval = max_interval
        self.state = CoordinatorState.STARTING
        self._unlocking = False  # the post-reboot release loop is active
        self._need_reboot = False
        self._waiting_window = False
        self._locking = False
        self._giving_back = False  # releasing a lock that came after the window closed
        self._unlock_interval = initial_interval
        self._lock_interval = initial_interval
        self._timer: datetime | None = None

    # --- events ---------------------------------------------------------------------------

    def start(self, now: datetime) -> list[Action]:
        out: list[Action] = []
        for w in self.settings.warnings:
            out.append(Log("warning", w))
        if self.settings.strategy is Strategy.OFF:
            self.state = CoordinatorState.EXITED
            out += [Log("notice", 'Reboot strategy is "off" - locksmithd is exiting.'), Exit(0)]
            return out
        if self.settings.window is None:
            out.append(Log("info", "No configured reboot window"))
        else:
            nxt = self.settings.window.next(now)
            out.append(Log("info", f"Next window begins at {nxt.start} and ends at {nxt.end}"))
        self.state = CoordinatorState.RUNNING
        if self.settings.strategy is Strategy.ETCD_LOCK:
            self._unlocking = True
            if not self.release_when_healthy:
                out.append(UnlockRequest())
        return out

    def healthy(self, now: datetime) -> list[Action]:
        """The machine runs its services again: release a lock held from before the reboot."""
        if self._unlocking and self.release_when_healthy and not self._need_reboot:
            return [UnlockRequest()]
        return []

    def unlocked(self, ok: bool, now: datetime) -> list[Action]:
        if self._giving_back:
            if ok:
                self._giving_back = False
                return self._wait_for_window(now)
            self._unlock_interval = self._backoff(self._unlock_interval)
            return self._arm(now + self._unlock_interval)
        if not self._unlocking:
            return []
        if ok:
            self._unlocking = False
            return [Log("info", "Unlocked existing lock for this machine")]
        self._unlock_interval = self._backoff(self._unlock_interval)
        return [
            *self._arm(now + self._unlock_interval),
            Log("error", f"Unlocking old locks failed. Retrying in {self._unlock_interval}."),
        ]

    def status(self, operation: str, now: datetime) -> list[Action]:
        """A status update from the update agent."""
        if (
            operation != NEED_REBOOT
            or self._need_reboot
            or self.state is not CoordinatorState.RUNNING
        ):
            return []
        self._need_reboot = True
        self._unlocking = False  # stop the release loop, as locksmith closes its channel
        self.state = CoordinatorState.REBOOT_PLANNED
        if self._outside_window(now):
            return self._wait_for_window(now)
        return self._proceed()

    def timer(self, now: datetime) -> list[Action]:
        if self._timer is None or now < self._timer:
            return []
        self._timer = None
        if self._giving_back:
            return [UnlockRequest()]
        if self._waiting_window:
            self._waiting_window = False
            return self._proceed()
        if self._locking:
            if self._outside_window(now):
                self._locking = False
                return self._wait_for_window(now)
            return [LockRequest()]
        if self._unlocking:
            return [UnlockRequest()]
        return []

    def locked(self, outcome: LockOutcome, now: datetime) -> list[Action]:
        if not self._locking:
            return []
        if outcome in (LockOutcome.ACQUIRED, LockOutcome.ALREADY_HELD):
            self._locking = False
            if self._outside_window(now):
                self._giving_back = True
                return [
                    Log(
                        "info", "The reboot window closed while waiting for the lock; releasing it"
                    ),
                    UnlockRequest(),
                ]
            return self._reboot()
        self._lock_interval = self._backoff(self._lock_interval)
        return [
            *self._arm(now + self._lock_interval),
            Log(
                "warning",
                f"Failed to acquire lock: {outcome.value}. Retrying in {self._lock_interval}.",
            ),
        ]

    # --- helpers ----------------------------------------------------------------------------

    @property
    def next_timer(self) -> datetime | None:
        return self._timer

    def _outside_window(self, now: datetime) -> bool:
        window = self.settings.window
        return window is not None and not window.in_window(now)

    def _wait_for_window(self, now: datetime) -> list[Action]:
        assert self.settings.window is not None
        self._waiting_window = True
        start = self.settings.window.next_window(now).start
        return [*self._arm(start), Log("info", f"Waiting for the reboot window at {start}")]

    def _backoff(self, interval: timedelta) -> timedelta:
        return min(interval * 2, self.max_interval)

    def _arm(self, at: datetime) -> list[Action]:
        self._timer = at
        return [SetTimer(at)]

    def _proceed(self) -> list[Action]:
        if self.settings.strategy is Strategy.ETCD_LOCK:
            self._locking = True
            return [LockRequest()]
        return self._reboot()

    def _reboot(self) -> list[Action]:
        self.state = CoordinatorState.REBOOTING
        return [Reboot()]
