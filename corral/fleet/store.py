"""fleet's registry operations over corral's v2 client (asyncio shell).

Each method is one of coreos/fleet ``registry/*.go``'s operations with the same conditional
write (fleet reference §1.2): unit blobs and ``target`` are create-only, unscheduling is a
compare-and-delete on the machine ID, presence keys carry the agent TTL. Values go through the
pure codecs in :mod:`corral.fleet.registry`.

The store is reached only through :class:`corral.client.AsyncClient` (endpoint failover,
``OutcomeUnknown`` for writes that may have landed, one error class per etcd code). :class:`KV`
adapts it to the v2 JSON node shape the codecs decode and counts the requests fleet makes.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any, Protocol

from corral.client import EtcdError, KeyNotFound, Node
from corral.client.aio import AsyncClient
from corral.client.protocol import KeyResult
from corral.fleet.registry import (
    ENGINE_VERSION,
    JobState,
    Keys,
    LeaseInfo,
    MachineState,
    RegistryUnit,
    UnitStateRecord,
    current_state,
    decode_lease,
    decode_machines,
    decode_states,
    decode_unit_blob,
    decode_units,
    encode_job_object,
    encode_lease,
    encode_machine_state,
    encode_unit_blob,
    encode_unit_state,
)
from corral.fleet.unitfile import UnitFile
from corral.fleet.view import JobsView
from corral.fleet.xfleet import requirements

__all__ = ["KV", "FleetStore", "Registry", "Snapshot", "node_json", "sleep_or"]

KEY_NOT_FOUND = 100
TEST_FAILED = 101
NODE_EXIST = 105

KVError = EtcdError  # the store refused a request (``code`` is etcd's errorCode)


def node_json(node: Node) -> dict[str, Any]:
    """A client :class:`~corral.client.Node` in the v2 API's JSON shape."""
    out: dict[str, Any] = {
        "key": node.key,
        "modifiedIndex": node.modified_index,
        "createdIndex": node.created_index,
    }
    if node.dir:
        out["dir"] = True
        out["nodes"] = [node_json(n) for n in node.nodes]
    else:
        out["value"] = node.value or ""
    if node.ttl is not None:
        out["ttl"] = node.ttl
    return out


class KV:
    """The keys operations fleet uses, on one :class:`AsyncClient`; counts requests."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.requests = 0
        self._written: dict[str, str] = {}  # TTL keys this client set, for refresh()

    async def get(self, key: str, *, recursive: bool = False) -> dict[str, Any] | None:
        self.requests += 1
        try:
            r = await self.client.get(key, recursive=recursive, sorted=recursive)
        except KeyNotFound:
            return None
        return node_json(r.node) if r.node is not None else None

    async def set(
        self,
        key: str,
        value: str,
        *,
        ttl: float | None = None,
        prev_exist: bool | None = None,
        prev_value: str | None = None,
    ) -> int:
        """Returns the write's etcd index."""
        self.requests += 1
        # v2 TTLs are whole seconds; round up so a key never expires before its period
        whole = None if ttl is None else max(1, math.ceil(ttl))
        r = await self.client.set(
            key, value, ttl=whole, prev_exist=prev_exist, prev_value=prev_value
        )
        return _index(r)

    async def set_ttl(self, key: str, value: str, ttl: float) -> None:
        """Set a TTL key and remember the value, so :meth:`refresh` may extend it."""
        await self.set(key, value, ttl=ttl)
        self._written[key] = value

    async def refresh(self, key: str, value: str, ttl: float) -> None:
        """Extend a TTL without a watch event when this client last wrote ``value`` there
        (v2 ``refresh=true&prevExist=true``: "refreshes the TTL without notifying
        watchers"), else — or if the key expired — set it. The key holds ``value`` with
        ``ttl`` either way, as fleet's periodic ``Set`` leaves it, but watchers of the
        subtree do not fetch an event for every refresh."""
        if self._written.get(key) == value:
            self.requests += 1
            try:
                await self.client.refresh(key, max(1, math.ceil(ttl)), prev_exist=True)
                return
            except KeyNotFound:
                pass
        await self.set_ttl(key, value, ttl)

    async def delete(
        self, key: str, *, recursive: bool = False, prev_value: str | None = None
    ) -> int:
        """Returns the delete's etcd index."""
        self.requests += 1
        self._written.pop(key, None)
        if prev_value is not None:
            return _index(await self.client.compare_and_delete(key, prev_value=prev_value))
        return _index(await self.client.delete(key, recursive=recursive))

    async def close(self) -> None:
        await self.client.aclose()


def _index(r: KeyResult) -> int:
    return r.node.modified_index if r.node is not None else r.etcd_index


async def sleep_or(event: asyncio.Event, seconds: float) -> bool:
    """Waits ``seconds`` or until ``event`` is set; True if the event fired."""
    try:
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
        # arrives as the event fires, and a stopped machine would then never stop
        async with asyncio.timeout(max(0.0, seconds)):
            await event.wait()
    except TimeoutError:
        return False
    return True


def _ignore(exc: KVError, *codes: int) -> None:
    if exc.code not in codes:
        raise exc


@dataclass(frozen=True)
class Snapshot:
    """Everything a reconciler reads in one round."""

    units: list[RegistryUnit]
    machines: list[MachineState]
    states: dict[tuple[str, str], UnitStateRecord]
    problems: list[str]

    def current_state(self, unit: RegistryUnit) -> JobState | None:
        if _is_global(unit):
            return None
        machines = [m for (u, m) in self.states if u == unit.name]
        return current_state(unit.target, unit.heartbeat, machines)


def _is_global(unit: RegistryUnit) -> bool:
    return requirements(unit.unit, unit.name).is_global


class FleetStore(Protocol):
    """The registry operations ``corral fleet`` uses: :class:`Registry` (the KV store, like
    ``fleetctl --driver=etcd``) or :class:`corral.fleet.api_client.ApiRegistry` (fleetd's
    HTTP API, fleetctl's default driver)."""

    async def units(self) -> tuple[list[RegistryUnit], list[str]]: ...

    async def unit(self, name: str) -> RegistryUnit | None: ...

    async def snapshot(self) -> Snapshot: ...

    async def machines(self) -> list[MachineState]: ...

    async def api_endpoints(self) -> dict[str, str]: ...

    async def create_unit(
        self, name: str, unit: UnitFile, target_state: JobState = JobState.INACTIVE
    ) -> None: ...

    async def set_target_state(self, name: str, state: JobState) -> None: ...

    async def destroy_unit(self, name: str) -> bool: ...

    async def schedule_unit(self, name: str, machine_id: str) -> bool: ...

    async def unschedule_unit(self, name: str, machine_id: str) -> bool: ...

    async def close(self) -> None: ...


class Registry:
    def __init__(self, client: AsyncClient | KV, prefix: str = Keys().prefix) -> None:
        self.kv = client if isinstance(client, KV) else KV(client)
        self.keys = Keys(prefix)
        self._parsed: dict[str, UnitFile] = {}  # blob hash → parsed unit (immutable)
        self._bad_blobs: set[str] = set()
        # unit → (machine, "" when unscheduled; etcd index) of this registry's scheduling
        # writes, for a reader whose view of job/ may not show them yet
        self.target_writes: dict[str, tuple[str, int]] = {}

    async def close(self) -> None:
        await self.kv.close()

    # --- units --------------------------------------------------------------------------------

    async def units(self) -> tuple[list[RegistryUnit], list[str]]:
        jobs = await self.kv.get(self.keys.jobs, recursive=True)
        # Blobs are immutable (named by hash): read them only when a job names a new one.
        units, problems = decode_units(jobs, None, self._parsed)
        if any(p.startswith("No Unit found") for p in problems):
            blobs = await self.kv.get(self.keys.unit_blobs, recursive=True)
            units, problems = decode_units(jobs, blobs, self._parsed)
        return units, problems

    def parsed(self, hash_hex: str) -> UnitFile | None:
        """A unit blob already read (blobs never change: their key is their hash)."""
        return self._parsed.get(hash_hex)

    async def units_from_view(self, view: JobsView) -> tuple[list[RegistryUnit], list[str]]:
        """``units()`` answered from a followed ``job/`` view; only blobs not seen before
        are read, one key each."""
        units, problems, missing = view.units(self._parsed)
        fetched = False
        for h in sorted(missing - self._bad_blobs):
            node = await self.kv.get(self.keys.unit_blob(h))
            if node is None:
                continue  # a job whose blob is not written (yet): skipped, as fleet does
            try:
                self._parsed[h] = decode_unit_blob(str(node.get("value", "")))
            except Exception:  # any bad blob is reported as missing, never fatal
                self._bad_blobs.add(h)
                continue
            fetched = True
        if fetched:
            units, problems, _ = view.units(self._parsed)
        return units, problems

    async def unit(self, name: str) -> RegistryUnit | None:
        units, _ = await self.units()
        return next((u for u in units if u.name == name), None)

    async def snapshot(self) -> Snapshot:
        units, problems = await self.units()
        machines = await self.machines()
        states = decode_states(await self.kv.get(self.keys.states, recursive=True))
        return Snapshot(units, machines, states, problems)

    async def create_unit(
        self, name: str, unit: UnitFile, target_state: JobState = JobState.INACTIVE
    ) -> None:
        """``CreateUnit``: blob (create-only, "exists" is fine), job object (overwrite, which
        is how ``--replace`` works), target state."""
        try:
            await self.kv.set(
                self.keys.unit_blob(unit.hash_hex), encode_unit_blob(unit), prev_exist=False
            )
        except KVError as exc:
            _ignore(exc, NODE_EXIST)
        await self.kv.set(self.keys.job_object(name), encode_job_object(name, unit.hash))
        await self.set_target_state(name, target_state)

    async def set_target_state(self, name: str, state: JobState) -> None:
        await self.kv.set(self.keys.job_target_state(name), state.value)

    async def destroy_unit(self, name: str) -> bool:
        """Recursive delete of ``job/<name>``; False if it did not exist."""
        try:
            await self.kv.delete(self.keys.job(name), recursive=True)
        except KVError as exc:
            _ignore(exc, KEY_NOT_FOUND)
            return False
        return True

    async def schedule_unit(self, name: str, machine_id: str) -> bool:
        try:
            index = await self.kv.set(self.keys.job_target(name), machine_id, prev_exist=False)
        except KVError as exc:
            _ignore(exc, NODE_EXIST)
            return False
        self.target_writes[name] = (machine_id, index)
        return True

    async def unschedule_unit(self, name: str, machine_id: str) -> bool:
        try:
            index = await self.kv.delete(self.keys.job_target(name), prev_value=machine_id)
        except KVError as exc:
            _ignore(exc, KEY_NOT_FOUND, TEST_FAILED)
            return False
        self.target_writes[name] = ("", index)
        return True

    async def set_heartbeat(self, name: str, machine_id: str, ttl: float) -> None:
        await self.kv.set_ttl(self.keys.job_heartbeat(name), machine_id, ttl)

    async def refresh_heartbeat(self, name: str, machine_id: str, ttl: float) -> None:
        """The periodic "launched" heartbeat: a TTL refresh while the value is ours."""
        await self.kv.refresh(self.keys.job_heartbeat(name), machine_id, ttl)

    async def clear_heartbeat(self, name: str, machine_id: str) -> None:
        try:
            await self.kv.delete(self.keys.job_heartbeat(name), prev_value=machine_id)
        except KVError as exc:
            _ignore(exc, KEY_NOT_FOUND, TEST_FAILED)

    # --- machines -----------------------------------------------------------------------------

    async def machines(self) -> list[MachineState]:
        return decode_machines(await self.kv.get(self.keys.machines, recursive=True))

    async def machine(self, machine_id: str) -> MachineState | None:
        node = await self.kv.get(self.keys.machine(machine_id), recursive=True)
        if node is None:
            return None
        found = decode_machines({"nodes": [node]})
        return found[0] if found else None

    async def register_machine(self, ms: MachineState, ttl: float) -> None:
        """Create-only: a duplicate machine ID fails here (``KVError`` 105)."""
        await self.kv.set(
            self.keys.machine_object(ms.id), encode_machine_state(ms), ttl=ttl, prev_exist=False
        )

    async def beat(self, ms: MachineState, ttl: float) -> None:
        """Refresh presence, re-creating the key if it expired."""
        await self.kv.refresh(self.keys.machine_object(ms.id), encode_machine_state(ms), ttl)

    async def remove_machine(self, machine_id: str) -> None:
        try:
            await self.kv.delete(self.keys.machine_object(machine_id))
        except KVError as exc:
            _ignore(exc, KEY_NOT_FOUND)

    async def publish_api(self, machine_id: str, url: str, ttl: float) -> None:
        await self.kv.set(self.keys.api_endpoint(machine_id), url, ttl=ttl)

    async def remove_api(self, machine_id: str) -> None:
        try:
            await self.kv.delete(self.keys.api_endpoint(machine_id))
        except KVError as exc:
            _ignore(exc, KEY_NOT_FOUND)

    async def api_endpoints(self) -> dict[str, str]:
        """machine ID → URL of its fleetd's HTTP API (live machines only: the keys expire)."""
        try:
            node = await self.kv.get(self.keys.api_endpoints, recursive=True)
        except KVError as exc:
            _ignore(exc, KEY_NOT_FOUND)
            return {}
        out: dict[str, str] = {}
        for child in (node or {}).get("nodes") or []:
            out[str(child.get("key", "")).rsplit("/", 1)[-1]] = str(child.get("value", ""))
        return out

    async def set_machine_metadata(self, machine_id: str, key: str, value: str) -> None:
        await self.kv.set(self.keys.machine_metadata(machine_id, key), value)

    # --- unit states --------------------------------------------------------------------------

    async def save_unit_state(self, name: str, rec: UnitStateRecord, ttl: float) -> None:
        """Publish (or, unchanged, refresh) a unit's state and the legacy key."""
        value = encode_unit_state(rec)
        await self.kv.refresh(self.keys.unit_state(name, rec.machine_id), value, ttl)
        await self.kv.refresh(self.keys.legacy_state(name), value, ttl)

    async def remove_unit_state(self, name: str, machine_id: str) -> None:
        try:
            await self.kv.delete(self.keys.unit_state(name, machine_id))
        except KVError as exc:
            _ignore(exc, KEY_NOT_FOUND)

    # --- engine lease -------------------------------------------------------------------------

    async def ensure_engine_version(self) -> bool:
        """CAS the cluster's engine version up to ours; False if the cluster is newer."""
        node = await self.kv.get(self.keys.engine_version)
        current = int(node.get("value") or 0) if node else 0
        if current > ENGINE_VERSION:
            return False
        if current < ENGINE_VERSION:
            try:
                if node is None:
                    await self.kv.set(
                        self.keys.engine_version, str(ENGINE_VERSION), prev_exist=False
                    )
                else:
                    await self.kv.set(
                        self.keys.engine_version, str(ENGINE_VERSION), prev_value=str(current)
                    )
            except KVError as exc:
                _ignore(exc, NODE_EXIST, TEST_FAILED)
        return True

    async def lease(self) -> LeaseInfo | None:
        node = await self.kv.get(self.keys.engine_lease)
        return decode_lease(node["value"]) if node else None

    async def acquire_lease(self, machine_id: str, ttl: float) -> bool:
        try:
            await self.kv.set(
                self.keys.engine_lease, encode_lease(machine_id), ttl=ttl, prev_exist=False
            )
        except KVError as exc:
            _ignore(exc, NODE_EXIST)
            return False
        return True

    async def renew_lease(self, machine_id: str, ttl: float) -> bool:
        value = encode_lease(machine_id)
        try:
            await self.kv.set(self.keys.engine_lease, value, ttl=ttl, prev_value=value)
        except KVError as exc:
            _ignore(exc, KEY_NOT_FOUND, TEST_FAILED)
            return False
        return True

    async def release_lease(self, machine_id: str) -> None:
        try:
            await self.kv.delete(self.keys.engine_lease, prev_value=encode_lease(machine_id))
        except KVError as exc:
            _ignore(exc, KEY_NOT_FOUND, TEST_FAILED)
