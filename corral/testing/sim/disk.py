"""A simulated disk for one node: writes land in a volatile cache; `sync` makes them durable;
`crash` throws away everything not synced (what a power cut does to an un-fsynced WAL).
"""

from __future__ import annotations

from corral.raft import ConfState, Entry, HardState, MemoryStorage, Snapshot

__all__ = ["SimDisk"]


class _State:
    __slots__ = ("entries", "hard_state", "snapshot")

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot = Snapshot()
        self.entries: list[Entry] = []  # entries after the snapshot index, contiguous

    def copy(self) -> _State:
        s = _State()
        s.hard_state = self.hard_state
        s.snapshot = self.snapshot
        s.entries = list(self.entries)
        return s


class SimDisk:
    def __init__(self) -> None:
        self._cur = _State()
        self._durable = _State()
        self.dirty = False

    def save(
        self,
        snapshot: Snapshot | None,
        entries: tuple[Entry, ...],
        hard_state: HardState | None,
        sync: bool,
    ) -> None:
        cur = self._cur
        if snapshot is not None:
            cur.snapshot = snapshot
            cur.entries = []
        if entries:
            base = cur.snapshot.metadata.index + 1
            pos = entries[0].index - base
            if pos < 0:
                entries = entries[-pos:]
                pos = 0
            del cur.entries[pos:]
            cur.entries.extend(entries)
        if hard_state is not None:
            cur.hard_state = hard_state
        self.dirty = self.dirty or snapshot is not None or bool(entries) or hard_state is not None
        if sync:
            self.sync()

    def save_snapshot(self, snap: Snapshot) -> None:
        """Record a locally taken snapshot and drop the entries it covers (synced)."""
        cur = self._cur
        drop = snap.metadata.index - cur.snapshot.metadata.index
        cur.snapshot = snap
        del cur.entries[: max(drop, 0)]
        self.sync()

    def sync(self) -> None:
        if self.dirty:
            self._durable = self._cur.copy()
            self.dirty = False

    def crash(self) -> bool:
        """Lose unsynced writes; returns whether anything was lost."""
        lost = self.dirty
        self._cur = self._durable.copy()
        self.dirty = False
        return lost

    def load(self) -> tuple[MemoryStorage, Snapshot]:
        """Rebuild a MemoryStorage from what is on disk (after a restart)."""
        st = MemoryStorage(ConfState())
        cur = self._cur
        if not cur.snapshot.is_empty():
            st.apply_snapshot(cur.snapshot)
        st.append(cur.entries)
        st.set_hard_state(cur.hard_state)
        return st, cur.snapshot
