"""Fault runs on real 3-member clusters: a concurrent register workload under the nemesis,
checked for linearizability (short here, ≥ 10 minutes in `make soak`), and a saturating run
without faults that must not change the term.

Against real etcd 3.4 only kill and pause are available (it has no partition hook); against
`corral etcd` every fault kind, through the peer transport's `/debug/faults` hook.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from pathlib import Path

import pytest

from corral.testing import nemesis, workload
from corral.testing.linearizability import (
    UNKNOWN,
    KVInput,
    KVModel,
    Operation,
    Verdict,
    check_operations,
)
from corral.testing.nemesis import command_for, start_members
from corral.testing.servers import ServerProcess
from corral.testing.workload import converged, eventually, http_json

IMPLS = ["etcd", "corral"]
FAULT_ENV = {"CORRAL_FAULT_INJECTION": "1"}


def _members(member: ServerProcess) -> int:
    _, _, doc = http_json("GET", member.client_url + "/v2/members")
    return len(doc.get("members", []))


def _require_cluster(impl: str, members: list[ServerProcess]) -> None:
    """The members formed one cluster (the list fills once the first election is over)."""
    try:
        eventually(lambda: _members(members[0]) == len(members) or None, timeout=20)
    except AssertionError:
        size = _members(members[0])
        if impl == "corral":
            pytest.xfail(f"corral etcd formed a {size}-member cluster, not {len(members)}")
        raise


def _fault_run(
    impl: str, base: Path, seconds: float, seed: int, max_ops: int
) -> tuple[workload.WorkloadResult, nemesis.Nemesis]:
    env = {i: FAULT_ENV for i in range(3)}
    with start_members(command_for(impl), base, env=env) as members:
        _require_cluster(impl, members)
        kinds = nemesis.ALL_KINDS if impl == "corral" else nemesis.KINDS_WITHOUT_HOOK
        nem = nemesis.Nemesis(members)
        schedule = nemesis.Schedule(seed, len(members), kinds)
        config = workload.WorkloadConfig(
            clients=6, keys=6, duration=seconds, max_ops=max_ops, seed=seed, op_timeout=2.0
        )
        failures: list[BaseException] = []

        def run_nemesis() -> None:
            try:
                nem.run(schedule, seconds - 1.0)
            except BaseException as e:  # a member that cannot restart fails the run
                failures.append(e)

        faults = threading.Thread(target=run_nemesis, daemon=True)
        faults.start()
        result = workload.run([m.client_url for m in members], config)
        faults.join(timeout=120)
        assert not faults.is_alive(), "the nemesis did not heal in time"
        assert not failures, f"the nemesis failed: {failures[0]!r}\n" + "\n".join(nem.log[-10:])
        # After healing, the members agree on every key, value and index.
        eventually(lambda: converged(members, config.prefix), timeout=60, what="members converge")
        print(f"seed={seed} {result.summary()} {nem.summary()}")
        return result, nem


def _check(result: workload.WorkloadResult) -> None:
    started = time.monotonic()
    verdict = check_operations(KVModel(), result.history, max_steps=5_000_000)
    print(
        f"checker: {verdict.verdict.value} ops={verdict.operations} steps={verdict.steps} "
        f"in {time.monotonic() - started:.1f}s"
    )
    assert verdict.verdict is Verdict.OK, verdict.failed_partition


@pytest.mark.parametrize("impl", IMPLS)
def test_short_fault_run_is_linearizable(impl: str, tmp_path: Path) -> None:
    result, nem = _fault_run(impl, tmp_path, seconds=12.0, seed=7, max_ops=6_000)
    # Seed 7 starts with a one-way partition (corral) and a kill: both happen even on a slow
    # machine, where restarts leave time for few faults.
    assert nem.counts["kill"] + nem.counts["pause"] >= 1, nem.log
    if impl == "corral":
        assert nem.counts["partition-one-way"] >= 1, nem.log
    assert result.counts["ok"] >= 200, result.summary()
    assert result.counts["ok:read"] > 0 and result.counts["ok:cas"] > 0
    _check(result)
    # Negative control: the same history plus a read of a value nobody wrote is refused, so
    # the check above had the power to fail.
    end = max(op.ret for op in result.history if op.ret != math.inf) + 1
    key = result.history[0].input.key
    bogus = Operation(99, KVInput("read", key), end, "never-written", end + 1)
    assert check_operations(KVModel(), [*result.history, bogus]).verdict is Verdict.ILLEGAL


def test_workload_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        workload.WorkloadConfig(clients=0)
    with pytest.raises(ValueError, match="mix"):
        workload.WorkloadConfig(mix=(0, 0, 0, 0, 0))


def test_schedule_is_a_function_of_its_seed() -> None:
    a = [nemesis.Schedule(3, 5).next() for _ in range(1)]
    s1, s2 = nemesis.Schedule(3, 5), nemesis.Schedule(3, 5)
    seq1 = [s1.next() for _ in range(50)]
    seq2 = [s2.next() for _ in range(50)]
    assert seq1 == seq2 and seq1[0] == a[0]
    assert seq1 != [nemesis.Schedule(4, 5).next() for _ in range(50)]
    # Only a minority is ever faulted, and every kind shows up.
    assert all(1 <= len(f.targets) <= 2 for f in seq1)
    assert {f.kind for f in seq1} == set(nemesis.ALL_KINDS)
    gen = workload.OpGenerator(workload.WorkloadConfig(seed=5), 0)
    again = workload.OpGenerator(workload.WorkloadConfig(seed=5), 0)
    assert [gen.next() for _ in range(20)] == [again.next() for _ in range(20)]


def _soak_seconds() -> float:
    return float(os.environ.get("CORRAL_SOAK_SECONDS", "600"))


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("impl", IMPLS)
def test_long_fault_run_is_linearizable(impl: str, tmp_path: Path) -> None:
    seconds = _soak_seconds()
    result, nem = _fault_run(impl, tmp_path, seconds, seed=2026, max_ops=10_000_000)
    for kind in (
        ("kill", "pause")
        if impl == "etcd"
        else ("kill", "pause", "partition-one-way", "partition-full")
    ):
        assert nem.counts[kind] > 0, nem.summary()
    _check(result)


def _terms(members: list[ServerProcess]) -> list[int]:
    out = []
    for m in members:
        _, headers, _ = http_json("GET", m.client_url + "/v2/keys/")
        out.append(int(headers["X-Raft-Term"]))
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("impl", IMPLS)
def test_saturating_run_keeps_the_term(impl: str, tmp_path: Path) -> None:
    seconds = float(os.environ.get("CORRAL_SATURATE_SECONDS", "60"))
    # etcd's default timers (heartbeat 100 ms, election 1 s), as a deployment would run.
    with start_members(command_for(impl), tmp_path, extra_args=()) as members:
        _require_cluster(impl, members)
        eventually(lambda: ((t := _terms(members)) and len(set(t)) == 1) or None, what="one term")
        before = _terms(members)
        config = dataclasses.replace(
            workload.WorkloadConfig(),
            clients=32,
            keys=64,
            duration=seconds,
            max_ops=10**9,
            mix=(4, 2, 0, 0, 4),
        )
        result = workload.run([m.client_url for m in members], config)
        after = _terms(members)
        print(f"{impl}: {result.summary()} terms {before} -> {after}")
        assert after == before, f"term changed under load: {before} -> {after}"
        # Nothing timed out either: a stall long enough for that is a liveness failure (corral
        # once lost quorum reads here: members' ReadIndex round names collided at the leader).
        assert result.counts["unknown"] == 0, result.summary()


def test_answers_map_to_model_outputs() -> None:
    """The workload's reading of v2 answers: what counts as ok, a failed guard, or unknown."""
    classify = workload.classify
    set_, cas = KVInput("set", "/k", "v"), KVInput("cas", "/k", "w", "v")
    read, delete = KVInput("read", "/k"), KVInput("delete", "/k")
    node = b'{"action":"get","node":{"key":"/k","value":"v"}}'
    assert classify(set_, 201, b'{"action":"set"}') is True
    assert classify(read, 200, node) == "v"
    assert classify(read, 404, b'{"errorCode":100,"message":"Key not found"}') is None
    assert classify(cas, 412, b'{"errorCode":101,"message":"Compare failed"}') is False
    assert classify(cas, 404, b'{"errorCode":100,"message":"Key not found"}') is False
    assert classify(delete, 404, b'{"errorCode":100,"message":"Key not found"}') is False
    # A write that may or may not have happened is never guessed.
    assert classify(set_, 500, b'{"errorCode":300,"message":"Raft Internal Error"}') is UNKNOWN
    assert classify(cas, 503, b"not json") is UNKNOWN
    method, path, body = workload.request_for(KVInput("cad", "/a b", None, "x&y"))
    assert (method, path, body) == ("DELETE", "/v2/keys/a%20b?prevValue=x%26y", None)
