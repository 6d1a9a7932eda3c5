"""Differential: the keyspace alone against a real etcd 3.4 fed the same seeded operations.

The requests go to etcd over HTTP; the same requests become keyspace commands the way etcd's
`apply_v2.go` chooses them. Answers must match: status, X-Etcd-Index, and the body, exactly,
except `ttl`/`expiration` (the two clocks differ: within one second) and unsorted listings
(compared as sets). No index offset is needed: the keyspace first makes the three internal
writes a fresh etcd member makes.
"""

from __future__ import annotations

import http.client
import json
import random
import time
import urllib.parse
from typing import Any

import pytest

from corral.kv.commands import (
    Command,
    CompareAndDelete,
    CompareAndSwap,
    Create,
    Delete,
    InternalWrite,
    Set,
    Update,
    expire_at_for,
)
from corral.kv.errors import V2Error
from corral.kv.events import Action, Event, render_event
from corral.kv.keyspace import Keyspace
from corral.testing.servers import ServerProcess

pytestmark = pytest.mark.interop

OPS = 1200


def command_for(method: str, key: str, p: dict[str, str], now: int) -> Command:
    """etcd's choice of store operation for a request (reference §5.2-§5.4)."""
    ttl = int(p["ttl"]) if p.get("ttl") else None
    expire_at = expire_at_for(now, ttl)
    refresh = p.get("refresh") == "true"
    is_dir = p.get("dir") == "true"
    value = p.get("value", "")
    pv, pi = p.get("prevValue", ""), int(p.get("prevIndex", "0"))
    if method == "POST":
        return Create(key, value, dir=is_dir, expire_at=expire_at, unique=True, now=now)
    if method == "DELETE":
        if pv or pi:
            return CompareAndDelete(key, prev_value=pv, prev_index=pi, now=now)
        recursive = p.get("recursive") == "true"
        return Delete(key, dir=is_dir or recursive, recursive=recursive, now=now)
    if "prevExist" in p:
        if p["prevExist"] == "false":
            return Create(key, value, dir=is_dir, expire_at=expire_at, now=now)
        if not pv and not pi:
            return Update(key, value, expire_at=expire_at, refresh=refresh, now=now)
        return CompareAndSwap(key, value, pv, pi, expire_at=expire_at, refresh=refresh, now=now)
    if pv or pi:
        return CompareAndSwap(key, value, pv, pi, expire_at=expire_at, refresh=refresh, now=now)
    return Set(key, value, dir=is_dir, expire_at=expire_at, refresh=refresh, now=now)


def normalise(body: Any, now: int) -> Any:
    """Drop clock-dependent fields (checked separately) and order unsorted listings."""
    if isinstance(body, dict):
        out = {k: normalise(v, now) for k, v in body.items() if k not in ("ttl", "expiration")}
        if "nodes" in out:
            out["nodes"] = sorted(out["nodes"], key=lambda n: n.get("key", ""))
        return out
    if isinstance(body, list):
        return [normalise(v, now) for v in body]
    return body


def ttls(body: Any) -> list[tuple[str, int]]:
    """(key, ttl) of every node with an expiration, in key order."""
    found: list[tuple[str, int]] = []
    if isinstance(body, dict):
        if "expiration" in body:
            found.append((body.get("key", ""), int(body.get("ttl", 0))))
        for v in body.values():
            found += ttls(v)
    elif isinstance(body, list):
        for v in body:
            found += ttls(v)
    return sorted(found)


class Etcd:
    def __init__(self, member: ServerProcess) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", member.client_port, timeout=10)

    def call(self, method: str, key: str, params: dict[str, str]) -> tuple[int, int, Any]:
        path = "/v2/keys" + urllib.parse.quote(key) + "?" + urllib.parse.urlencode(params)
        self.conn.request(method, path)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, int(resp.headers["X-Etcd-Index"]), json.loads(data)


def ours(ks: Keyspace, method: str, key: str, p: dict[str, str]) -> tuple[int, int, Any]:
    now = time.time_ns()
    try:
        if method == "GET" and p.get("wait") == "true":
            found = ks.watch(key, p.get("recursive") == "true", False, int(p["waitIndex"]), None)
            assert isinstance(found, Event)
            return 200, found.etcd_index, json.loads(render_event(found, now))
        if method == "GET":
            ev = ks.get(key, p.get("recursive") == "true", p.get("sorted") == "true", now=now)
            return 200, ev.etcd_index, json.loads(render_event(ev, now))
        (ev,) = ks.apply(command_for(method, key, p, now))
    except V2Error as err:
        return err.http_status, err.index, err.to_json()
    created = ev.action is Action.CREATE or (ev.action is Action.SET and ev.prev_node is None)
    return 201 if created else 200, ev.etcd_index, json.loads(render_event(ev, now))


def random_request(rng: random.Random, ks: Keyspace) -> tuple[str, str, dict[str, str]]:
    key = "/" + "/".join(rng.choice(["a", "b", "_h", "c"]) for _ in range(rng.randint(1, 3)))
    value = rng.choice(["", "x", "y", "é ✓<&>"])
    r = rng.random()
    p: dict[str, str] = {}
    ttl = {"ttl": str(rng.choice([100, 300]))} if rng.random() < 0.2 else {}
    if r < 0.22:
        p = {"value": value, **ttl}
        if rng.random() < 0.15:
            p = {"dir": "true", **ttl}
        return "PUT", key, p
    if r < 0.30:
        return "PUT", key, {"value": value, "prevExist": "false", **ttl}
    if r < 0.37:
        p = {"value": value, "prevExist": "true", **ttl}
        if rng.random() < 0.2:
            p = {"prevExist": "true", "refresh": "true", "ttl": "200"}
        return "PUT", key, p
    if r < 0.45:
        cond = rng.choice([{"prevValue": rng.choice(["x", "y"])},
                           {"prevIndex": str(rng.randint(1, ks.index + 1))},
                           {"prevValue": "x", "prevIndex": str(rng.randint(1, ks.index + 1))}])  # fmt: skip
        return "PUT", key, {"value": value, **cond, **ttl}
    if r < 0.48:
        return "PUT", key, {"refresh": "true", "ttl": "150"}
    if r < 0.53:
        return "POST", key, {"value": value, **ttl}
    if r < 0.63:
        return "DELETE", key, rng.choice([{}, {"dir": "true"}, {"recursive": "true"}])
    if r < 0.68:
        cond = rng.choice([{"prevValue": rng.choice(["x", "y"])},
                           {"prevIndex": str(rng.randint(1, ks.index + 1))}])  # fmt: skip
        return "DELETE", key, cond
    if r < 0.90:
        return "GET", rng.choice([key, "/"]), {
            "recursive": rng.choice(["true", "false"]),
            "sorted": rng.choice(["true", "false"]),
        }
    # A watch the history can answer (never one that would block).
    for _ in range(5):
        since = rng.randint(max(1, ks.index - 900), ks.index)
        rec = rng.choice(["true", "false"])
        if isinstance(ks.watch(key, rec == "true", False, since, None), Event):
            return "GET", key, {"wait": "true", "waitIndex": str(since), "recursive": rec}
    return "GET", key, {}


def test_keyspace_answers_like_real_etcd(real_etcd: ServerProcess) -> None:
    etcd = Etcd(real_etcd)
    ks = Keyspace()
    for i in range(3):
        ks.apply(InternalWrite(f"/0/internal/{i}", "x", time.time_ns()))
    # etcd publishes its member attributes and cluster version just after it
    # starts serving: wait for those three internal writes to settle.
    deadline = time.monotonic() + 30
    while etcd.call("GET", "/", {})[1] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert etcd.call("GET", "/", {})[1] == 3
    rng = random.Random(2026)
    kinds: set[str] = set()
    for step in range(OPS):
        method, key, params = random_request(rng, ks)
        want = etcd.call(method, key, params)
        got = ours(ks, method, key, params)
        where = f"step {step}: {method} {key} {params}"
        assert got[:2] == want[:2], f"{where}: status/index {got[:2]} != {want[:2]}\n{got[2]}\n{want[2]}"
        assert normalise(got[2], 0) == normalise(want[2], 0), f"{where}:\n{got[2]}\n{want[2]}"
        for (ka, a), (kb, b) in zip(ttls(got[2]), ttls(want[2]), strict=True):
            assert ka == kb and abs(a - b) <= 1, f"{where}: ttl {ka} {a} vs {kb} {b}"
        kinds.add(str(want[2].get("action") or want[2].get("errorCode")))
    # The workload reached every action and the common errors.
    assert {"get", "set", "create", "update", "compareAndSwap", "delete", "compareAndDelete",
            "100", "101", "102", "104", "105", "108"} <= kinds, kinds  # fmt: skip
