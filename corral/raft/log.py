"""The Raft log: stable entries (in `Storage`) plus the unstable tail not yet persisted.

Mirrors etcd-io/raft `log.go` / `log_unstable.go`. Indexes: ``first_index() - 1`` is the
snapshot (or dummy) index whose term is known; ``committed`` ≤ ``last_index()``;
``applied`` ≤ ``committed`` (unless a test mutant breaks it).

The follower append rule (thesis §3.5, fig. 3.1 "AppendEntries receiver" 3–4): after the
consistency check, truncate only from the first *conflicting* entry, never merely because
the follower holds more entries than the message (stale or duplicated AppendEntries), and
never at or below `committed`.
"""

from __future__ import annotations

from corral.raft.errors import CompactedError, InvariantError, UnavailableError
from corral.raft.storage import MemoryStorage, limit_size
from corral.raft.types import Entry, Snapshot

__all__ = ["RaftLog", "Unstable"]


class Unstable:
    """Entries (and maybe a snapshot) handed out by `Ready` but not yet acknowledged."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == i:
                return self.snapshot.metadata.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, i: int, t: int) -> None:
        gt = self.maybe_term(i)
        # Only if the entry was not replaced since the Ready that carried it.
        if gt == t and i >= self.offset:
            del self.entries[: i + 1 - self.offset]
            self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == i:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry] | tuple[Entry, ...]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replace the whole unstable tail (the stable part is overwritten on persist).
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)


class RaftLog:
    def __init__(self, storage: MemoryStorage, max_next_ents_size: int = 1 << 62) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applied = first - 1
        self.max_next_ents_size = max_next_ents_size
        # Test-only fault: apply entries before they commit (a mutant; see core.Mutation).
        self.apply_uncommitted = False

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, len={len(self.unstable.entries)})"
        )

    # --- indexes and terms -----------------------------------------------------------------
    def first_index(self) -> int:
        snap = self.unstable.snapshot
        return snap.metadata.index + 1 if snap is not None else self.storage.first_index()

    def last_index(self) -> int:
        u = self.unstable
        if u.entries:
            return u.offset + len(u.entries) - 1
        if u.snapshot is not None:
            return u.snapshot.metadata.index
        return self.storage.last_index()

    def term(self, i: int) -> int:
        """Term of entry `i`; raises CompactedError / UnavailableError outside the log."""
        u = self.unstable
        k = i - u.offset
        if k >= 0:
            if k < len(u.entries):
                return u.entries[k].term  # in the unstable tail (a leader's newest entries)
        elif u.snapshot is None:
            # Below the unstable tail, which starts right after the storage's last entry:
            # the storage has it or raises CompactedError, as the checks below would.
            return self.storage.term(i)
        t = u.maybe_term(i)
        if t is not None:
            return t
        dummy = self.first_index() - 1
        if i < dummy:
            raise CompactedError(f"index {i} compacted")
        if i > self.last_index():
            raise UnavailableError(f"index {i} unavailable")
        return self.storage.term(i)

    def zero_term_on_range_err(self, i: int) -> int:
        try:
            return self.term(i)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, t: int) -> bool:
        return self.zero_term_on_range_err(i) == t if i >= 0 else False

    def is_up_to_date(self, lasti: int, term: int) -> bool:
        """§5.4.1 election restriction: is (term, lasti) at least as up to date as us?"""
        lt = self.last_term()
        return term > lt or (term == lt and lasti >= self.last_index())

    # --- appending ------------------------------------------------------------------------
    def find_conflict(self, ents: tuple[Entry, ...] | list[Entry]) -> int:
        """Index of the first entry whose term differs from ours (or new), else 0."""
        last = self.last_index()
        for e in ents:
            if e.index > last:
                # Beyond our log: its term reads as 0 (without raising and catching
                # UnavailableError for every new entry a follower receives).
                if e.term != 0:
                    return e.index
            elif not self.match_term(e.index, e.term):
                return e.index
        return 0

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: tuple[Entry, ...]
    ) -> int | None:
        """Follower side of AppendEntries. Returns the last new index, None on mismatch."""
        if not self.match_term(index, log_term):
            return None
        lastnewi = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise InvariantError(f"conflict at {ci} ≤ committed {self.committed}")
            self.append(ents[ci - (index + 1) :])
        self.commit_to(min(committed, lastnewi))
        return lastnewi

    def append(self, ents: tuple[Entry, ...] | list[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise InvariantError(f"append after {after} is below committed {self.committed}")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def force_append(self, ents: tuple[Entry, ...] | list[Entry]) -> None:
        """Append without the committed guard (only the test mutants use this)."""
        if ents:
            self.unstable.truncate_and_append(ents)
            self.committed = min(self.committed, self.last_index())

    # --- reading --------------------------------------------------------------------------
    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def slice(self, lo: int, hi: int, max_size: int = 0) -> list[Entry]:
        """Entries [lo, hi), limited to `max_size` bytes (at least one entry)."""
        if lo >= hi:
            return []
        fi = self.first_index()
        if lo < fi:
            raise CompactedError(f"index {lo} compacted (first {fi})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"slice [{lo}, {hi}) beyond last {self.last_index()}")
        ents: list[Entry] = []
        uo = self.unstable.offset
        if lo < uo:
            ents = self.storage.entries(lo, min(hi, uo), max_size)
            if len(ents) < min(hi, uo) - lo:
                return ents  # size-limited
        if hi > uo:
            start = max(lo, uo)
            u = self.unstable.entries[start - uo : hi - uo]
            ents = u if not ents else ents + u
        return limit_size(ents, max_size)

    def entries_from(self, i: int, max_size: int = 0) -> list[Entry]:
        last = self.last_index()
        if i > last:
            return []
        return self.slice(i, last + 1, max_size)

    def applying_limit(self) -> int:
        return self.last_index() if self.apply_uncommitted else self.committed

    def has_next_committed_ents(self) -> bool:
        return self.applying_limit() > self.applied

    def next_committed_ents(self) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        hi = self.applying_limit() + 1
        if lo >= hi:
            return []
        return self.slice(lo, hi, self.max_next_ents_size)

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    # --- moving the markers ---------------------------------------------------------------
    def commit_to(self, tocommit: int) -> None:
        # Never decrease commit.
        if self.committed < tocommit:
            if self.last_index() < tocommit:
                raise InvariantError(f"commit {tocommit} beyond last index {self.last_index()}")
            self.committed = tocommit

    def maybe_commit(self, max_index: int, term: int, any_term: bool = False) -> bool:
        """Commit up to `max_index` if it is from `term` (§5.4.2; `any_term` is a mutant)."""
        if max_index > self.committed and (
            any_term or self.zero_term_on_range_err(max_index) == term
        ):
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        if (self.committed < i and not self.apply_uncommitted) or i < self.applied:
            raise InvariantError(
                f"applied {i} out of range [applied {self.applied}, committed {self.committed}]"
            )
        self.applied = i

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.metadata.index
        self.unstable.restore(snap)
