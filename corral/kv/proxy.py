"""`corral etcd --proxy on|readonly`: etcd 3.4's v2 HTTP proxy (a non-voting KV node).

Theory of operation (etcd-io/etcd v3.4 `proxy/httpproxy/{director,reverse,proxy}.go` and
`etcdmain/etcd.go` `startProxy`):

* A proxy has no Raft and no data. It knows the cluster by its **peer** URLs (from
  `--initial-cluster`, from `--discovery`, or from `<data-dir>/proxy/cluster`, written on every
  refresh as ``{"PeerURLs":[…]}``) and every `--proxy-refresh-interval` ms asks one peer
  (`GET <peer>/members`, etcd's GetClusterFromRemotePeers) for the members; their client URLs,
  shuffled, are the endpoints. A failed refresh leaves **no** endpoints until the next one, and
  with no endpoint and an interval of 30 s or more the next refresh comes after 1 s (etcd's
  director loop).
* Each request is read whole, its hop-by-hop headers dropped and `X-Forwarded-For` set, then
  sent to the available endpoints in order; an endpoint whose connection fails is marked
  unavailable for `--proxy-failure-wait` ms and the next is tried. The first answer is passed
  through (status, headers, body streamed and flushed as it comes, so watches and long polls
  work). No endpoint: ``503 {"message":"httpproxy: zero endpoints currently available"}``;
  all failed: ``502 {"message":"httpproxy: unable to get response from N endpoint(s)"}``.
* Around it, as etcd wraps it: the CORS handler (its three headers, then the member's are
  added too, so they appear twice as with etcd; `OPTIONS` is answered 200 here),
  ``GET /v2/config/local/proxy`` (the endpoints), and Go's ServeMux (a non-canonical path is
  answered 301). `--proxy readonly` answers every method but GET with a bare ``501`` and an
  empty body (etcd's readonlyHandlerFunc), HEAD and OPTIONS included.
* Timeouts as etcd's transport has them: `--proxy-dial-timeout` bounds connecting;
  `--proxy-read-timeout` (0 = none, so watches can wait) bounds each read of the answer.
  `--proxy-write-timeout` is accepted; the request, read whole beforehand, is written in one
  go after the connection is made, so it is not timed separately.

`Director` is the pure core (endpoints, failures, refresh delay, with time passed in);
`Proxy` is the asyncio shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
from aiohttp import web
from yarl import URL

from corral.kv.capnslog import log as _log
from corral.kv.go_http import TEXT_PLAIN, bad_request_path, no_server_header
from corral.kv.params import EscapeError, clean_path, decode_path

__all__ = [
    "DEFAULT_REFRESH_MS",
    "HOP_BY_HOP",
    "Director",
    "Endpoint",
    "Proxy",
    "ProxyError",
    "ProxySettings",
    "cluster_from_members",
    "forwarded_for",
    "read_cluster_file",
    "readonly_allows",
]

#: etcd's defaultRefreshInterval: at or above it, an empty endpoint list is retried after 1 s.
DEFAULT_REFRESH_MS = 30000

#: Hop-by-hop headers, removed both ways (etcd's singleHopHeaders, from httputil).
HOP_BY_HOP = (
    "Connection",
    "Keep-Alive",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Te",
    "Trailers",
    "Transfer-Encoding",
    "Upgrade",
)
_HOP = frozenset(h.lower() for h in HOP_BY_HOP)
_CORS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE"),
    ("Access-Control-Allow-Headers", "accept, content-type, authorization"),
)
_TEXT = TEXT_PLAIN


class ProxyError(Exception):
    """The proxy cannot start: the message says why."""


# ------------------------------------------------------------------------------ pure core


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One member's client URL; unavailable until `retry_at` (monotonic seconds) if set."""

    url: str
    retry_at: float | None = None

    def available(self, now: float) -> bool:
        return self.retry_at is None or now >= self.retry_at


@dataclass(frozen=True, slots=True)
class Director:
    """etcd's director: the endpoints, which are available, and when to refresh."""

    endpoints: tuple[Endpoint, ...] = ()
    failure_wait: float = 5.0
    refresh_interval: float = 30.0

    def refreshed(self, urls: Iterable[str], rng: random.Random) -> Director:
        """New endpoints from `urls` (all available), shuffled so load spreads (etcd)."""
        eps = [Endpoint(u) for u in urls if urllib.parse.urlsplit(u).netloc]
        for i in range(len(eps)):  # Go's in-place Fisher-Yates, as director.refresh does
            j = rng.randrange(i + 1)
            eps[i], eps[j] = eps[j], eps[i]
        return replace(self, endpoints=tuple(eps))

    def available(self, now: float) -> tuple[str, ...]:
        return tuple(e.url for e in self.endpoints if e.available(now))

    def failed(self, url: str, now: float) -> Director:
        """Mark `url` unavailable for `failure_wait` seconds (no-op if already so)."""
        eps = tuple(
            replace(e, retry_at=now + self.failure_wait) if e.url == url and e.available(now) else e
            for e in self.endpoints
        )
        return replace(self, endpoints=eps)

    def next_refresh(self, now: float) -> float:
        """Seconds until the next refresh: 1 s while nothing is available and the interval
        is etcd's default or more (so a proxy started before its cluster finds it soon)."""
        if self.refresh_interval >= DEFAULT_REFRESH_MS / 1000 and not self.available(now):
            return 1.0
        return self.refresh_interval


def readonly_allows(method: str) -> bool:
    """`--proxy readonly` serves GET only (etcd's readonlyHandlerFunc: everything else 501)."""
    return method == "GET"


def forwarded_for(prior: list[str], client_ip: str | None) -> str | None:
    """The X-Forwarded-For to send: earlier proxies' entries, then this client (etcd)."""
    if not client_ip:
        return ", ".join(prior) if prior else None
    return ", ".join([*prior, client_ip]) if prior else client_ip


def cluster_from_members(body: bytes, cluster_id: str) -> tuple[list[str], list[str]]:
    """(peer URLs, client URLs), each sorted, from a peer's `GET /members` answer.

    Raises ValueError with etcd's reason when the answer is not a cluster.
    """
    try:
        members = json.loads(body)
    except ValueError:
        raise ValueError("could not unmarshal cluster response") from None
    try:
        int(cluster_id, 16)
    except ValueError:
        raise ValueError(
            f"could not parse the cluster ID from cluster res: {cluster_id!r}"
        ) from None
    if not isinstance(members, list) or not members:
        raise ValueError("failed to get raft cluster member(s) from the given URLs")
    peers: list[str] = []
    clients: list[str] = []
    for m in members:
        if not isinstance(m, dict):
            raise ValueError("could not unmarshal cluster response")
        peers += [str(u) for u in m.get("peerURLs") or []]
        clients += [str(u) for u in m.get("clientURLs") or []]
    return sorted(peers), sorted(clients)


def read_cluster_file(path: Path) -> list[str] | None:
    """The peer URLs saved by an earlier run, or None when there is no file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
        urls = doc["PeerURLs"]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ProxyError(f"proxy: cluster file {path} is not valid ({raw[:80]!r})") from None
    return list(urls)


# ------------------------------------------------------------------------------ the shell


@dataclass(frozen=True, slots=True)
class ProxySettings:
    data_dir: Path
    peer_urls: tuple[str, ...]
    readonly: bool = False
    failure_wait_ms: int = 5000
    refresh_interval_ms: int = 30000
    dial_timeout_ms: int = 1000
    write_timeout_ms: int = 5000
    read_timeout_ms: int = 0


def _go_list(urls: Iterable[str]) -> str:
    return "[" + " ".join(urls) + "]"


class Proxy:
    """The running proxy: a refresh loop and the aiohttp application."""

    def __init__(
        self,
        settings: ProxySettings,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self.peer_urls = list(settings.peer_urls)
        self.director = Director(
            failure_wait=settings.failure_wait_ms / 1000,
            refresh_interval=settings.refresh_interval_ms / 1000,
        )
        self.cluster_file = settings.data_dir / "proxy" / "cluster"
        self._session: aiohttp.ClientSession | None = None
        self._peer_session: aiohttp.ClientSession | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._found_logged = False
        self.requests = 0
        self.dropped = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        connect = s.dial_timeout_ms / 1000 if s.dial_timeout_ms else None
        read = s.read_timeout_ms / 1000 if s.read_timeout_ms else None
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
        )
        # GetClusterFromRemotePeers: 10 s per request.
        self._peer_session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10, sock_connect=connect)
        )
        await self.refresh()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for session in (self._session, self._peer_session):
            if session is not None:
                await session.close()

    # -- membership --------------------------------------------------------------------------
    async def _fetch_cluster(self) -> tuple[list[str], list[str]] | None:
        assert self._peer_session is not None
        for url in self.peer_urls:
            addr = url.rstrip("/") + "/members"
            try:
                async with self._peer_session.get(addr) as r:
                    body = await r.read()
                    cid = r.headers.get("X-Etcd-Cluster-ID", "")
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                _log("W", f"etcdmain: could not get cluster response from {url}: {exc}")
                continue
            try:
                return cluster_from_members(body, cid)
            except ValueError as exc:
                _log("W", f"etcdmain: {exc}")
                if "member(s)" in str(exc):
                    return None
                continue
        _log("W", "etcdmain: proxy: could not retrieve cluster information from the given URLs")
        return None

    def _save(self, peers: list[str]) -> None:
        tmp = self.cluster_file.with_name("cluster.bak")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps({"PeerURLs": peers}, separators=(",", ":")).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.cluster_file)

    async def refresh(self) -> None:
        """etcd's `uf` then `director.refresh`: ask a peer, save the cluster file, swap."""
        got = await self._fetch_cluster()
        clients: list[str] = []
        if got is not None:
            peers, clients = got
            try:
                await asyncio.to_thread(self._save, peers)
            except OSError as exc:
                _log("W", f"etcdmain: proxy: error on writing urls {exc}")
            else:
                if peers != sorted(self.peer_urls):
                    _log(
                        "N",
                        "etcdmain: proxy: updated peer urls in cluster file from "
                        f"{_go_list(self.peer_urls)} to {_go_list(peers)}",
                    )
                self.peer_urls = peers
        self.director = self.director.refreshed(clients, self.rng)
        found = self.director.available(self.clock())
        if found and not self._found_logged:
            self._found_logged = True
            _log(
                "I", "proxy/httpproxy: endpoints found [" + " ".join(f'"{u}"' for u in found) + "]"
            )

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.director.next_refresh(self.clock()))
            await self.refresh()

    # -- HTTP --------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.on_response_prepare.append(no_server_header)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw_path, _, raw_query = request.raw_path.partition("?")
        try:
            path = decode_path(raw_path.encode("latin-1", "replace"))
        except EscapeError:
            return bad_request_path()
        # Go's ServeMux (the outer mux, before CORS and readonly): canonical paths only.
        cleaned = clean_path(path)
        if cleaned != path:
            return _redirect(request.method, cleaned, raw_query)
        if path == "/metrics":
            return self._metrics()
        if self.settings.readonly and not readonly_allows(request.method):
            return web.Response(status=501)
        if request.method == "OPTIONS":
            return _with_cors(web.Response(status=200))
        if path == "/v2/config/local/proxy":
            return self._config(request)
        return await self._forward(request)

    def _metrics(self) -> web.Response:
        lines = [
            "# HELP etcd_proxy_requests_total Counter requests incoming by method.",
            "# TYPE etcd_proxy_requests_total counter",
            f"etcd_proxy_requests_total {self.requests}",
            "# HELP etcd_proxy_dropped_total Counter of requests dropped on the proxy.",
            "# TYPE etcd_proxy_dropped_total counter",
            f"etcd_proxy_dropped_total {self.dropped}",
            "",
        ]
        resp = web.Response(status=200, body="\n".join(lines).encode())
        resp.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
        return resp

    def _config(self, request: web.Request) -> web.Response:
        if request.method != "GET":
            resp = web.Response(status=405, body=b"Method Not Allowed\n")
            resp.headers["Allow"] = "GET"
            resp.headers["Content-Type"] = _TEXT
            resp.headers["X-Content-Type-Options"] = "nosniff"
            return _with_cors(resp)
        body = json.dumps({"endpoints": list(self.director.available(self.clock()))})
        resp = web.Response(status=200, body=body.replace(" ", "").encode() + b"\n")
        resp.headers["Content-Type"] = _TEXT  # Go sniffs the undeclared JSON as text
        return _with_cors(resp)

    def _error(self, status: int, message: str) -> web.Response:
        self.dropped += 1
        _log("I", f"proxy/httpproxy: {message}")
        body = json.dumps({"message": "httpproxy: " + message}, separators=(",", ":"))
        resp = web.Response(status=status, body=body.encode())
        resp.headers["Content-Type"] = "application/json"
        return _with_cors(resp)

    def _request_headers(self, request: web.Request) -> list[tuple[str, str]]:
        prior = request.headers.getall("X-Forwarded-For", [])
        out = [
            (k, v)
            for k, v in request.headers.items()
            if k.lower() not in _HOP
            and k.lower() not in ("host", "content-length", "x-forwarded-for")
        ]
        xff = forwarded_for(list(prior), request.remote)
        if xff:
            out.append(("X-Forwarded-For", xff))
        return out

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read() if request.body_exists else None
        headers = self._request_headers(request)
        endpoints = self.director.available(self.clock())
        if not endpoints:
            return self._error(503, "zero endpoints currently available")
        assert self._session is not None
        upstream: aiohttp.ClientResponse | None = None
        for ep in endpoints:
            url = URL(ep.rstrip("/") + request.raw_path, encoded=True)
            try:
                upstream = await self._session.request(
                    request.method, url, data=body, headers=headers, allow_redirects=False
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.dropped += 1
                _log("I", f"proxy/httpproxy: failed to direct request to {ep}: {exc}")
                if self.director.available(self.clock()).count(ep):
                    _log("I", f"proxy/httpproxy: marked endpoint {ep} unavailable")
                self.director = self.director.failed(ep, self.clock())
                continue
            break
        if upstream is None:
            return self._error(502, f"unable to get response from {len(endpoints)} endpoint(s)")
        try:
            resp = await self._relay(request, upstream)
        except BaseException:
            # The client went away (the handler is cancelled) or the answer broke: drop the
            # member connection rather than return a half-read one to the pool; the member
            # then removes its watcher as it does when a client leaves.
            upstream.close()
            raise
        upstream.release()
        return resp

    async def _relay(
        self, request: web.Request, upstream: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for k, v in _CORS:
            resp.headers.add(k, v)
        length: int | None = None
        for k, v in upstream.headers.items():
            lk = k.lower()
            if lk in _HOP:
                continue
            if lk == "content-length":
                with contextlib.suppress(ValueError):
                    length = int(v)
                continue
            resp.headers.add(k, v)
        if length is not None:
            resp.content_length = length
        await resp.prepare(request)
        if request.method != "HEAD":
            try:
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
            except (aiohttp.ClientError, OSError, TimeoutError):
                # The member went away mid-answer: end ours the same way (a client
                # watching sees the stream end and watches again, as with etcd).
                if request.transport is not None:
                    request.transport.close()
                upstream.close()
                return resp
        await resp.write_eof()
        return resp


def _with_cors(resp: web.Response) -> web.Response:
    for k, v in _CORS:
        resp.headers[k] = v
    return resp


def _redirect(method: str, cleaned: str, raw_query: str) -> web.Response:
    location = urllib.parse.quote(cleaned, safe="/$&+,:;=@")
    if raw_query:
        location += "?" + raw_query
    resp = web.Response(status=301)
    resp.headers["Location"] = location
    if method in ("GET", "HEAD"):
        resp.headers["Content-Type"] = "text/html; charset=utf-8"
    if method == "GET":
        href = location.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        resp.body = f'<a href="{href}">Moved Permanently</a>.\n\n'.encode()
    return resp
