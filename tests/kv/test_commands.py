"""Command encoding: versioned msgpack, strict decoding."""

from __future__ import annotations

import msgpack
import pytest

from corral.kv.commands import (
    FORMAT_VERSION,
    CompareAndDelete,
    CompareAndSwap,
    Create,
    Delete,
    InternalWrite,
    Set,
    Sync,
    Update,
    decode,
    encode,
    expire_at_for,
)
from corral.kv.errors import FormatError

EXAMPLES = [
    Set("/a", "v", dir=False, expire_at=None, refresh=False, now=5),
    Set("/a", "", dir=True, expire_at=10**19, refresh=True, now=2**62),
    Create("/q", "é✓", expire_at=1, unique=True, now=3),
    Update("/u", "", expire_at=None, refresh=True, now=1),
    CompareAndSwap("/c", "n", prev_value="o", prev_index=9, expire_at=2, refresh=False, now=4),
    Delete("/d", dir=True, recursive=True, now=6),
    CompareAndDelete("/d", prev_value="", prev_index=3, now=7),
    Sync(123),
    InternalWrite("/0/members/1", "{}", 8),
]


@pytest.mark.parametrize("cmd", EXAMPLES, ids=lambda c: type(c).__name__)
def test_round_trip(cmd: object) -> None:
    data = encode(cmd)  # type: ignore[arg-type]
    assert msgpack.unpackb(data)[0] == FORMAT_VERSION
    assert decode(data) == cmd


def test_commands_are_frozen_values() -> None:
    cmd = Set("/a", "v")
    with pytest.raises(AttributeError):
        cmd.key = "/b"  # type: ignore[misc]
    assert cmd == Set("/a", "v") and hash(cmd) == hash(Set("/a", "v"))


def test_decode_rejects_unknown_version_with_a_clear_error() -> None:
    raw = msgpack.packb([FORMAT_VERSION + 1, 7, 123])
    with pytest.raises(FormatError, match=r"format version 2 is not supported"):
        decode(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",
        msgpack.packb({"a": 1}),
        msgpack.packb([1]),
        msgpack.packb([1, 99, 1]),
        msgpack.packb([1, 7]),
        msgpack.packb([1, 7, "x"]),
        msgpack.packb([1, 7, True]),
        msgpack.packb([1, 5, "/a", 1, True, 0]),
        msgpack.packb([1, "1", "/a"]),
    ],
)
def test_decode_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(FormatError):
        decode(raw)


def test_encode_rejects_non_commands() -> None:
    with pytest.raises(TypeError):
        encode("set /a")  # type: ignore[arg-type]


def test_expire_at_for() -> None:
    assert expire_at_for(5, None) is None
    assert expire_at_for(5, 0) == 5
    assert expire_at_for(5, 2) == 5 + 2_000_000_000
