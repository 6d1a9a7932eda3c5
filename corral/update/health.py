"""Boot assessment and update_engine's per-check decisions, as pure functions of their inputs.

`BootHealth` decides, from observations and a `now` passed in, whether the booted slot is
to be marked good, must be given up on (reboot), or needs more time:

* the slot qualifies once its services have been alive *continuously* for `period`
  seconds (any observation of a dead service restarts the count); the shell then runs the
  health command and confirms with `mark_good()`;
* if it has not been marked good `deadline` seconds after boot, or a service exited before
  that, the verdict is REBOOT — gptprio then skips a slot that used its last try, which is
  the rollback.

`check_event` is the event update_engine puts in every update check (reference §1.2):
`3/2 previousversion=<pref>` (`0.0.0.0` before the pref exists), or, when the machine runs
the very version it updated *from* (it fell back), `3/0 errorcode=44` — or, when the
failed boot recorded why, `3/0` with that code from corral's health range (3000–3099:
3001 a service exited, 3002 not healthy by the boot deadline, 3003 health command failed,
3010 fleet units scheduled here not active within the fleet window, 3011 fleet registry
unreachable for the whole window).

`fell_back` tells, at boot, whether a pending update was abandoned.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from corral.update.omaha import ErrorCode, Event, EventResult, EventType

__all__ = ["BootHealth", "Verdict", "check_event", "fell_back"]


class Verdict(enum.Enum):
    WAIT = "wait"
    CHECK = "check"  # alive long enough: run the health command, then mark_good()
    GOOD = "good"
    REBOOT = "reboot"


@dataclass
class BootHealth:
    period: float
    deadline: float
    booted_at: float
    healthy_since: float | None = None
    good: bool = False

    def observe(self, now: float, alive: bool, exited: bool = False) -> Verdict:
        """`alive`: everything required is up; `exited`: a service the agent started is gone.

        Services are not restarted, so one that exits before the slot is good means this
        boot cannot become good: give up at once instead of waiting for the deadline.
        """
        if self.good:
            return Verdict.GOOD
        if exited:
            return Verdict.REBOOT
        if not alive:
            self.healthy_since = None
        elif self.healthy_since is None:
            self.healthy_since = now
        if self.healthy_since is not None and now - self.healthy_since >= self.period:
            return Verdict.CHECK
        if now - self.booted_at >= self.deadline:
            return Verdict.REBOOT
        return Verdict.WAIT

    def check_failed(self, now: float) -> Verdict:
        """The health command said no: keep waiting, or give up once past the deadline."""
        return Verdict.REBOOT if now - self.booted_at >= self.deadline else Verdict.WAIT

    def mark_good(self) -> None:
        self.good = True


def check_event(previous_version: str | None, current_version: str,
                failure_code: int | None = None) -> Event:
    """`failure_code`: why the abandoned slot failed (corral's range), if the boot knew."""
    if previous_version is not None and previous_version == current_version:
        code = ErrorCode.ROLLBACK if failure_code is None else failure_code
        return Event(EventType.UPDATE_COMPLETE, EventResult.ERROR, code)
    return Event(EventType.UPDATE_COMPLETE, EventResult.SUCCESS_REBOOT,
                 previous_version="0.0.0.0" if previous_version is None else previous_version)


def fell_back(pending_version: str | None, booted_version: str) -> bool:
    """A pending update (cleared when its slot is marked good) but another version booted."""
    return pending_version is not None and pending_version != booted_version
