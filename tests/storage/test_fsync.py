"""Every fsync in the storage layer, proven necessary: each test runs a real process on the
disk that keeps unsynced writes and directory entries in memory (`VolatileDisk`), kills it
with SIGKILL (a power cut, as far as that disk is concerned), and checks what a restart
finds. Each test fails if the fsync it names is removed from the code.

| fsync                                            | test                                  |
|--------------------------------------------------|---------------------------------------|
| WAL record batch (`WAL.sync`)                    | test_wal.py::test_volatile_disk_…     |
| new segment's header records (`_start_segment`)  | new_wal…, cut_right_before_the_crash  |
| WAL directory after a segment's rename           | new_wal…, records_after_a_cut…        |
| old segment before a cut (`save`)                | old_segment_is_synced_before_a_cut    |
| snapshot file before its rename (`snap.save`)    | snapshot_survives…                    |
| snapshot directory after the rename              | snapshot_survives…                    |
| parent of each new directory (`make_dirs`)       | new_directories_survive…              |
| backup's WAL (`corral.kv.backup`)                | tests/cluster/test_backup_cli.py      |
| `--force-new-cluster`'s conf changes             | tests/cluster/test_backup.py          |
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from corral.raft import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from corral.storage.disk import VolatileDisk
from corral.storage.snap import Snapshotter
from corral.storage.wal import WAL, RecordType, decode_records

SEGMENT = 600  # bytes: a cut every few entries

PRELUDE = """
import os, signal, sys
from pathlib import Path
from corral.raft import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from corral.storage.disk import VolatileDisk, make_dirs
from corral.storage.snap import Snapshotter
from corral.storage.wal import WAL
d = Path(sys.argv[1])
def crash():
    os.kill(os.getpid(), signal.SIGKILL)
"""


def run_until_crash(directory: Path, body: str) -> None:
    """Run `body` in a fresh interpreter (`d` is `directory`); it must end in `crash()`."""
    script = PRELUDE + textwrap.dedent(body)
    p = subprocess.run(
        [sys.executable, "-c", script, str(directory)], capture_output=True, text=True, check=False
    )
    assert p.returncode == -9, p.stderr


def entry(i: int) -> Entry:
    return Entry(term=1, index=i, data=b"x" * 40)


def test_a_new_wal_survives_a_power_cut(tmp_path: Path) -> None:
    run_until_crash(
        tmp_path,
        """
        WAL.create(d, {"member_id": 7, "cluster_id": 9}, disk=VolatileDisk())
        crash()
        """,
    )
    _, replay = WAL.open(tmp_path)
    assert replay.metadata["member_id"] == 7 and replay.metadata["cluster_id"] == 9


def test_records_after_a_cut_survive_a_power_cut(tmp_path: Path) -> None:
    run_until_crash(
        tmp_path,
        f"""
        w = WAL.create(d, {{"member_id": 7}}, disk=VolatileDisk(), segment_size={SEGMENT})
        i = 0
        while w.seq < 2:
            i += 1
            w.save(HardState(term=1, commit=i), [Entry(term=1, index=i, data=b"x" * 40)])
        for _ in range(3):
            i += 1
            w.save(HardState(term=1, commit=i), [Entry(term=1, index=i, data=b"x" * 40)])
        (d / "last").write_text(str(i))
        crash()
        """,
    )
    last = int((tmp_path / "last").read_text())
    assert len(list(tmp_path.glob("*.wal"))) == 3
    _, replay = WAL.open(tmp_path)
    assert [e.index for e in replay.entries] == list(range(1, last + 1))
    assert replay.hard_state.commit == last


def test_a_cut_right_before_the_crash_leaves_a_self_describing_segment(tmp_path: Path) -> None:
    """The new segment's first records (crc seed, metadata, hard state) are durable before it
    is named, so once older segments are released the WAL still opens with its identity."""
    run_until_crash(
        tmp_path,
        f"""
        w = WAL.create(d, {{"member_id": 7}}, disk=VolatileDisk(), segment_size={SEGMENT})
        i = 0
        while w.seq < 1:
            i += 1
            w.save(HardState(term=1, commit=i), [Entry(term=1, index=i, data=b"x" * 40)])
        (d / "last").write_text(str(i))
        crash()
        """,
    )
    last = int((tmp_path / "last").read_text())
    for seg in sorted(tmp_path.glob("*.wal")):
        records = decode_records(seg.read_bytes(), None, seg.name, True)[0]
        assert [r for r, _ in records[:2]] == [RecordType.CRC, RecordType.METADATA], seg.name
    w, _ = WAL.open(tmp_path, segment_size=SEGMENT)
    w.save(HardState(term=1, commit=last + 1), [entry(last + 1)])
    assert w.release_to(last, max_wals=1)  # only the segment cut before the crash is left
    w.close()
    _, replay = WAL.open(tmp_path, from_index=last)
    assert replay.metadata["member_id"] == 7
    assert [e.index for e in replay.entries] == [last + 1]


def test_the_old_segment_is_synced_before_a_cut(tmp_path: Path) -> None:
    """Hard states that only move the commit index are written unsynced (Raft's MustSync is
    false); the cut syncs them, or the next segment's crc seed would not match what is left."""
    run_until_crash(
        tmp_path,
        f"""
        w = WAL.create(d, {{}}, disk=VolatileDisk(), segment_size={SEGMENT})
        w.save(HardState(term=1, commit=0), [Entry(term=1, index=i, data=b"x") for i in (1, 2)])
        commit = 0
        while w.seq < 1:
            commit += 1
            w.save(HardState(term=1, commit=commit), [], sync=False)
        (d / "last").write_text(str(commit))
        crash()
        """,
    )
    last = int((tmp_path / "last").read_text())
    _, replay = WAL.open(tmp_path)  # a broken crc chain would be refused as corruption
    assert replay.hard_state.commit == last
    assert [e.index for e in replay.entries] == [1, 2]


def test_a_snapshot_survives_a_power_cut(tmp_path: Path) -> None:
    run_until_crash(
        tmp_path,
        """
        s = Snapshotter(d, VolatileDisk())
        s.save(Snapshot(SnapshotMetadata(10, 2, ConfState(voters=(1,))), b"state@10"))
        crash()
        """,
    )
    got = Snapshotter(tmp_path).load_newest()
    assert got is not None, sorted(p.name for p in tmp_path.iterdir())
    assert got.metadata.index == 10 and got.data == b"state@10"


def test_unsynced_directory_operations_are_lost(tmp_path: Path) -> None:
    """The disk model itself: a rename or removal not followed by a directory fsync is gone
    after the crash; one that was is kept."""
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    (tmp_path / "c").write_text("c")
    run_until_crash(
        tmp_path,
        """
        disk = VolatileDisk()
        disk.rename(d / "a", d / "a2")
        disk.fsync_dir(d)
        disk.rename(d / "b", d / "b2")
        disk.remove(d / "c")
        crash()
        """,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a2", "b", "c"]


def test_snapshot_content_is_checked_not_trusted(tmp_path: Path) -> None:
    """A snapshot file whose content never reached the disk is set aside, not loaded."""
    s = Snapshotter(tmp_path)
    s.save(Snapshot(SnapshotMetadata(5, 1, ConfState(voters=(1,))), b"state@5"))
    (tmp_path / f"{1:016x}-{9:016x}.snap").write_bytes(b"")
    got = s.load_newest()
    assert got is not None and got.metadata.index == 5


def test_new_directories_survive_a_power_cut(tmp_path: Path) -> None:
    """A new member's data dir, `member/`, `wal/` and `snap/` are durable once created."""
    run_until_crash(
        tmp_path,
        """
        disk = VolatileDisk()
        Snapshotter(d / "m.etcd" / "member" / "snap", disk)
        w = WAL.create(d / "m.etcd" / "member" / "wal", {"member_id": 7}, disk=disk)
        w.save(HardState(term=1, commit=1), [Entry(term=1, index=1, data=b"x")])
        crash()
        """,
    )
    VolatileDisk().recover(tmp_path / "m.etcd")  # what the next boot finds
    assert (tmp_path / "m.etcd" / "member" / "snap").is_dir()
    _, replay = WAL.open(tmp_path / "m.etcd" / "member" / "wal")
    assert [e.index for e in replay.entries] == [1]


def test_a_directory_whose_parent_was_not_fsynced_is_lost(tmp_path: Path) -> None:
    """The disk model itself, for directory creation."""
    run_until_crash(
        tmp_path,
        """
        disk = VolatileDisk()
        make_dirs(disk, d / "kept")
        disk.mkdir(d / "kept" / "lost")
        (d / "kept" / "lost" / "f").write_text("x")
        crash()
        """,
    )
    VolatileDisk().recover(tmp_path / "kept")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    assert list((tmp_path / "kept").iterdir()) == []
