"""The porcupine-style checker on known histories, cross-checked by brute force."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.testing.linearizability import (
    UNKNOWN,
    KVInput,
    KVModel,
    Operation,
    Verdict,
    brute_force_check,
    check_operations,
)

M = KVModel()


def op(c: int, inp: KVInput, call: float, out: object, ret: float = math.inf) -> Operation:
    return Operation(c, inp, call, out, ret)


def w(v: str, k: str = "x") -> KVInput:
    return KVInput("set", k, v)


def r(k: str = "x") -> KVInput:
    return KVInput("read", k)


def test_sequential_history_is_linearizable() -> None:
    h = [op(0, w("1"), 0, True, 1), op(0, r(), 2, "1", 3)]
    assert check_operations(M, h).verdict is Verdict.OK


def test_stale_read_is_illegal() -> None:
    h = [op(0, w("1"), 0, True, 1), op(0, w("2"), 2, True, 3), op(1, r(), 4, "1", 5)]
    res = check_operations(M, h)
    assert res.verdict is Verdict.ILLEGAL and len(res.failed_partition) == 3


def test_concurrent_write_may_be_seen_or_not() -> None:
    for seen in ("1", None):
        h = [op(0, w("1"), 0, True, 10), op(1, r(), 1, seen, 2)]
        assert check_operations(M, h).verdict is Verdict.OK


def test_read_cannot_flip_back() -> None:
    h = [
        op(0, w("1"), 0, True, 10),
        op(1, r(), 1, "1", 2),
        op(2, r(), 3, None, 4),  # after seeing the write, a later read cannot miss it
    ]
    assert check_operations(M, h).verdict is Verdict.ILLEGAL


def test_unknown_write_may_take_effect_late_or_never() -> None:
    late = [op(0, w("1"), 0, UNKNOWN), op(1, r(), 5, None, 6), op(1, r(), 7, "1", 8)]
    never = [op(0, w("1"), 0, UNKNOWN), op(1, r(), 5, None, 6)]
    assert check_operations(M, late).verdict is Verdict.OK
    assert check_operations(M, never).verdict is Verdict.OK
    before = [op(1, r(), 0, "1", 1), op(0, w("1"), 2, UNKNOWN)]  # seen before its call
    assert check_operations(M, before).verdict is Verdict.ILLEGAL


def test_cas_cad_delete_semantics() -> None:
    h = [
        op(0, w("a"), 0, True, 1),
        op(0, KVInput("cas", "x", "b", "a"), 2, True, 3),
        op(0, KVInput("cas", "x", "c", "a"), 4, False, 5),
        op(0, KVInput("cad", "x", None, "b"), 6, True, 7),
        op(0, KVInput("delete", "x"), 8, False, 9),
        op(0, r(), 10, None, 11),
    ]
    assert check_operations(M, h).verdict is Verdict.OK
    bad = [*h[:2], op(0, KVInput("cas", "x", "c", "a"), 4, True, 5)]
    assert check_operations(M, bad).verdict is Verdict.ILLEGAL


def test_keys_are_checked_independently() -> None:
    h = [op(0, w("1", "a"), 0, True, 1), op(0, r("b"), 2, None, 3), op(0, r("a"), 4, "1", 5)]
    res = check_operations(M, h)
    assert res.verdict is Verdict.OK and res.partitions == 2


def test_running_out_of_budget_is_unknown_not_ok() -> None:
    h = [op(i, w(str(i)), 0, True, 100) for i in range(12)] + [op(99, r(), 200, "nope", 201)]
    assert check_operations(M, h, max_steps=50).verdict is Verdict.UNKNOWN


_values = st.sampled_from(["1", "2", None])


@st.composite
def small_history(draw: st.DrawFn) -> list[Operation]:
    n = draw(st.integers(1, 5))
    ops = []
    for c in range(n):
        call = draw(st.integers(0, 10))
        kind = draw(st.sampled_from(["set", "read", "cas", "delete"]))
        if kind == "set":
            inp = KVInput("set", "x", draw(st.sampled_from(["1", "2"])))
            out: object = True
        elif kind == "read":
            inp, out = KVInput("read", "x"), draw(_values)
        elif kind == "cas":
            inp = KVInput("cas", "x", "2", draw(st.sampled_from(["1", "2"])))
            out = draw(st.booleans())
        else:
            inp, out = KVInput("delete", "x"), draw(st.booleans())
        if kind != "read" and draw(st.integers(0, 4)) == 0:
            ops.append(Operation(c, inp, call, UNKNOWN, math.inf))
        else:
            ops.append(Operation(c, inp, call, out, call + draw(st.integers(0, 6))))
    return ops


@settings(max_examples=200)
@given(small_history())
def test_agrees_with_brute_force_on_small_histories(h: list[Operation]) -> None:
    expected = brute_force_check(M, h)
    got = check_operations(M, h).verdict
    assert got is (Verdict.OK if expected else Verdict.ILLEGAL)
