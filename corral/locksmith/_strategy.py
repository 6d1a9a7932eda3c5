"""locksmithd's settings: strategy, reboot window and group, read as locksmith v0.6 reads them.

Strategies (`locksmithctl/daemon.go`): `reboot` (reboot at once, no lock), `etcd-lock` (take
the cluster semaphore first), `off` (locksmithd exits). Unset means `reboot`. `best-effort`
was removed in v0.6.0; corral still accepts it as a deprecated alias with a warning, meaning
what it meant in v0.4: `etcd-lock` if a KV endpoint is configured, else `reboot`.

Environment: `REBOOT_STRATEGY`, `LOCKSMITHD_REBOOT_WINDOW_START`/`_LENGTH` (falling back to
the legacy `REBOOT_WINDOW_START`/`_LENGTH`; exactly one of the pair set is an error),
`LOCKSMITHD_GROUP`, `LOCKSMITHD_ENDPOINT` (comma-separated).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from corral.locksmith._window import Periodic
from corral.locksmith.errors import ConfigError

__all__ = [
    "DEFAULT_ENDPOINTS",
    "DaemonSettings",
    "Strategy",
    "parse_env_file",
    "parse_strategy",
]

DEFAULT_ENDPOINTS = ("http://127.0.0.1:2379", "http://127.0.0.1:4001")


def parse_env_file(text: str) -> dict[str, str]:
    """An EnvironmentFile= (update.conf): `KEY=value` lines, `#`/`;` comments, quotes removed.

    locksmithd.service reads /usr/share/coreos/update.conf then /etc/coreos/update.conf this
    way, which is how `REBOOT_STRATEGY` written by cloud-config reaches the daemon.
    """
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if key:
            env[key] = value
    return env


class Strategy(enum.Enum):
    REBOOT = "reboot"
    ETCD_LOCK = "etcd-lock"
    OFF = "off"


def parse_strategy(value: str, *, kv_configured: bool) -> tuple[Strategy, tuple[str, ...]]:
    """The strategy for `value`, and warnings to log. Raises ConfigError when unknown."""
    if value == "":
        return Strategy.REBOOT, ()
    if value == "best-effort":
        chosen = Strategy.ETCD_LOCK if kv_configured else Strategy.REBOOT
        return chosen, (
            f'reboot strategy "best-effort" is deprecated (removed in locksmith v0.6); '
            f'using "{chosen.value}"',
        )
    try:
        return Strategy(value), ()
    except ValueError:
        raise ConfigError(f"unknown strategy: {value}") from None


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    strategy: Strategy
    window: Periodic | None
    group: str
    endpoints: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DaemonSettings:
        """Read locksmithd's environment; ConfigError with locksmith's fatal messages."""
        endpoint_text = env.get("LOCKSMITHD_ENDPOINT", "")
        endpoints = tuple(e for e in endpoint_text.split(",") if e) or DEFAULT_ENDPOINTS
        strategy, warnings = parse_strategy(
            env.get("REBOOT_STRATEGY", ""), kv_configured=bool(endpoint_text)
        )
        start = env.get("LOCKSMITHD_REBOOT_WINDOW_START") or env.get("REBOOT_WINDOW_START", "")
        length = env.get("LOCKSMITHD_REBOOT_WINDOW_LENGTH") or env.get("REBOOT_WINDOW_LENGTH", "")
        if bool(start) != bool(length):
            raise ConfigError(
                "Either both or neither $REBOOT_WINDOW_START and $REBOOT_WINDOW_LENGTH must be set"
            )
        window = None
        if start:
            try:
                window = Periodic.parse(start, length)
            except ConfigError as exc:
                raise ConfigError(f"Error parsing reboot window: {exc}") from exc
        return cls(strategy, window, env.get("LOCKSMITHD_GROUP", ""), endpoints, warnings)
