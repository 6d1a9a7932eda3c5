"""Wire formats (versioned msgpack) and the leader's flow-control bookkeeping."""

from __future__ import annotations

import msgpack
import pytest

from corral.raft import (
    FORMAT_VERSION,
    ConfChange,
    ConfChangeType,
    ConfState,
    DecodeError,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
    decode_conf_change,
    decode_entry,
    decode_hard_state,
    decode_message,
    decode_snapshot,
    encode_conf_change,
    encode_entry,
    encode_hard_state,
    encode_message,
    encode_snapshot,
)
from corral.raft.progress import Inflights, Progress, ProgressState


def test_message_round_trips_with_entries_and_snapshot() -> None:
    snap = Snapshot(SnapshotMetadata(7, 3, ConfState((1, 2), (3,))), b"img")
    m = Message(
        MessageType.APP,
        to=2,
        from_=1,
        term=3,
        log_term=2,
        index=5,
        entries=(Entry(3, 6, EntryType.NORMAL, b"a"), Entry(3, 7, EntryType.CONF_CHANGE, b"b")),
        commit=5,
        snapshot=snap,
        reject=True,
        reject_hint=4,
        context=b"ctx",
    )
    assert decode_message(encode_message(m)) == m


def test_other_values_round_trip() -> None:
    e = Entry(2, 9, EntryType.NORMAL, b"\x00\xff")
    assert decode_entry(encode_entry(e)) == e
    hs = HardState(4, 2, 9)
    assert decode_hard_state(encode_hard_state(hs)) == hs
    cc = ConfChange(ConfChangeType.REMOVE_NODE, 5, b"x")
    assert decode_conf_change(encode_conf_change(cc)) == cc
    s = Snapshot(SnapshotMetadata(1, 1, ConfState((1,))), b"d")
    assert decode_snapshot(encode_snapshot(s)) == s


def test_heartbeat_is_small() -> None:
    assert len(encode_message(Message(MessageType.HEARTBEAT, 2, 1, 7, commit=100))) < 24


@pytest.mark.parametrize(
    "blob",
    [
        b"\xc1",  # not msgpack
        msgpack.packb([FORMAT_VERSION + 1, 3, 2, 1, 1, 0, 0, [], 0, None, False, 0, b""]),
        msgpack.packb([1, 99, 2, 1, 1, 0, 0, [], 0, None, False, 0, b""]),  # bad type
        msgpack.packb([1, 3]),  # truncated
        msgpack.packb({"a": 1}),
    ],
)
def test_bad_bytes_give_a_decode_error(blob: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_message(blob)


def test_inflights_window_by_count_and_bytes() -> None:
    w = Inflights(3, max_bytes=100)
    w.add(1, 10)
    w.add(2, 10)
    assert not w.full()
    w.add(3, 10)
    assert w.full()
    w.free_le(2)
    assert w.count() == 1 and w.bytes == 10
    w.add(4, 95)
    assert w.full()  # by bytes
    with pytest.raises(OverflowError):
        w.add(5, 1)


def test_probe_sends_one_message_then_pauses() -> None:
    p = Progress(5, 8)
    assert not p.is_paused()
    p.sent_entries(2, 20)
    assert p.is_paused()
    assert p.maybe_update(6)
    p.become_replicate()
    assert p.state == ProgressState.REPLICATE and p.next == 7


def test_stale_rejections_are_ignored() -> None:
    p = Progress(10, 8)
    p.match = 5
    p.become_replicate()
    assert not p.maybe_decr_to(4, 3)  # rejects an index already matched: stale
    assert p.match == 5
    p.become_probe()
    assert not p.maybe_decr_to(3, 2)  # not the probe we sent (next - 1 = 5)
    assert p.maybe_decr_to(5, 5)
    assert p.next == 6  # never below match + 1


def test_snapshot_progress_is_paused() -> None:
    p = Progress(3, 8)
    p.become_snapshot(20)
    assert p.is_paused() and p.pending_snapshot == 20
    p.become_probe()
    assert p.next == 21
