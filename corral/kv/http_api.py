"""etcd's v2 HTTP+JSON client API over a `Member` (aiohttp).

Theory of operation. One catch-all aiohttp handler reproduces etcd 3.4's Go stack in order
(reference §1, §2; etcd `etcdserver/api/v2http/client.go`, `etcdhttp/base.go`, Go `net/http`):

1. Go's request parsing: a bad percent-escape in the path is a bare ``400 Bad Request``.
2. etcd's CORS wrapper: every answer carries the three ``Access-Control-*`` headers and
   ``OPTIONS`` on any path is an empty 200.
3. Go's `ServeMux`: a path that is not clean (``//``, ``/./``, ``/../``, after decoding) is
   answered ``301`` to the cleaned path; unknown paths ``404 page not found``.
4. etcd's handlers: method check (405 with ``Allow``), then for ``/v2/keys`` the form and
   parameter validation of `corral.kv.params`, then reads from the keyspace and writes
   through `Member.propose` (the replication seam).

Plain requests on /v2/keys (no watch, no auth, a clean path) take a short path that skips
aiohttp (`ClientAPI.answer`, served by `corral.kv.go_http.FastConnection`): the same steps and
the same bytes, built directly; whatever it declines goes through `handle`.

Writes: the member's clock stamps `now` and computes `expire_at` like etcd's
``time.Now().Add(time.Duration(ttl) * time.Second).UnixNano()``, including Go's int64
wrap-around for absurd TTLs.

Watches: the keyspace decides (history answer, 401, or a registered watcher). The answer's
headers are flushed at once; the body is chunked; a non-stream watch ends after one event; a
stream watch stays registered and is dropped, ending its response, when it falls 100 events
behind (etcd's buffer). A client that goes away removes its watcher (the handler is
cancelled). Events are rendered once and the bytes shared by every watcher.

Headers and bodies are byte-for-byte etcd's: ``X-Etcd-Cluster-Id`` (lowercase hex),
``X-Etcd-Index``, ``X-Raft-Index``/``X-Raft-Term`` on successes only, compact JSON + ``\\n``,
no ``Server`` header.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from corral.kv.auth_http import AuthAPI
from corral.kv.cluster import MemberConflict, MemberRemoved
from corral.kv.commands import (
    Command,
    CompareAndDelete,
    CompareAndSwap,
    Create,
    Delete,
    Set,
    Update,
)
from corral.kv.errors import V2Error
from corral.kv.events import Action, Event, render_event
from corral.kv.flags import CLUSTER_VERSION, ETCD_VERSION
from corral.kv.go_http import (
    TEXT_PLAIN,
    Answer,
    FastConnection,
    FastSite,
    app_runner,
    bad_request_path,
    date_header,
    head_pattern,
    no_server_header,
    status_line,
)
from corral.kv.keyspace import Keyspace
from corral.kv.params import (
    MAX_FORM_BYTES,
    EscapeError,
    KeysRequest,
    clean_path,
    decode_path,
    keys_key,
    parse_form,
    parse_keys_request,
    reads_body,
)
from corral.kv.watch import Watcher

__all__ = ["STREAM_BUFFER", "ClientAPI", "KVMember", "go_json", "make_app", "serve"]


class _MemberConfig(Protocol):
    @property
    def client_urls(self) -> tuple[str, ...]: ...

    @property
    def peer_urls(self) -> tuple[str, ...]: ...


class KVMember(Protocol):
    """What the HTTP layer needs from a member (`corral.kv.cluster.RaftMember` provides it;
    tests may pass lighter doubles). The cluster extras (`member_list`, `leader_id`,
    `is_leader`, `read_barrier`, `add_member`, `remove_member`) are used when present.
    """

    keyspace: Keyspace
    name: str
    id: int
    cluster_id: int
    start_time: int
    leader_since: int
    proposals_failed: int
    fsync_observers: list[Callable[[float], None]]

    @property
    def config(self) -> _MemberConfig: ...

    @property
    def raft_index(self) -> int: ...

    @property
    def raft_term(self) -> int: ...

    def now(self) -> int: ...

    async def propose(self, cmd: Command) -> list[Event]: ...

    async def start(self) -> None: ...


#: etcd drops a stream watcher that falls this many events behind.
STREAM_BUFFER = 100

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE",
    "Access-Control-Allow-Headers": "accept, content-type, authorization",
}
_TEXT = TEXT_PLAIN
_JSON = "application/json"
_KEYS_METHODS = "HEAD,GET,PUT,POST,DELETE"
_INT64 = 1 << 64
#: The request heads `FastConnection` serves itself: plain requests on /v2/keys.
_KEYS_HEAD = head_pattern(b"/v2/keys")
_CORS_LINES = "".join(f"{k}: {v}\r\n" for k, v in _CORS.items()).encode()
_WRITE_VALUE_ACTIONS = frozenset(
    {Action.SET, Action.CREATE, Action.UPDATE, Action.COMPARE_AND_SWAP}
)
_GO_HTML = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def go_json(doc: Any) -> bytes:
    """Go's `json.Encoder` output: compact, HTML-safe escapes, trailing newline."""
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).translate(_GO_HTML)
    return text.encode() + b"\n"


def _wrap64(v: int) -> int:
    v %= _INT64
    return v - _INT64 if v >= 1 << 63 else v


#: v2store's `minExpireTime` (2000-01-01 UTC): an earlier expiration means "permanent".
MIN_EXPIRE_AT = 946_684_800 * 1_000_000_000


def expire_at(now: int, ttl: int | None) -> int | None:
    """etcd's expiration for a TTL: Go's int64 overflow in `Now().Add(ttl*time.Second)
    .UnixNano()`, then v2store's rule that anything before 2000 is permanent (None)."""
    if ttl is None:
        return None
    at = _wrap64(now + _wrap64(ttl * 1_000_000_000))
    return None if at < MIN_EXPIRE_AT else at


def go_duration(ns: int) -> str:
    """Go's `time.Duration.String` (e.g. ``2m51.418294032s``)."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                whole, frac = divmod(ns, size)
                digits = len(str(size)) - 1
                f = f".{frac:0{digits}d}".rstrip("0").rstrip(".") if digits else ""
                return f"{sign}{whole}{f}{unit}"
    secs, frac_ns = divmod(ns, 1_000_000_000)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    frac_text = f".{frac_ns:09d}".rstrip("0").rstrip(".")
    out = f"{s}{frac_text}s"
    if h or m:
        out = f"{m}m" + out
    if h:
        out = f"{h}h" + out
    return sign + out


def _rfc3339(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    f = f".{frac:09d}".rstrip("0").rstrip(".")
    return f"{base}{f}Z"


class _BadMembersRequest(ValueError):
    pass


class WatchSink:
    """The shell side of one watcher: events queue here until the handler writes them."""

    __slots__ = ("closed", "events", "overflow", "wakeup")

    def __init__(self) -> None:
        self.events: collections.deque[Event] = collections.deque()
        self.wakeup = asyncio.Event()
        self.overflow = False
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.wakeup.set()

    def deliver(self, event: Event) -> None:
        if self.closed:
            return
        if len(self.events) >= STREAM_BUFFER:
            self.overflow = True
        else:
            self.events.append(event)
        self.wakeup.set()


class FsyncHistogram(Collector):
    """`etcd_disk_wal_fsync_duration_seconds`, counted with a bisect per fsync.

    It is observed on the write path once per Raft batch, where prometheus_client's
    `Histogram.observe` (a lock and a walk over every bucket) was a measurable share of the
    leader's CPU per write; the exposition is built only when `/metrics` is read.
    """

    NAME = "etcd_disk_wal_fsync_duration_seconds"
    BOUNDS = tuple(0.001 * 2**i for i in range(14))

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.BOUNDS, seconds)] += 1
        self.total += seconds

    def collect(self) -> Any:
        cumulative, buckets = 0, []
        for bound, n in zip([*map(str, self.BOUNDS), "+Inf"], self.counts, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            self.NAME,
            "The latency distributions of fsync called by WAL.",
            buckets=buckets,
            sum_value=self.total,
        )


class Metrics:
    """The Prometheus registry, with etcd's metric names where corral has the same thing."""

    def __init__(self, member: KVMember) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.has_leader = Gauge(
            "etcd_server_has_leader", "Whether or not a leader exists.", registry=r
        )
        self.is_leader = Gauge(
            "etcd_server_is_leader", "Whether or not this member is a leader.", registry=r
        )
        self.leader_changes = Counter(
            "etcd_server_leader_changes_seen", "The number of leader changes seen.", registry=r
        )
        self.proposals_committed = Gauge(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            registry=r,
        )
        self.proposals_applied = Gauge(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            registry=r,
        )
        self.proposals_failed = Gauge(
            "etcd_server_proposals_failed_total",
            "The total number of failed proposals seen.",
            registry=r,
        )
        self.fsync = FsyncHistogram()
        r.register(self.fsync)
        self.watchers = Gauge(
            "etcd_debugging_store_watchers", "Count of currently active watchers.", registry=r
        )
        self.requests = Counter(
            "corral_http_requests", "HTTP requests served, by method.", ["method"], registry=r
        )
        self.has_leader.set(1)
        self.is_leader.set(1)
        self.leader_changes.inc()
        member.fsync_observers.append(self.fsync.observe)
        self._member = member

    def render(self) -> bytes:
        m = self._member
        leader = int(getattr(m, "leader_id", m.id))
        self.has_leader.set(1 if leader else 0)
        self.is_leader.set(1 if getattr(m, "is_leader", True) else 0)
        self.proposals_committed.set(m.raft_index)
        self.proposals_applied.set(m.raft_index)
        self.proposals_failed.set(m.proposals_failed)
        self.watchers.set(m.keyspace.hub.count)
        return generate_latest(self.registry)


class ClientAPI:
    """The request handlers; `make_app` mounts `handle` on every path."""

    def __init__(self, member: KVMember) -> None:
        self.member = member
        self.metrics = Metrics(member)
        self._request_counters: dict[str, Any] = {}
        self._sinks: set[WatchSink] = set()
        self._fast: set[FastConnection] = set()
        self._fixed_cid = -1
        self._fixed = b""
        self.auth = AuthAPI(self)  # v2 auth: /v2/auth/* and the permission checks below
        self._routes: dict[str, Callable[[web.Request, str], Awaitable[web.StreamResponse]]] = {
            "/v2/machines": self.machines,
            "/v2/stats/self": self.stats_self,
            "/v2/stats/leader": self.stats_leader,
            "/v2/stats/store": self.stats_store,
            "/version": self.version,
            "/health": self.health,
            "/metrics": self.prom,
        }

    # ------------------------------------------------------------------ plumbing

    @property
    def cluster_hex(self) -> str:
        return f"{self.member.cluster_id:x}"

    def _leader_id(self) -> int:
        return int(getattr(self.member, "leader_id", self.member.id))

    def _is_leader(self) -> bool:
        return bool(getattr(self.member, "is_leader", True))

    def _member_docs(self) -> list[dict[str, Any]]:
        listing = getattr(self.member, "member_list", None)
        if listing is None:
            return [self._member_doc()]
        return [m.to_json() for m in listing()]

    @staticmethod
    def _resp(status: int, body: bytes, content_type: str, **headers: str) -> web.Response:
        resp = web.Response(status=status, body=body)
        resp.headers.update(_CORS)
        resp.headers["Content-Type"] = content_type
        resp.headers.update(headers)
        return resp

    def _text_error(self, status: int, text: str, **headers: str) -> web.Response:
        # Go's http.Error.
        return self._resp(
            status, text.encode() + b"\n", _TEXT, **{"X-Content-Type-Options": "nosniff"}, **headers
        )

    def _not_allowed(self, allow: str) -> web.Response:
        return self._text_error(405, "Method Not Allowed", Allow=allow)

    def _key_error(self, err: V2Error) -> web.Response:
        return self._keys_response(_error_answer(err))

    def _keys_response(self, out: _KeysAnswer) -> web.Response:
        if out.raft:
            headers = self._event_headers(out.etcd_index)
        else:
            headers = {"X-Etcd-Cluster-Id": self.cluster_hex, "X-Etcd-Index": str(out.etcd_index)}
        return self._resp(out.status, out.body, _JSON, **headers)

    def _event_headers(self, etcd_index: int) -> dict[str, str]:
        m = self.member
        return {
            "X-Etcd-Cluster-Id": self.cluster_hex,
            "X-Etcd-Index": str(etcd_index),
            "X-Raft-Index": str(m.raft_index),
            "X-Raft-Term": str(m.raft_term),
        }

    def _count(self, method: str) -> None:
        counter = self._request_counters.get(method)
        if counter is None:  # `labels()` takes a lock and hashes the labels on every call
            counter = self._request_counters[method] = self.metrics.requests.labels(method)
        counter.inc()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self._count(request.method)
        raw = request.raw_path
        raw_path, _, raw_query = raw.partition("?")
        try:
            path = decode_path(raw_path.encode("latin-1", "replace"))
        except EscapeError:
            return bad_request_path()
        if request.method == "OPTIONS":
            resp = web.Response(status=200)
            resp.headers.update(_CORS)
            return resp
        cleaned = clean_path(path)
        if cleaned != path:
            return self._redirect(request, cleaned, raw_query)
        if path == "/v2/keys" or path.startswith("/v2/keys/"):
            return await self.keys(request, path, raw_query)
        if path == "/v2/members" or path.startswith("/v2/members/"):
            return await self.members(request, path)
        if path.startswith("/v2/auth/"):
            return await self.auth.handle(request, path)
        route = self._routes.get(path)
        if route is None:
            return self._text_error(404, "404 page not found")
        return await route(request, path)

    def _redirect(self, request: web.Request, cleaned: str, raw_query: str) -> web.Response:
        location = urllib.parse.quote(cleaned, safe="/$&+,:;=@")
        if raw_query:
            location += "?" + raw_query
        body = b""
        resp = web.Response(status=301)
        resp.headers.update(_CORS)
        resp.headers["Location"] = location
        if request.method in ("GET", "HEAD"):
            resp.headers["Content-Type"] = "text/html; charset=utf-8"
        if request.method == "GET":
            href = location.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            body = f'<a href="{href}">Moved Permanently</a>.\n\n'.encode()
        resp.body = body
        return resp

    # ------------------------------------------------------------------ /v2/keys

    async def keys(self, request: web.Request, path: str, raw_query: str) -> web.StreamResponse:
        method = request.method
        if method not in ("HEAD", "GET", "PUT", "POST", "DELETE"):
            return self._not_allowed(_KEYS_METHODS)
        content_type = request.headers.get("Content-Type")
        body: bytes | None = None
        if reads_body(method, content_type):
            chunks: list[bytes] = []
            total = 0
            while total <= MAX_FORM_BYTES:  # Go reads at most maxFormSize + 1 bytes
                chunk = await request.content.read(MAX_FORM_BYTES + 1 - total)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            body = b"".join(chunks)
        try:
            form = parse_form(method, raw_query.encode("latin-1", "replace"), body, content_type)
            req = parse_keys_request(method, keys_key(path[len("/v2/keys") :]), form)
        except V2Error as err:
            return self._key_error(err)
        if self.auth.enabled() and not await self.auth.keys_allowed(
            request, path[len("/v2/keys") :], bool(req.recursive)
        ):
            return self.auth.keys_refused()
        if method in ("GET", "HEAD") and req.wait:
            try:
                return await self._watch(request, req)
            except V2Error as err:  # e.g. 401: the waitIndex left the event history
                return self._key_error(err)
        return self._keys_response(await self._keys_answer(req))

    async def _keys_answer(self, req: KeysRequest) -> _KeysAnswer:
        """What a keys request that is not a watch answers; both HTTP paths render it."""
        try:
            if req.method in ("GET", "HEAD"):
                barrier = getattr(self.member, "read_barrier", None)
                if req.quorum and barrier is not None:
                    await barrier()
                return self._read_now(req)
            events = await self.member.propose(self._command(req))
        except V2Error as err:
            return _error_answer(err)
        event = events[0]
        status, no_value = _write_status(req, event)
        body = render_event(event, self.member.now(), no_value=no_value)
        return _KeysAnswer(status, body, event.etcd_index, True)

    def _read_now(self, req: KeysRequest) -> _KeysAnswer:
        try:
            event = self.member.keyspace.get(req.key, req.recursive, req.sorted)
        except V2Error as err:
            return _error_answer(err)
        return _KeysAnswer(200, render_event(event, self.member.now()), event.etcd_index, True)

    # ------------------------------------------------------------------ /v2/keys, short path

    def answer(self, method: bytes, target: bytes, ctype: str | None, body: bytes) -> Answer:
        """The short path's answer (`corral.kv.go_http.FastConnection`) to a plain request on
        /v2/keys: the bytes `handle` would send, or None (no side effects) for what only
        `handle` serves: watches, auth, paths that are not clean or do not decode."""
        if self.auth.enabled():
            return None
        raw_path, _, raw_query = target.partition(b"?")
        read = method == b"GET" or method == b"HEAD"
        if read and b"wait" in raw_query:
            return None
        try:
            path = decode_path(raw_path)
        except EscapeError:
            return None
        if clean_path(path) != path:
            return None
        meth = method.decode()
        self._count(meth)
        head = method == b"HEAD"
        try:
            form = parse_form(meth, raw_query, body if reads_body(meth, ctype) else None, ctype)
            req = parse_keys_request(meth, keys_key(path[len("/v2/keys") :]), form)
        except V2Error as err:
            return self._raw(*_error_answer(err), head)
        if read and not (req.quorum and hasattr(self.member, "read_barrier")):
            return self._raw(*self._read_now(req), head)  # answered now: no task needed
        return self._raw_later(self._keys_answer(req), head)

    async def _raw_later(self, answer: Awaitable[_KeysAnswer], head: bool) -> bytes:
        return self._raw(*(await answer), head)

    def _raw(self, status: int, body: bytes, etcd_index: int, raft: bool, head: bool) -> bytes:
        """The response `_resp` makes for a keys answer, as aiohttp writes it."""
        m = self.member
        if m.cluster_id != self._fixed_cid:
            self._fixed_cid = m.cluster_id
            self._fixed = (
                _CORS_LINES
                + b"Content-Type: application/json\r\n"
                + f"X-Etcd-Cluster-Id: {m.cluster_id:x}\r\n".encode()
            )
        if raft:
            numbers = b"X-Etcd-Index: %d\r\nX-Raft-Index: %d\r\nX-Raft-Term: %d\r\n" % (
                etcd_index,
                m.raft_index,
                m.raft_term,
            )
        else:
            numbers = b"X-Etcd-Index: %d\r\n" % etcd_index
        return b"".join(
            (
                status_line(status),
                self._fixed,
                numbers,
                b"Content-Length: %d\r\n" % len(body),
                date_header.line(),
                b"\r\n",
                b"" if head else body,
            )
        )

    def close_fast(self) -> None:
        """Server shutdown: close the short path's connections (after their answer)."""
        for conn in list(self._fast):
            conn.close()

    def _command(self, req: KeysRequest) -> Command:
        """What the request proposes (etcd's `apply_v2.go` choice, reference §5.2/§5.4)."""
        now = self.member.now()
        refresh = bool(req.refresh)
        if req.method == "POST":
            return Create(req.key, req.value, req.dir, expire_at(now, req.ttl), True, now)
        if req.method == "DELETE":
            if req.prev_index > 0 or req.prev_value:
                return CompareAndDelete(req.key, req.prev_value, req.prev_index, now)
            return Delete(req.key, req.dir or req.recursive, req.recursive, now)
        exp = expire_at(now, req.ttl)
        if req.prev_exist is True:
            if req.prev_index == 0 and req.prev_value == "":
                return Update(req.key, req.value, exp, refresh, now)
            return CompareAndSwap(
                req.key, req.value, req.prev_value, req.prev_index, exp, refresh, now
            )
        if req.prev_exist is False:
            return Create(req.key, req.value, req.dir, exp, False, now)
        if req.prev_index > 0 or req.prev_value:
            return CompareAndSwap(
                req.key, req.value, req.prev_value, req.prev_index, exp, refresh, now
            )
        return Set(req.key, req.value, req.dir, exp, refresh, now)

    async def _watch(self, request: web.Request, req: KeysRequest) -> web.StreamResponse:
        sink = WatchSink()
        ks = self.member.keyspace
        found = ks.watch(req.key, req.recursive, req.stream, req.wait_index, sink)
        watcher = found if isinstance(found, Watcher) else None
        start_index = watcher.start_index if watcher is not None else ks.index
        resp = web.StreamResponse(status=200)
        resp.headers.update(_CORS)
        resp.headers["Content-Type"] = _JSON
        resp.headers.update(self._event_headers(start_index))
        resp.enable_chunked_encoding()
        try:
            await resp.prepare(request)
            self._sinks.add(sink)
            if watcher is None:
                assert isinstance(found, Event)
                await resp.write(render_event(found, self.member.now()))
                if req.stream:  # etcd's quirk: a stream fed from history stays silent
                    while not sink.closed:
                        await sink.wakeup.wait()
                        sink.wakeup.clear()
                await resp.write_eof()
                return resp
            while not sink.closed:
                await sink.wakeup.wait()
                sink.wakeup.clear()
                while sink.events:
                    event = sink.events.popleft()
                    await resp.write(render_event(event, self.member.now()))
                if not req.stream or sink.overflow:
                    break
            await resp.write_eof()  # on shutdown: an empty 200, the client re-watches
            return resp
        finally:
            sink.closed = True
            self._sinks.discard(sink)
            if watcher is not None:
                ks.hub.remove(watcher)

    async def close_watches(self, _: web.Application | None = None) -> None:
        """End every open watch (server shutdown), as etcd does: clients see the body end."""
        for sink in list(self._sinks):
            sink.close()
        self.close_fast()

    # ------------------------------------------------------------------ members, machines

    def _member_doc(self) -> dict[str, Any]:
        m = self.member
        return {
            "id": f"{m.id:x}",
            "name": m.name,
            "peerURLs": list(m.config.peer_urls),
            "clientURLs": list(m.config.client_urls),
        }

    async def members(self, request: web.Request, path: str) -> web.StreamResponse:
        cid = {"X-Etcd-Cluster-Id": self.cluster_hex}
        method = request.method
        if method not in ("GET", "POST", "DELETE", "PUT"):
            return self._not_allowed("GET,POST,DELETE,PUT")
        if method != "GET" and self.auth.enabled() and not await self.auth.root_access(request):
            return self.auth.no_auth()
        rest = path[len("/v2/members") :].strip("/")
        docs = self._member_docs()
        if method == "GET":
            if rest == "":
                return self._resp(200, go_json({"members": docs}), _JSON, **cid)
            if rest == "leader":
                lead = f"{self._leader_id():x}"
                for d in docs:
                    if d["id"] == lead:
                        return self._resp(200, go_json(d), _JSON, **cid)
                return self._resp(503, go_json({"message": "During election"})[:-1], _JSON, **cid)
            return self._resp(404, go_json({"message": "Not found"})[:-1], _JSON, **cid)
        if method == "DELETE" and rest == "":
            return self._resp(405, b"Method Not Allowed\n", _TEXT, **cid)
        if method in ("POST", "PUT"):
            ctype = request.headers.get("Content-Type", "")
            if ctype.split(";")[0].strip() != "application/json":
                msg = f"Bad Content-Type {ctype}, accept application/json"
                return self._resp(415, go_json({"message": msg})[:-1], _JSON, **cid)
        if method in ("DELETE", "PUT"):
            known = {d["id"] for d in docs}
            if rest not in known:
                msg = f"No such member: {rest}"
                return self._resp(404, go_json({"message": msg})[:-1], _JSON, **cid)
        add = getattr(self.member, "add_member", None)
        remove = getattr(self.member, "remove_member", None)
        try:
            if method == "POST" and add is not None:
                urls = await self._peer_urls(request)
                info = await add(urls)
                return self._resp(201, go_json(info.to_json()), _JSON, **cid)
            update = getattr(self.member, "update_member", None)
            if method == "PUT" and update is not None:
                await update(int(rest, 16), await self._peer_urls(request))
                return self._resp(204, b"", _JSON, **cid)
            if method == "DELETE" and remove is not None:
                await remove(int(rest, 16))
                return self._resp(204, b"", _JSON, **cid)
        except _BadMembersRequest as exc:
            return self._resp(400, go_json({"message": str(exc)})[:-1], _JSON, **cid)
        except V2Error as exc:
            return self._resp(
                500, go_json({"message": exc.cause or exc.message})[:-1], _JSON, **cid
            )
        except MemberRemoved as exc:
            return self._resp(410, go_json({"message": str(exc)})[:-1], _JSON, **cid)
        except MemberConflict as exc:
            return self._resp(409, go_json({"message": str(exc)})[:-1], _JSON, **cid)
        except KeyError:
            msg = f"No such member: {rest}"
            return self._resp(404, go_json({"message": msg})[:-1], _JSON, **cid)
        msg = "membership changes are not supported by this member"
        return self._resp(500, go_json({"message": msg})[:-1], _JSON, **cid)

    @staticmethod
    async def _peer_urls(request: web.Request) -> list[str]:
        try:
            doc = json.loads(await request.read())
            urls = doc["peerURLs"]
        except (ValueError, KeyError, TypeError):
            raise _BadMembersRequest('bad request body: want {"peerURLs": [...]}') from None
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise _BadMembersRequest("peerURLs must be a non-empty list of URLs")
        return urls

    async def machines(self, request: web.Request, path: str) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return self._not_allowed("GET,HEAD")
        urls = sorted(u for d in self._member_docs() for u in d["clientURLs"])
        return self._resp(200, ", ".join(urls).encode(), _TEXT)

    # ------------------------------------------------------------------ stats, version, health

    async def stats_self(self, request: web.Request, path: str) -> web.StreamResponse:
        if request.method != "GET":
            return self._not_allowed("GET")
        m = self.member
        doc = {
            "name": m.name,
            "id": f"{m.id:x}",
            "state": "StateLeader" if self._is_leader() else "StateFollower",
            "startTime": _rfc3339(m.start_time),
            "leaderInfo": {
                "leader": f"{self._leader_id():x}",
                "uptime": go_duration(m.now() - m.leader_since),
                "startTime": _rfc3339(m.leader_since),
            },
            "recvAppendRequestCnt": int(getattr(m, "recv_append", 0)),
            "sendAppendRequestCnt": int(getattr(m, "send_append", 0)),
        }
        return self._resp(200, go_json(doc)[:-1], _JSON)

    async def stats_leader(self, request: web.Request, path: str) -> web.StreamResponse:
        if request.method != "GET":
            return self._not_allowed("GET")
        if not self._is_leader():
            return self._resp(403, go_json({"message": "not current leader"})[:-1], _JSON)
        doc = {"leader": f"{self.member.id:x}", "followers": {}}
        return self._resp(200, go_json(doc)[:-1], _JSON)

    async def stats_store(self, request: web.Request, path: str) -> web.StreamResponse:
        if request.method != "GET":
            return self._not_allowed("GET")
        return self._resp(200, go_json(self.member.keyspace.stats.to_json())[:-1], _JSON)

    async def version(self, request: web.Request, path: str) -> web.StreamResponse:
        if request.method != "GET":
            return self._not_allowed("GET")
        doc = {"etcdserver": ETCD_VERSION, "etcdcluster": CLUSTER_VERSION}
        return self._resp(200, go_json(doc)[:-1], _JSON)

    async def health(self, request: web.Request, path: str) -> web.StreamResponse:
        if request.method != "GET":
            return self._not_allowed("GET")
        if self._leader_id() == 0:
            return self._resp(503, b'{"health":"false"}', _TEXT)
        return self._resp(200, b'{"health":"true"}', _TEXT)

    async def prom(self, request: web.Request, path: str) -> web.StreamResponse:
        return self._resp(200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")


class _KeysAnswer(NamedTuple):
    status: int
    body: bytes
    etcd_index: int
    raft: bool  # with X-Raft-Index and X-Raft-Term (an event), or without (an error)


def _error_answer(err: V2Error) -> _KeysAnswer:
    return _KeysAnswer(err.http_status, go_json(err.to_json()), err.index, False)


def _write_status(req: KeysRequest, event: Event) -> tuple[int, bool]:
    """A write's HTTP status and whether its answer leaves the node out (noValueOnSuccess)."""
    action = event.action
    created = action is Action.CREATE or (action is Action.SET and event.prev_node is None)
    no_value = req.no_value_on_success and action in _WRITE_VALUE_ACTIONS
    return (201 if created else 200), no_value


API_KEY = web.AppKey("corral_client_api", ClientAPI)


def make_app(member: KVMember) -> web.Application:
    """The aiohttp application serving etcd's client API for `member`."""
    api = ClientAPI(member)
    app = web.Application(client_max_size=MAX_FORM_BYTES + 1)
    app.on_response_prepare.append(no_server_header)
    app.router.add_route("*", "/{tail:.*}", api.handle)
    app[API_KEY] = api
    app.on_shutdown.append(api.close_watches)
    return app


async def serve(member: KVMember, hosts_ports: list[tuple[str, int]]) -> web.AppRunner:
    """Start the member, wait until it is ready (published to its cluster, as etcd waits
    before serving clients), and listen on every (host, port); returns the runner to clean up."""
    await member.start()
    ready = getattr(member, "ready", None)
    if ready is not None:
        await ready()
    app = make_app(member)
    api = app[API_KEY]
    runner = app_runner(app, shutdown_timeout=5.0)
    await runner.setup()
    for host, port in hosts_ports:
        site = FastSite(
            runner,
            host,
            port,
            api.answer,
            _KEYS_HEAD,
            api._fast,
            reuse_address=True,
            backlog=1024,
        )
        await site.start()
    return runner


def now_ns() -> int:
    return time.time_ns()
