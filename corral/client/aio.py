"""The asyncio etcd v2 client: a thin aiohttp shell around `corral.client.protocol`.

Same operations, endpoint pool and failover rule as `SyncClient`: reads fail over after
any failure; writes only when the connection could not be opened, otherwise they raise
`OutcomeUnknown`. aiohttp's pool keeps connections alive; each watch holds its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from corral.client import protocol as p
from corral.client.endpoints import EndpointPool
from corral.client.errors import (
    ClusterUnavailable,
    EtcdError,
    KeyNotFound,
    MembersError,
    UsageError,
)
from corral.client.protocol import Failure, KeyResult, Member, RawAnswer, Request
from corral.client.sync import Timeouts

__all__ = ["AsyncClient"]


def _as_oserror(exc: BaseException) -> BaseException:
    """The OS-level cause of an aiohttp connect failure, for error messages."""
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, OSError):
        return exc.os_error
    return exc


class AsyncClient:
    """An asyncio client for the etcd v2 API (use `async with`, or call `aclose()`)."""

    def __init__(self, endpoints: str | list[str] = "http://127.0.0.1:2379",
                 timeouts: Timeouts | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        self.pool = EndpointPool(endpoints)
        self.timeouts = timeouts or Timeouts()
        self._session: aiohttp.ClientSession | None = None
        self._auth = p.basic_auth(*auth) if auth else {}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        return self._session

    async def _exchange(self, endpoint: str, request: Request,
                        read_secs: float | None) -> RawAnswer:
        t = aiohttp.ClientTimeout(total=None, sock_connect=self.timeouts.connect,
                                  sock_read=read_secs)
        headers = {**request.headers(), **self._auth}
        try:
            async with self._sess().request(
                request.method, endpoint + request.target, data=request.body,
                headers=headers, timeout=t, allow_redirects=False,
            ) as resp:
                body = await resp.read()
                return RawAnswer(resp.status, {k.lower(): v for k, v in resp.headers.items()},
                               body)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise p.TransportFailure(Failure.NOT_SENT, _as_oserror(exc)) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise p.TransportFailure(Failure.SENT, exc) from exc

    async def send_raw(self, request: Request) -> RawAnswer:
        """The client's request path (endpoint order, failover, retry rules, timeouts,
        OutcomeUnknown) with the answer left undecoded: for callers that decode large
        answers themselves (fleet's registry reads) or handle etcd's errors one by one."""
        return await self._send(request)

    async def _send(self, request: Request) -> RawAnswer:
        read_secs = self.timeouts.watch if request.watch else self.timeouts.request
        walk = p.Failover(request)
        for endpoint in self.pool.order():
            try:
                answer = await self._exchange(endpoint, request, read_secs)
            except p.TransportFailure as tf:
                walk.transport_failed(endpoint, tf)
                continue
            if walk.accepts(endpoint, answer):
                self.pool.succeeded(endpoint)
                return answer
        raise walk.exhausted()

    async def _keys(self, request: Request) -> KeyResult:
        a = await self._send(request)
        return p.parse_keys(a.status, a.headers, a.body)

    async def _json(self, request: Request) -> Any:
        a = await self._send(request)
        return p.parse_json(a.status, a.headers, a.body)

    # ----------------------------------------------------------------- keys

    async def get(self, key: str, *, recursive: bool = False, sorted: bool = False,
                  quorum: bool = False) -> KeyResult:
        return await self._keys(p.req_get(key, recursive=recursive, sorted=sorted,
                                          quorum=quorum))

    async def set(self, key: str, value: str, *, ttl: int | None = None,
                  prev_value: str | None = None, prev_index: int | None = None,
                  prev_exist: bool | None = None) -> KeyResult:
        return await self._keys(p.req_set(key, value, ttl=ttl, prev_value=prev_value,
                                          prev_index=prev_index, prev_exist=prev_exist))

    async def create(self, key: str, value: str, *, ttl: int | None = None) -> KeyResult:
        return await self._keys(p.req_set(key, value, ttl=ttl, prev_exist=False))

    async def update(self, key: str, value: str, *, ttl: int | None = None) -> KeyResult:
        return await self._keys(p.req_set(key, value, ttl=ttl, prev_exist=True))

    async def compare_and_swap(self, key: str, value: str, *, prev_value: str | None = None,
                               prev_index: int | None = None,
                               ttl: int | None = None) -> KeyResult:
        if prev_value is None and not prev_index:
            raise UsageError("compare_and_swap needs prev_value or prev_index")
        return await self._keys(p.req_set(key, value, ttl=ttl, prev_value=prev_value,
                                          prev_index=prev_index))

    async def mkdir(self, key: str, *, ttl: int | None = None) -> KeyResult:
        return await self._keys(p.req_set(key, dir=True, ttl=ttl, prev_exist=False))

    async def refresh(self, key: str, ttl: int, *, prev_exist: bool | None = True) -> KeyResult:
        return await self._keys(p.req_set(key, ttl=ttl, refresh=True, prev_exist=prev_exist))

    async def append(self, key: str, value: str = "", *, ttl: int | None = None,
                     dir: bool = False) -> KeyResult:
        return await self._keys(p.req_append(key, value, ttl=ttl, dir=dir))

    async def delete(self, key: str, *, recursive: bool = False,
                     dir: bool = False) -> KeyResult:
        return await self._keys(p.req_delete(key, recursive=recursive, dir=dir))

    async def compare_and_delete(self, key: str, *, prev_value: str | None = None,
                                 prev_index: int | None = None) -> KeyResult:
        if prev_value is None and not prev_index:
            raise UsageError("compare_and_delete needs prev_value or prev_index")
        return await self._keys(p.req_delete(key, prev_value=prev_value,
                                             prev_index=prev_index))

    async def watch(self, key: str, *, index: int | None = None,
                    recursive: bool = False) -> AsyncIterator[KeyResult]:
        """Every event from `index` on, forever (see `protocol.WatchCursor`)."""
        cursor = p.WatchCursor(key, recursive=recursive, next_index=index)
        while True:
            request = cursor.request()
            if cursor.needs_resync:
                try:
                    found: KeyResult | KeyNotFound = await self._keys(request)
                except KeyNotFound as exc:
                    found = exc
                yield cursor.resynced(found)
                continue
            try:
                a = await self._send(request)
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

    async def members(self) -> list[Member]:
        return p.parse_members(await self._json(p.req_members()))

    async def leader(self) -> Member:
        return p.parse_member(await self._json(p.req_leader()))

    async def add_member(self, peer_urls: list[str]) -> Member:
        return p.parse_member(await self._json(p.req_add_member(peer_urls)))

    async def remove_member(self, member_id: str) -> None:
        await self._json(p.req_remove_member(member_id))

    async def machines(self) -> list[str]:
        a = await self._send(p.req_machines())
        if a.status >= 400:
            raise MembersError(a.status, a.body.decode(errors="replace").strip())
        return p.parse_machines(a.body)

    async def version(self) -> dict[str, str]:
        return dict(await self._json(p.req_version()))

    async def stats(self, which: str) -> dict[str, Any]:
        return dict(await self._json(p.req_stats(which)))

    async def health(self, endpoint: str | None = None) -> bool:
        try:
            a = await self._exchange(endpoint or self.pool.pinned, p.req_health(),
                                     self.timeouts.request)
        except p.TransportFailure:
            return False
        return p.parse_health(a.status, a.body)

    async def sync_endpoints(self) -> list[str]:
        urls = [u for m in await self.members() for u in m.client_urls]
        if urls:
            self.pool.replace(urls)
        return self.pool.endpoints
