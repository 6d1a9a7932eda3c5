"""A concurrent register workload against real etcd-compatible members, recording a history
for the linearizability checker (`corral.testing.linearizability`).

Theory of operation (Jepsen's `register` workload, testing.md §1): several client threads,
each with its own keep-alive connection to one member, run operations on a few independent
keys: set, compare-and-swap (`prevValue`), compare-and-delete, delete and quorum GET
(`quorum=true`, the only linearizable read of the v2 API). Every operation is recorded with
its invoke and complete times and an outcome in the checker's vocabulary (`KVModel`):

- **ok**: the answer the model predicts (set → True; cas/cad → whether the guard held, i.e.
  `101 Compare failed` / `100 Key not found` answer False; delete → whether the key existed;
  read → the value or None);
- **failed**: nothing happened for sure (the connection was refused, so no request left this
  client); the operation is counted and left out of the history;
- **unknown**: a write whose connection broke or timed out after sending, or that got any other
  error (`300 Raft Internal Error`, a 5xx): it may or may not have taken effect, so it is
  recorded with output `UNKNOWN` and return time +∞ (the checker lets it happen at any point
  after its call, or never). A read without an answer has no effect and is dropped.

The choice of operations is a pure, seeded generator (`OpGenerator`); the shell (`run`) only
does the HTTP and the clock. Values are unique per write, so a read names the write it saw.
The run is bounded by an operation count and a deadline.
"""

from __future__ import annotations

import http.client
import json
import math
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from corral.testing.linearizability import UNKNOWN, KVInput, Operation
from corral.testing.servers import ServerProcess

T = TypeVar("T")

__all__ = [
    "FAILED",
    "OpGenerator",
    "WorkloadConfig",
    "WorkloadResult",
    "classify",
    "converged",
    "dump",
    "eventually",
    "http_json",
    "request_for",
    "run",
]


class _Failed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "FAILED"


#: Outcome of an operation that certainly had no effect (never reached a server).
FAILED: Any = _Failed()

KINDS = ("set", "cas", "cad", "delete", "read")


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    """What to run. `mix` weights the operation kinds in `KINDS` order."""

    clients: int = 6
    keys: int = 4
    max_ops: int = 2_000
    duration: float = 10.0
    op_timeout: float = 3.0
    seed: int = 0
    prefix: str = "/register"
    mix: tuple[int, int, int, int, int] = (3, 3, 1, 1, 4)

    def __post_init__(self) -> None:
        if self.clients < 1 or self.keys < 1 or self.max_ops < 1:
            raise ValueError("clients, keys and max_ops must be at least 1")
        if self.duration <= 0 or self.op_timeout <= 0:
            raise ValueError("duration and op_timeout must be positive")
        if len(self.mix) != len(KINDS) or sum(self.mix) <= 0 or min(self.mix) < 0:
            raise ValueError(f"mix must be {len(KINDS)} non-negative weights, not all zero")


@dataclass
class WorkloadResult:
    history: list[Operation] = field(default_factory=list)
    #: `invoked`, `ok`, `failed`, `unknown`, and `ok:<kind>` per kind.
    counts: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        c = self.counts
        kinds = " ".join(f"{k}={c[f'ok:{k}']}" for k in KINDS)
        return (
            f"ops invoked={c['invoked']} ok={c['ok']} failed={c['failed']} "
            f"unknown={c['unknown']} ({kinds})"
        )


class OpGenerator:
    """The next operation of one client: a pure function of its seeded RNG and what it saw."""

    def __init__(self, config: WorkloadConfig, client: int) -> None:
        self.config = config
        self.client = client
        self.rng = random.Random(f"{config.seed}:{client}")
        self.n = 0
        self.seen: dict[str, str] = {}  # last value this client saw or wrote per key

    def next(self) -> KVInput:
        cfg = self.config
        key = f"{cfg.prefix}/k{self.rng.randrange(cfg.keys)}"
        kind = self.rng.choices(KINDS, weights=cfg.mix)[0]
        self.n += 1
        value = f"c{self.client}-{self.n}"
        if kind == "set":
            return KVInput("set", key, value)
        if kind in ("cas", "cad"):
            expected = self.seen.get(key) or f"c{self.client}-none"
            return KVInput(kind, key, value if kind == "cas" else None, expected)
        return KVInput(kind, key)

    def observe(self, inp: KVInput, out: Any) -> None:
        if out is UNKNOWN or out is FAILED:
            return
        if inp.kind == "read" and isinstance(out, str):
            self.seen[inp.key] = out
        elif (inp.kind == "set" or (inp.kind == "cas" and out is True)) and inp.value:
            self.seen[inp.key] = inp.value


def request_for(inp: KVInput) -> tuple[str, str, bytes | None]:
    """(method, path with query, form body) of the v2 request for `inp`."""
    path = "/v2/keys" + urllib.parse.quote(inp.key)
    if inp.kind == "set":
        return "PUT", path, urllib.parse.urlencode({"value": inp.value}).encode()
    if inp.kind == "cas":
        body = urllib.parse.urlencode({"value": inp.value, "prevValue": inp.expected})
        return "PUT", path, body.encode()
    if inp.kind == "cad":
        return "DELETE", path + "?" + urllib.parse.urlencode({"prevValue": inp.expected}), None
    if inp.kind == "delete":
        return "DELETE", path, None
    if inp.kind == "read":
        return "GET", path + "?quorum=true", None
    raise ValueError(f"unknown operation kind {inp.kind!r}")


def classify(inp: KVInput, status: int, body: bytes) -> Any:
    """The model's output for an HTTP answer: a value, True/False, or UNKNOWN."""
    try:
        doc = json.loads(body) if body else {}
    except ValueError:
        return UNKNOWN
    code = doc.get("errorCode") if isinstance(doc, dict) else None
    if status in (200, 201) and code is None:
        if inp.kind == "read":
            node = doc.get("node") or {}
            value = node.get("value")
            return value if isinstance(value, str) else UNKNOWN
        return True
    if code == 100:  # Key not found: a guard on a missing key failed, delete found nothing
        return None if inp.kind == "read" else (False if inp.kind != "set" else UNKNOWN)
    if code == 101 and inp.kind in ("cas", "cad"):
        return False
    return UNKNOWN


def _send(conn: http.client.HTTPConnection, inp: KVInput) -> tuple[int, bytes]:
    method, path, body = request_for(inp)
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def run(
    endpoints: Sequence[str],
    config: WorkloadConfig,
    stop: threading.Event | None = None,
) -> WorkloadResult:
    """Run `config.clients` threads against `endpoints` until `max_ops`, the deadline or `stop`.

    Client i talks to endpoint i mod n and moves to the next endpoint only when a connection
    cannot be opened (so no write is ever sent twice).
    """
    if not endpoints:
        raise ValueError("no endpoints")
    result = WorkloadResult()
    lock = threading.Lock()
    stop = stop or threading.Event()
    deadline = time.monotonic() + config.duration
    budget = iter(range(config.max_ops))

    def record(op: Operation | None, outcome: str, kind: str) -> None:
        with lock:
            result.counts["invoked"] += 1
            result.counts[outcome] += 1
            if outcome == "ok":
                result.counts[f"ok:{kind}"] += 1
            if op is not None:
                result.history.append(op)

    def client(i: int) -> None:
        gen = OpGenerator(config, i)
        ep = i % len(endpoints)
        conn: http.client.HTTPConnection | None = None
        while not stop.is_set() and time.monotonic() < deadline:
            with lock:
                if next(budget, None) is None:
                    break
            inp = gen.next()
            if conn is None:
                u = urllib.parse.urlsplit(endpoints[ep])
                conn = http.client.HTTPConnection(
                    u.hostname or "127.0.0.1", u.port, timeout=config.op_timeout
                )
            call = time.monotonic()
            try:
                if conn.sock is None:
                    conn.connect()
            except OSError:
                # Nothing was sent: the operation certainly did not happen.
                conn.close()
                conn = None
                ep = (ep + 1) % len(endpoints)
                record(None, "failed", inp.kind)
                gen.observe(inp, FAILED)
                stop.wait(0.05)
                continue
            try:
                status, body = _send(conn, inp)
                out = classify(inp, status, body)
            except (OSError, http.client.HTTPException):
                out = UNKNOWN
                conn.close()
                conn = None
            ret = time.monotonic()
            gen.observe(inp, out)
            if out is UNKNOWN:
                if inp.kind == "read":
                    record(None, "unknown", inp.kind)  # a read without an answer did nothing
                else:
                    record(Operation(i, inp, call, UNKNOWN, math.inf), "unknown", inp.kind)
            else:
                record(Operation(i, inp, call, out, ret), "ok", inp.kind)
        if conn is not None:
            conn.close()

    threads = [
        threading.Thread(target=client, args=(i,), name=f"workload-{i}", daemon=True)
        for i in range(config.clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.history.sort(key=lambda op: op.call)
    return result


# -- observing members after a run


def eventually(
    probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll `probe` until it returns something other than None (exceptions count as None)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except Exception as e:  # the member may be restarting
            last, value = e, None
        if value is not None:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {timeout}s: {what} (last error: {last!r})")


def http_json(
    method: str, url: str, form: Mapping[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, dict[str, str], Any]:
    """(status, headers, decoded JSON body) of one request; HTTP errors are answers too."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, dict(e.headers), json.loads(body) if body else None


def dump(member: ServerProcess, prefix: str) -> tuple[int, dict[str, str]] | None:
    """(X-Etcd-Index, {key: value}) of everything under `prefix` on `member` (a local read)."""
    status, headers, doc = http_json("GET", f"{member.client_url}/v2/keys{prefix}?recursive=true")
    if status == 404:
        return int(headers["X-Etcd-Index"]), {}
    if status != 200:
        return None
    out: dict[str, str] = {}

    def walk(node: dict[str, Any]) -> None:
        for child in node.get("nodes", []):
            if child.get("dir"):
                walk(child)
            else:
                out[child["key"]] = child["value"]

    walk(doc["node"])
    return int(headers["X-Etcd-Index"]), out


def converged(members: Sequence[ServerProcess], prefix: str) -> dict[str, str] | None:
    """The keys under `prefix` if every member has the same keys, values and X-Etcd-Index."""
    dumps = [dump(m, prefix) for m in members]
    first = dumps[0]
    if first is None or any(d != first for d in dumps):
        return None
    return first[1]
