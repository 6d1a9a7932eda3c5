"""A segmented write-ahead log of Raft records (modelled on etcd's `wal` package).

Record framing (format version 1; all integers little-endian)::

    u32 length of payload | u32 crc | u8 type | payload

`crc` chains: crc32(type ‖ payload) seeded with the previous record's crc, so a record cannot
be moved, dropped or replayed without detection. Types: CRC (a segment's first record, carrying
the chain's seed), METADATA (msgpack: format version, member id, cluster id), ENTRY (a Raft entry,
`corral.raft` codec), HARD_STATE, SNAPSHOT (index and term of a snapshot taken).

Segments are named `SEQ-FIRSTINDEX.wal` (16 hex digits each) and preallocated; zeros after the
last record mean "nothing more". Recovery rules (etcd's): entries replay in order and an entry
at index i discards every entry ≥ i read before it; on open, a bad record at the end of the last
segment followed only by zeros or the end of the file is a torn write from a crash and is cut
off (`repaired`); a bad record anywhere else is corruption and the WAL refuses to open, naming
the file and offset. Exactly one fsync per `save(..., sync=True)`.
"""

from __future__ import annotations

import itertools
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import msgpack

from corral.raft import (
    Entry,
    HardState,
    decode_entry,
    decode_hard_state,
    encode_entry,
    encode_hard_state,
)
from corral.storage.disk import Disk, DiskFile, OsDisk, make_dirs
from corral.testing.failpoints import failpoint

__all__ = ["WAL", "WAL_VERSION", "WALCorruptError", "WALError", "WALReplay"]

WAL_VERSION = 1
_HEADER = struct.Struct("<IIB")
_SEGMENT_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")
# etcd cuts at 64 MB; replaying one in Python takes seconds, and a restart replays the segment
# holding the snapshot, so corral cuts smaller to keep a member's restart short.
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
MAX_RECORD = 256 * 1024 * 1024


class RecordType(IntEnum):
    CRC = 1
    METADATA = 2
    ENTRY = 3
    HARD_STATE = 4
    SNAPSHOT = 5


_CRC = int(RecordType.CRC)
_TYPE_BYTES = {int(t): bytes((t,)) for t in RecordType}


class WALError(Exception):
    pass


class WALCorruptError(WALError):
    pass


@dataclass
class WALReplay:
    """What a WAL held: metadata, the last hard state, entries after the snapshot."""

    metadata: dict[str, Any]
    hard_state: HardState
    entries: list[Entry]
    snapshots: list[tuple[int, int]] = field(default_factory=list)  # (index, term) markers
    repaired: bool = False


def segment_name(seq: int, index: int) -> str:
    return f"{seq:016x}-{index:016x}.wal"


def _segments(directory: Path) -> list[tuple[int, int, Path]]:
    found = []
    for p in directory.iterdir() if directory.exists() else []:
        m = _SEGMENT_RE.match(p.name)
        if m:
            found.append((int(m.group(1), 16), int(m.group(2), 16), p))
    return sorted(found)


_TYPE_BYTE = {t: bytes((t,)) for t in RecordType}
_ENTRY = int(RecordType.ENTRY)
_ENTRY_BYTE = _TYPE_BYTE[RecordType.ENTRY]
_crc32 = zlib.crc32
_pack_header = _HEADER.pack


def encode_record(rtype: RecordType, payload: bytes, prev_crc: int) -> tuple[bytes, int]:
    crc = zlib.crc32(payload, zlib.crc32(_TYPE_BYTE[rtype], prev_crc)) & 0xFFFFFFFF
    return _HEADER.pack(len(payload), crc, rtype) + payload, crc


def decode_records(
    data: bytes, prev_crc: int | None, name: str, last_segment: bool
) -> tuple[list[tuple[int, bytes]], int, int, bool]:
    """Parse one segment: (records as (type, payload), end offset of valid data, last crc,
    torn tail found)."""
    out: list[tuple[int, bytes]] = []
    off = 0
    crc = prev_crc or 0
    n = len(data)
    unpack, hsize, crc32, known = _HEADER.unpack_from, _HEADER.size, zlib.crc32, _TYPE_BYTES
    while off + hsize <= n:
        length, rcrc, rtype = unpack(data, off)
        if length == 0 and rcrc == 0 and rtype == 0:
            break  # preallocated zeros: the end
        end = off + hsize + length
        payload = data[off + hsize : end]
        tbyte = known.get(rtype)
        ok = tbyte is not None and end <= n and length <= MAX_RECORD
        if ok and tbyte is not None:
            if rtype == _CRC and not out:
                seed = struct.unpack("<I", payload)[0] if len(payload) == 4 else -1
                ok = prev_crc is None or seed == prev_crc
                crc = seed if seed >= 0 else crc
            ok = ok and (crc32(payload, crc32(tbyte, crc)) & 0xFFFFFFFF) == rcrc
        if not ok:
            tail_clean = end >= n or not any(data[max(end, off + hsize) :])
            if last_segment and tail_clean:
                return out, off, crc, True
            raise WALCorruptError(
                f"WAL segment {name} is corrupt at offset {off} (bad record; not a torn tail): "
                "refusing to start; restore the member from a backup or remove and re-add it"
            )
        out.append((rtype, payload))
        crc = rcrc
        off = end
    if off < n and n - off < hsize and any(data[off:]):
        if last_segment:
            return out, off, crc, True
        raise WALCorruptError(f"WAL segment {name} ends with a partial header at offset {off}")
    return out, off, crc, False


_UINT_WIDTH = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}


def _peek_index(payload: bytes) -> int:
    """An entry's index read from its msgpack head `[version, term, index, …]` without
    decoding the rest; -1 when the head is not that shape (the full decode then decides)."""
    if len(payload) < 3 or payload[0] != 0x95 or payload[1] >= 0x80:
        return -1
    off = 2
    value = 0
    for _ in range(2):  # term, then index
        b = payload[off]
        if b < 0x80:
            value, off = b, off + 1
            continue
        width = _UINT_WIDTH.get(b)
        if width is None or off + 1 + width > len(payload):
            return -1
        value = int.from_bytes(payload[off + 1 : off + 1 + width], "big")
        off += 1 + width
    return value


def first_needed_segment(segs: list[tuple[int, int, Path]], from_index: int) -> int:
    """Position in `segs` of the segment replay starts from: the last one whose first index
    is ≤ from_index + 1 (etcd's `searchIndex`). Every entry written before it has an index ≤
    from_index, which the snapshot holds; each segment restates the metadata and hard state
    at its head, so nothing else is needed from the earlier ones."""
    start = 0
    for i, (_seq, first, _path) in enumerate(segs):
        if first <= from_index + 1:
            start = i
    return start


def _replay(directory: Path, from_index: int) -> tuple[WALReplay, int, int | None]:
    """Read the segments from the one `from_index` needs: (what they hold, end of the valid
    data in the last one, last crc)."""
    segs = _segments(directory)
    if not segs:
        raise WALError(f"{directory}: no WAL segments")
    metadata: dict[str, Any] = {}
    hard_state = HardState()
    entries: list[Entry] = []
    snaps: list[tuple[int, int]] = []
    prev_crc: int | None = None
    repaired = False
    end_off = 0
    hs_payload: bytes | None = None
    first = first_needed_segment(segs, from_index)
    for i, (_seq, _start, path) in enumerate(segs[first:], first):
        data = path.read_bytes()
        last = i == len(segs) - 1
        records, end_off, prev_crc, torn = decode_records(data, prev_crc, path.name, last)
        repaired = repaired or torn
        for rtype, payload in records:
            if rtype == RecordType.ENTRY:
                if _peek_index(payload) <= from_index:
                    continue  # covered by the snapshot: not decoded at all
                e = decode_entry(payload)
                if e.index <= from_index:
                    continue
                first = entries[0].index if entries else e.index
                if entries and e.index <= entries[-1].index:
                    del entries[max(0, e.index - first) :]
                if entries and e.index != entries[-1].index + 1:
                    raise WALCorruptError(
                        f"WAL segment {path.name}: entry {e.index} does not follow {entries[-1].index}"
                    )
                entries.append(e)
            elif rtype == RecordType.HARD_STATE:
                hs_payload = payload  # only the last one counts: decoded once, below
            elif rtype == RecordType.METADATA:
                meta = msgpack.unpackb(payload)
                if not isinstance(meta, dict) or meta.get("version", 0) > WAL_VERSION:
                    raise WALError(
                        f"WAL segment {path.name} was written by a newer format "
                        f"(version {meta.get('version') if isinstance(meta, dict) else '?'}); "
                        f"this release reads up to version {WAL_VERSION}"
                    )
                metadata = meta
            elif rtype == RecordType.SNAPSHOT:
                idx, term = msgpack.unpackb(payload)
                snaps.append((idx, term))
    if hs_payload is not None:
        hard_state = decode_hard_state(hs_payload)
    replay = WALReplay(metadata, hard_state, entries, snaps, repaired)
    return replay, end_off, prev_crc


class WAL:
    """An open WAL, positioned to append. Not thread-safe: one writer (the member's loop)."""

    def __init__(
        self, directory: Path, disk: Disk, segment_size: int, metadata: dict[str, Any]
    ) -> None:
        self.dir = directory
        self.disk = disk
        self.segment_size = segment_size
        self.metadata = metadata
        self.crc = 0
        self.seq = -1
        self.file: DiskFile | None = None
        self.file_size = 0
        self.last_index = 0
        self.hard_state = HardState()
        self.fsyncs = 0  # counted, so tests can prove one fsync per batch

    # -- creation and recovery -------------------------------------------------------------
    @classmethod
    def exists(cls, directory: Path) -> bool:
        return bool(_segments(directory))

    @classmethod
    def create(
        cls,
        directory: Path,
        metadata: dict[str, Any],
        disk: Disk | None = None,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ) -> WAL:
        disk = disk or OsDisk()
        make_dirs(disk, directory)
        if _segments(directory):
            raise WALError(f"{directory} already holds a WAL")
        wal = cls(directory, disk, segment_size, {**metadata, "version": WAL_VERSION})
        wal._start_segment(0, 0)
        return wal

    @classmethod
    def read(cls, directory: Path, from_index: int = 0) -> WALReplay:
        """What the WAL holds, read-only: nothing is repaired or written (a torn tail at the
        end is left out of the answer, `repaired` says so). For backups of a stopped member."""
        return _replay(directory, from_index)[0]

    @classmethod
    def open(
        cls,
        directory: Path,
        disk: Disk | None = None,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        from_index: int = 0,
    ) -> tuple[WAL, WALReplay]:
        replay, end_off, prev_crc = _replay(directory, from_index)
        segs = _segments(directory)
        metadata, hard_state, entries = replay.metadata, replay.hard_state, replay.entries
        for stale in directory.glob("*.wal.tmp"):
            stale.unlink()  # a crash while a segment was being cut: its name never became durable
        disk = disk or OsDisk()
        wal = cls(directory, disk, segment_size, metadata)
        wal.crc = prev_crc or 0
        wal.seq, _start, last_path = segs[-1]
        wal.file = disk.open_append(last_path)
        # Appends continue right after the last good record: a torn tail (or the preallocated
        # zeros) is cut off first so it can never be read back behind new records. No fsync
        # here: the next `sync` makes the cut durable with the records written after it, and a
        # crash before that only finds the same torn tail to repair again.
        wal.file.truncate(end_off)
        wal.file_size = end_off
        wal.last_index = entries[-1].index if entries else max(from_index, hard_state.commit)
        wal.hard_state = hard_state
        return wal, replay

    # -- appending -------------------------------------------------------------------------
    def _append(self, rtype: RecordType, payload: bytes) -> None:
        assert self.file is not None
        rec, self.crc = encode_record(rtype, payload, self.crc)
        self.file.write(rec)
        self.file_size += len(rec)

    def _start_segment(self, seq: int, first_index: int) -> None:
        path = self.dir / segment_name(seq, first_index)
        tmp = path.with_suffix(".wal.tmp")
        f = self.disk.open_append(tmp, preallocate=self.segment_size)
        prev = self.file
        self.file, self.file_size, self.seq = f, 0, seq
        self._append(RecordType.CRC, struct.pack("<I", self.crc))
        self._append(RecordType.METADATA, msgpack.packb(self.metadata))
        if not self.hard_state.is_empty():
            self._append(RecordType.HARD_STATE, encode_hard_state(self.hard_state))
        f.fsync()
        self.fsyncs += 1
        self.disk.rename(tmp, path)
        self.disk.fsync_dir(self.dir)
        if prev is not None:
            prev.close()

    def save(
        self, hard_state: HardState | None, entries: Iterable[Entry], sync: bool = True
    ) -> None:
        """Append entries then the hard state; one fsync if `sync` (Raft's must_sync)."""
        failpoint("raft_before_save")
        # All records of one save go to the file in one write (the same bytes as one write
        # per record); the crc chain runs through them in order.
        parts: list[bytes] = []
        crc = self.crc
        for e in entries:
            payload = encode_entry(e)
            crc = _crc32(payload, _crc32(_ENTRY_BYTE, crc)) & 0xFFFFFFFF
            parts.append(_pack_header(len(payload), crc, _ENTRY))
            parts.append(payload)
            self.last_index = e.index
        if hard_state is not None and not hard_state.is_empty() and hard_state != self.hard_state:
            rec, crc = encode_record(RecordType.HARD_STATE, encode_hard_state(hard_state), crc)
            parts.append(rec)
            self.hard_state = hard_state
        if parts:
            assert self.file is not None
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            self.file.write(data)
            self.file_size += len(data)
            self.crc = crc
            if sync:
                self.sync()
        if self.file_size >= self.segment_size:
            self.sync()
            self._start_segment(self.seq + 1, self.last_index + 1)

    def sync(self) -> None:
        assert self.file is not None
        failpoint("wal_before_fsync")
        self.file.fsync()
        self.fsyncs += 1
        failpoint("wal_after_fsync")

    def save_snapshot(self, index: int, term: int) -> None:
        """Record that a snapshot at (index, term) is durable (written after the snap file).

        Not fsynced on its own: the snapshot file already is, loading does not depend on the
        marker, and the next `save` syncs it with its batch."""
        self._append(RecordType.SNAPSHOT, msgpack.packb([index, term]))

    def release_to(self, index: int, max_wals: int = 5) -> list[Path]:
        """Remove the oldest segments holding only entries ≤ `index`, keeping `max_wals` files
        (0 keeps all). Only call once a snapshot at `index` is durable."""
        segs = _segments(self.dir)
        removable = [p for (a, b) in itertools.pairwise(segs) if b[1] <= index + 1 for p in [a[2]]]
        removed: list[Path] = []
        if max_wals <= 0:
            return removed
        excess = len(segs) - max_wals
        for p in removable[: max(0, excess)]:
            self.disk.remove(p)
            removed.append(p)
        # No directory fsync: a removal lost in a crash only brings back a segment of entries
        # the snapshot already covers, which replay skips.
        return removed

    def close(self) -> None:
        # No fsync: all Raft needs durable was synced by `save`; what was written unsynced
        # (a hard state whose commit index moved) is re-learned after a crash.
        if self.file is not None:
            self.file.close()
            self.file = None
