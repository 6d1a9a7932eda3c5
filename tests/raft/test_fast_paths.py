"""The per-write shortcuts keep the plain code's meaning: constructors, log lookups, codec."""

from __future__ import annotations

import dataclasses
import inspect
import random

import msgpack
import pytest

from corral.raft import (
    DecodeError,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ReadState,
    Ready,
    SoftState,
    StateType,
    decode_entry,
    decode_message,
    encode_entry,
    encode_message,
)
from corral.raft.errors import CompactedError, UnavailableError
from corral.raft.log import RaftLog

FAST = [Entry, HardState, Message, ReadState, SoftState, Ready]


@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.__name__)
def test_fast_init_has_the_dataclass_signature(cls: type) -> None:
    params = list(inspect.signature(cls).parameters.values())
    fields = dataclasses.fields(cls)
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        expected = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert p.default == expected, f.name


def test_fast_init_values_stay_frozen_and_comparable() -> None:
    m = Message(MessageType.APP, to=2, from_=1, term=3, entries=(Entry(3, 4, data=b"x"),))
    assert (m.type, m.to, m.from_, m.term, m.index, m.context) == (MessageType.APP, 2, 1, 3, 0, b"")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.to = 5  # type: ignore[misc]
    same = Message(MessageType.APP, 2, 1, 3, 0, 0, (Entry(3, 4, EntryType.NORMAL, b"x"),))
    assert m == same and hash(m) == hash(same)
    assert dataclasses.replace(m, to=7).to == 7 and m.to == 2
    assert HardState().is_empty() and SoftState(1, StateType.LEADER).lead == 1
    with pytest.raises(TypeError):
        Entry(1)  # type: ignore[call-arg]


def _log(stable: int, unstable: int, compact: int = 0) -> RaftLog:
    s = MemoryStorage()
    s.append([Entry(1 + i // 3, i) for i in range(1, stable + 1)])
    if compact:
        s.compact(compact)
    log = RaftLog(s)
    log.append([Entry(9, i) for i in range(stable + 1, stable + unstable + 1)])
    return log


def _slow_term(log: RaftLog, i: int) -> int:
    """The lookup without the unstable-tail shortcut (the original order of checks)."""
    t = log.unstable.maybe_term(i)
    if t is not None:
        return t
    if i < log.first_index() - 1:
        raise CompactedError(str(i))
    if i > log.last_index():
        raise UnavailableError(str(i))
    return log.storage.term(i)


@pytest.mark.parametrize(
    ("stable", "unstable", "compact"), [(0, 0, 0), (5, 0, 0), (0, 4, 0), (6, 3, 2), (6, 0, 3)]
)
def test_term_matches_the_plain_lookup(stable: int, unstable: int, compact: int) -> None:
    log = _log(stable, unstable, compact)
    for i in range(-1, stable + unstable + 3):
        try:
            want: int | type[Exception] = _slow_term(log, i)
        except (CompactedError, UnavailableError) as exc:
            want = type(exc)
        if isinstance(want, int):
            assert log.term(i) == want, i
        else:
            with pytest.raises(want):
                log.term(i)


def test_find_conflict_matches_the_plain_rule() -> None:
    rng = random.Random(7)
    for _ in range(300):
        log = _log(rng.randrange(6), rng.randrange(4))
        start = rng.randrange(1, log.last_index() + 3)
        ents = [Entry(rng.choice([0, 1, 2, 9]), i) for i in range(start, start + rng.randrange(4))]
        plain = next((e.index for e in ents if not log.match_term(e.index, e.term)), 0)
        assert log.find_conflict(ents) == plain, (log, ents)


def test_codec_round_trip_and_bytes_are_unchanged() -> None:
    e = Entry(3, 9, EntryType.CONF_CHANGE, b"\x00cc")
    assert encode_entry(e) == msgpack.packb([1, 3, 9, 1, b"\x00cc"])
    assert decode_entry(encode_entry(e)) == e
    m = Message(MessageType.APP, 2, 1, 3, 2, 8, (e, Entry(3, 10)), 7, None, False, 0, b"ctx")
    wire = encode_message(m)
    assert wire == msgpack.packb(
        [
            1,
            3,
            2,
            1,
            3,
            2,
            8,
            [[1, 3, 9, 1, b"\x00cc"], [1, 3, 10, 0, b""]],
            7,
            None,
            False,
            0,
            b"ctx",
        ]
    )
    assert decode_message(wire) == m
    hb = Message(MessageType.HEARTBEAT, 2, 1, 3, commit=4)
    assert decode_message(encode_message(hb)) == hb


@pytest.mark.parametrize(
    "wire",
    [
        b"\xc1",  # never used in msgpack
        msgpack.packb({"a": 1}),
        msgpack.packb([]),
        msgpack.packb([2, 3, 2, 1, 3, 2, 8, [], 7, None, False, 0, b""]),  # newer version
        msgpack.packb([1, 99, 2, 1, 3, 2, 8, [], 7, None, False, 0, b""]),  # unknown type
        msgpack.packb([1, 3, 2, 1, 3, 2, 8, [[1, 3, 9, 7, b""]], 7, None, False, 0, b""]),
        msgpack.packb([1, 3, 2, 1]),
    ],
)
def test_decode_message_refuses_bad_frames(wire: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_message(wire)
