"""The seam between a fleet agent and whatever runs units on its machine.

fleet drives systemd over D-Bus: write the unit file, link it, daemon-reload, start/stop jobs
(fire-and-forget), poll ``LoadState/ActiveState/SubState``. :class:`UnitRunner` is that
contract; corral's units runner implements it on a real machine.

:class:`MemoryRunner` is an in-process stand-in with the same observable behaviour (files,
load/active/sub states, a start that can be made to fail). It is a test double: it runs no
processes. Tests and benchmarks that exercise scheduling across many machines use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from corral.fleet.unitfile import UnitFile

__all__ = ["MemoryRunner", "RunnerError", "SystemdState", "UnitRunner"]


class RunnerError(Exception):
    """A runner operation failed (the agent abandons the rest of its round)."""


@dataclass(frozen=True)
class SystemdState:
    load: str
    active: str
    sub: str


class UnitRunner(Protocol):
    async def write(self, name: str, unit: UnitFile) -> None: ...

    async def remove(self, name: str) -> None: ...

    async def reload(self) -> None: ...

    async def start(self, name: str) -> None: ...

    async def stop(self, name: str) -> None: ...

    async def refresh(self) -> None:
        """Re-read the machine's view of the units (called before each publishing round)."""
        ...

    def files(self) -> dict[str, str]:
        """Unit files this runner holds for fleet: name → hash of the written text."""
        ...

    def state(self, name: str) -> SystemdState: ...


@dataclass
class MemoryRunner:
    """Fake runner (no processes): a unit is ``active/running`` from start until stop."""

    written: dict[str, UnitFile] = field(default_factory=dict)
    active: set[str] = field(default_factory=set)
    fail_start: set[str] = field(default_factory=set)  # names whose start "crashes"
    log: list[str] = field(default_factory=list)

    async def write(self, name: str, unit: UnitFile) -> None:
        self.written[name] = unit
        self.log.append(f"write {name}")

    async def remove(self, name: str) -> None:
        self.written.pop(name, None)
        self.active.discard(name)
        self.log.append(f"remove {name}")

    async def reload(self) -> None:
        self.log.append("reload")

    async def start(self, name: str) -> None:
        if name not in self.written:
            raise RunnerError(f"Unit {name} not found.")
        self.log.append(f"start {name}")
        if name not in self.fail_start:
            self.active.add(name)

    async def stop(self, name: str) -> None:
        self.log.append(f"stop {name}")
        self.active.discard(name)

    async def refresh(self) -> None:
        return None

    def files(self) -> dict[str, str]:
        return {n: u.hash_hex for n, u in self.written.items()}

    def state(self, name: str) -> SystemdState:
        if name not in self.written:
            return SystemdState("not-found", "inactive", "dead")
        if name in self.active:
            return SystemdState("loaded", "active", "running")
        if name in self.fail_start:
            return SystemdState("loaded", "failed", "failed")
        return SystemdState("loaded", "inactive", "dead")
