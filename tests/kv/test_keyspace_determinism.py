"""Time is data: the same commands give the same keyspace, whatever the clocks or the replica.

A seeded random workload (every command kind, TTLs, refreshes, Syncs, errors) is applied to
independent keyspaces; their snapshots and every answer must be identical. A keyspace restored
from a snapshot midway must continue exactly like the original, history included.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

import corral.kv.commands
import corral.kv.events
import corral.kv.keyspace
import corral.kv.watch
from corral.kv.commands import (
    Command,
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
)
from corral.kv.errors import FormatError, V2Error
from corral.kv.events import Event, render_event
from corral.kv.keyspace import Keyspace

S = 1_000_000_000


def workload(seed: int, count: int) -> list[Command]:
    rng = random.Random(seed)
    names = ["a", "b", "c", "_h", "d0"]
    now = 1_700_000_000 * S
    cmds: list[Command] = []

    def key() -> str:
        return "/" + "/".join(rng.choice(names) for _ in range(rng.randint(1, 3)))

    def ttl() -> int | None:
        return None if rng.random() < 0.6 else now + rng.randint(0, 5) * S

    for _ in range(count):
        now += rng.randint(0, S // 2)
        r = rng.random()
        k = key()
        v = rng.choice(["", "x", "y", "z"])
        if r < 0.25:
            cmds.append(Set(k, v, dir=rng.random() < 0.15, expire_at=ttl(), now=now))
        elif r < 0.32:
            cmds.append(Set(k, "", expire_at=now + 3 * S, refresh=True, now=now))
        elif r < 0.42:
            cmds.append(
                Create(k, v, dir=rng.random() < 0.2, expire_at=ttl(), unique=rng.random() < 0.3,
                       now=now)
            )
        elif r < 0.52:
            cmds.append(Update(k, v, expire_at=ttl(), refresh=rng.random() < 0.2, now=now))
        elif r < 0.62:
            cmds.append(
                CompareAndSwap(k, v, prev_value=rng.choice(["", "x", "y"]),
                               prev_index=rng.choice([0, 0, rng.randint(1, 50)]),
                               expire_at=ttl(), refresh=rng.random() < 0.1, now=now)
            )
        elif r < 0.74:
            cmds.append(Delete(k, dir=rng.random() < 0.5, recursive=rng.random() < 0.4, now=now))
        elif r < 0.82:
            cmds.append(
                CompareAndDelete(k, prev_value=rng.choice(["", "x", "y"]),
                                 prev_index=rng.choice([0, rng.randint(1, 50)]), now=now)
            )
        elif r < 0.98:
            cmds.append(Sync(now))
        else:
            cmds.append(InternalWrite(f"/0/members/{rng.randint(1, 3)}", v, now))
    return cmds


def run(ks: Keyspace, cmds: list[Command]) -> list[bytes]:
    """Every answer, rendered: events (ttl as of apply time) or error bodies."""
    out: list[bytes] = []
    for cmd in cmds:
        try:
            events = ks.apply(cmd)
        except V2Error as err:
            out.append(repr(err.to_json()).encode())
            continue
        out.extend(render_event(e) + (b"R" if e.refresh else b"") for e in events)
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_same_commands_same_keyspace(seed: int) -> None:
    cmds = workload(seed, 5000)
    # Commands travel as bytes between members: use the wire form on one side.
    wire = [decode(encode(c)) for c in cmds]
    assert wire == cmds
    a, b = Keyspace(), Keyspace()
    answers_a, answers_b = run(a, cmds), run(b, wire)
    assert answers_a == answers_b
    assert a.snapshot() == b.snapshot()
    assert a.index == b.index > 1000  # the history ring wrapped
    # The TTL bookkeeping agrees with the tree itself.
    import msgpack

    deadlines = [row[5] for row in msgpack.unpackb(a.snapshot())[3] if row[5] is not None]
    assert a.has_ttl_nodes() == bool(deadlines)
    assert a.next_expiry() == (min(deadlines) if deadlines else None)
    assert a._ttl_live == len(deadlines)
    # The workload really exercised the interesting paths.
    joined = b"\n".join(answers_a)
    for needle in (b'"expire"', b'"compareAndSwap"', b'"compareAndDelete"', b"errorCode': 101",
                   b"errorCode': 104", b"errorCode': 105", b"errorCode': 108", b'"ttl"', b"R"):  # fmt: skip
        assert needle in joined, needle


def test_snapshot_restore_continues_identically_and_keeps_history() -> None:
    cmds = workload(7, 5000)
    a = Keyspace()
    run(a, cmds[:2500])
    snap = a.snapshot()
    b = Keyspace.restore(snap)
    assert b.snapshot() == snap and b.index == a.index
    assert b.next_expiry() == a.next_expiry() and b.has_ttl_nodes() == a.has_ttl_nodes()
    # A watch from an old index is answered from the restored history, byte for byte.
    since = a.index - 500
    wa = a.watch("/", True, False, since, None)
    wb = b.watch("/", True, False, since, None)
    assert isinstance(wa, Event) and isinstance(wb, Event)
    assert render_event(wa) == render_event(wb)
    assert run(a, cmds[2500:]) == run(b, cmds[2500:])
    assert a.snapshot() == b.snapshot()


def test_restore_rejects_unknown_versions_and_garbage() -> None:
    import msgpack

    ks = Keyspace()
    ks.apply(Set("/a", "1"))
    raw = msgpack.unpackb(ks.snapshot())
    raw[0] = 99
    with pytest.raises(FormatError, match="version 99 is not supported"):
        Keyspace.restore(msgpack.packb(raw))
    with pytest.raises(FormatError):
        Keyspace.restore(b"\xc1not msgpack")
    with pytest.raises(FormatError):
        Keyspace.restore(msgpack.packb([1, 2, 3]))


def test_pure_core_modules_import_no_clock_randomness_or_io() -> None:
    forbidden = {"time", "datetime", "random", "asyncio", "socket", "threading", "os", "secrets"}
    for mod in (corral.kv.keyspace, corral.kv.watch, corral.kv.events, corral.kv.commands):
        assert mod.__file__ is not None
        tree = ast.parse(Path(mod.__file__).read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & forbidden, (mod.__name__, imported & forbidden)


def test_recover_in_place_keeps_watchers_and_stats() -> None:
    leader, follower = Keyspace(), Keyspace()
    for i in range(20):
        leader.apply(Set(f"/k{i % 3}", str(i)))
    follower.apply(Set("/old", "x"))
    follower.get("/old")
    w = follower.watch("/k1", False, False, 0, None)
    follower.recover(leader.snapshot())
    assert follower.snapshot() == leader.snapshot()
    assert follower.hub.count == 1 and follower.stats.to_json()["getsSuccess"] == 1
    (ev,) = follower.apply(Set("/k1", "new"))
    assert follower.hub.notify(ev) == [w]
    with pytest.raises(FormatError):
        follower.recover(b"junk")
    assert follower.get("/k1").node.value == "new"
