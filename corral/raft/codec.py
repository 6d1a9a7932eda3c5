"""msgpack encoding of Raft messages, entries, snapshots, hard states and conf changes.

Every encoded value is a msgpack array whose first element is the format version; decoders
accept versions up to `FORMAT_VERSION` and raise `DecodeError` on anything else (a newer
peer must not be misread). Arrays rather than maps keep messages small: a heartbeat is
~15 bytes.
"""

from __future__ import annotations

from typing import Any

import msgpack

from corral.raft.errors import DecodeError
from corral.raft.types import (
    FORMAT_VERSION,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

__all__ = [
    "decode_conf_change",
    "decode_entry",
    "decode_hard_state",
    "decode_message",
    "decode_snapshot",
    "encode_conf_change",
    "encode_entry",
    "encode_hard_state",
    "encode_message",
    "encode_snapshot",
]


# One reusable packer for the per-write encoders (`msgpack.packb` builds a new one per call).
# Safe to share: packing plain ints, bytes and lists runs in C under the GIL without calling
# back into Python, and the packer resets itself after every call, also on error.
_pack = msgpack.Packer().pack


def _entry_from(v: Any) -> Entry:
    version, term, index, etype, data = v
    _check_version(version)
    return Entry(term, index, _ENTRY_TYPES[etype], bytes(data), version)


def _snapshot_tuple(s: Snapshot) -> list[Any]:
    m = s.metadata
    return [
        s.version,
        m.index,
        m.term,
        list(m.conf_state.voters),
        list(m.conf_state.learners),
        s.data,
    ]


def _snapshot_from(v: Any) -> Snapshot:
    version, index, term, voters, learners, data = v
    _check_version(version)
    cs = ConfState(tuple(int(x) for x in voters), tuple(int(x) for x in learners))
    return Snapshot(SnapshotMetadata(index, term, cs), bytes(data), version)


_MESSAGE_TYPES: dict[int, MessageType] = {int(t): t for t in MessageType}
_ENTRY_TYPES: dict[int, EntryType] = {int(t): t for t in EntryType}


def _check_version(version: Any) -> None:
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        raise DecodeError(f"unsupported format version {version!r} (max {FORMAT_VERSION})")


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, use_list=True, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(f"not msgpack: {exc}") from exc


def _guard(kind: str, data: bytes, fn: Any) -> Any:
    v = _unpack(data)
    try:
        return fn(v)
    except DecodeError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise DecodeError(f"malformed {kind}: {exc}") from exc


def encode_entry(e: Entry) -> bytes:
    # An entry is [version, term, index, type, data], alone or inside a message.
    result: bytes = _pack([e.version, e.term, e.index, int(e.type), e.data])
    return result


def decode_entry(data: bytes) -> Entry:
    result: Entry = _guard("entry", data, _entry_from)
    return result


def encode_snapshot(s: Snapshot) -> bytes:
    return msgpack.packb(_snapshot_tuple(s))


def decode_snapshot(data: bytes) -> Snapshot:
    result: Snapshot = _guard("snapshot", data, _snapshot_from)
    return result


def encode_hard_state(hs: HardState) -> bytes:
    result: bytes = _pack([FORMAT_VERSION, hs.term, hs.vote, hs.commit])
    return result


def decode_hard_state(data: bytes) -> HardState:
    def build(v: Any) -> HardState:
        version, term, vote, commit = v
        _check_version(version)
        return HardState(int(term), int(vote), int(commit))

    result: HardState = _guard("hard state", data, build)
    return result


def encode_conf_change(cc: ConfChange) -> bytes:
    return msgpack.packb([cc.version, int(cc.type), cc.node_id, cc.context])


def decode_conf_change(data: bytes) -> ConfChange:
    def build(v: Any) -> ConfChange:
        version, ctype, node_id, context = v
        _check_version(version)
        return ConfChange(ConfChangeType(ctype), int(node_id), bytes(context), version)

    result: ConfChange = _guard("conf change", data, build)
    return result


def encode_message(m: Message) -> bytes:
    ents = m.entries
    result: bytes = _pack(
        [
            m.version,
            int(m.type),
            m.to,
            m.from_,
            m.term,
            m.log_term,
            m.index,
            [[e.version, e.term, e.index, int(e.type), e.data] for e in ents] if ents else [],
            m.commit,
            None if m.snapshot is None else _snapshot_tuple(m.snapshot),
            m.reject,
            m.reject_hint,
            m.context,
        ]
    )
    return result


def _message_from(v: Any) -> Message:
    if not isinstance(v, list) or not v:
        raise DecodeError("a message is a non-empty msgpack array")
    (
        version,
        mtype,
        to,
        from_,
        term,
        log_term,
        index,
        entries,
        commit,
        snap,
        reject,
        reject_hint,
        context,
    ) = v
    _check_version(version)
    return Message(
        _MESSAGE_TYPES[mtype],
        int(to),
        int(from_),
        int(term),
        int(log_term),
        int(index),
        tuple([_entry_from(e) for e in entries]) if entries else (),
        int(commit),
        None if snap is None else _snapshot_from(snap),
        bool(reject),
        int(reject_hint),
        bytes(context),
        version,
    )


def decode_message(data: bytes) -> Message:
    # The hot path of every peer frame: `_guard` inlined, one module-level builder, no
    # per-call closure; a type lookup in a dict instead of the enum constructor (KeyError →
    # DecodeError).
    try:
        v = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(f"not msgpack: {exc}") from exc
    try:
        return _message_from(v)
    except DecodeError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise DecodeError(f"malformed message: {exc}") from exc
