"""A :class:`~corral.fleet.runner.UnitRunner` backed by the machine's units daemon.

fleet's agent talks to systemd over D-Bus (coreos/fleet ``systemd/manager.go``): it writes the
unit file as a runtime unit, daemon-reloads, and fires start/stop jobs without waiting for
them; systemd's ``LoadState/ActiveState/SubState`` are polled and published. Here the same
calls go to ``corral units --root DIR daemon`` through :class:`corral.units.api.AsyncUnitsClient`:

* ``write`` → ``load`` (runtime file, the text fleet hashes, so the hash survives a restart);
* ``remove`` → ``unload``; ``reload`` → ``daemon-reload``;
* ``start``/``stop`` → the same verbs with ``wait: false`` (fleet's fire-and-forget jobs);
* :meth:`refresh` re-reads the states (``list``) into a cache, because ``state``/``files`` are
  synchronous in the runner contract; the publisher calls it before each publishing round.

Ownership: fleet records each unit it loads in ``run/corral/fleet/units/`` under the machine
root (fleet's ``/run/fleet/units``). On the first refresh after fleetd starts, the runtime units
recorded there are adopted, so a restarted agent finds units it loaded before and stops the
ones now scheduled elsewhere. Every other unit of the machine (its KV member, its own fleetd,
persistent units) is never touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corral.fleet.errors import UnitFileError
from corral.fleet.runner import RunnerError, SystemdState
from corral.fleet.unitfile import UnitFile
from corral.units.api import AsyncUnitsClient
from corral.units.errors import UnitError, UnitNotFoundError

__all__ = ["DaemonRunner"]

_NOT_FOUND = SystemdState("not-found", "inactive", "dead")


class DaemonRunner:
    """Runs fleet's units through the units daemon of the machine rooted at ``root``."""

    def __init__(self, root: Path | str, client: AsyncUnitsClient | None = None) -> None:
        self.client = client or AsyncUnitsClient(root)
        self.ledger = Path(root) / "run/corral/fleet/units"
        self._files: dict[str, str] = {}
        self._states: dict[str, SystemdState] = {}
        self._adopted = False

    async def _call(self, op: str, **args: Any) -> Any:
        try:
            return await self.client.call(op, **args)
        except UnitError as exc:
            raise RunnerError(f"{op}: {exc}") from None

    async def adopt(self) -> None:
        """Take over the runtime unit files already on the machine (after a restart)."""
        found = await self._call("files")
        mine = {p.name for p in self.ledger.iterdir()} if self.ledger.is_dir() else set()
        for name, info in dict(found).items():
            if name not in mine or info.get("source") != "runtime" or "@." in name:
                continue
            try:
                self._files[name] = UnitFile.parse(str(info.get("text", ""))).hash_hex
            except UnitFileError:
                continue  # not a file fleet could have written
        self._adopted = True

    async def write(self, name: str, unit: UnitFile) -> None:
        if not self._adopted:
            await self.adopt()
        self.ledger.mkdir(parents=True, exist_ok=True)
        (self.ledger / name).touch()
        result = await self._call("load", unit=name, text=unit.text, runtime=True)
        self._files[name] = unit.hash_hex
        if isinstance(result, dict):
            self._states[name] = _state(result)

    async def remove(self, name: str) -> None:
        try:
            await self.client.call("unload", unit=name)
        except UnitNotFoundError:
            pass  # already gone: removing is idempotent
        except UnitError as exc:
            raise RunnerError(f"unload: {exc}") from None
        (self.ledger / name).unlink(missing_ok=True)
        self._files.pop(name, None)
        self._states.pop(name, None)

    async def reload(self) -> None:
        await self._call("daemon-reload")

    async def start(self, name: str) -> None:
        await self._call("start", unit=name, wait=False)

    async def stop(self, name: str) -> None:
        try:
            await self.client.call("stop", unit=name, wait=False)
        except UnitNotFoundError:
            pass
        except UnitError as exc:
            raise RunnerError(f"stop: {exc}") from None

    async def refresh(self) -> None:
        if not self._adopted:
            await self.adopt()
        listed = await self._call("list")
        states = {str(s["name"]): _state(s) for s in listed}
        self._states = {n: states.get(n, _NOT_FOUND) for n in self._files}

    def files(self) -> dict[str, str]:
        return dict(self._files)

    def state(self, name: str) -> SystemdState:
        if name not in self._files:
            return _NOT_FOUND
        return self._states.get(name, SystemdState("loaded", "inactive", "dead"))


def _state(status: dict[str, Any]) -> SystemdState:
    return SystemdState(
        str(status.get("load_state", "not-found")),
        str(status.get("active_state", "inactive")),
        str(status.get("sub_state", "dead")),
    )
