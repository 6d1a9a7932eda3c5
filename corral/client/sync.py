"""The blocking etcd v2 client: a thin `http.client` shell around `corral.client.protocol`.

One keep-alive connection per endpoint is reused for ordinary requests (before reuse it is
checked for having been closed by the server, so a stale connection is never where a write
goes to die); each watch gets a connection of its own, because it blocks until an event.

Failover follows `protocol.may_retry`: reads move on to the next endpoint after any
failure; writes only when the connection could not be opened. A write whose connection
broke or timed out after sending, or that got `300 Raft Internal Error`, raises
`OutcomeUnknown` and is never re-sent.
"""

from __future__ import annotations

import http.client
import select
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from corral.client import protocol as p
from corral.client.endpoints import EndpointPool, normalize_endpoint
from corral.client.errors import (
    ClusterUnavailable,
    EtcdError,
    KeyNotFound,
    MembersError,
    UsageError,
)
from corral.client.protocol import Failure, KeyResult, Member, RawAnswer, Request

__all__ = ["SyncClient", "Timeouts"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. `watch` None waits for an event for as long as it takes."""

    connect: float = 2.0
    request: float = 5.0
    watch: float | None = None


def _dropped(sock: socket.socket | None) -> bool:
    """Has the peer closed (or sent unexpected bytes on) this idle connection?"""
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class SyncClient:
    """A blocking client for the etcd v2 API, over one or more endpoints.

    Args:
        endpoints: client URLs (`http://host:port`), tried in order.
        timeouts: connect, per-request and watch timeouts.
        sync: if true, replace `endpoints` at once by the members' advertised client URLs.
        auth: (user, password) for etcd's v2 auth, sent as HTTP basic credentials.
    """

    def __init__(self, endpoints: str | list[str] = "http://127.0.0.1:2379",
                 timeouts: Timeouts | None = None, sync: bool = False,
                 auth: tuple[str, str] | None = None) -> None:
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        self.pool = EndpointPool(endpoints)
        self.timeouts = timeouts or Timeouts()
        self._conns: dict[str, http.client.HTTPConnection] = {}
        self._auth = p.basic_auth(*auth) if auth else {}
        # Called with (endpoint, request) before each request is sent, e.g. for --debug.
        self.on_request: Callable[[str, Request], None] | None = None
        if sync:
            self.sync_endpoints()

    # ----------------------------------------------------------------- plumbing

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, endpoint: str, read_timeout: float | None) -> http.client.HTTPConnection:
        parts = urlsplit(endpoint)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname or "", parts.port, timeout=self.timeouts.connect)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise p.TransportFailure(Failure.NOT_SENT, exc) from exc
        assert conn.sock is not None
        conn.sock.settimeout(read_timeout)
        return conn

    def _exchange(self, endpoint: str, request: Request, timeout: float | None) -> RawAnswer:
        conn: http.client.HTTPConnection
        keep = not request.watch
        pooled = None if request.watch else self._conns.pop(endpoint, None)
        if pooled is not None and not _dropped(pooled.sock):
            conn = pooled
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
        else:
            if pooled is not None:
                pooled.close()
            conn = self._open(endpoint, timeout)
        if self.on_request is not None:
            self.on_request(endpoint, request)
        try:
            conn.request(request.method, request.target, body=request.body,
                         headers={**request.headers(), **self._auth})
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise p.TransportFailure(Failure.SENT, exc) from exc
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if keep and not resp.will_close:
            self._conns[endpoint] = conn
        else:
            conn.close()
        return RawAnswer(resp.status, headers, body)

    def _send(self, request: Request, timeout: float | None = -1.0) -> tuple[str, RawAnswer]:
        """Send to the pinned endpoint, failing over as `may_retry` allows."""
        if timeout == -1.0:
            timeout = self.timeouts.watch if request.watch else self.timeouts.request
        walk = p.Failover(request)
        for endpoint in self.pool.order():
            try:
                answer = self._exchange(endpoint, request, timeout)
            except p.TransportFailure as tf:
                walk.transport_failed(endpoint, tf)
                continue
            if walk.accepts(endpoint, answer):
                self.pool.succeeded(endpoint)
                return endpoint, answer
        raise walk.exhausted()

    def _keys(self, request: Request, timeout: float | None = -1.0) -> KeyResult:
        _, a = self._send(request, timeout)
        return p.parse_keys(a.status, a.headers, a.body)

    def _json(self, request: Request) -> Any:
        _, a = self._send(request)
        return p.parse_json(a.status, a.headers, a.body)

    # ----------------------------------------------------------------- keys

    def get(self, key: str, *, recursive: bool = False, sorted: bool = False,
            quorum: bool = False) -> KeyResult:
        """Read a key or a directory listing (raises `KeyNotFound`)."""
        return self._keys(p.req_get(key, recursive=recursive, sorted=sorted, quorum=quorum))

    def set(self, key: str, value: str, *, ttl: int | None = None,
            prev_value: str | None = None, prev_index: int | None = None,
            prev_exist: bool | None = None) -> KeyResult:
        """PUT with any conditions; without them an unconditional set."""
        return self._keys(p.req_set(key, value, ttl=ttl, prev_value=prev_value,
                                    prev_index=prev_index, prev_exist=prev_exist))

    def create(self, key: str, value: str, *, ttl: int | None = None) -> KeyResult:
        """Create a key that must not exist (raises `NodeExists`)."""
        return self._keys(p.req_set(key, value, ttl=ttl, prev_exist=False))

    def update(self, key: str, value: str, *, ttl: int | None = None) -> KeyResult:
        """Replace the value of a key that must exist. Without `ttl` the key becomes permanent."""
        return self._keys(p.req_set(key, value, ttl=ttl, prev_exist=True))

    def compare_and_swap(self, key: str, value: str, *, prev_value: str | None = None,
                         prev_index: int | None = None, ttl: int | None = None) -> KeyResult:
        """Set only if the current value/modifiedIndex match (raises `CompareFailed`)."""
        if prev_value is None and not prev_index:
            raise UsageError("compare_and_swap needs prev_value or prev_index")
        return self._keys(p.req_set(key, value, ttl=ttl, prev_value=prev_value,
                                    prev_index=prev_index))

    def mkdir(self, key: str, *, ttl: int | None = None) -> KeyResult:
        """Create a directory that must not exist."""
        return self._keys(p.req_set(key, dir=True, ttl=ttl, prev_exist=False))

    def setdir(self, key: str, *, ttl: int | None = None) -> KeyResult:
        """Create a directory, or turn a file into one (a directory there gives `NotAFile`)."""
        return self._keys(p.req_set(key, dir=True, ttl=ttl))

    def updatedir(self, key: str, *, ttl: int | None = None) -> KeyResult:
        """Change the TTL of an existing directory (no ttl: permanent)."""
        return self._keys(p.req_set(key, dir=True, ttl=ttl, prev_exist=True))

    def refresh(self, key: str, ttl: int, *, prev_exist: bool | None = True) -> KeyResult:
        """Reset a key's TTL without changing its value or notifying watchers."""
        return self._keys(p.req_set(key, ttl=ttl, refresh=True, prev_exist=prev_exist))

    def append(self, key: str, value: str = "", *, ttl: int | None = None,
               dir: bool = False) -> KeyResult:
        """POST an in-order key below the directory `key`."""
        return self._keys(p.req_append(key, value, ttl=ttl, dir=dir))

    def delete(self, key: str, *, recursive: bool = False, dir: bool = False) -> KeyResult:
        """Delete a key, an empty directory (`dir`) or a subtree (`recursive`)."""
        return self._keys(p.req_delete(key, recursive=recursive, dir=dir))

    def compare_and_delete(self, key: str, *, prev_value: str | None = None,
                           prev_index: int | None = None) -> KeyResult:
        """Delete only if the current value/modifiedIndex match."""
        if prev_value is None and not prev_index:
            raise UsageError("compare_and_delete needs prev_value or prev_index")
        return self._keys(p.req_delete(key, prev_value=prev_value, prev_index=prev_index))

    def watch_once(self, key: str, *, index: int | None = None, recursive: bool = False,
                   timeout: float | None = -1.0) -> KeyResult | None:
        """Wait for the first event at or after `index`; None if the server closed the watch."""
        _, a = self._send(p.req_watch(key, wait_index=index, recursive=recursive), timeout)
        if a.status == 200 and not a.body.strip():
            return None
        return p.parse_keys(a.status, a.headers, a.body)

    def watch(self, key: str, *, index: int | None = None,
              recursive: bool = False) -> Iterator[KeyResult]:
        """Every event from `index` on, forever (see `protocol.WatchCursor`)."""
        cursor = p.WatchCursor(key, recursive=recursive, next_index=index)
        while True:
            request = cursor.request()
            if cursor.needs_resync:
                try:
                    found: KeyResult | KeyNotFound = self._keys(request)
                except KeyNotFound as exc:
                    found = exc
                yield cursor.resynced(found)
                continue
            try:
                _, a = self._send(request)
                if a.status == 200 and not a.body.strip():
                    continue
                result = p.parse_keys(a.status, a.headers, a.body)
            except EtcdError as exc:
                cursor.on_error(exc)
                continue
            except ClusterUnavailable as exc:
                # With a watch timeout, a quiet key times out everywhere: watch again.
                if exc.errors and all(isinstance(e, TimeoutError) for _, e in exc.errors):
                    continue
                raise
            cursor.on_event(result)
            yield result

    # ----------------------------------------------------------------- cluster

    def members(self) -> list[Member]:
        return p.parse_members(self._json(p.req_members()))

    def leader(self) -> Member:
        return p.parse_member(self._json(p.req_leader()))

    def add_member(self, peer_urls: list[str]) -> Member:
        return p.parse_member(self._json(p.req_add_member(peer_urls)))

    def remove_member(self, member_id: str) -> None:
        self._json(p.req_remove_member(member_id))

    def update_member(self, member_id: str, peer_urls: list[str]) -> None:
        self._json(p.req_update_member(member_id, peer_urls))

    def machines(self) -> list[str]:
        _, a = self._send(p.req_machines())
        if a.status >= 400:
            raise MembersError(a.status, a.body.decode(errors="replace").strip())
        return p.parse_machines(a.body)

    def version(self) -> dict[str, str]:
        return dict(self._json(p.req_version()))

    def stats(self, which: str) -> dict[str, Any]:
        return dict(self._json(p.req_stats(which)))

    def health(self, endpoint: str | None = None) -> bool:
        """Is `endpoint` (default: the pinned one) healthy according to its `/health`?"""
        return bool(self.probe_health(endpoint))

    def probe_health(self, endpoint: str | None = None) -> bool | None:
        """Like `health`, but None when the endpoint could not be asked at all."""
        target = normalize_endpoint(endpoint) if endpoint else self.pool.pinned
        try:
            a = self._exchange(target, p.req_health(), self.timeouts.request)
        except p.TransportFailure:
            return None
        return p.parse_health(a.status, a.body)

    def sync_endpoints(self) -> list[str]:
        """Replace the endpoints by every member's advertised client URLs."""
        urls = [u for m in self.members() for u in m.client_urls]
        if urls:
            self.pool.replace(urls)
        return self.pool.endpoints
