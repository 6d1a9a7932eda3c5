"""A linearizability checker in the style of porcupine (Wing–Gong search with Lowe's
just-in-time linearization, memoized on (set of linearized operations, model state)).

Theory of operation: a history is a set of operations, each with a call time, a return time
and an output. Calls and returns are laid out in one time-ordered doubly linked list (calls
sort before returns at equal times, so touching operations count as concurrent). The search
walks the list; at a call it tries to linearize that operation now (the model accepts its
input/output from the current state), removing its call and return from the list; reaching a
return whose call is still in the list means the current prefix cannot be extended, so it
backtracks. A cache of (bitset of linearized ops, state) already explored prunes repeats.

Operations with an **unknown outcome** (a timed-out write) return at +∞ with output
`UNKNOWN`: the model accepts any output for them, so they may take effect anywhere after
their call — or, sorting after everything else, effectively never.

P-compositionality (Horn & Kroening): a KV history is linearizable iff each key's
sub-history is, so `KVModel.partition` checks keys independently.

The verdict is OK, ILLEGAL, or UNKNOWN when the step budget ran out; callers must treat
UNKNOWN as a failure (a checker that gave up has not shown anything).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "UNKNOWN",
    "CheckResult",
    "KVInput",
    "KVModel",
    "Model",
    "Operation",
    "Verdict",
    "brute_force_check",
    "check_operations",
]

S = TypeVar("S", bound=Hashable)


class _Unknown:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN"


#: Output of an operation whose outcome was never learned (it may or may not have happened).
UNKNOWN: Any = _Unknown()


class Verdict(Enum):
    OK = "ok"
    ILLEGAL = "illegal"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Operation:
    client: int
    input: Any
    call: float
    output: Any
    ret: float = math.inf


class Model(Protocol, Generic[S]):
    def init(self) -> S: ...

    def step(self, state: S, inp: Any, out: Any) -> tuple[bool, S]: ...

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]: ...


@dataclass(frozen=True, slots=True)
class KVInput:
    """`kind` ∈ set, cas, cad, delete, read. `value` is the new value, `expected` the guard."""

    kind: str
    key: str
    value: str | None = None
    expected: str | None = None


class KVModel:
    """Per-key register with set / compare-and-swap / compare-and-delete / delete / read.

    Outputs: set → True; cas, cad → whether the guard held; delete → whether the key
    existed; read → the value or None.
    """

    def init(self) -> str | None:
        return None

    def step(self, state: str | None, inp: KVInput, out: Any) -> tuple[bool, str | None]:
        k = inp.kind
        if k == "read":
            return (out is UNKNOWN or out == state), state
        if k == "set":
            return (out is UNKNOWN or out is True), inp.value
        if k == "cas":
            ok = state is not None and state == inp.expected
            return (out is UNKNOWN or out == ok), (inp.value if ok else state)
        if k == "cad":
            ok = state is not None and state == inp.expected
            return (out is UNKNOWN or out == ok), (None if ok else state)
        if k == "delete":
            existed = state is not None
            return (out is UNKNOWN or out == existed), None
        raise ValueError(f"unknown operation kind {k!r}")

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        by_key: dict[str, list[Operation]] = {}
        for op in ops:
            by_key.setdefault(op.input.key, []).append(op)
        return [by_key[k] for k in sorted(by_key)]


@dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Verdict
    partitions: int
    operations: int
    steps: int
    #: For ILLEGAL: the operations of the first partition that failed.
    failed_partition: tuple[Operation, ...] = ()


class _Node:
    __slots__ = ("call", "id", "match", "next", "op", "prev")

    def __init__(self, op: Operation | None, op_id: int, call: bool) -> None:
        self.op = op
        self.id = op_id
        self.call = call
        self.match: _Node | None = None
        self.prev: _Node | None = None
        self.next: _Node | None = None


def _check_single(
    model: Model[Any], ops: Sequence[Operation], budget: int
) -> tuple[bool | None, int]:
    """Returns (True | False | None for out-of-budget, steps used)."""
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        if op.ret < op.call:
            raise ValueError(f"operation returns before its call: {op}")
        events.append((op.call, 0, i))
        events.append((op.ret, 1, i))
    events.sort()
    head = _Node(None, -1, False)
    calls: dict[int, _Node] = {}
    tail = head
    for _t, kind, i in events:
        n = _Node(ops[i], i, kind == 0)
        if kind == 0:
            calls[i] = n
        else:
            calls[i].match = n
        tail.next = n
        n.prev = tail
        tail = n

    def lift(c: _Node) -> None:
        assert c.prev is not None and c.match is not None
        c.prev.next = c.next
        if c.next is not None:
            c.next.prev = c.prev
        r = c.match
        assert r.prev is not None
        r.prev.next = r.next
        if r.next is not None:
            r.next.prev = r.prev

    def unlift(c: _Node) -> None:
        r = c.match
        assert r is not None and r.prev is not None and c.prev is not None
        r.prev.next = r
        if r.next is not None:
            r.next.prev = r
        c.prev.next = c
        if c.next is not None:
            c.next.prev = c

    state = model.init()
    linearized = 0
    cache: set[tuple[int, Any]] = set()
    stack: list[tuple[_Node, Any]] = []
    entry = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if steps > budget:
            return None, steps
        assert entry is not None
        if entry.call:
            assert entry.op is not None
            ok, new_state = model.step(state, entry.op.input, entry.op.output)
            if ok:
                new_lin = linearized | (1 << entry.id)
                key = (new_lin, new_state)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state, linearized = new_state, new_lin
                    lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:
                return False, steps
            top, state = stack.pop()
            linearized &= ~(1 << top.id)
            unlift(top)
            entry = top.next
    return True, steps


def check_operations(
    model: Model[Any], history: Sequence[Operation], max_steps: int = 2_000_000
) -> CheckResult:
    """Check `history` against `model`; `max_steps` bounds the search per partition."""
    parts = model.partition(history)
    total = 0
    for part in parts:
        ok, steps = _check_single(model, part, max_steps)
        total += steps
        if ok is None:
            return CheckResult(Verdict.UNKNOWN, len(parts), len(history), total, tuple(part))
        if not ok:
            return CheckResult(Verdict.ILLEGAL, len(parts), len(history), total, tuple(part))
    return CheckResult(Verdict.OK, len(parts), len(history), total)


def brute_force_check(model: Model[Any], history: Sequence[Operation]) -> bool:
    """Exhaustive reference checker for tiny histories (≤ ~7 operations).

    Tries every subset of the unknown-outcome operations and every order of the chosen ones
    that respects real time (a returns before b is called ⇒ a before b).
    """
    known = [op for op in history if op.output is not UNKNOWN]
    unknown = [op for op in history if op.output is UNKNOWN]
    for r in range(len(unknown) + 1):
        for chosen in itertools.combinations(unknown, r):
            ops = known + list(chosen)
            for perm in itertools.permutations(ops):
                if not _respects_real_time(perm):
                    continue
                state = model.init()
                for op in perm:
                    ok, state = model.step(state, op.input, op.output)
                    if not ok:
                        break
                else:
                    return True
    return False


def _respects_real_time(seq: Sequence[Operation]) -> bool:
    for i, a in enumerate(seq):
        for b in seq[i + 1 :]:
            if b.ret < a.call:
                return False
    return True
