"""Snapshot files: atomic save, verified load, fallback past broken files, pruning."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.raft import ConfState, Snapshot, SnapshotMetadata
from corral.storage.snap import SnapshotError, Snapshotter


def snap(index: int, term: int = 1) -> Snapshot:
    return Snapshot(
        SnapshotMetadata(index, term, ConfState(voters=(1, 2, 3))), f"state@{index}".encode()
    )


def test_save_load_newest_and_prune(tmp_path: Path) -> None:
    s = Snapshotter(tmp_path)
    for i in (10, 20, 30):
        s.save(snap(i))
    got = s.load_newest()
    assert got is not None and got.metadata.index == 30 and got.data == b"state@30"
    assert len(s.prune(2)) == 1
    assert len(list(tmp_path.glob("*.snap"))) == 2


def test_broken_newest_falls_back_and_is_set_aside(tmp_path: Path) -> None:
    s = Snapshotter(tmp_path)
    s.save(snap(10))
    p = s.save(snap(20))
    data = bytearray(p.read_bytes())
    data[-1] ^= 1
    p.write_bytes(bytes(data))
    got = s.load_newest()
    assert got is not None and got.metadata.index == 10
    assert list(tmp_path.glob("*.broken"))


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    (tmp_path / "0000000000000001-0000000000000005.snap.tmp").write_bytes(b"partial")
    Snapshotter(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))


def test_newer_format_refused(tmp_path: Path) -> None:
    s = Snapshotter(tmp_path)
    p = s.save(snap(10))
    data = bytearray(p.read_bytes())
    data[4] = 9  # version field
    p.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="newer format"):
        s.load_newest()
