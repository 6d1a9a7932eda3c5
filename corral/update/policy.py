"""Rollout policy: which instance may update now. A pure core; time is an argument.

Theory of operation (Nebraska's `enforceRolloutPolicy` and event handling, reference §4.1)
----------------------------------------------------------------------------------------
A `Rollout` is one group's view: its policy, the version its channel points at, and every
instance that checked in. `check(instance, version, now)` decides grant or hold;
`event(instance, event, now)` moves the instance through

    UNDEFINED → UPDATE_GRANTED → DOWNLOADING (13/1) → DOWNLOADED (14/1)
              → INSTALLED (3/1) → COMPLETE (3/2 after reboot, or a check at the new version)
    any step  → ERROR (x/0); the failed version is remembered and never offered again.

Check rules, in order:
1. An instance with an update in flight (downloading/downloaded/installed, not timed out)
   gets no second offer.
2. Reaching the granted version completes the update.
3. Up to date (semver `>=` target) → no update. A version the instance failed on → hold.
4. An instance already granted the target gets it again without re-checking the policy.
5. Policy: updates disabled, or the target version halted → hold; office hours on and now is
   outside Mon–Fri 09:00–17:00 in the group's time zone → hold; grants in the last
   `period` ≥ max → hold; updates in flight (granted less than `update_timeout` ago and
   not finished) ≥ max → hold. In safe mode the effective max is 1 until one instance
   completes the target.
6. Grant.

Health-gated halts (corral's own rule; Nebraska only has safe mode's "first failure")
------------------------------------------------------------------------------------
Every failure report (`x/0`) of an instance with an update of version V in flight counts
against V. When V's count since its last resume reaches `halt_after_failures` (default 1;
1 in safe mode whatever is set; 0 means never halt outside safe mode), V is *halted* in this
group: a `Halt` records the version, the machine whose report crossed the threshold, its
(masked) error code and when. A halted version is offered to no machine of the group —
whatever the channel says, so re-pointing the channel at it later does not lift the halt —
until `resume(V)`, which drops the halt and restarts V's failure count. Machines that failed
on V stay excluded from V for good (they fell back from it).

Holds are answered `noupdate` by the server (compatible with update_engine and quieter
than Nebraska's `error-…` statuses, which clients report back as error 34); the reason is
returned here and kept in the activity log.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from corral.update.errors import VersionError
from corral.update.omaha import Event, EventResult, EventType
from corral.update.version import parse_version

__all__ = ["Decision", "GroupPolicy", "Halt", "InstanceState", "InstanceStatus", "Rollout"]


class InstanceStatus(enum.IntEnum):
    UNDEFINED = 1
    UPDATE_GRANTED = 2
    ERROR = 3
    COMPLETE = 4
    INSTALLED = 5
    DOWNLOADED = 6
    DOWNLOADING = 7
    ON_HOLD = 8


_IN_FLIGHT = {InstanceStatus.DOWNLOADING, InstanceStatus.DOWNLOADED, InstanceStatus.INSTALLED}
_ACTIVE = _IN_FLIGHT | {InstanceStatus.UPDATE_GRANTED}


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    updates_enabled: bool = True
    safe_mode: bool = False
    office_hours: bool = False
    timezone: str = "UTC"
    period_seconds: float = 60.0
    max_updates_per_period: int = 999999
    update_timeout_seconds: float = 3600.0
    halt_after_failures: int = 1

    def __post_init__(self) -> None:
        if self.period_seconds <= 0 or self.update_timeout_seconds <= 0:
            raise ValueError("period and update timeout must be positive")
        if self.max_updates_per_period < 0:
            raise ValueError("max updates per period must be >= 0")
        if isinstance(self.halt_after_failures, bool) or not isinstance(
                self.halt_after_failures, int) or self.halt_after_failures < 0:
            raise ValueError("halt after failures must be an integer >= 0")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None


@dataclass(frozen=True, slots=True)
class InstanceState:
    id: str
    version: str = ""
    status: InstanceStatus = InstanceStatus.UNDEFINED
    last_check: float = 0.0
    granted_at: float | None = None
    granted_version: str | None = None
    failed_versions: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Halt:
    """Why a version's rollout stopped: the report that crossed the failure threshold."""

    version: str
    instance: str
    code: int | None
    at: float
    failures: int

    @property
    def reason(self) -> str:
        code = "no code" if self.code is None else f"code {self.code}"
        return (f"{self.version}: instance {self.instance} failed ({code}); "
                f"{self.failures} failure(s) reached the threshold")


@dataclass(frozen=True, slots=True)
class Decision:
    grant: bool
    version: str | None
    reason: str


@dataclass
class Rollout:
    policy: GroupPolicy
    target: str | None
    instances: dict[str, InstanceState] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    halts: dict[str, Halt] = field(default_factory=dict)

    @property
    def halted(self) -> bool:
        """The version the channel points at is halted."""
        return self.target is not None and self.target in self.halts

    @property
    def halt_reason(self) -> str:
        return self.halts[self.target].reason if self.halted and self.target else ""

    @property
    def threshold(self) -> int:
        """Failures of one version that halt it (0: never)."""
        return 1 if self.policy.safe_mode else self.policy.halt_after_failures

    # ---------------------------------------------------------------- helpers

    def _set(self, state: InstanceState) -> InstanceState:
        self.instances[state.id] = state
        return state

    def _in_office_hours(self, now: float) -> bool:
        local = datetime.fromtimestamp(now, ZoneInfo(self.policy.timezone))
        return local.weekday() < 5 and 9 <= local.hour < 17

    def _timed_out(self, s: InstanceState, now: float) -> bool:
        return s.granted_at is not None and now - s.granted_at >= self.policy.update_timeout_seconds

    def _effective_max(self) -> int:
        if self.policy.safe_mode and not any(
            s.status == InstanceStatus.COMPLETE and s.version == self.target
            for s in self.instances.values()
        ):
            return min(1, self.policy.max_updates_per_period)
        return self.policy.max_updates_per_period

    def in_progress(self, s: InstanceState, now: float) -> bool:
        """Granted or mid-update, and not timed out."""
        return s.status in _ACTIVE and not self._timed_out(s, now)

    def set_target(self, version: str | None) -> None:
        """A new channel version starts a new rollout; halts stay with their versions."""
        self.target = version

    def resume(self, version: str | None = None) -> Halt | None:
        """An operator lifts the halt of `version` (default: the target); returns it."""
        version = self.target if version is None else version
        if version is None:
            return None
        self.failures.pop(version, None)
        return self.halts.pop(version, None)

    # ---------------------------------------------------------------- decisions

    def check(self, instance_id: str, version: str, now: float) -> Decision:
        try:
            current = parse_version(version)
        except VersionError:
            return Decision(False, None, f"instance version {version!r} is not semver")
        s = self.instances.get(instance_id) or InstanceState(instance_id)
        s = self._set(replace(s, version=version, last_check=now))

        if (s.granted_version is not None and current >= parse_version(s.granted_version)
                and s.status != InstanceStatus.COMPLETE):
            s = self._set(replace(s, status=InstanceStatus.COMPLETE))
        if s.status in _IN_FLIGHT and not self._timed_out(s, now):
            return Decision(False, None, "update in progress on instance")
        if self.target is None:
            return Decision(False, None, "no package in channel")
        if current >= parse_version(self.target):
            return Decision(False, None, "up to date")
        if self.target in s.failed_versions:
            return Decision(False, None, f"instance failed on {self.target} before")
        if (s.status == InstanceStatus.UPDATE_GRANTED and s.granted_version == self.target
                and not self._timed_out(s, now)):
            return Decision(True, self.target, "already granted")

        hold = self._policy_hold(now)
        if hold is not None:
            self._set(replace(s, status=InstanceStatus.ON_HOLD))
            return Decision(False, None, hold)
        self._set(replace(s, status=InstanceStatus.UPDATE_GRANTED, granted_at=now,
                          granted_version=self.target))
        return Decision(True, self.target, "granted")

    def _policy_hold(self, now: float) -> str | None:
        p = self.policy
        if not p.updates_enabled:
            return "updates disabled"
        if self.halted:
            return f"rollout halted: {self.halt_reason}"
        if p.office_hours and not self._in_office_hours(now):
            return "outside office hours"
        limit = self._effective_max()
        recent = sum(
            1 for s in self.instances.values()
            if s.granted_at is not None and s.granted_version == self.target
            and now - s.granted_at < p.period_seconds
        )
        if recent >= limit:
            return "max updates per period reached"
        in_flight = sum(
            1 for s in self.instances.values()
            if s.status in _ACTIVE and not self._timed_out(s, now)
        )
        if in_flight >= limit:
            return "max concurrent updates reached"
        return None

    def event(self, instance_id: str, ev: Event, now: float) -> InstanceState | None:
        """Apply one reported event; return the instance's new state (None if unknown)."""
        s = self.instances.get(instance_id)
        if s is None:
            return None
        t, r = ev.event_type, ev.event_result
        if r == EventResult.ERROR:
            if s.granted_version is None or s.status not in _ACTIVE:
                return s
            version = s.granted_version
            failed = s.failed_versions | {version}
            s = self._set(replace(s, status=InstanceStatus.ERROR, failed_versions=failed))
            count = self.failures.get(version, 0) + 1
            self.failures[version] = count
            if self.threshold and count >= self.threshold and version not in self.halts:
                self.halts[version] = Halt(version, instance_id, ev.masked_error_code, now,
                                           count)
            return s
        if s.status not in _ACTIVE:
            return s
        if t == EventType.UPDATE_DOWNLOAD_STARTED and r == EventResult.SUCCESS:
            return self._set(replace(s, status=InstanceStatus.DOWNLOADING))
        if t == EventType.UPDATE_DOWNLOAD_FINISHED and r == EventResult.SUCCESS:
            return self._set(replace(s, status=InstanceStatus.DOWNLOADED))
        if (t == EventType.UPDATE_COMPLETE and r == EventResult.SUCCESS) or (
            t == EventType.UPDATE_INSTALLED and r == EventResult.SUCCESS
        ):
            return self._set(replace(s, status=InstanceStatus.INSTALLED))
        return s

    def complete_on_reboot(self, instance_id: str, previous_version: str, version: str) -> None:
        """3/2 with a real previousversion: the instance now runs the granted version."""
        s = self.instances.get(instance_id)
        if s is None or previous_version in ("", "0.0.0.0"):
            return
        if s.granted_version == version:
            self._set(replace(s, version=version, status=InstanceStatus.COMPLETE))
