"""fleetd's configuration: fleet's option names, defaults and parsing rules.

Sources, lowest to highest precedence (fleet reference §1.6): defaults, an INI file without
sections (``key = value``, values may be quoted), ``FLEET_<UPPER>`` environment variables, and
explicit command-line flags. ``agent_ttl`` is a Go duration (``30s``, ``1m30s``, ``500ms``);
``metadata`` is ``k=v,k2=v2`` (spaces trimmed, pairs without ``=`` ignored, last duplicate
wins); ``etcd_servers`` is a comma list or a JSON-ish ``["a","b"]`` list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from corral.fleet.errors import FleetError
from corral.fleet.registry import DEFAULT_PREFIX

__all__ = ["ConfigError", "FleetConfig", "load_config", "parse_duration", "parse_metadata"]


class ConfigError(FleetError):
    pass


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` (seconds as float); raises :class:`ConfigError`."""
    s = text.strip()
    if s in ("0", ""):
        if s == "":
            raise ConfigError('invalid duration ""')
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ConfigError(f'invalid duration "{text}"')
    return total


def parse_metadata(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in text.split(","):
        if "=" not in pair:
            continue
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _parse_list(text: str) -> tuple[str, ...]:
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    return tuple(p.strip().strip('"') for p in t.split(",") if p.strip().strip('"'))


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "t", "true", "yes", "on"):
        return True
    if t in ("0", "f", "false", "no", "off", ""):
        return False
    raise ConfigError(f"invalid boolean {text!r}")


@dataclass(frozen=True)
class FleetConfig:
    """fleetd's options (every timer in seconds and configurable)."""

    etcd_servers: tuple[str, ...] = ("http://127.0.0.1:2379", "http://127.0.0.1:4001")
    etcd_key_prefix: str = DEFAULT_PREFIX
    etcd_request_timeout: float = 1.0
    engine_reconcile_interval: float = 2.0
    agent_ttl: float = 30.0
    agent_reconcile_interval: float = 5.0
    unit_state_interval: float = 1.0
    watch_coalesce: float = 0.05  # after a watch wake-up, let a burst of changes settle
    # corral: a watch this many indexes behind re-reads the job tree (0: follow every event)
    watch_lag_limit: int = 0
    public_ip: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    disable_engine: bool = False
    disable_watches: bool = False
    verbosity: int = 0

    @property
    def lease_ttl(self) -> float:
        return 5 * self.engine_reconcile_interval

    @property
    def heartbeat_interval(self) -> float:
        """Re-publish period for unit states and launched heartbeats."""
        ttl = self.agent_ttl
        return ttl * 4 / 5 if ttl > 10 else ttl / 2

    def with_values(self, values: Mapping[str, str]) -> FleetConfig:
        """Applies string options by fleet name; unknown names are ignored."""
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, raw in values.items():
            if key not in known:
                continue
            raw = raw.strip()
            if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
                raw = raw[1:-1]
            try:
                if key == "etcd_servers":
                    changes[key] = _parse_list(raw)
                elif key == "metadata":
                    changes[key] = parse_metadata(raw)
                elif key == "agent_ttl":
                    changes[key] = parse_duration(raw)
                elif key in ("disable_engine", "disable_watches"):
                    changes[key] = _parse_bool(raw)
                elif key in ("verbosity", "watch_lag_limit"):
                    changes[key] = int(raw)
                elif isinstance(getattr(self, key), float):
                    changes[key] = float(raw)
                else:
                    changes[key] = raw
            except ValueError:
                raise ConfigError(f"invalid value for {key}: {raw!r}") from None
        return replace(self, **changes)


def _read_ini(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        k, v = line.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def load_config(
    path: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, str],
    default_path: Path | None = None,
) -> FleetConfig:
    """Defaults < config file < ``FLEET_*`` env < flags. A missing user-given file is an error."""
    values: dict[str, str] = {}
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        values.update(_read_ini(path))
    elif default_path is not None and default_path.is_file():
        values.update(_read_ini(default_path))
    for f in fields(FleetConfig):
        v = env.get(f"FLEET_{f.name.upper()}")
        if v is not None:
            values[f.name] = v
    values.update(flags)
    return FleetConfig().with_values(values)
