"""Differential test: the same seeded workload against real etcd 3.4 and `corral etcd`.

A generator produces requests over every keys-API action (set, create, update, CAS, CAD,
delete, POST in-order keys, refresh, TTLs, dirs, hidden keys, GET/HEAD listings, watches from
history and live watches, malformed parameters, routing errors). It adapts to the answers of
the reference server (which keys exist, their modifiedIndex), and each request is sent to both
servers. The comparator then normalizes the two answers and reports every difference.

Allowed normalizations (and no others):
- one constant index offset per server, measured at the start (the first X-Etcd-Index); it is
  subtracted from indexes, error indexes, index numbers inside causes and in-order key names;
- `ttl` within 1 and `expiration` within 1 s;
- listings that were not requested sorted are compared as sets;
- X-Raft-* values, X-Etcd-Cluster-Id values (both must be present, lowercase hex), and the
  HTTP framing headers Date / Content-Length / Transfer-Encoding / Connection.

Status codes, bodies (field order included, via key order of the parsed JSON), messages,
causes and the set of header names compare exactly.

Short TTLs (0 or 1 s) are followed by a barrier that waits until the key is gone on both
servers, so expiry never shifts one server's indexes relative to the other's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from corral.testing.ports import free_port
from corral.testing.servers import (
    ServerProcess,
    corral_etcd_command,
    real_etcd_command,
    start_cluster,
)

pytestmark = pytest.mark.interop

FRAMING = {"date", "content-length", "transfer-encoding", "connection", "keep-alive"}
LOOSE_VALUES = {"x-raft-index", "x-raft-term", "x-etcd-cluster-id"}


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Idx:
    """An index relative to the workload's start; each server gets `base + rel`."""

    rel: int


Param = tuple[str, "str | Idx"]


@dataclass
class Req:
    method: str
    path: str  # already percent-encoded, starts with "/"
    query: list[Param] = field(default_factory=list)
    body: list[Param] | None = None
    content_type: str | None = "application/x-www-form-urlencoded"
    watch: str = ""  # "" | "live"
    raw_query: str | None = None  # sent verbatim (malformed escapes)
    barrier: str | None = None  # key to wait on until it expired on both servers

    def describe(self) -> str:
        q = self.raw_query if self.raw_query is not None else _enc(self.query, 0)
        b = "" if self.body is None else f" body={_enc(self.body, 0)!r} ({self.content_type})"
        return f"{self.method} {self.path}{'?' + q if q else ''}{b}"


def _enc(params: list[Param], base: int) -> str:
    out = []
    for k, v in params:
        val = str(v.rel + base) if isinstance(v, Idx) else v
        out.append(f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(val, safe='')}")
    return "&".join(out)


@dataclass
class Resp:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class Server:
    """One side of the comparison: a base URL and its index offset."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url.rstrip("/")
        self.session = session
        self.base = 0

    def _url(self, req: Req) -> URL:
        q = req.raw_query if req.raw_query is not None else _enc(req.query, self.base)
        return URL(self.url + req.path + ("?" + q if q else ""), encoded=True)

    def _body(self, req: Req) -> tuple[bytes | None, dict[str, str]]:
        headers: dict[str, str] = {}
        if req.body is None:
            return None, headers
        if req.content_type:
            headers["Content-Type"] = req.content_type
        return _enc(req.body, self.base).encode(), headers

    async def send(self, req: Req) -> Resp:
        data, headers = self._body(req)
        async with self.session.request(
            req.method, self._url(req), data=data, headers=headers, allow_redirects=False
        ) as r:
            body = await r.read()
            return Resp(r.status, list(r.headers.items()), body)

    @contextlib.asynccontextmanager
    async def open_watch(self, req: Req) -> AsyncIterator[tuple[Resp, asyncio.Task[bytes]]]:
        """Send a watch, return once its headers are in, with a task reading the body."""
        data, headers = self._body(req)
        r = await self.session.request(
            req.method, self._url(req), data=data, headers=headers, allow_redirects=False
        )
        task = asyncio.ensure_future(r.read())
        try:
            yield Resp(r.status, list(r.headers.items()), b""), task
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            r.close()


# --------------------------------------------------------------------------- comparison


_INORDER = re.compile(r"(?<![0-9])([0-9]{20})(?![0-9])")
_NUMS = re.compile(r"(?<![0-9])([0-9]+)(?![0-9])")


def _norm_key(key: str, base: int) -> str:
    return _INORDER.sub(lambda m: f"{int(m.group(1)) - base:020d}", key)


@dataclass
class Norm:
    value: Any
    ttls: list[int] = field(default_factory=list)
    expirations: list[float] = field(default_factory=list)


def _norm_node(node: dict[str, Any], base: int, sort: bool, out: Norm) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for k, v in node.items():
        if k == "key":
            res[k] = _norm_key(v, base)
        elif k in ("modifiedIndex", "createdIndex"):
            res[k] = v - base
        elif k == "nodes":
            kids = [_norm_node(c, base, sort, Norm(None)) for c in v]
            if not sort:
                kids.sort(key=lambda c: c.get("key", ""))
            res[k] = kids
        else:
            res[k] = v
    return res


def _extract_times(value: Any, out: Norm) -> Any:
    """Replace ttl/expiration by placeholders (in document order) and collect them."""
    if isinstance(value, dict):
        res = {}
        for k, v in value.items():
            if k == "ttl":
                out.ttls.append(v)
                res[k] = "<ttl>"
            elif k == "expiration":
                out.expirations.append(_parse_time(v))
                res[k] = "<expiration>"
            else:
                res[k] = _extract_times(v, out)
        return res
    if isinstance(value, list):
        return [_extract_times(v, out) for v in value]
    return value


def _parse_time(s: str) -> float:
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z", s)
    if m is None:
        raise AssertionError(f"expiration not RFC 3339 UTC: {s!r}")
    secs = datetime.fromisoformat(m.group(1) + "+00:00").timestamp()
    frac = m.group(2) or ""
    if frac.endswith("0"):
        raise AssertionError(f"expiration has trailing zeros: {s!r}")
    return secs + (int(frac) / 10 ** len(frac) if frac else 0.0)


def _norm_cause(code: int, cause: str, base: int) -> str:
    if code in (101, 401):
        return _NUMS.sub(lambda m: str(int(m.group(1)) - base), cause)
    return _norm_key(cause, base)


def normalize(resp: Resp, base: int, sort: bool) -> tuple[Any, Norm]:
    """The comparable form of one answer; ttl/expiration kept aside for tolerant checks."""
    headers: dict[str, str] = {}
    names = []
    for k, v in resp.headers:
        lk = k.lower()
        if lk in FRAMING:
            continue
        names.append(lk)
        if lk == "x-etcd-index":
            headers[lk] = str(int(v) - base) if v != "0" else "0"
        elif lk in LOOSE_VALUES:
            if lk == "x-etcd-cluster-id" and re.fullmatch(r"[0-9a-f]+", v) is None:
                headers[lk] = f"BAD {v!r}"
            else:
                headers[lk] = "<present>"
        else:
            headers[lk] = v
    out = Norm(None)
    body: Any
    try:
        doc = json.loads(resp.body) if resp.body.strip() else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and resp.body.endswith(b"\n"):
        if "errorCode" in doc:
            doc = dict(doc)
            if "cause" in doc:
                doc["cause"] = _norm_cause(doc["errorCode"], doc["cause"], base)
            if doc.get("index"):
                doc["index"] = doc["index"] - base
        else:
            doc = {
                k: (_norm_node(v, base, sort, out) if k in ("node", "prevNode") else v)
                for k, v in doc.items()
            }
        body = ("json", list(_flatten_order(doc)), _extract_times(doc, out))
    else:
        body = ("raw", resp.body)
    return (resp.status, sorted(names), headers, body), out


def _flatten_order(doc: Any, prefix: str = "") -> Iterator[str]:
    """Field order of every object, so order differences are caught too."""
    if isinstance(doc, dict):
        yield prefix + ":" + ",".join(doc)
        for k, v in doc.items():
            yield from _flatten_order(v, prefix + "." + k)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _flatten_order(v, f"{prefix}[{i}]")


def compare(a: Resp, base_a: int, b: Resp, base_b: int, sort: bool) -> str | None:
    """None when the answers agree under the allowed normalizations, else a description."""
    na, ta = normalize(a, base_a, sort)
    nb, tb = normalize(b, base_b, sort)
    if na != nb:
        return f"answers differ:\n  A: {na}\n  B: {nb}"
    if len(ta.ttls) != len(tb.ttls) or any(
        abs(x - y) > 1 for x, y in zip(ta.ttls, tb.ttls, strict=True)
    ):
        return f"ttl differs: {ta.ttls} vs {tb.ttls}"
    if any(abs(x - y) > 1.0 for x, y in zip(ta.expirations, tb.expirations, strict=True)):
        return f"expiration differs: {ta.expirations} vs {tb.expirations}"
    return None


# --------------------------------------------------------------------------- workload


TOP = ["a", "b", "c", "_h", "q"]
SUB = ["a", "b", "_h", "c"]
VALUES = ["", "v1", "v2", "x y", "ünï", "a&b=c", "%zz"]
BOOLS_OK = ["true", "false", "1", "0", "t", "F", "TRUE", "True"]
BOOLS_BAD = ["", "yes", "2", "maybe", "tRuE"]


class Workload:
    """Seeded request generator; `observe` feeds it the reference server's answers."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.cur = 0  # reference X-Etcd-Index minus its base
        self.nodes: dict[str, tuple[int, str | None]] = {}  # key -> (rel modifiedIndex, value)

    # -- model
    def observe(self, req: Req, resp: Resp, base: int) -> None:
        for k, v in resp.headers:
            if k.lower() == "x-etcd-index" and v != "0":
                self.cur = max(self.cur, int(v) - base)
        try:
            doc = json.loads(resp.body)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        node = doc.get("node")
        action = doc.get("action")
        if not isinstance(node, dict) or "key" not in node:
            return
        if action in ("delete", "compareAndDelete", "expire"):
            gone = node["key"]
            self.nodes = {
                k: v for k, v in self.nodes.items() if k != gone and not k.startswith(gone + "/")
            }
        elif action in ("set", "create", "update", "compareAndSwap", "get"):
            self.nodes[node["key"]] = (node["modifiedIndex"] - base, node.get("value"))

    # -- choices
    def key(self) -> str:
        r = self.rng
        if self.nodes and r.random() < 0.5:
            return r.choice(sorted(self.nodes))
        depth = r.choice([1, 1, 2, 2, 3])
        parts = [r.choice(TOP)] + [r.choice(SUB) for _ in range(depth - 1)]
        return "/" + "/".join(parts)

    def path(self, key: str) -> str:
        p = "/v2/keys" + urllib.parse.quote(key)
        if self.rng.random() < 0.05:
            p += "/"
        return p

    def idx(self, key: str) -> Idx:
        r = self.rng
        known = self.nodes.get(key)
        if known is not None and r.random() < 0.6:
            return Idx(known[0])
        return Idx(r.randint(max(-2, self.cur - 20), self.cur + 1))

    def value(self, key: str) -> str:
        known = self.nodes.get(key)
        if known is not None and known[1] is not None and self.rng.random() < 0.6:
            return known[1]
        return self.rng.choice(VALUES)

    def place(self, req: Req, params: list[Param]) -> Req:
        """Put each parameter in the query or the (form) body at random, as clients do."""
        r = self.rng
        body: list[Param] = []
        for p in params:
            if r.random() < 0.5:
                body.append(p)
            else:
                req.query.append(p)
        if body or r.random() < 0.2:
            req.body = body
            x = r.random()
            if x < 0.04:
                req.content_type = "application/json"
            elif x < 0.06:
                req.content_type = None
        if r.random() < 0.03:  # body and query disagree: the body wins
            req.query.append(("value", "fromquery"))
            req.body = [*(req.body or []), ("value", "frombody")]
            req.content_type = "application/x-www-form-urlencoded"
        return req

    def next(self) -> Req:
        r = self.rng
        ops: list[tuple[float, Callable[[], Req]]] = [
            (14, self.op_set),
            (4, self.op_set_dir),
            (5, self.op_create),
            (5, self.op_update),
            (7, self.op_cas),
            (3, self.op_refresh),
            (0.7, self.op_short_ttl),
            (8, self.op_delete),
            (5, self.op_cad),
            (5, self.op_post),
            (16, self.op_get),
            (2, self.op_head),
            (6, self.op_history_watch),
            (4, self.op_live_watch),
            (5, self.op_bad_params),
            (2, self.op_routing),
        ]
        total = sum(w for w, _ in ops)
        x = r.random() * total
        for w, f in ops:
            x -= w
            if x <= 0:
                return f()
        return ops[-1][1]()

    def trigger(self, watch: Req) -> Req:
        """A write that may fire `watch`: mostly aimed at the watched key or below it."""
        r = self.rng
        if r.random() < 0.7:
            key = urllib.parse.unquote(watch.path[len("/v2/keys") :]).rstrip("/") or "/"
            if r.random() < 0.5:
                key = key.rstrip("/") + "/" + r.choice(SUB)
            method = r.choice(["PUT", "PUT", "PUT", "DELETE", "POST"])
            params: list[Param] = [("value", r.choice(VALUES))] if method != "DELETE" else []
            if method == "DELETE" and r.random() < 0.5:
                params.append(("recursive", "true"))
            path = "/v2/keys" + urllib.parse.quote(key if key != "/" else "")
            req = Req(method, path)
            return req if method == "DELETE" and not params else self.place(req, params)
        for _ in range(50):
            req = self.next()
            if req.method in ("PUT", "POST", "DELETE") and not req.watch and not req.barrier:
                return req
        return Req("PUT", "/v2/keys/a", body=[("value", "t")])

    def _write_extras(self, params: list[Param]) -> None:
        r = self.rng
        if r.random() < 0.15:
            params.append(("ttl", str(r.randint(50, 900))))
        if r.random() < 0.1:
            params.append(("noValueOnSuccess", r.choice(BOOLS_OK)))

    def op_set(self) -> Req:
        k = self.key()
        params: list[Param] = []
        if self.rng.random() < 0.9:
            params.append(("value", self.value(k)))
        self._write_extras(params)
        return self.place(Req("PUT", self.path(k)), params)

    def op_set_dir(self) -> Req:
        k = self.key()
        params: list[Param] = [("dir", self.rng.choice(["true", "1", "t"]))]
        if self.rng.random() < 0.2:
            params.append(("value", "ignored"))
        self._write_extras(params)
        return self.place(Req("PUT", self.path(k)), params)

    def op_create(self) -> Req:
        k = self.key()
        params: list[Param] = [("prevExist", self.rng.choice(["false", "0", "f"]))]
        if self.rng.random() < 0.3:
            params.append(("dir", "true"))
        else:
            params.append(("value", self.value(k)))
        if self.rng.random() < 0.2:
            params.append(("prevValue", "ignored"))
        self._write_extras(params)
        return self.place(Req("PUT", self.path(k)), params)

    def op_update(self) -> Req:
        k = self.key()
        params: list[Param] = [("prevExist", self.rng.choice(["true", "1"]))]
        x = self.rng.random()
        if x < 0.3:
            params.append(("dir", "true"))
        elif x < 0.9:
            params.append(("value", self.value(k)))
        self._write_extras(params)
        return self.place(Req("PUT", self.path(k)), params)

    def op_cas(self) -> Req:
        k = self.key()
        r = self.rng
        params: list[Param] = [("value", r.choice(VALUES))]
        x = r.random()
        if x < 0.4:
            params.append(("prevValue", self.value(k) or "v1"))
        elif x < 0.8:
            params.append(("prevIndex", self.idx(k)))
        else:
            params.append(("prevValue", self.value(k) or "v2"))
            params.append(("prevIndex", self.idx(k)))
        if r.random() < 0.2:
            params.append(("prevExist", "true"))
        self._write_extras(params)
        return self.place(Req("PUT", self.path(k)), params)

    def op_refresh(self) -> Req:
        k = self.key()
        r = self.rng
        params: list[Param] = [("refresh", "true"), ("ttl", str(r.randint(50, 900)))]
        x = r.random()
        if x < 0.3:
            params.append(("prevExist", "true"))
        elif x < 0.5 and k in self.nodes:
            params.append(("prevIndex", self.idx(k)))
        elif x < 0.6:
            params.append(("value", ""))
        return self.place(Req("PUT", self.path(k)), params)

    def op_short_ttl(self) -> Req:
        r = self.rng
        k = "/" + r.choice(["a", "b", "c"]) + "/t" + str(r.randint(0, 3))
        params: list[Param] = [("ttl", "0")]  # gone at the next sweep (<= 0.5 s)
        if r.random() < 0.3:
            params.append(("dir", "true"))
        else:
            params.append(("value", "short"))
        req = self.place(Req("PUT", self.path(k)), params)
        req.barrier = k
        return req

    def op_delete(self) -> Req:
        k = self.key()
        r = self.rng
        params: list[Param] = []
        x = r.random()
        if x < 0.3:
            params.append(("dir", "true"))
        elif x < 0.6:
            params.append(("recursive", "true"))
        elif x < 0.7:
            params += [("dir", "true"), ("recursive", "true")]
        req = Req("DELETE", self.path(k), query=params)
        if r.random() < 0.1:  # DELETE bodies are ignored
            req.body = [("prevValue", "zzz")]
        return req

    def op_cad(self) -> Req:
        k = self.key()
        r = self.rng
        params: list[Param] = []
        x = r.random()
        if x < 0.45:
            params.append(("prevValue", self.value(k) or "v1"))
        elif x < 0.9:
            params.append(("prevIndex", self.idx(k)))
        else:
            params += [("prevValue", self.value(k) or "v1"), ("prevIndex", self.idx(k))]
        if r.random() < 0.2:
            params.append(("recursive", "true"))
        return Req("DELETE", self.path(k), query=params)

    def op_post(self) -> Req:
        r = self.rng
        k = r.choice(["/q", "/q", "/a/q", "/b", self.key(), "/"])
        params: list[Param] = []
        if r.random() < 0.15:
            params.append(("dir", "true"))
        elif r.random() < 0.9:
            params.append(("value", r.choice(VALUES)))
        if r.random() < 0.1:
            params.append(("prevExist", "true"))
        self._write_extras(params)
        path = "/v2/keys" if k == "/" else self.path(k)
        return self.place(Req("POST", path), params)

    def _get_params(self) -> list[Param]:
        r = self.rng
        params: list[Param] = []
        for name, p in (("recursive", 0.4), ("sorted", 0.4), ("quorum", 0.1)):
            if r.random() < p:
                params.append((name, r.choice(BOOLS_OK)))
        return params

    def op_get(self) -> Req:
        r = self.rng
        k = self.key() if r.random() < 0.9 else "/"
        path = r.choice(["/v2/keys", "/v2/keys/"]) if k == "/" else self.path(k)
        return Req("GET", path, query=self._get_params())

    def op_head(self) -> Req:
        return Req("HEAD", self.path(self.key()), query=self._get_params())

    def op_history_watch(self) -> Req:
        r = self.rng
        k = self.key() if r.random() < 0.85 else "/"
        params: list[Param] = [("wait", "true")]
        x = r.random()
        if x < 0.05:
            params.append(("waitIndex", Idx(-2)))  # long cleared once the history is full
        else:
            lo = max(-2, self.cur - 40)
            params.append(("waitIndex", Idx(r.randint(lo, max(lo, self.cur)))))
        if r.random() < 0.5:
            params.append(("recursive", "true"))
        return Req("GET", "/v2/keys" + urllib.parse.quote(k), query=params)

    def op_live_watch(self) -> Req:
        r = self.rng
        k = self.key()
        params: list[Param] = [("wait", "true")]
        if r.random() < 0.3:
            params.append(("waitIndex", Idx(self.cur + 1)))
        if r.random() < 0.5:
            params.append(("recursive", "true"))
        req = Req("GET", self.path(k), query=params)
        req.watch = "live"
        return req

    def op_bad_params(self) -> Req:
        r = self.rng
        k = self.key()
        method = r.choice(["GET", "PUT", "PUT", "POST", "DELETE"])
        name = r.choice(
            [
                "ttl",
                "prevIndex",
                "waitIndex",
                "recursive",
                "sorted",
                "wait",
                "dir",
                "quorum",
                "stream",
                "prevValue",
                "noValueOnSuccess",
                "prevExist",
                "refresh",
            ]
        )
        bad = {
            "ttl": ["abc", "-1", "1.5", " 1", "99999999999999999999999"],
            "prevIndex": ["abc", "-1", "1e3", "99999999999999999999999"],
            "waitIndex": ["abc", "-5"],
            "prevValue": [""],
        }.get(name, BOOLS_BAD)
        params: list[Param] = [(name, r.choice(bad))]
        if r.random() < 0.5:
            params.append(r.choice([("wait", "true"), ("refresh", "true"), ("value", "v")]))
            if r.random() < 0.5:
                params.append(("ttl", "5"))
        req = Req(method, self.path(k))
        if method in ("PUT", "POST"):
            req = self.place(req, params)
        else:
            req.query = params
        if r.random() < 0.1:
            req.raw_query = r.choice(["value=%zz", "ttl=%", "a=%G1&value=1", "%%"])
            req.body = None
        return req

    def op_routing(self) -> Req:
        r = self.rng
        return r.choice(
            [
                Req("PATCH", self.path(self.key())),
                Req("OPTIONS", self.path(self.key())),
                Req("GET", "/v2/keysfoo"),
                Req("GET", "/v2/"),
                Req("GET", "/v2/keys//a"),
                Req("GET", "/v2/keys/a/../b"),
                Req("GET", "/v2/keys/./c"),
                Req("GET", "/v2/machines/"),
                Req("POST", "/v2/stats/store"),
                Req("GET", "/v2/stats/"),
                Req("POST", "/version"),
                Req("PUT", "/health"),
                Req("GET", "/v2/keys/%"),
            ]
        )


# --------------------------------------------------------------------------- runner


@dataclass
class Difference:
    step: int
    request: str
    detail: str


class Differ:
    """Drives one workload against two servers and collects the differences."""

    def __init__(self, a: Server, b: Server, seed: int) -> None:
        self.a, self.b = a, b
        self.work = Workload(seed)
        self.diffs: list[Difference] = []
        self.counts: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    async def measure_base(self) -> None:
        for srv in (self.a, self.b):
            r = await srv.send(Req("GET", "/v2/keys"))
            srv.base = int(dict((k.lower(), v) for k, v in r.headers)["x-etcd-index"])

    def _diff(self, step: int, req: Req, detail: str | None) -> None:
        if detail is not None:
            self.diffs.append(Difference(step, req.describe(), detail))

    async def run(self, steps: int) -> list[Difference]:
        await self.measure_base()
        for step in range(steps):
            req = self.work.next()
            is_watch = req.watch or any(k == "wait" and v == "true" for k, v in req.query)
            label = req.method + (" watch" if is_watch else "")
            self.counts[label] = self.counts.get(label, 0) + 1
            started = time.perf_counter()
            if req.watch == "live" or any(k == "wait" and v == "true" for k, v in req.query):
                await self._live_watch(step, req)
            else:
                await self._plain(step, req)
            if req.barrier is not None:
                label = "barrier"
                self.counts[label] = self.counts.get(label, 0) + 1
                await self._barrier(req.barrier)
            self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started
        return self.diffs

    async def _plain(self, step: int, req: Req) -> None:
        ra, rb = await asyncio.gather(self.a.send(req), self.b.send(req))
        sort = any(k == "sorted" and v in ("true", "1", "t", "TRUE", "True") for k, v in req.query)
        self._diff(step, req, compare(ra, self.a.base, rb, self.b.base, sort))
        self.work.observe(req, ra, self.a.base)
        if req.barrier is not None and b'"expiration"' not in ra.body:
            req.barrier = None  # the write failed or its ttl was not read: nothing expires

    async def _live_watch(self, step: int, req: Req) -> None:
        async with self.a.open_watch(req) as (ha, ta), self.b.open_watch(req) as (hb, tb):
            self._diff(step, req, compare(ha, self.a.base, hb, self.b.base, False))
            # Answered from history (or an error)? Then it is done at once on both sides.
            await asyncio.wait([ta, tb], timeout=0.05)
            if not (ta.done() or tb.done()):
                # Registered: the next write usually fires it (it is often aimed at the key).
                trigger = self.work.trigger(req)
                await self._plain(step, trigger)
                if trigger.barrier is not None:
                    await self._barrier(trigger.barrier)
                # Both servers notify during apply, before the write's answer: the bytes are
                # already on their way. A late one still counts (see the 5 s bound below).
                await asyncio.wait([ta, tb], timeout=0.05)
            if ta.done() != tb.done():  # one fired: give the other a generous bound
                await asyncio.wait([ta, tb], timeout=5.0)
            if ta.done() != tb.done():
                self._diff(step, req, f"watch fired on one side only (A={ta.done()})")
            elif ta.done():
                ba, bb = ta.result(), tb.result()
                self._diff(
                    step,
                    req,
                    compare(
                        Resp(ha.status, ha.headers, ba),
                        self.a.base,
                        Resp(hb.status, hb.headers, bb),
                        self.b.base,
                        False,
                    ),
                )
                self.work.observe(req, Resp(ha.status, ha.headers, ba), self.a.base)

    async def _barrier(self, key: str) -> None:
        """Wait (generously) until a short-TTL key has expired on both servers."""
        path = "/v2/keys" + urllib.parse.quote(key)
        for srv in (self.a, self.b):
            for _ in range(200):
                r = await srv.send(Req("GET", path))
                if r.status == 404:
                    break
                await asyncio.sleep(0.05)
            else:
                self.diffs.append(Difference(-1, f"barrier {key}", f"never expired on {srv.url}"))
        # Both swept: resync the model's idea of the current index.
        r = await self.a.send(Req("GET", "/v2/keys"))
        self.work.observe(Req("GET", "/v2/keys"), r, self.a.base)


async def run_differential(url_a: str, url_b: str, seed: int, steps: int) -> Differ:
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        timeout=timeout, auto_decompress=False, connector=connector
    ) as session:
        differ = Differ(Server(url_a, session), Server(url_b, session), seed)
        await differ.run(steps)
        return differ


def _report(differ: Differ) -> str:
    secs = {k: round(v, 1) for k, v in differ.seconds.items()}
    lines = [f"{len(differ.diffs)} differences; op mix {differ.counts}; seconds {secs}"]
    for d in differ.diffs[:15]:
        lines.append(f"step {d.step}: {d.request}\n  {d.detail}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- tests


@pytest.fixture
def two_etcds(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with (
        start_cluster(real_etcd_command(), tmp_path / "e1", prefix="x") as m1,
        start_cluster(real_etcd_command(), tmp_path / "e2", prefix="y") as m2,
    ):
        yield m1[0], m2[0]


@pytest.fixture
def corral_member(tmp_path: Path) -> Iterator[ServerProcess]:
    with start_cluster(corral_etcd_command(), tmp_path / "corral", prefix="c") as members:
        yield members[0]


def test_two_real_etcds_compare_equal(two_etcds: tuple[ServerProcess, ServerProcess]) -> None:
    """The harness itself: two real etcds must show no differences."""
    a, b = two_etcds
    differ = asyncio.run(run_differential(a.client_url, b.client_url, seed=7, steps=300))
    assert not differ.diffs, _report(differ)
    print(_report(differ))


def test_corral_matches_etcd(real_etcd: ServerProcess, corral_member: ServerProcess) -> None:
    """Thousands of seeded operations, zero differences against etcd 3.4."""
    differ = asyncio.run(
        run_differential(real_etcd.client_url, corral_member.client_url, seed=2026, steps=1500)
    )
    assert not differ.diffs, _report(differ)
    print(_report(differ))


async def _quirk_proxy(upstream: str, port: int) -> web.AppRunner:
    """A proxy in front of a real etcd that 'fixes' one quirk: mkdir twice answers 105."""
    session = aiohttp.ClientSession(auto_decompress=False, connector=aiohttp.TCPConnector(limit=0))

    async def handle(request: web.Request) -> web.StreamResponse:
        url = URL(upstream + request.raw_path, encoded=True)
        headers = {k: v for k, v in request.headers.items() if k.lower() == "content-type"}
        data = await request.read()
        async with session.request(
            request.method, url, data=data or None, headers=headers, allow_redirects=False
        ) as r:
            status = r.status
            out = web.StreamResponse(status=status)
            for k, v in r.headers.items():
                if k.lower() not in FRAMING:
                    out.headers[k] = v
            if status == 403 and request.method == "PUT":
                body = await r.read()
                body = body.replace(
                    b'"errorCode":102,"message":"Not a file"',
                    b'"errorCode":105,"message":"Key already exists"',
                )
                out.set_status(412 if b'"errorCode":105' in body else status)
                await out.prepare(request)
                await out.write(body)
                return out
            await out.prepare(request)
            async for chunk in r.content.iter_any():
                await out.write(chunk)
            return out

    async def close(_: web.Application) -> None:
        await session.close()

    async def no_server_header(_: web.Request, resp: web.StreamResponse) -> None:
        resp.headers.popall("Server", None)

    app = web.Application()
    app.on_cleanup.append(close)
    app.on_response_prepare.append(no_server_header)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def test_comparator_catches_changed_quirk(two_etcds: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = two_etcds

    async def go() -> Differ:
        port = free_port()
        runner = await _quirk_proxy(b.client_url, port)
        try:
            return await run_differential(a.client_url, f"http://127.0.0.1:{port}", 11, 200)
        finally:
            await runner.cleanup()

    differ = asyncio.run(go())
    assert differ.diffs, "the comparator missed a changed quirk"
    assert all("105" in d.detail for d in differ.diffs), _report(differ)


def test_comparator_unit() -> None:
    """Normalizations are the allowed ones only."""
    hdr = [("Content-Type", "application/json"), ("X-Etcd-Index", "13")]
    a = Resp(
        200,
        hdr,
        b'{"action":"get","node":{"key":"/q/00000000000000000013","value":"x",'
        b'"modifiedIndex":13,"createdIndex":13}}\n',
    )
    hdr_b = [("Content-Type", "application/json"), ("X-Etcd-Index", "23")]
    b = Resp(
        200,
        hdr_b,
        b'{"action":"get","node":{"key":"/q/00000000000000000023","value":"x",'
        b'"modifiedIndex":23,"createdIndex":23}}\n',
    )
    assert compare(a, 3, b, 13, False) is None
    assert compare(a, 3, b, 12, False) is not None  # a different offset is a difference
    swapped = Resp(
        200,
        hdr_b,
        b'{"action":"get","node":{"key":"/q/00000000000000000023",'
        b'"modifiedIndex":23,"value":"x","createdIndex":23}}\n',
    )
    assert compare(a, 3, swapped, 13, False) is not None  # field order matters
    extra = Resp(200, [*hdr_b, ("X-Extra", "1")], b.body)
    assert compare(a, 3, extra, 13, False) is not None  # header set matters
