"""fleet API v1 client: what ``corral fleet`` needs, over fleetd's HTTP API (asyncio shell).

fleetctl's default driver talks to fleetd's API, not to etcd (coreos/fleet
``client/http.go``): units are created with ``PUT /fleet/v1/units/NAME`` (name, options,
desiredState), their target state is set with a ``PUT`` carrying only name and
desiredState, and they are destroyed with ``DELETE``. Reads are the ``GET`` resources
(following ``nextPageToken`` when a server pages). :class:`ApiRegistry` offers the same
operations as :class:`corral.fleet.store.Registry`, so the CLI runs unchanged on either.

The API has no scheduling call and no heartbeat: ``move`` needs the KV store, and the derived
current state comes from the API's ``currentState``. :func:`is_fleet_api` tells a fleetd from
an etcd by fleet's ``Server: fleetd/…`` header.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp

from corral.fleet.errors import FleetError
from corral.fleet.registry import JobState, MachineState, RegistryUnit, UnitStateRecord
from corral.fleet.store import Snapshot
from corral.fleet.unitfile import UnitFile, UnitOption

__all__ = ["ApiError", "ApiRegistry", "is_fleet_api"]


class ApiError(FleetError):
    """fleetd answered an error (``code`` is the HTTP status, the message fleet's)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message or f"fleet API answered {code}")
        self.code = code


async def is_fleet_api(endpoint: str, within: float) -> bool:
    """Does ``endpoint`` serve fleet's API (as opposed to an etcd)? False if unreachable."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within)) as sess,
            sess.get(endpoint.rstrip("/") + "/") as resp,
        ):
            return resp.headers.get("Server", "").startswith("fleetd/")
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


def _options(unit: UnitFile) -> list[dict[str, str]]:
    return [{"section": o.section, "name": o.name, "value": o.value} for o in unit.options]


class ApiRegistry:
    """The registry operations of :class:`~corral.fleet.store.Registry`, through fleetd."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.base = endpoint.rstrip("/")
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["data"] = json.dumps(body)
            kwargs["headers"] = {"Content-Type": "application/json"}
        try:
            async with self._session.request(method, self.base + path, **kwargs) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise FleetError(
                f"cannot reach fleet API at {self.base}: {exc or type(exc).__name__}"
            ) from None
        data: Any = None
        if raw.strip():
            try:
                data = json.loads(raw)
            except ValueError:
                raise FleetError(f"fleet API at {self.base} sent a malformed answer") from None
        if status >= 400:
            err = data.get("error") if isinstance(data, dict) else None
            message = str(err.get("message") or "") if isinstance(err, dict) else ""
            raise ApiError(status, message)
        return status, data

    async def _pages(self, path: str, field: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            sep = "&" if "?" in path else "?"
            _, data = await self._call(
                "GET", path + (f"{sep}nextPageToken={quote(token)}" if token else "")
            )
            if not isinstance(data, dict):
                raise FleetError(f"fleet API at {self.base} sent a malformed answer")
            out.extend(x for x in data.get(field) or [] if isinstance(x, dict))
            token = str(data.get("nextPageToken") or "")
            if not token:
                return out

    # --- reads --------------------------------------------------------------------------------

    @staticmethod
    def _unit(obj: dict[str, Any]) -> RegistryUnit:
        opts = [
            UnitOption(str(o.get("section", "")), str(o.get("name", "")), str(o.get("value", "")))
            for o in obj.get("options") or []
            if isinstance(o, dict)
        ]
        target = str(obj.get("machineID") or "")
        launched = obj.get("currentState") == JobState.LAUNCHED.value
        return RegistryUnit(
            str(obj.get("name", "")),
            UnitFile.from_options(opts),
            JobState.parse(str(obj.get("desiredState") or "inactive")),
            target,
            target if launched else "",  # the API shows the derived state, not the heartbeat
        )

    async def units(self) -> tuple[list[RegistryUnit], list[str]]:
        units = [self._unit(u) for u in await self._pages("/fleet/v1/units", "units")]
        return sorted(units, key=lambda u: u.name), []

    async def unit(self, name: str) -> RegistryUnit | None:
        try:
            _, data = await self._call("GET", f"/fleet/v1/units/{quote(name, safe='')}")
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise
        return self._unit(data) if isinstance(data, dict) else None

    async def machines(self) -> list[MachineState]:
        out = [
            MachineState(
                str(m.get("id", "")),
                str(m.get("primaryIP") or ""),
                {str(k): str(v) for k, v in (m.get("metadata") or {}).items()},
            )
            for m in await self._pages("/fleet/v1/machines", "machines")
        ]
        return sorted(out, key=lambda m: m.id)

    async def states(self) -> dict[tuple[str, str], UnitStateRecord]:
        out: dict[tuple[str, str], UnitStateRecord] = {}
        for s in await self._pages("/fleet/v1/state", "states"):
            name, mid = str(s.get("name", "")), str(s.get("machineID", ""))
            out[(name, mid)] = UnitStateRecord(
                str(s.get("systemdLoadState", "")),
                str(s.get("systemdActiveState", "")),
                str(s.get("systemdSubState", "")),
                mid,
                str(s.get("hash", "")),
            )
        return out

    async def snapshot(self) -> Snapshot:
        units, problems = await self.units()
        return Snapshot(units, await self.machines(), await self.states(), problems)

    async def api_endpoints(self) -> dict[str, str]:
        _, data = await self._call("GET", "/x-corral/v1/api-endpoints")
        found = data.get("endpoints") if isinstance(data, dict) else None
        return {str(k): str(v) for k, v in (found or {}).items()}

    # --- writes -------------------------------------------------------------------------------

    async def create_unit(
        self, name: str, unit: UnitFile, target_state: JobState = JobState.INACTIVE
    ) -> None:
        body = {"name": name, "options": _options(unit), "desiredState": target_state.value}
        await self._call("PUT", f"/fleet/v1/units/{quote(name, safe='')}", body)

    async def set_target_state(self, name: str, state: JobState) -> None:
        body = {"name": name, "desiredState": state.value}
        await self._call("PUT", f"/fleet/v1/units/{quote(name, safe='')}", body)

    async def destroy_unit(self, name: str) -> bool:
        try:
            await self._call("DELETE", f"/fleet/v1/units/{quote(name, safe='')}")
        except ApiError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    async def schedule_unit(self, name: str, machine_id: str) -> bool:
        raise FleetError("fleet's API cannot schedule a unit: use --driver etcd for move")

    async def unschedule_unit(self, name: str, machine_id: str) -> bool:
        raise FleetError("fleet's API cannot schedule a unit: use --driver etcd for move")
