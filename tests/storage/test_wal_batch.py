"""One `save` is one write whose bytes equal the records written one by one."""

from __future__ import annotations

from pathlib import Path

from corral.raft import Entry, HardState, encode_entry, encode_hard_state
from corral.storage.wal import WAL, RecordType, encode_record


def test_a_save_is_one_write_of_the_same_records(tmp_path: Path) -> None:
    w = WAL.create(tmp_path, {"member": 1})
    assert w.file is not None
    writes: list[bytes] = []
    inner = w.file.write

    def counting(data: bytes) -> None:
        writes.append(data)
        inner(data)

    w.file.write = counting  # type: ignore[method-assign]
    crc, start = w.crc, w.file_size
    ents = [Entry(2, i, data=b"v%d" % i) for i in range(1, 4)]
    hs = HardState(term=2, vote=1, commit=2)
    w.save(hs, ents, sync=True)
    expected = []
    for e in ents:
        rec, crc = encode_record(RecordType.ENTRY, encode_entry(e), crc)
        expected.append(rec)
    rec, crc = encode_record(RecordType.HARD_STATE, encode_hard_state(hs), crc)
    expected.append(rec)
    assert writes == [b"".join(expected)]
    assert w.crc == crc and w.file_size == start + len(writes[0]) and w.last_index == 3
    w.save(hs, [], sync=True)  # nothing new: nothing written, nothing synced
    assert len(writes) == 1
    w.close()
    _, replay = WAL.open(tmp_path)
    assert replay.entries == ents and replay.hard_state == hs and not replay.repaired
