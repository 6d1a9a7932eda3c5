"""The ``[X-Fleet]`` section: placement requirements, their validation, and Go's globs.

Theory (coreos/fleet ``job/job.go``, ``unit/unit.go``, ``api/units.go``; fleet reference
§2.3–§2.4):

* A raw value that starts **and** ends with ``"`` is split on spaces outside quotes, quotes
  dropped (``"a" "b"`` → ``a``, ``b``); any other value is one value, verbatim.
* Then the specifiers ``%n %N %p %i`` are replaced, in that order, by plain substitution
  (no ``%%``). Validation at submit time has no unit name, so it sees them unexpanded.
* ``MachineID`` (first value; falling back to ``X-ConditionMachineID`` then
  ``X-ConditionMachineBootID``) matches a machine's full or 8-character short ID.
* ``MachineMetadata`` values are ``k=v`` (exactly one ``=``, both sides non-empty; anything
  else is silently ignored): same key OR-ed, different keys AND-ed.
* ``MachineOf`` lists exact unit names; ``Conflicts`` and ``Replaces`` list Go
  ``path.Match`` globs (``Conflicts`` values are also split on whitespace).
* ``Global``: the last value decides; truthy is ``true yes 1 on t`` in any case.

corral adds one opt-in key, ``Spread`` (a soft preference, never a rule; see
``docs/fleet.md``): a truthy value spreads a template's instances over machines, a list of
globs spreads the unit away from units matching them. Real fleet treats it as an unknown key
(a client warning, otherwise ignored), so unit files stay portable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from corral.fleet.errors import RequirementsError
from corral.fleet.unitfile import UnitFile, UnitNameInfo, deserialize

__all__ = [
    "VALID_KEYS",
    "Requirements",
    "check_combination",
    "glob_match",
    "is_truthy",
    "parse_multivalue",
    "requirements",
    "unrecognized_keys",
    "validate_options",
]

SECTION = "X-Fleet"
SPREAD = "Spread"
VALID_KEYS = frozenset(
    {
        "MachineID",
        "X-ConditionMachineID",
        "X-ConditionMachineBootID",
        "X-ConditionMachineOf",
        "MachineOf",
        "X-Conflicts",
        "Conflicts",
        "X-ConditionMachineMetadata",
        "MachineMetadata",
        "Global",
        "Replaces",
        SPREAD,
    }
)
_TRUTHY = frozenset({"true", "yes", "1", "on", "t"})


def is_truthy(value: str) -> bool:
    return value.lower() in _TRUTHY


def parse_multivalue(line: str) -> list[str]:
    """fleet's ``parseMultivalueLine``."""
    if not (line.startswith('"') and line.endswith('"')):
        return [line]
    values: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif ch == " " and not quoted:
            values.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    values.append("".join(cur))
    return values


def _printf(value: str, info: UnitNameInfo) -> str:
    value = value.replace("%n", info.full_name).replace("%N", info.name)
    return value.replace("%p", info.prefix).replace("%i", info.instance)


@lru_cache(maxsize=4096)
def _compile_glob(pattern: str) -> re.Pattern[str] | None:
    """Go ``path.Match`` as a regex; ``None`` for a malformed pattern (never matches)."""
    out: list[str] = []
    i, n = 0, len(pattern)

    def esc(j: int) -> tuple[str, int] | None:
        if j >= n or pattern[j] in "-]":
            return None
        if pattern[j] == "\\":
            j += 1
            if j >= n:
                return None
        return pattern[j], j + 1

    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\":
            if i + 1 >= n:
                return None
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "[":
            i += 1
            negated = i < n and pattern[i] == "^"
            i += negated
            pairs: list[tuple[str, str]] = []
            while True:
                if i < n and pattern[i] == "]" and pairs:
                    i += 1
                    break
                got = esc(i)
                if got is None:
                    return None
                lo, i = got
                hi = lo
                if i < n and pattern[i] == "-":
                    got = esc(i + 1)
                    if got is None:
                        return None
                    hi, i = got
                pairs.append((lo, hi))
                if i >= n:
                    return None
            # An empty range (lo > hi) is legal in Go and matches nothing.
            body = "".join(f"{re.escape(lo)}-{re.escape(hi)}" for lo, hi in pairs if lo <= hi)
            if body:
                out.append(f"[{'^' if negated else ''}{body}]")
            else:
                out.append("[\\s\\S]" if negated else "[^\\s\\S]")
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def glob_match(pattern: str, name: str) -> bool:
    """Go's ``path.Match(pattern, name)``; a malformed pattern matches nothing."""
    rx = _compile_glob(pattern)
    return rx is not None and rx.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class Requirements:
    """A unit's placement rules, as the scheduler and agents read them."""

    machine_id: str | None = None
    metadata: tuple[tuple[str, frozenset[str]], ...] = ()
    peers: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()
    is_global: bool = False
    spread: tuple[str, ...] = ()

    @property
    def metadata_map(self) -> Mapping[str, frozenset[str]]:
        return dict(self.metadata)

    def metadata_ok(self, machine_metadata: Mapping[str, str]) -> bool:
        """``machine.HasMetadata``: every required key present with an allowed value."""
        for key, allowed in self.metadata:
            have = machine_metadata.get(key)
            if have is None or have not in allowed:
                return False
        return True

    def conflicts_with(self, other_name: str) -> bool:
        return any(glob_match(g, other_name) for g in self.conflicts)

    def replaces_unit(self, other_name: str) -> bool:
        return any(glob_match(g, other_name) for g in self.replaces)


def _raw_values(unit: UnitFile, name: str | None) -> dict[str, list[str]]:
    info = UnitNameInfo.of(name) if name else None
    out: dict[str, list[str]] = {}
    for key, raws in unit.contents.get(SECTION, {}).items():
        vals = [v for raw in raws for v in parse_multivalue(raw)]
        out[key] = [_printf(v, info) for v in vals] if info is not None else vals
    return out


def requirements(unit: UnitFile, name: str | None) -> Requirements:
    """Reads ``[X-Fleet]``; ``name`` drives specifier expansion (``None``: none, as at submit)."""
    raw = _raw_values(unit, name)

    def split(key: str) -> list[str]:
        return [w for v in raw.get(key, []) for w in v.split()]

    machine_id: str | None = None
    for key in ("MachineID", "X-ConditionMachineID", "X-ConditionMachineBootID"):
        if raw.get(key):
            machine_id = raw[key][0]
            break
    metadata: dict[str, set[str]] = {}
    for key in ("X-ConditionMachineMetadata", "MachineMetadata"):
        for pair in raw.get(key, []):
            parts = pair.split("=")
            if len(parts) == 2 and parts[0] and parts[1]:
                metadata.setdefault(parts[0], set()).add(parts[1])
    globals_ = raw.get("Global", [])
    spread: tuple[str, ...] = ()
    spread_vals = split(SPREAD)
    info = UnitNameInfo.of(name) if name else None
    if len(spread_vals) == 1 and is_truthy(spread_vals[0]):
        if info is not None and info.template:
            suffix = info.template[len(info.prefix) + 1 :]
            spread = (f"{_glob_escape(info.prefix)}@*{_glob_escape(suffix)}",)
    elif spread_vals and not all(is_falsy(v) for v in spread_vals):
        spread = tuple(spread_vals)
    return Requirements(
        machine_id=machine_id,
        metadata=tuple(sorted((k, frozenset(v)) for k, v in metadata.items())),
        peers=(*raw.get("X-ConditionMachineOf", []), *raw.get("MachineOf", [])),
        conflicts=(*split("X-Conflicts"), *split("Conflicts")),
        replaces=tuple(raw.get("Replaces", [])),
        is_global=bool(globals_) and is_truthy(globals_[-1]),
        spread=spread,
    )


def is_falsy(value: str) -> bool:
    return value.lower() in {"false", "no", "0", "off", "f"}


def _glob_escape(s: str) -> str:
    return re.sub(r"([*?\[\\])", r"\\\1", s)


def unrecognized_keys(unit: UnitFile) -> list[str]:
    """Keys fleetctl warns about: ``Unit <n>: unrecognized requirement in [X-Fleet] ...``."""
    return [k for k in unit.contents.get(SECTION, {}) if k not in VALID_KEYS]


def validate_options(unit: UnitFile) -> None:
    """``api.ValidateOptions``: raises :class:`RequirementsError` (or
    :class:`UnitFileError` when the canonical text would not parse back)."""
    deserialize(unit.text)  # the canonical text must parse back (line length)
    req = requirements(unit, None)
    conflicts = sorted(set(req.conflicts))
    replaces = sorted(set(req.replaces))
    for peer in sorted(set(req.peers)):
        for c in conflicts:
            if glob_match(c, peer):
                raise RequirementsError(
                    f'unresolvable requirements: peer "{peer}" matches conflict "{c}"'
                )
        for r in replaces:
            if glob_match(r, peer):
                raise RequirementsError(
                    f'unresolvable requirements: peer "{peer}" matches replace "{r}"'
                )
    check_combination(req)


def check_combination(req: Requirements) -> None:
    """The option-combination rules of ``api.ValidateOptions`` on parsed requirements."""
    target = req.machine_id is not None
    checks = (
        (target and bool(req.peers), "MachineID cannot be used with Peers"),
        (target and bool(req.conflicts), "MachineID cannot be used with Conflicts"),
        (target and req.is_global, "MachineID cannot be used with Global"),
        (target and bool(req.replaces), "MachineID cannot be used with Replaces"),
        (req.is_global and bool(req.peers), "Global cannot be used with Peers"),
        (req.is_global and bool(req.replaces), "Global cannot be used with Replaces"),
        (bool(req.conflicts) and bool(req.replaces), "Conflicts cannot be used with Replaces"),
    )
    for failed, message in checks:
        if failed:
            raise RequirementsError(message)
