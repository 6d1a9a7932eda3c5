"""The small slice of the etcd v2 keys API fleet needs, over HTTP (asyncio shell).

fleet reaches its store only through ``/v2/keys`` (fleet reference §1.2), so this client runs
unchanged against a corral cluster or a real etcd 3.4 (``--enable-v2``). Endpoints are tried
in order; a connection failure moves on to the next one. Errors the store answers with become
:class:`KVError` carrying etcd's ``errorCode``; an unreachable store is :class:`KVUnavailable`.

``KV`` is the seam: the engine, agent and CLI depend on the protocol, and tests may pass
any object that implements it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import aiohttp

from corral.fleet.errors import FleetError

__all__ = [
    "EVENT_INDEX_CLEARED",
    "KEY_NOT_FOUND",
    "KV",
    "NODE_EXIST",
    "TEST_FAILED",
    "HttpKV",
    "KVError",
    "KVUnavailable",
]

KEY_NOT_FOUND = 100
TEST_FAILED = 101
NODE_EXIST = 105
EVENT_INDEX_CLEARED = 401

Node = dict[str, Any]


class KVError(FleetError):
    """The store refused a request (``errorCode`` as in etcd's v2 API)."""

    def __init__(self, code: int, message: str, cause: str = "", index: int = 0) -> None:
        super().__init__(f"{code}: {message} ({cause}) [{index}]")
        self.code = code
        self.cause = cause
        self.index = index


class KVUnavailable(FleetError):
    """No endpoint answered."""


class KV(Protocol):
    async def get(self, key: str, *, recursive: bool = False) -> Node | None: ...

    async def set(
        self,
        key: str,
        value: str,
        *,
        ttl: float | None = None,
        prev_exist: bool | None = None,
        prev_value: str | None = None,
    ) -> Node: ...

    async def delete(
        self, key: str, *, recursive: bool = False, prev_value: str | None = None
    ) -> None: ...

    async def watch(
        self,
        key: str,
        *,
        wait_index: int | None,
        recursive: bool = True,
        poll_seconds: float = 30.0,
    ) -> dict[str, Any] | None: ...

    async def index(self) -> int: ...

    async def close(self) -> None: ...


class HttpKV:
    """etcd v2 over HTTP with aiohttp; one session, created on first use."""

    def __init__(self, endpoints: Sequence[str], request_timeout: float = 1.0) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.request_timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None
        self._preferred = 0
        self.requests = 0  # for benchmarks: KV requests spent

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self,
        method: str,
        key: str,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> tuple[dict[str, Any], int]:
        n = len(self.endpoints)
        last: Exception | None = None
        for i in range(n):
            ep = self.endpoints[(self._preferred + i) % n]
            self.requests += 1
            try:
                async with self._sess().request(
                    method,
                    f"{ep}/v2/keys{key}",
                    params=params,
                    data=data,
                    timeout=aiohttp.ClientTimeout(total=deadline or self.request_timeout),
                ) as resp:
                    body = await resp.json(content_type=None)
                    index = int(resp.headers.get("X-Etcd-Index", "0") or 0)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                last = exc
                continue
            self._preferred = (self._preferred + i) % n
            if isinstance(body, dict) and "errorCode" in body:
                raise KVError(
                    int(body["errorCode"]),
                    str(body.get("message", "")),
                    str(body.get("cause", "")),
                    int(body.get("index", 0) or 0),
                )
            if not isinstance(body, dict):
                raise KVUnavailable(f"unexpected answer from {ep}: {body!r}")
            return body, index
        raise KVUnavailable(f"no KV endpoint answered ({', '.join(self.endpoints)}): {last}")

    async def get(self, key: str, *, recursive: bool = False) -> Node | None:
        params = {"recursive": "true", "sorted": "true"} if recursive else {}
        try:
            body, _ = await self._call("GET", key, params)
        except KVError as exc:
            if exc.code == KEY_NOT_FOUND:
                return None
            raise
        node: Node = body["node"]
        return node

    async def set(
        self,
        key: str,
        value: str,
        *,
        ttl: float | None = None,
        prev_exist: bool | None = None,
        prev_value: str | None = None,
    ) -> Node:
        data = {"value": value}
        if ttl is not None:
            data["ttl"] = str(max(1, math.ceil(ttl)))
        if prev_exist is not None:
            data["prevExist"] = "true" if prev_exist else "false"
        if prev_value is not None:
            data["prevValue"] = prev_value
        body, _ = await self._call("PUT", key, data=data)
        node: Node = body["node"]
        return node

    async def delete(
        self, key: str, *, recursive: bool = False, prev_value: str | None = None
    ) -> None:
        params = {}
        if recursive:
            params["recursive"] = "true"
        if prev_value is not None:
            params["prevValue"] = prev_value
        await self._call("DELETE", key, params)

    async def watch(
        self,
        key: str,
        *,
        wait_index: int | None,
        recursive: bool = True,
        poll_seconds: float = 30.0,
    ) -> dict[str, Any] | None:
        """One long-poll; ``None`` when it times out without an event."""
        params = {"wait": "true"}
        if recursive:
            params["recursive"] = "true"
        if wait_index is not None:
            params["waitIndex"] = str(wait_index)
        try:
            body, _ = await self._call("GET", key, params, deadline=poll_seconds)
        except KVUnavailable:
            return None
        return body

    async def index(self) -> int:
        """The store's current index (``X-Etcd-Index``)."""
        try:
            _, idx = await self._call("GET", "/")
        except KVError as exc:
            return exc.index
        return idx


async def sleep_or(event: asyncio.Event, seconds: float) -> bool:
    """Waits ``seconds`` or until ``event`` is set; True if the event fired."""
    try:
        await asyncio.wait_for(event.wait(), timeout=max(0.0, seconds))
    except TimeoutError:
        return False
    return True
