"""The simulator's replicated state machine: a per-key register store.

Commands are msgpack arrays `[version, op_id, kind, key, value, expected]`. Each op id is
applied at most once (a duplicated forwarded proposal must not apply twice), so the
state machine keeps the set of applied op ids; it travels in snapshots.
"""

from __future__ import annotations

from typing import Any

import msgpack

from corral.testing.linearizability import KVInput

__all__ = ["KVStateMachine", "decode_command", "encode_command"]

_VERSION = 1


def encode_command(op_id: int, inp: KVInput) -> bytes:
    return msgpack.packb([_VERSION, op_id, inp.kind, inp.key, inp.value, inp.expected])


def decode_command(data: bytes) -> tuple[int, KVInput]:
    version, op_id, kind, key, value, expected = msgpack.unpackb(data)
    if version != _VERSION:
        raise ValueError(f"unsupported command version {version}")
    return op_id, KVInput(kind, key, value, expected)


class KVStateMachine:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.seen: set[int] = set()

    def apply(self, data: bytes) -> tuple[int, Any] | None:
        """Apply one command; returns (op_id, result), or None for a duplicate."""
        op_id, inp = decode_command(data)
        if op_id in self.seen:
            return None
        self.seen.add(op_id)
        cur = self.data.get(inp.key)
        result: Any
        if inp.kind == "set":
            assert inp.value is not None
            self.data[inp.key] = inp.value
            result = True
        elif inp.kind in ("cas", "cad"):
            result = cur is not None and cur == inp.expected
            if result:
                if inp.kind == "cas":
                    assert inp.value is not None
                    self.data[inp.key] = inp.value
                else:
                    del self.data[inp.key]
        elif inp.kind == "delete":
            result = self.data.pop(inp.key, None) is not None
        else:
            raise ValueError(f"not a write: {inp.kind}")
        return op_id, result

    def read(self, key: str) -> str | None:
        return self.data.get(key)

    def encode(self) -> bytes:
        return msgpack.packb([_VERSION, self.data, sorted(self.seen)])

    @classmethod
    def decode(cls, blob: bytes) -> KVStateMachine:
        sm = cls()
        version, data, seen = msgpack.unpackb(blob)
        if version != _VERSION:
            raise ValueError(f"unsupported snapshot version {version}")
        sm.data = dict(data)
        sm.seen = set(seen)
        return sm
