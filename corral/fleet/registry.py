"""fleet's registry schema in the etcd v2 keyspace: key paths and value codecs (pure).

Layout under the prefix ``P`` (default ``/_coreos.com/fleet/``; coreos/fleet
``registry/*.go``, fleet reference §1.2)::

    P/machines/<id>/object          {"ID","PublicIP","Metadata","Capabilities","Version"}  TTL
    P/machines/<id>/metadata/<key>  string; "" masks a static key              (API PATCH)
    P/job/<unit>/object             {"Name":"a.service","UnitHash":[20 ints]}
    P/job/<unit>/target-state       inactive | loaded | launched
    P/job/<unit>/target             machine id (engine; create-only, compare-and-delete)
    P/job/<unit>/job-state          machine id: the agent's "launched" heartbeat        TTL
    P/unit/<sha1 hex>               {"Raw":"<canonical unit text>"}
    P/states/<unit>/<id>            {"loadState","activeState","subState",
                                     "machineState":{...},"unitHash"}                   TTL
    P/state/<unit>                  same (legacy; last writer wins)                     TTL
    P/lease/engine-leader           {"MachineID":"…","Version":1} (bare id = version 0)  TTL
    P/engine/version                "1"

Values are written byte-for-byte as Go's ``encoding/json`` writes them (struct field order,
sorted map keys, no spaces, ``<>&`` escaped), so a corral cluster and fleet can share a
registry. The version of this layout is fleet's engine version (``P/engine/version``); it is
what an engine checks before it takes part.

Decoding works on the node trees of v2 ``GET ?recursive=true`` answers (``{"key","value",
"dir","nodes"}`` dicts), so the same functions serve corral's client and a raw etcd.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.fleet.errors import RegistryFormatError
from corral.fleet.unitfile import UnitFile

__all__ = [
    "DEFAULT_PREFIX",
    "ENGINE_VERSION",
    "JobState",
    "Keys",
    "LeaseInfo",
    "MachineState",
    "RegistryUnit",
    "UnitStateRecord",
    "current_state",
    "decode_job_object",
    "decode_lease",
    "decode_machine_state",
    "decode_machines",
    "decode_states",
    "decode_unit_blob",
    "decode_unit_state",
    "decode_units",
    "encode_job_object",
    "encode_lease",
    "encode_machine_state",
    "encode_unit_blob",
    "encode_unit_state",
    "go_json",
]

DEFAULT_PREFIX = "/_coreos.com/fleet/"
ENGINE_VERSION = 1


class JobState(enum.StrEnum):
    """fleet's cluster-level unit states (desired and derived current)."""

    INACTIVE = "inactive"
    LOADED = "loaded"
    LAUNCHED = "launched"

    @classmethod
    def parse(cls, value: str) -> JobState:
        try:
            return cls(value)
        except ValueError:
            raise RegistryFormatError(f"invalid value {value!r} for JobState") from None


_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_GO_ESCAPES.update({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})
_GO_ESCAPES.update({"\u2028": "\\u2028", "\u2029": "\\u2029"})


def _go_str(s: str) -> str:
    out = ['"']
    for ch in s:
        esc = _GO_ESCAPES.get(ch)
        if esc is None and ch < " ":
            esc = f"\\u{ord(ch):04x}"
        out.append(esc if esc is not None else ch)
    out.append('"')
    return "".join(out)


def go_json(value: Any) -> str:
    """JSON as Go's ``json.Marshal`` writes it: compact, UTF-8, ``<>&`` and U+2028/9
    escaped, other control characters as ``\\u00XX``. Dicts keep insertion order (Go
    structs keep field order; callers sort map keys)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _go_str(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_go_str(str(k))}:{go_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__}")


def _loads(value: str, what: str) -> Any:
    try:
        return json.loads(value)
    except (ValueError, TypeError) as exc:
        raise RegistryFormatError(f"unable to parse {what}: {exc}") from None


@dataclass(frozen=True)
class Keys:
    """Key paths under one prefix (``etcd_key_prefix``)."""

    prefix: str = DEFAULT_PREFIX

    def _p(self, *parts: str) -> str:
        return "/" + "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    @property
    def machines(self) -> str:
        return self._p("machines")

    def machine(self, machine_id: str) -> str:
        return self._p("machines", machine_id)

    def machine_object(self, machine_id: str) -> str:
        return self._p("machines", machine_id, "object")

    def machine_metadata(self, machine_id: str, key: str) -> str:
        return self._p("machines", machine_id, "metadata", key)

    @property
    def jobs(self) -> str:
        return self._p("job")

    def job(self, unit: str) -> str:
        return self._p("job", unit)

    def job_object(self, unit: str) -> str:
        return self._p("job", unit, "object")

    def job_target_state(self, unit: str) -> str:
        return self._p("job", unit, "target-state")

    def job_target(self, unit: str) -> str:
        return self._p("job", unit, "target")

    def job_heartbeat(self, unit: str) -> str:
        return self._p("job", unit, "job-state")

    @property
    def unit_blobs(self) -> str:
        return self._p("unit")

    def unit_blob(self, hash_hex: str) -> str:
        return self._p("unit", hash_hex)

    @property
    def states(self) -> str:
        return self._p("states")

    def unit_state(self, unit: str, machine_id: str) -> str:
        return self._p("states", unit, machine_id)

    def legacy_state(self, unit: str) -> str:
        return self._p("state", unit)

    @property
    def engine_lease(self) -> str:
        return self._p("lease", "engine-leader")

    @property
    def engine_version(self) -> str:
        return self._p("engine", "version")

    @property
    def api_endpoints(self) -> str:
        """corral extension: where each machine's fleetd serves HTTP (fleet ignores it)."""
        return self._p("x-corral", "api")

    def api_endpoint(self, machine_id: str) -> str:
        return self._p("x-corral", "api", machine_id)


# --- values ------------------------------------------------------------------------------


def encode_job_object(name: str, unit_hash: bytes) -> str:
    if len(unit_hash) != 20:
        raise RegistryFormatError(f"unit hash must be 20 bytes, not {len(unit_hash)}")
    return go_json({"Name": name, "UnitHash": list(unit_hash)})


def decode_job_object(value: str) -> tuple[str, bytes]:
    obj = _loads(value, "job object")
    try:
        name, raw = obj["Name"], obj["UnitHash"]
        if not isinstance(name, str) or len(raw) != 20:
            raise ValueError("wrong shape")
        return name, bytes(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryFormatError(f"unable to parse job object: {exc}") from None


def encode_unit_blob(unit: UnitFile) -> str:
    return go_json({"Raw": unit.text})


def decode_unit_blob(value: str) -> UnitFile:
    obj = _loads(value, "unit blob")
    if not isinstance(obj, dict) or not isinstance(obj.get("Raw"), str):
        raise RegistryFormatError("unable to parse unit blob: no Raw text")
    return UnitFile.parse(obj["Raw"])


@dataclass(frozen=True)
class MachineState:
    """``machine.MachineState``: a machine as the registry publishes it."""

    id: str
    public_ip: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    capabilities: Mapping[str, bool] | None = None
    version: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def match_id(self, wanted: str) -> bool:
        """Full ID or the 8-character short ID (``MachineState.MatchID``)."""
        return wanted in (self.id, self.short_id)


def encode_machine_state(ms: MachineState) -> str:
    return go_json(
        {
            "ID": ms.id,
            "PublicIP": ms.public_ip,
            "Metadata": dict(sorted(ms.metadata.items())) if ms.metadata else None,
            "Capabilities": dict(sorted(ms.capabilities.items())) if ms.capabilities else None,
            "Version": ms.version,
        }
    )


def decode_machine_state(value: str, dynamic: Mapping[str, str] | None = None) -> MachineState:
    """Decodes an ``object`` value and overlays ``metadata/`` keys (``""`` deletes a key)."""
    obj = _loads(value, "machine state")
    if not isinstance(obj, dict):
        raise RegistryFormatError("unable to parse machine state: not an object")
    meta = dict(obj.get("Metadata") or {})
    for k, v in (dynamic or {}).items():
        if v == "":
            meta.pop(k, None)
        else:
            meta[k] = v
    return MachineState(
        id=str(obj.get("ID") or ""),
        public_ip=str(obj.get("PublicIP") or ""),
        metadata=meta,
        capabilities=obj.get("Capabilities") or None,
        version=str(obj.get("Version") or ""),
    )


def _children(node: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    return list((node or {}).get("nodes") or [])


def _base(key: str) -> str:
    return key.rstrip("/").rsplit("/", 1)[-1]


def decode_machines(machines_dir: Mapping[str, Any] | None) -> list[MachineState]:
    """``Registry.Machines``: every ``machines/<id>`` with an ``object``, sorted by ID."""
    out = []
    for mnode in _children(machines_dir):
        obj_value: str | None = None
        dynamic: dict[str, str] = {}
        for child in _children(mnode):
            name = _base(child["key"])
            if name == "object":
                obj_value = child.get("value")
            elif name == "metadata":
                dynamic = {_base(m["key"]): m.get("value", "") for m in _children(child)}
        if obj_value is None:
            continue
        ms = decode_machine_state(obj_value, dynamic)
        if ms.id:
            out.append(ms)
    return sorted(out, key=lambda m: m.id)


@dataclass(frozen=True)
class UnitStateRecord:
    """What an agent publishes about one unit (systemd's view on that machine)."""

    load_state: str
    active_state: str
    sub_state: str
    machine_id: str
    unit_hash: str


def encode_unit_state(us: UnitStateRecord) -> str:
    machine: dict[str, Any] | None = None
    if us.machine_id:
        machine = json.loads(encode_machine_state(MachineState(id=us.machine_id)))
    return go_json(
        {
            "loadState": us.load_state,
            "activeState": us.active_state,
            "subState": us.sub_state,
            "machineState": machine,
            "unitHash": us.unit_hash,
        }
    )


def decode_unit_state(value: str) -> UnitStateRecord:
    obj = _loads(value, "unit state")
    if not isinstance(obj, dict):
        raise RegistryFormatError("unable to parse unit state: not an object")
    ms = obj.get("machineState") or {}
    return UnitStateRecord(
        load_state=str(obj.get("loadState", "")),
        active_state=str(obj.get("activeState", "")),
        sub_state=str(obj.get("subState", "")),
        machine_id=str(ms.get("ID", "")) if isinstance(ms, dict) else "",
        unit_hash=str(obj.get("unitHash", "")),
    )


@dataclass(frozen=True)
class LeaseInfo:
    machine_id: str
    version: int


def encode_lease(machine_id: str, version: int = ENGINE_VERSION) -> str:
    return go_json({"MachineID": machine_id, "Version": version})


def decode_lease(value: str) -> LeaseInfo:
    """A JSON lease, or the bare machine ID older engines wrote (version 0)."""
    try:
        obj = json.loads(value)
    except ValueError:
        return LeaseInfo(value, 0)
    if isinstance(obj, dict) and isinstance(obj.get("MachineID"), str):
        return LeaseInfo(obj["MachineID"], int(obj.get("Version") or 0))
    return LeaseInfo(value, 0)


# --- units ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryUnit:
    """One ``job/<unit>`` directory joined with its unit blob."""

    name: str
    unit: UnitFile
    target_state: JobState
    target: str = ""
    heartbeat: str = ""


def decode_units(
    jobs_dir: Mapping[str, Any] | None,
    blobs_dir: Mapping[str, Any] | None,
    parsed: dict[str, UnitFile] | None = None,
) -> tuple[list[RegistryUnit], list[str]]:
    """``Registry.Units`` + ``Schedule``: (units sorted by name, problems skipped).

    A job whose blob is missing or unparsable is skipped with a problem line, as fleet
    logs and skips it. ``parsed`` caches blobs by hash across calls (blobs never change:
    their key is the hash of their text)."""
    blobs: dict[str, UnitFile] = {}
    problems: list[str] = []
    cache = parsed if parsed is not None else {}
    for b in _children(blobs_dir):
        h = _base(b["key"])
        if h in cache:
            blobs[h] = cache[h]
            continue
        try:
            blobs[h] = cache[h] = decode_unit_blob(b.get("value", ""))
        except Exception as exc:  # any bad blob is reported, never fatal
            problems.append(f"unit {h}: {exc}")
    out = []
    for jnode in _children(jobs_dir):
        vals = {_base(c["key"]): c.get("value", "") for c in _children(jnode) if not c.get("dir")}
        if "object" not in vals:
            continue
        try:
            name, digest = decode_job_object(vals["object"])
            state = JobState.parse(vals.get("target-state") or "inactive")
        except RegistryFormatError as exc:
            problems.append(f"job {_base(jnode['key'])}: {exc}")
            continue
        unit = blobs.get(digest.hex()) or cache.get(digest.hex())
        if unit is None:
            problems.append(f"No Unit found in Registry for Job({name})")
            continue
        out.append(
            RegistryUnit(name, unit, state, vals.get("target", ""), vals.get("job-state", ""))
        )
    return sorted(out, key=lambda u: u.name), problems


def current_state(target: str, heartbeat: str, state_machines: Iterable[str]) -> JobState | None:
    """Derived current state of a non-global unit (``registry/job_state.go``)."""
    if not target or target not in set(state_machines):
        return JobState.INACTIVE
    if heartbeat != target:
        return JobState.LOADED
    return JobState.LAUNCHED


def decode_states(states_dir: Mapping[str, Any] | None) -> dict[tuple[str, str], UnitStateRecord]:
    """``states/<unit>/<machine>`` → {(unit, machine): record}; bad values skipped."""
    out: dict[tuple[str, str], UnitStateRecord] = {}
    for unode in _children(states_dir):
        for mnode in _children(unode):
            try:
                out[(_base(unode["key"]), _base(mnode["key"]))] = decode_unit_state(
                    mnode.get("value", "")
                )
            except RegistryFormatError:
                continue
    return out


def sorted_states(
    states: Mapping[tuple[str, str], UnitStateRecord],
) -> Sequence[tuple[str, str, UnitStateRecord]]:
    return [(u, m, s) for (u, m), s in sorted(states.items())]
