"""The reboot semaphore: locksmith v0.6's value, keys and compare-and-swap protocol (pure).

Key layout (`lock/etcd.go`): the default semaphore lives at
`coreos.com/updateengine/rebootlock/semaphore`; group `g` uses
`coreos.com/updateengine/rebootlock/groups/<url.QueryEscape(g)>/semaphore`.

Value (`lock/semaphore.go`): Go's JSON of `{semaphore, max, holders}` in that field order,
e.g. a fresh one `{"semaphore":1,"max":1,"holders":null}`. `holders` is kept sorted by
binary insertion; it is `null` until the first lock and `[]` once emptied again. Rules:

* lock(h): `semaphore <= 0` → "semaphore is at N" (checked first, so a holder re-locking a
  full semaphore hears that, not "holder exists"); h present → "holder exists"; else insert
  h and decrement.
* unlock(h): h absent → "holder does not exist"; else remove h and increment.
* set_max(m): `semaphore -= max - m; max = m` — may go negative; current holders stay.

Protocol: every write is a compare-and-swap on the key's `modifiedIndex`, and a missing key
is created with `prevExist=false` (locksmith's Init). `cas_step` is that protocol as a pure
function: from what a GET saw, the write to attempt. The shell repeats GET → cas_step → write
while the write loses races (etcd errors 101/105), so two lockers can never both succeed from
the same observed value: at most `max` holders, whatever the interleaving.
"""

from __future__ import annotations

import bisect
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from corral.locksmith.errors import CorruptSemaphore, HolderExists, HolderNotExist, SemaphoreFull

__all__ = [
    "KEY_PREFIX",
    "SEMAPHORE_KEY",
    "CasWrite",
    "Lock",
    "Op",
    "Semaphore",
    "SetMax",
    "Unlock",
    "apply_op",
    "cas_step",
    "semaphore_key",
]

KEY_PREFIX = "coreos.com/updateengine/rebootlock"
SEMAPHORE_KEY = KEY_PREFIX + "/semaphore"


def semaphore_key(group: str = "") -> str:
    """The semaphore's key for `group` ("" is the default, cluster-wide semaphore)."""
    if not group:
        return SEMAPHORE_KEY
    return f"{KEY_PREFIX}/groups/{urllib.parse.quote_plus(group, safe='')}/semaphore"


def _go_json(obj: Any) -> str:
    # encoding/json: compact, non-ASCII kept, and <, >, & escaped for HTML safety.
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(ch, esc)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


@dataclass(frozen=True, slots=True)
class Semaphore:
    """A semaphore value; `holders` None is JSON `null` (never locked)."""

    semaphore: int = 1
    max: int = 1
    holders: tuple[str, ...] | None = None

    def to_json(self) -> str:
        holders = None if self.holders is None else list(self.holders)
        return _go_json({"semaphore": self.semaphore, "max": self.max, "holders": holders})

    @classmethod
    def from_json(cls, text: str) -> Semaphore:
        """Decode like Go's json.Unmarshal: absent fields are zero, unknown fields ignored."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise CorruptSemaphore(f"semaphore value is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise CorruptSemaphore("semaphore value is not a JSON object")
        sem, mx, holders = doc.get("semaphore", 0), doc.get("max", 0), doc.get("holders")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (sem, mx)):
            raise CorruptSemaphore("semaphore and max must be integers")
        if holders is not None and not (
            isinstance(holders, list) and all(isinstance(h, str) for h in holders)
        ):
            raise CorruptSemaphore("holders must be a list of strings or null")
        return cls(sem, mx, None if holders is None else tuple(holders))

    @property
    def holder_list(self) -> tuple[str, ...]:
        return self.holders or ()

    def lock(self, holder: str) -> Semaphore:
        if self.semaphore <= 0:
            raise SemaphoreFull(self.semaphore)
        hs = list(self.holder_list)
        i = bisect.bisect_left(hs, holder)  # sort.SearchStrings
        if i < len(hs) and hs[i] == holder:
            raise HolderExists()
        hs.insert(i, holder)
        return Semaphore(self.semaphore - 1, self.max, tuple(hs))

    def unlock(self, holder: str) -> Semaphore:
        hs = list(self.holder_list)
        i = bisect.bisect_left(hs, holder)
        if not (i < len(hs) and hs[i] == holder):
            raise HolderNotExist()
        del hs[i]
        return Semaphore(self.semaphore + 1, self.max, tuple(hs))

    def set_max(self, new_max: int) -> Semaphore:
        diff = self.max - new_max
        return Semaphore(self.semaphore - diff, self.max - diff, self.holders)


@dataclass(frozen=True, slots=True)
class Lock:
    holder: str


@dataclass(frozen=True, slots=True)
class Unlock:
    holder: str


@dataclass(frozen=True, slots=True)
class SetMax:
    max: int


Op = Lock | Unlock | SetMax


def apply_op(sem: Semaphore, op: Op) -> Semaphore:
    """The semaphore after `op`, or the SemaphoreError locksmith returns."""
    if isinstance(op, Lock):
        return sem.lock(op.holder)
    if isinstance(op, Unlock):
        return sem.unlock(op.holder)
    return sem.set_max(op.max)


@dataclass(frozen=True, slots=True)
class CasWrite:
    """The conditional write to attempt: create (`prev_index` None) or swap at `prev_index`."""

    before: Semaphore
    after: Semaphore
    prev_index: int | None

    @property
    def value(self) -> str:
        return self.after.to_json()


def cas_step(op: Op, current: str | None, modified_index: int | None) -> CasWrite:
    """One round of the protocol: what a GET returned (None: key absent) → the write to try.

    Raises:
        SemaphoreError: the operation is refused on the observed value (final, no retry).
        CorruptSemaphore: the stored value cannot be decoded.
    """
    if current is None:
        before = Semaphore()
        return CasWrite(before, apply_op(before, op), None)
    if modified_index is None:
        raise ValueError("an existing value needs its modifiedIndex")
    before = Semaphore.from_json(current)
    return CasWrite(before, apply_op(before, op), modified_index)
