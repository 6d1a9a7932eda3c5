"""fleetctl's output rules as pure functions: tabwriter tables, legends, field sets.

(fleet reference §3.2.) Go's ``tabwriter(minwidth 0, tabwidth 8, padding 1, padchar '\\t')``:
every column but the last is ``W = max cell width + 1`` rounded up to a multiple of 8, each
cell is followed by ⌈(W − width)/8⌉ tabs, the last column is unpadded. Empty cells print
``-``. Machine legends are ``<first 8>...`` (full ID with ``--full``) plus ``/<ip>`` if known.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from corral.fleet.registry import MachineState, RegistryUnit, UnitStateRecord
from corral.fleet.store import Snapshot
from corral.fleet.unitfile import short_hash
from corral.fleet.xfleet import requirements

__all__ = [
    "MACHINE_FIELDS",
    "UNIT_FIELDS",
    "UNIT_FILE_FIELDS",
    "FieldError",
    "machine_legend",
    "machines_table",
    "parse_fields",
    "tabwrite",
    "unit_files_table",
    "units_table",
]


class FieldError(ValueError):
    pass


def tabwrite(rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return ""
    ncols = max(len(r) for r in rows)
    widths = []
    for c in range(ncols - 1):
        w = max((len(r[c]) for r in rows if c < len(r) - 1), default=0) + 1
        widths.append(math.ceil(w / 8) * 8)
    out = []
    for r in rows:
        parts = []
        for c, cell in enumerate(r):
            if c < len(r) - 1:
                parts.append(cell + "\t" * math.ceil((widths[c] - len(cell)) / 8))
            else:
                parts.append(cell)
        out.append("".join(parts) + "\n")
    return "".join(out)


def machine_legend(mid: str, machines: Mapping[str, MachineState], full: bool) -> str:
    ms = machines.get(mid)
    ident = mid if full or len(mid) <= 8 else f"{mid[:8]}..."
    if ms is not None and ms.public_ip:
        return f"{ident}/{ms.public_ip}"
    return ident


def parse_fields(spec: str, valid: Sequence[str]) -> list[str]:
    if not spec.strip():
        raise FieldError("Must define output format")
    fields = spec.split(",")
    for f in fields:
        if f not in valid:
            raise FieldError(f'Invalid key in output format: "{f}"')
    return fields


def _table(fields: Sequence[str], rows: Sequence[Mapping[str, str]], legend: bool) -> str:
    body = [[(row.get(f) or "-") for f in fields] for row in rows]
    if legend:
        body.insert(0, [f.upper() for f in fields])
    return tabwrite(body)


MACHINE_FIELDS = ("machine", "ip", "metadata")


def machines_table(
    machines: Sequence[MachineState], fields: Sequence[str], full: bool, legend: bool
) -> str:
    rows = [
        {
            "machine": m.id if full else f"{m.id[:8]}...",
            "ip": m.public_ip,
            "metadata": ",".join(f"{k}={v}" for k, v in sorted(m.metadata.items())),
        }
        for m in sorted(machines, key=lambda m: m.id)
    ]
    return _table(fields, rows, legend)


UNIT_FIELDS = ("active", "hash", "load", "machine", "sub", "unit")


def units_table(
    states: Mapping[tuple[str, str], UnitStateRecord],
    machines: Sequence[MachineState],
    fields: Sequence[str],
    full: bool,
    legend: bool,
) -> str:
    by_id = {m.id: m for m in machines}
    rows = [
        {
            "unit": name,
            "machine": machine_legend(mid, by_id, full),
            "active": s.active_state,
            "sub": s.sub_state,
            "load": s.load_state,
            "hash": s.unit_hash if full else short_hash(s.unit_hash),
        }
        for (name, mid), s in sorted(states.items())
    ]
    return _table(fields, rows, legend)


UNIT_FILE_FIELDS = ("desc", "dstate", "global", "hash", "state", "target", "tmachine", "unit")


def unit_files_table(snap: Snapshot, fields: Sequence[str], full: bool, legend: bool) -> str:
    by_id = {m.id: m for m in snap.machines}
    rows = []
    for u in snap.units:
        is_global = requirements(u.unit, u.name).is_global
        cur = snap.current_state(u)
        target = (
            "global" if is_global else (machine_legend(u.target, by_id, full) if u.target else "")
        )
        rows.append(
            {
                "unit": u.name,
                "hash": u.unit.hash_hex if full else short_hash(u.unit.hash_hex),
                "dstate": u.target_state.value,
                "state": cur.value if cur is not None else "",
                "target": target,
                "tmachine": target,
                "desc": u.unit.description,
                "global": "true" if is_global else "false",
            }
        )
    return _table(fields, rows, legend)


def find(units: Sequence[RegistryUnit], name: str) -> RegistryUnit | None:
    return next((u for u in units if u.name == name), None)


Printer = Callable[[str], None]
