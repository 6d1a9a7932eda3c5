"""Read-side storage seam of the core, and the in-memory implementation.

Raft never writes through `Storage`: the application persists what a `Ready` hands it and then
makes it visible here (etcd-io/raft `storage.go`). `MemoryStorage` is what a server keeps in
front of its WAL: on boot the snapshot and the WAL are replayed into it.

`MemoryStorage` keeps a dummy entry at position 0 holding the snapshot's index and term, so
`term(first_index() - 1)` is always answerable (the AppendEntries consistency check needs it).
"""

from __future__ import annotations

from typing import Protocol

from corral.raft.errors import (
    CompactedError,
    InvariantError,
    SnapshotOutOfDateError,
    UnavailableError,
)
from corral.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata

__all__ = ["MemoryStorage", "Storage", "limit_size"]


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_size: int) -> list[Entry]: ...

    def term(self, i: int) -> int: ...

    def last_index(self) -> int: ...

    def first_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...


def limit_size(ents: list[Entry], max_size: int) -> list[Entry]:
    """Keep a prefix of `ents` whose size is within `max_size` (always at least one entry)."""
    if not ents or max_size <= 0:
        return ents
    size = ents[0].size()
    n = 1
    for n in range(1, len(ents)):
        size += ents[n].size()
        if size > max_size:
            break
    else:
        return ents
    return ents[:n]


class MemoryStorage:
    """Storage backed by a Python list; `append` follows the WAL's overwrite rule."""

    def __init__(self, conf_state: ConfState | None = None) -> None:
        # A fresh member of a bootstrapped cluster starts from `conf_state` at index 0.
        self.hard_state = HardState()
        self._snapshot = Snapshot(SnapshotMetadata(0, 0, conf_state or ConfState()))
        self._ents: list[Entry] = [Entry(0, 0)]

    # --- the Storage interface ------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self._snapshot.metadata.conf_state

    def entries(self, lo: int, hi: int, max_size: int) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} compacted (first {offset + 1})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1}, last {self.last_index()}")
        return limit_size(self._ents[lo - offset : hi - offset], max_size)

    def term(self, i: int) -> int:
        offset = self._ents[0].index
        if i < offset:
            raise CompactedError(f"index {i} compacted")
        if i - offset >= len(self._ents):
            raise UnavailableError(f"index {i} unavailable")
        return self._ents[i - offset].term

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # --- writes by the application --------------------------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        if snap.metadata.index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(
                f"snapshot {snap.metadata.index} ≤ held {self._snapshot.metadata.index}"
            )
        self._snapshot = snap
        self._ents = [Entry(snap.metadata.term, snap.metadata.index)]

    def create_snapshot(self, i: int, cs: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine at applied index `i`."""
        if i <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(f"snapshot at {i} is not newer")
        if i > self.last_index():
            raise InvariantError(f"snapshot {i} beyond last index {self.last_index()}")
        offset = self._ents[0].index
        meta = SnapshotMetadata(i, self._ents[i - offset].term, cs)
        self._snapshot = Snapshot(meta, data)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """Drop entries before `compact_index` (it becomes the dummy entry)."""
        offset = self._ents[0].index
        if compact_index <= offset:
            raise CompactedError(f"already compacted to {offset}")
        if compact_index > self.last_index():
            raise InvariantError(f"compact {compact_index} beyond {self.last_index()}")
        i = compact_index - offset
        head = Entry(self._ents[i].term, self._ents[i].index)
        self._ents = [head, *self._ents[i + 1 :]]

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append, discarding any stored entries at or after `entries[0].index`."""
        if not entries:
            return
        first = self.first_index()
        last = entries[-1].index
        if last < first:
            return  # wholly compacted already
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise InvariantError(
                f"gap: appending {entries[0].index} after last {self.last_index()}"
            )
        del self._ents[offset:]
        self._ents.extend(entries)
