"""fleetd's HTTP API: a read-only subset of fleet API v1 plus corral's status/journal extension.

fleet API v1 (coreos/fleet ``Documentation/api-v1.md``; fleet reference §6), JSON, read side:

* ``GET /fleet/v1/units`` → ``{"units": [Unit…]}``; ``GET /fleet/v1/units/NAME`` → ``Unit``
  (404 ``{"error": {"code": 404, "message": "unit does not exist"}}``). A ``Unit`` is
  ``{name, options: [{section, name, value}], desiredState, currentState, machineID}``.
* ``GET /fleet/v1/machines`` → ``{"machines": [{id, primaryIP, metadata}]}``.
* ``GET /fleet/v1/state`` → ``{"states": [{name, hash, machineID, systemdLoadState,
  systemdActiveState, systemdSubState}]}``; ``?machineID=`` and ``?unitName=`` filter.

Pagination tokens are not issued (every answer is one page). Writes (PUT/DELETE units, PATCH
metadata) are not served: ``corral fleet`` writes to the registry directly.

Extension (there is no SSH to a machine): ``GET /x-corral/v1/units/NAME/status`` answers this
machine's units-daemon status of NAME (``load_state``, ``active_state``, ``sub_state``,
``main_pid``, ``journal``…, version 1 of the units control API); ``GET
/x-corral/v1/units/NAME/journal?lines=N`` answers ``{"version": 1, "lines": [...]}``. Both are
404 when this machine's runner does not hold NAME and 501 for the in-memory runner. A fleetd
that serves HTTP publishes its URL at ``<prefix>/x-corral/api/<machine-id>`` (TTL
``agent_ttl``) so ``corral fleet status/journal`` can find the unit's machine.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from corral.client import ClientError
from corral.fleet.errors import FleetError
from corral.fleet.registry import sorted_states
from corral.fleet.store import Registry
from corral.fleet.units_runner import DaemonRunner
from corral.units.errors import UnitError, UnitNotFoundError

__all__ = ["EXTENSION_VERSION", "make_app"]

EXTENSION_VERSION = 1


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message}}, status=status)


def make_app(registry: Registry, runner: Any, machine_id: str) -> web.Application:
    """The aiohttp application for one machine (``runner`` is its :class:`UnitRunner`)."""

    async def snapshot_or_503() -> Any:
        try:
            return await registry.snapshot()
        except (ClientError, FleetError, OSError) as exc:
            raise web.HTTPServiceUnavailable(
                text=f'{{"error": {{"code": 503, "message": "{type(exc).__name__}"}}}}',
                content_type="application/json",
            ) from None

    def unit_json(snap: Any, u: Any) -> dict[str, Any]:
        current = snap.current_state(u)
        options = [{"section": o.section, "name": o.name, "value": o.value} for o in u.unit.options]
        out: dict[str, Any] = {
            "name": u.name,
            "options": options,
            "desiredState": str(u.target_state),
        }
        if current is not None:
            out["currentState"] = str(current)
        if u.target:
            out["machineID"] = u.target
        return out

    async def units(request: web.Request) -> web.Response:
        snap = await snapshot_or_503()
        return web.json_response({"units": [unit_json(snap, u) for u in snap.units]})

    async def unit(request: web.Request) -> web.Response:
        snap = await snapshot_or_503()
        name = request.match_info["name"]
        for u in snap.units:
            if u.name == name:
                return web.json_response(unit_json(snap, u))
        return _error(404, "unit does not exist")

    async def machines(request: web.Request) -> web.Response:
        snap = await snapshot_or_503()
        return web.json_response(
            {
                "machines": [
                    {"id": m.id, "primaryIP": m.public_ip, "metadata": dict(m.metadata)}
                    for m in snap.machines
                ]
            }
        )

    async def state(request: web.Request) -> web.Response:
        snap = await snapshot_or_503()
        want_m = request.query.get("machineID")
        want_u = request.query.get("unitName")
        out = []
        for name, mid, rec in sorted_states(snap.states):
            if (want_m and mid != want_m) or (want_u and name != want_u):
                continue
            out.append(
                {
                    "name": name,
                    "hash": rec.unit_hash,
                    "machineID": mid,
                    "systemdLoadState": rec.load_state,
                    "systemdActiveState": rec.active_state,
                    "systemdSubState": rec.sub_state,
                }
            )
        return web.json_response({"states": out})

    async def local(request: web.Request, op: str) -> Any:
        if not isinstance(runner, DaemonRunner):
            raise web.HTTPNotImplemented(
                text='{"error": {"code": 501, "message": "this machine runs no processes '
                '(in-memory runner)"}}',
                content_type="application/json",
            )
        name = request.match_info["name"]
        if name not in runner.files():
            raise web.HTTPNotFound(
                text=f'{{"error": {{"code": 404, "message": "{name} is not loaded on '
                f'machine {machine_id}"}}}}',
                content_type="application/json",
            )
        lines = request.query.get("lines", "10")
        if not lines.isdigit():
            return _error(400, "lines must be a non-negative integer")
        try:
            return await runner.client.call(op, unit=name, lines=int(lines))
        except UnitNotFoundError as exc:
            return _error(404, str(exc))
        except UnitError as exc:
            return _error(503, str(exc))

    async def status(request: web.Request) -> web.Response:
        got = await local(request, "status")
        if isinstance(got, web.Response):
            return got
        return web.json_response({"version": EXTENSION_VERSION, "machineID": machine_id, **got})

    async def journal(request: web.Request) -> web.Response:
        got = await local(request, "journal")
        if isinstance(got, web.Response):
            return got
        return web.json_response(
            {"version": EXTENSION_VERSION, "machineID": machine_id, "lines": list(got)}
        )

    app = web.Application()
    app.router.add_get("/fleet/v1/units", units)
    app.router.add_get("/fleet/v1/units/{name}", unit)
    app.router.add_get("/fleet/v1/machines", machines)
    app.router.add_get("/fleet/v1/state", state)
    app.router.add_get("/x-corral/v1/units/{name}/status", status)
    app.router.add_get("/x-corral/v1/units/{name}/journal", journal)
    return app
