"""fleetd's HTTP API: fleet API v1 (units read and write, machines, state) plus corral's
status/journal extension.

fleet API v1 (coreos/fleet ``api/*.go``, ``Documentation/api-v1.md``; fleet reference §1.7),
JSON; every answer carries ``Server: fleetd/<version>`` and errors are
``{"error": {"code": N, "message": "…"}}`` (an empty message where fleet sends none):

* ``GET /fleet/v1/units`` → ``{"units": [Unit…]}``; ``GET /fleet/v1/units/NAME`` → ``Unit``
  (404 ``unit does not exist``). A ``Unit`` is ``{name, options: [{section, name, value}],
  desiredState, currentState, machineID}``.
* ``PUT /fleet/v1/units/NAME`` (``api/units.go`` ``set``): ``Content-Type:
  application/json`` or 415; a body that is not a Unit object → 400 ``unable to decode body:
  …``; body name ≠ URL name → 400; invalid name → 400 (fleet's ``ValidateName`` message).
  A unit that does not exist needs options (409 ``unit does not exist and options field
  empty``) that pass ``ValidateOptions`` (400 with its message) and is created → 201 (target
  state ``desiredState``, default ``inactive``); options whose hash differs from the
  registry's replace the unit → 201. Otherwise ``desiredState`` is required (409 ``must
  provide DesiredState to update existing unit``), a template cannot be activated (400
  ``cannot activate template "NAME"``), and the target state is set → 204.
* ``DELETE /fleet/v1/units/NAME`` → 204, or 404 ``unit does not exist``.
* ``GET /fleet/v1/machines`` → ``{"machines": [{id, primaryIP, metadata}]}``.
* ``GET /fleet/v1/state`` → ``{"states": [{name, hash, machineID, systemdLoadState,
  systemdActiveState, systemdSubState}]}``; ``?machineID=`` and ``?unitName=`` filter.
* Other methods on the collection → 405 ``only GET supported against this resource``; on an
  item → 405 ``only GET, PUT and DELETE supported against this resource``; ``/`` → 405 and
  any other path → 404 (``api/mux.go``).

Differences: pagination tokens are not issued (every answer is one page); ``PATCH
/fleet/v1/machines`` is not served; an invalid ``desiredState`` is a 400 ``invalid value
"X" for JobState`` (fleet answered 500 on create and stored the value on update); a template
is never created active (fleet checked that on updates only); a KV store that cannot be
reached is a 503 (fleet: 500 with no message).

Extension (there is no SSH to a machine): ``GET /x-corral/v1/units/NAME/status`` answers this
machine's units-daemon status of NAME (``load_state``, ``active_state``, ``sub_state``,
``main_pid``, ``journal``…, version 1 of the units control API); ``GET
/x-corral/v1/units/NAME/journal?lines=N`` answers ``{"version": 1, "lines": [...]}``. Both are
404 when this machine's runner does not hold NAME and 501 for the in-memory runner. A fleetd
that serves HTTP publishes its URL at ``<prefix>/x-corral/api/<machine-id>`` (TTL
``agent_ttl``) so ``corral fleet status/journal`` can find the unit's machine; ``GET
/x-corral/v1/api-endpoints`` answers ``{"version": 1, "endpoints": {machine ID: URL}}`` from
any fleetd (for a ``corral fleet`` that talks to the API, not to the KV store).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

import corral
from corral.client import ClientError
from corral.fleet.errors import FleetError
from corral.fleet.registry import JobState, sorted_states
from corral.fleet.store import Registry
from corral.fleet.unitfile import UnitFile, UnitNameInfo, UnitOption, validate_name
from corral.fleet.units_runner import DaemonRunner
from corral.fleet.xfleet import validate_options
from corral.units.errors import UnitError, UnitNotFoundError

__all__ = ["EXTENSION_VERSION", "make_app"]

EXTENSION_VERSION = 1


def _error(status: int, message: str = "") -> web.Response:
    return web.json_response({"error": {"code": status, "message": message}}, status=status)


class BadBody(ValueError):
    """A PUT body that is not a fleet ``schema.Unit``."""


def _field(obj: dict[str, Any], name: str) -> Any:
    # Go's encoding/json matches field names case-insensitively
    for k, v in obj.items():
        if k.lower() == name.lower():
            return v
    return None


def _string(v: Any, what: str) -> str:
    if v is None:
        return ""
    if not isinstance(v, str):
        raise BadBody(f"json: cannot unmarshal {type(v).__name__} into {what} of type string")
    return v


def parse_unit_body(raw: bytes) -> tuple[str, list[UnitOption], str]:
    """(name, options, desiredState) of a PUT body, as fleet's ``schema.Unit`` decodes it."""
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise BadBody(str(exc)) from None
    if not isinstance(obj, dict):
        raise BadBody(f"json: cannot unmarshal {type(obj).__name__} into Go value of type Unit")
    name = _string(_field(obj, "name"), "Unit.name")
    desired = _string(_field(obj, "desiredState"), "Unit.desiredState")
    opts = _field(obj, "options") or []
    if not isinstance(opts, list):
        raise BadBody("json: cannot unmarshal options into Unit.options of type []UnitOption")
    options = []
    for o in opts:
        if not isinstance(o, dict):
            raise BadBody("json: cannot unmarshal option into Go value of type UnitOption")
        options.append(
            UnitOption(
                _string(_field(o, "section"), "UnitOption.section"),
                _string(_field(o, "name"), "UnitOption.name"),
                _string(_field(o, "value"), "UnitOption.value"),
            )
        )
    return name, options, desired


def _content_type_error(request: web.Request) -> str | None:
    """``validateContentType``: exactly one Content-Type, ``application/json``."""
    values = request.headers.getall("Content-Type", [])
    if len(values) != 1:
        return f"expected 1 Content-Type, got {len(values)}"
    if values[0].split(";", 1)[0].strip() != "application/json":
        return "only acceptable Content-Type is application/json"
    return None


def make_app(registry: Registry, runner: Any, machine_id: str) -> web.Application:
    """The aiohttp application for one machine (``runner`` is its :class:`UnitRunner`)."""

    async def snapshot_or_503() -> Any:
        try:
            return await registry.snapshot()
        except (ClientError, FleetError, OSError) as exc:
            raise _unavailable(exc) from None

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

    async def existing(name: str) -> Any:
        try:
            return await registry.unit(name)
        except (ClientError, FleetError, OSError) as exc:
            raise _unavailable(exc) from None

    async def put_unit(request: web.Request) -> web.Response:
        """``unitsResource.set`` (api/units.go), step by step."""
        bad_type = _content_type_error(request)
        if bad_type is not None:
            return _error(415, bad_type)
        try:
            name, options, desired = parse_unit_body(await request.read())
        except BadBody as exc:
            return _error(400, f"unable to decode body: {exc}")
        item = request.match_info["name"]
        name = name or item
        if name != item:
            return _error(
                400,
                f"name in URL {json.dumps(item)} differs from unit name in request body "
                f"{json.dumps(name)}",
            )
        try:
            validate_name(name)
        except FleetError as exc:
            return _error(400, str(exc))
        if desired:
            try:
                state = JobState(desired)
            except ValueError:
                return _error(400, f"invalid value {json.dumps(desired)} for JobState")
        eu = await existing(name)
        new = None
        if eu is None:
            if not options:
                return _error(409, "unit does not exist and options field empty")
            new = UnitFile.from_options(options)
            try:
                validate_options(new)
            except FleetError as exc:
                return _error(400, str(exc))
        elif options:
            # same name, different text: a new version (fleetctl --replace); same text with
            # a desiredState only sets the state
            candidate = UnitFile.from_options(options)
            if candidate.hash != eu.unit.hash:
                try:
                    validate_options(candidate)
                except FleetError as exc:
                    return _error(400, str(exc))
                new = candidate
        info = UnitNameInfo.of(name)
        activating = bool(desired) and state is not JobState.INACTIVE
        if info is not None and info.is_template and activating:
            return _error(400, f"cannot activate template {json.dumps(name)}")
        try:
            if new is not None:
                await registry.create_unit(name, new, state if desired else JobState.INACTIVE)
                return web.Response(status=201)
            if not desired:
                return _error(409, "must provide DesiredState to update existing unit")
            await registry.set_target_state(name, state)
        except (ClientError, FleetError, OSError) as exc:
            raise _unavailable(exc) from None
        return web.Response(status=204)

    async def delete_unit(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if await existing(name) is None:
            return _error(404, "unit does not exist")
        try:
            await registry.destroy_unit(name)
        except (ClientError, FleetError, OSError) as exc:
            raise _unavailable(exc) from None
        return web.Response(status=204)

    async def unit_item(request: web.Request) -> web.Response:
        if request.method in ("GET", "HEAD"):
            return await unit(request)
        if request.method == "PUT":
            return await put_unit(request)
        if request.method == "DELETE":
            return await delete_unit(request)
        return _error(405, "only GET, PUT and DELETE supported against this resource")

    async def units_collection(request: web.Request) -> web.Response:
        if request.method in ("GET", "HEAD"):
            return await units(request)
        return _error(405, "only GET supported against this resource")

    async def api_endpoints(request: web.Request) -> web.Response:
        try:
            found = await registry.api_endpoints()
        except (ClientError, FleetError, OSError) as exc:
            raise _unavailable(exc) from None
        return web.json_response({"version": EXTENSION_VERSION, "endpoints": found})

    async def base(request: web.Request) -> web.Response:
        return _error(405 if request.path == "/" else 404)

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

    @web.middleware
    async def server_info(request: web.Request, handler: Any) -> web.StreamResponse:
        # fleet's serverInfoMiddleware: clients tell fleetd's API from an etcd by this
        server = f"fleetd/{corral.__version__}"
        try:
            resp: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            exc.headers["Server"] = server
            raise
        resp.headers["Server"] = server
        return resp

    app = web.Application(middlewares=[server_info])
    app.router.add_route("*", "/fleet/v1/units", units_collection)
    app.router.add_route("*", "/fleet/v1/units/{name}", unit_item)
    app.router.add_get("/fleet/v1/machines", machines)
    app.router.add_get("/fleet/v1/state", state)
    app.router.add_get("/x-corral/v1/units/{name}/status", status)
    app.router.add_get("/x-corral/v1/units/{name}/journal", journal)
    app.router.add_get("/x-corral/v1/api-endpoints", api_endpoints)
    app.router.add_route("*", "/{tail:.*}", base)
    return app


def _unavailable(exc: BaseException) -> web.HTTPServiceUnavailable:
    body = {
        "error": {
            "code": 503,
            "message": f"fleet server unable to communicate with etcd ({type(exc).__name__})",
        }
    }
    return web.HTTPServiceUnavailable(text=json.dumps(body), content_type="application/json")
