"""Dead-holder release (corral's addition to locksmith; pure).

locksmith never frees the lock of a machine that died while holding it: an operator runs
`locksmithctl unlock ID`. corral adds a presence heartbeat: every running locksmith daemon
keeps a TTL key `corral/locksmith/presence/<machine-id>` alive. A holder whose presence key
has been absent for at least `grace` seconds, continuously, is released (through the
ordinary compare-and-swap unlock), logged, and recorded under
`corral/locksmith/released/<machine-id>` so `status` can show it. The grace period covers a
machine that is rebooting (its presence lapses while it is down) — it must exceed the
expected reboot time, or a machine could lose its lock mid-reboot.

`DeadHolderReaper.observe(now, holders, present)` is the whole rule: it remembers since when
each holder has been missing and returns the ones past their grace, in sorted order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "PRESENCE_PREFIX",
    "RELEASED_PREFIX",
    "DeadHolderReaper",
    "Release",
    "presence_key",
    "released_key",
]

PRESENCE_PREFIX = "corral/locksmith/presence"
RELEASED_PREFIX = "corral/locksmith/released"
RELEASE_RECORD_VERSION = 1


def presence_key(machine_id: str) -> str:
    return f"{PRESENCE_PREFIX}/{machine_id}"


def released_key(machine_id: str) -> str:
    return f"{RELEASED_PREFIX}/{machine_id}"


@dataclass(frozen=True, slots=True)
class Release:
    """A decision to release `holder`, absent since `missing_since` (seconds, caller's clock)."""

    holder: str
    missing_since: float
    released_at: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": RELEASE_RECORD_VERSION,
                "holder": self.holder,
                "missing_since": self.missing_since,
                "released_at": self.released_at,
            },
            sort_keys=True,
        )


class DeadHolderReaper:
    """Tracks holders without presence; no clock of its own (pass `now` in)."""

    def __init__(self, grace: float) -> None:
        if grace < 0:
            raise ValueError("grace must be >= 0")
        self.grace = grace
        self._missing_since: dict[str, float] = {}

    def observe(self, now: float, holders: Iterable[str], present: Iterable[str]) -> list[Release]:
        """Holders whose presence has been gone for `grace` seconds as of `now`."""
        alive = set(present)
        current = set(holders)
        for gone in set(self._missing_since) - current:
            del self._missing_since[gone]  # no longer a holder: forget
        due = []
        for h in sorted(current):
            if h in alive:
                self._missing_since.pop(h, None)
                continue
            since = self._missing_since.setdefault(h, now)
            if now - since >= self.grace:
                due.append(Release(h, since, now))
        return due

    def released(self, holder: str) -> None:
        """Forget `holder` once its release went through."""
        self._missing_since.pop(holder, None)
