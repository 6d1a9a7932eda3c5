"""Replay starts from the segment the snapshot needs (etcd's `searchIndex`), so a restart
costs one segment plus the entries after the snapshot, however long the member has run."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.raft import Entry, EntryType, HardState, encode_entry
from corral.storage.wal import WAL, WALCorruptError, _peek_index, first_needed_segment


def _fill(directory: Path, last: int) -> None:
    w = WAL.create(directory, {"member_id": 9}, segment_size=2048)
    for i in range(1, last + 1):
        w.save(HardState(term=1, commit=i), [Entry(term=1, index=i, data=b"x" * 40)])
    w.close()


def _damage_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_segments_before_the_snapshot_are_not_read(tmp_path: Path) -> None:
    _fill(tmp_path, 400)
    segs = sorted(tmp_path.glob("*.wal"))
    assert len(segs) > 5
    _damage_middle(segs[1])  # corruption in a segment only the snapshot's past needs
    with pytest.raises(WALCorruptError, match=segs[1].name):
        WAL.read(tmp_path, from_index=0)  # a replay from the start still reads and refuses it
    _, r = WAL.open(tmp_path, from_index=300)
    assert [e.index for e in r.entries] == list(range(301, 401))
    assert r.hard_state == HardState(term=1, commit=400)
    assert r.metadata["member_id"] == 9


def test_the_segment_holding_the_snapshot_index_is_read(tmp_path: Path) -> None:
    _fill(tmp_path, 400)
    starts = sorted(int(p.name.split("-")[1][:16], 16) for p in tmp_path.glob("*.wal"))
    boundary = starts[3]  # first index of the fourth segment
    for snap_index in (boundary - 2, boundary - 1, boundary, boundary + 1):
        r = WAL.read(tmp_path, from_index=snap_index)
        assert [e.index for e in r.entries] == list(range(snap_index + 1, 401)), snap_index


def test_first_needed_segment_rule() -> None:
    segs = [(0, 0, Path("a")), (1, 11, Path("b")), (2, 21, Path("c"))]
    assert [first_needed_segment(segs, i) for i in (0, 9, 10, 11, 19, 20, 21, 99)] == [
        0,
        0,
        1,
        1,
        1,
        2,
        2,
        2,
    ]


@pytest.mark.parametrize("term", [0, 1, 127, 128, 255, 256, 65_535, 65_536, 2**32, 2**63])
@pytest.mark.parametrize("index", [0, 1, 127, 128, 255, 256, 65_535, 65_536, 2**32, 2**63])
def test_peek_index_reads_what_encode_wrote(term: int, index: int) -> None:
    e = Entry(term=term, index=index, type=EntryType.NORMAL, data=b"payload")
    assert _peek_index(encode_entry(e)) == index


def test_peek_index_refuses_other_shapes() -> None:
    assert _peek_index(b"") == -1
    assert _peek_index(b"\x94\x01\x01\x01") == -1  # a 4-element array is not an entry
    assert _peek_index(b"\x95\x01\xcd\x01") == -1  # truncated term
