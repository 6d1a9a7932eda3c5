"""FleetLock (the HTTP reboot-lock protocol Zincati speaks) on top of the locksmith semaphore.

Protocol (coreos/zincati `docs/development/fleetlock/protocol.md`): `POST /v1/pre-reboot`
takes a reboot slot (recursive: a holder asking again succeeds), `POST /v1/steady-state`
releases it (releasing a slot not held succeeds). Requests carry the header
`fleet-lock-protocol: true` and the body `{"client_params": {"id": ID, "group": GROUP}}`,
group matching `^[a-zA-Z0-9.-]+$`. 200 means success; failures are 4xx/5xx with
`{"kind": …, "value": …}`, `kind` from a small fixed set.

FleetLock groups map onto locksmith groups; `default` (Zincati's default) is locksmith's
cluster-wide semaphore, so FleetLock clients and locksmith clients share the same slots.

`parse_request` and `outcome` are pure; `make_app` is the aiohttp shell, which runs the
blocking KV calls in a thread.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.locksmith._kv import LockClient
from corral.locksmith._semaphore import Lock, Unlock
from corral.locksmith.errors import (
    HolderExists,
    HolderNotExist,
    KVError,
    LocksmithError,
    SemaphoreFull,
)

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["FleetLockError", "FleetLockRequest", "make_app", "outcome", "parse_request"]

_GROUP = re.compile(r"^[a-zA-Z0-9.-]+$")
PRE_REBOOT = "/v1/pre-reboot"
STEADY_STATE = "/v1/steady-state"


@dataclass(frozen=True, slots=True)
class FleetLockRequest:
    op: Lock | Unlock
    group: str  # the locksmith group ("" for FleetLock's "default")


@dataclass(frozen=True, slots=True)
class FleetLockError(Exception):
    status: int
    kind: str
    value: str

    def body(self) -> str:
        return json.dumps({"kind": self.kind, "value": self.value})


def parse_request(path: str, protocol_header: str | None, body: bytes) -> FleetLockRequest:
    """Validate one request; raises FleetLockError (400/404) when it is not FleetLock."""
    if path not in (PRE_REBOOT, STEADY_STATE):
        raise FleetLockError(404, "not_found", f"no FleetLock endpoint at {path}")
    if protocol_header != "true":
        raise FleetLockError(
            400, "missing_protocol_header", 'header "fleet-lock-protocol: true" required'
        )
    try:
        doc = json.loads(body)
        params = doc["client_params"]
        client_id, group = params["id"], params["group"]
    except (ValueError, TypeError, KeyError) as exc:
        raise FleetLockError(
            400, "bad_request", f"body must carry client_params.id and .group ({exc})"
        ) from exc
    if not isinstance(client_id, str) or not client_id:
        raise FleetLockError(400, "bad_request", "client_params.id must be a non-empty string")
    if not isinstance(group, str) or not _GROUP.match(group):
        raise FleetLockError(400, "bad_request", "client_params.group must match ^[a-zA-Z0-9.-]+$")
    op: Lock | Unlock = Lock(client_id) if path == PRE_REBOOT else Unlock(client_id)
    return FleetLockRequest(op, "" if group == "default" else group)


def outcome(
    request: FleetLockRequest, error: LocksmithError | None, holders: tuple[str, ...] = ()
) -> FleetLockError | None:
    """The answer for what the semaphore said: None is 200.

    FleetLock is recursive where locksmith is not: a holder asking for its slot again gets 200
    even when the semaphore is full (locksmith checks capacity first and says "semaphore is
    at 0"), so a full semaphore is judged with the current `holders`.
    """
    if error is None or isinstance(error, (HolderExists, HolderNotExist)):
        return None
    if isinstance(error, SemaphoreFull):
        if isinstance(request.op, Lock) and request.op.holder in holders:
            return None
        return FleetLockError(
            409, "failed_lock_semaphore_full", f"all reboot slots are taken ({error})"
        )
    if isinstance(error, KVError):
        return FleetLockError(503, "kv_unavailable", f"the KV store failed: {error}")
    return FleetLockError(500, "internal", str(error))


def make_app(lock_for_group: Callable[[str], LockClient]) -> web.Application:
    """An aiohttp app serving FleetLock; `lock_for_group` gives the LockClient of a group."""
    from aiohttp import web

    async def handle(req: web.Request) -> web.Response:
        try:
            parsed = parse_request(
                req.path, req.headers.get("fleet-lock-protocol"), await req.read()
            )
        except FleetLockError as err:
            return web.Response(status=err.status, text=err.body(), content_type="application/json")

        def run() -> FleetLockError | None:
            client = lock_for_group(parsed.group)
            try:
                client.init()
                client.apply(parsed.op)
            except SemaphoreFull as exc:
                try:
                    holders = client.get()[0].holder_list
                except LocksmithError as again:
                    return outcome(parsed, again)
                return outcome(parsed, exc, holders)
            except LocksmithError as exc:
                return outcome(parsed, exc)
            return None

        answer = await asyncio.to_thread(run)
        if answer is None:
            return web.Response(status=200, text="{}", content_type="application/json")
        return web.Response(
            status=answer.status, text=answer.body(), content_type="application/json"
        )

    app = web.Application()
    app.router.add_post(PRE_REBOOT, handle)
    app.router.add_post(STEADY_STATE, handle)
    return app
