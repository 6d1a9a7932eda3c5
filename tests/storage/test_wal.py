"""The WAL: replay rules, segments, torn tails, corruption, and fsync discipline."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import msgpack
import pytest

from corral.raft import Entry, HardState
from corral.storage.disk import VolatileDisk
from corral.storage.wal import WAL, RecordType, WALCorruptError, WALError, encode_record


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=i, data=f"v{i}@{term}".encode()) for i in range(lo, hi + 1)]


def test_round_trip(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, {"member": 1, "cluster": 7})
    w.save(HardState(term=1, vote=1, commit=2), ents(1, 3))
    w.close()
    _, r = WAL.open(tmp_path)
    assert [e.index for e in r.entries] == [1, 2, 3]
    assert r.hard_state == HardState(term=1, vote=1, commit=2)
    assert r.metadata["member"] == 1 and r.metadata["version"] == 1
    assert not r.repaired


def test_later_entry_discards_the_conflicting_suffix(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, {})
    w.save(HardState(term=1), ents(1, 5))
    w.save(HardState(term=2), ents(3, 4, term=2))
    w.close()
    _, r = WAL.open(tmp_path)
    assert [(e.index, e.term) for e in r.entries] == [(1, 1), (2, 1), (3, 2), (4, 2)]


def test_segments_cut_and_released(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, {}, segment_size=1024)
    for i in range(1, 201):
        w.save(HardState(term=1, commit=i), ents(i, i))
    segs = sorted(tmp_path.glob("*.wal"))
    assert len(segs) > 3
    w.save_snapshot(150, 1)
    removed = w.release_to(150, max_wals=2)
    assert removed and len(list(tmp_path.glob("*.wal"))) >= 2
    w.close()
    _, r = WAL.open(tmp_path, from_index=150)
    assert [e.index for e in r.entries] == list(range(151, 201))
    assert r.hard_state.commit == 200
    assert (150, 1) in r.snapshots


def test_one_fsync_per_batch(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, {})
    before = w.fsyncs
    w.save(HardState(term=1, commit=10), ents(1, 10))
    assert w.fsyncs == before + 1
    w.save(HardState(term=1, commit=10), [], sync=True)  # nothing new: nothing to sync
    assert w.fsyncs == before + 1


def test_torn_tail_is_repaired(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, {})
    w.save(HardState(term=1, commit=3), ents(1, 3))
    w.close()
    seg = sorted(tmp_path.glob("*.wal"))[-1]
    data = seg.read_bytes().rstrip(b"\0")
    rec, _ = encode_record(RecordType.ENTRY, b"x" * 100, 0)
    seg.write_bytes(data + rec[:40])  # a record cut off mid-write
    _, r = WAL.open(tmp_path)
    assert r.repaired
    assert [e.index for e in r.entries] == [1, 2, 3]
    # The repaired WAL appends cleanly after the cut.
    w2, _ = WAL.open(tmp_path)
    w2.save(HardState(term=1, commit=4), ents(4, 4))
    w2.close()
    _, r2 = WAL.open(tmp_path)
    assert [e.index for e in r2.entries] == [1, 2, 3, 4] and not r2.repaired


def test_corruption_before_the_tail_is_refused(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, {})
    w.save(HardState(term=1, commit=5), ents(1, 5))
    w.close()
    seg = sorted(tmp_path.glob("*.wal"))[-1]
    data = bytearray(seg.read_bytes())
    idx = data.find(b"v2@1")
    data[idx] ^= 0xFF  # flip a byte inside entry 2; entries 3..5 follow
    seg.write_bytes(bytes(data))
    with pytest.raises(WALCorruptError, match=r"corrupt at offset \d+"):
        WAL.open(tmp_path)


def test_newer_format_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, {})
    w.close()
    seg = sorted(tmp_path.glob("*.wal"))[-1]
    crc_rec, crc = encode_record(RecordType.CRC, b"\0\0\0\0", 0)
    meta, _ = encode_record(RecordType.METADATA, msgpack.packb({"version": 99}), crc)
    seg.write_bytes(crc_rec + meta)
    with pytest.raises(WALError, match="newer format"):
        WAL.open(tmp_path)


def test_volatile_disk_loses_exactly_the_unsynced_writes_on_kill(tmp_path: Path) -> None:
    # A real process: synced entries 1..3, unsynced 4..6, then kill -9 itself.
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from corral.raft import Entry, HardState
        from corral.storage.disk import VolatileDisk
        from corral.storage.wal import WAL
        w = WAL.create(Path({str(tmp_path)!r}), {{}}, disk=VolatileDisk())
        w.save(HardState(term=1, commit=3), [Entry(1, i, data=b"x") for i in (1, 2, 3)])
        w.save(HardState(term=1, commit=6), [Entry(1, i, data=b"y") for i in (4, 5, 6)], sync=False)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    p = subprocess.run([sys.executable, "-c", script], check=False)
    assert p.returncode == -9
    _, r = WAL.open(tmp_path)
    assert [e.index for e in r.entries] == [1, 2, 3]
    assert r.hard_state.commit == 3


def test_volatile_disk_keeps_synced_writes(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, {}, disk=VolatileDisk())
    w.save(HardState(term=1, commit=2), ents(1, 2))
    # Simulate the process vanishing: no close, no further fsync.
    os.close(w.file.inner.fd)  # type: ignore[union-attr]
    _, r = WAL.open(tmp_path)
    assert [e.index for e in r.entries] == [1, 2]
