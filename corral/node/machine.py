"""`corral node`: one machine's init, the asyncio shell around `corral.node.plan`.

Theory of operation
-------------------
1. **Prepare** (every boot, as coreos-cloudinit ran at every boot): validate the
   #cloud-config (errors refuse the whole config, nothing is written), read the machine's
   identity from its root (etc/machine-id, else a new random one), find the software of the
   active slot, `plan_node`, then `apply_to_root` — which writes only what differs and returns
   one `Change` per file, the diff that is reported.
2. **Run**: the machine's unit runner (`corral.units`) for the root, with its control
   socket, so `corral units --root ROOT …` works on the machine; then corral's services and
   the `coreos.units` commands, in plan order.
3. **Reboots**: while the update agent runs, its booted slot is polled (`slot_poll`); when
   it differs from the slot the services run, the plan is made again with the new slot's
   tree and the services whose unit file changed are restarted, which is what a reboot into
   the other slot means for them.
4. **Stop** (SIGTERM/SIGINT, or `stop` set): every unit the runner started is stopped.

Nothing is written outside the root; the real `/` is a root only with `allow_host_root`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import corral
from corral.cloudinit import (
    Change,
    ChangeKind,
    CloudConfig,
    EntryKind,
    apply_to_root,
    apply_users_to_root,
    give_ssh_to_users,
    parse,
    validate,
)
from corral.node.errors import ConfigRefused, HostRootRefused
from corral.node.plan import LOOPBACK_METADATA, NodePlan, Service, Software, plan_node, substitute
from corral.units.errors import UnitError

__all__ = ["Node", "installed_software", "slot_software"]

log = logging.getLogger(__name__)
Say = Callable[[str], None]


def installed_software(python: str) -> Software:
    """The corral this process runs (the seam used when the machine has no slots)."""
    return Software(python=python, pythonpath=str(Path(corral.__file__).resolve().parent.parent))


def _slot_dir(root: Path, slot: str) -> Path:
    from corral.update.slots import open_slots

    return open_slots(root / "slots").mount(slot)


def slot_software(root: Path, python: str, slot: str | None = None) -> Software:
    """The software of `slot` (or of the slot gptprio would boot now) of the machine's slots.

    Read-only: the update agent is the boot loader and is the one that persists a boot.
    Falls back to the installed corral when the root has no provisioned slots.
    """
    if not (root / "slots/table.json").is_file():
        return installed_software(python)
    from corral.update.errors import UpdateError
    from corral.update.slots import open_slots, select_next

    try:
        slots = open_slots(root / "slots")
        name = slot or select_next(slots.read_table())[0]
        if slots.slot_version(name) is None:
            return installed_software(python)
        return Software(python=python, pythonpath=str(_slot_dir(root, name)), slot=name)
    except (UpdateError, OSError, ValueError):
        return installed_software(python)


class Node:
    """One machine: its root, its cloud-config, its unit runner and services."""

    def __init__(
        self,
        root: Path,
        config_data: bytes,
        *,
        python: str,
        allow_host_root: bool = False,
        say: Say = print,
        restart_sec: float = 1.0,
        slot_poll: float = 1.0,
        reboot_pause: float = 0.0,
        default_hostname: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        resolved = root.resolve()
        if resolved == Path("/") and not allow_host_root:
            raise HostRootRefused(
                "refusing to write to the real / : pass --allow-host-root to provision this "
                "host itself, or give --root a folder for the machine"
            )
        self.root = resolved
        self.data = config_data
        self.python = python
        self.say = say
        self.restart_sec = restart_sec
        self.slot_poll = slot_poll
        self.reboot_pause = reboot_pause
        self.default_hostname = default_hostname or socket.gethostname()
        self.metadata = dict(LOOPBACK_METADATA if metadata is None else metadata)
        self.config: CloudConfig | None = None
        self.plan: NodePlan | None = None
        self.software: Software | None = None

    # ------------------------------------------------------------------ prepare

    def check(self) -> CloudConfig:
        """Validate and parse; errors refuse, warnings and infos are said."""
        report = validate(self.data)
        errors = tuple(e for e in report.entries if e.kind is EntryKind.ERROR)
        if errors:
            raise ConfigRefused(report.entries)
        for entry in report.entries:
            self.say(str(entry))
        return parse(substitute(self.data, self.metadata))

    def _read(self, rel: str) -> str:
        try:
            return (self.root / rel).read_text()
        except (OSError, UnicodeDecodeError):
            return ""

    def _make_plan(self, config: CloudConfig, software: Software) -> NodePlan:
        machine_id = self._read("etc/machine-id").strip() or uuid.uuid4().hex
        hostname = self._read("etc/hostname").strip() or self.default_hostname
        return plan_node(
            config,
            root=str(self.root),
            machine_id=machine_id,
            hostname=hostname,
            software=software,
            update_conf_base=self._read("etc/coreos/update.conf"),
            slots_provisioned=(self.root / "slots/table.json").is_file(),
            fleetd_available=_has_fleetd(),
            restart_sec=self.restart_sec,
        )

    def prepare(self, software: Software | None = None) -> list[Change]:
        """Validate, plan and apply the config under the root. Returns what changed."""
        config = self.check()
        self.root.mkdir(parents=True, exist_ok=True)
        self.software = software or slot_software(self.root, self.python)
        self.plan = self._make_plan(config, self.software)
        self.config = config
        # As coreos-cloudinit: users first (useradd makes the homes), then the files, the
        # users' authorized keys among them.
        user_changes, outcomes = apply_users_to_root(
            self.root, config.users, int(time.time() // 86400)
        )
        for outcome in outcomes:
            if outcome.kind == "failed":
                self.say(f"user {outcome.name} not created: {outcome.message}")
            else:
                self.say(outcome.message)
        changes = user_changes + apply_to_root(self.root, self.plan.files)
        give_ssh_to_users(self.root, config.users, outcomes)
        self._report(changes)
        for note in self.plan.notes:
            self.say(f"note: {note}")
        return changes

    def _report(self, changes: list[Change]) -> None:
        unchanged = 0
        for c in changes:
            if c.kind is ChangeKind.UNCHANGED:
                unchanged += 1
            else:
                self.say(str(c))
        self.say(f"{unchanged} file(s) unchanged")

    # ------------------------------------------------------------------ run

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        """Run the machine until `stop` is set; every unit it started is stopped on the way out."""
        from corral.units.api import ControlServer
        from corral.units.config import Defaults
        from corral.units.process import set_child_subreaper
        from corral.units.supervisor import UnitRunner

        if self.plan is None:
            self.prepare()
        assert self.plan is not None
        set_child_subreaper()
        runner = UnitRunner(self.root, hostname=self.plan.hostname, reap_orphans=True,
                            defaults=Defaults(environment=self._default_environment()))
        await runner.start()
        server = ControlServer(runner)
        await server.start()
        watcher: asyncio.Task[None] | None = None
        try:
            await self._start_all(runner)
            if Service.UPDATE in self.plan.services:
                watcher = asyncio.create_task(self._watch_slots(runner))
            if ready is not None:
                ready()
            await stop.wait()
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            self.say("stopping")
            await server.close()
            await runner.close(stop_units=True)

    async def _start_all(self, runner: Any) -> None:
        assert self.plan is not None
        for name in self.plan.enable:
            try:
                runner.enable(name)
            except UnitError as err:
                self.say(f"enable {name}: {err}")
        for service in self.plan.services:
            await self._job(runner, "start", service.value)
        for cmd in self.plan.commands:
            await self._job(runner, cmd.command, cmd.unit)

    async def _job(self, runner: Any, verb: str, unit: str) -> None:
        """Run a systemctl verb on `unit` without waiting for it, and say what happened."""
        try:
            active = verb.endswith("try-restart") and runner.status(unit).active_state in (
                "active", "activating", "reloading")
            if verb == "try-restart" and not active:
                self.say(f"{verb} {unit}: not active, nothing to do")
                return
            if verb.startswith("reload-or-"):
                if verb == "reload-or-try-restart" and not active:
                    self.say(f"{verb} {unit}: not active, nothing to do")
                    return
                try:
                    await runner.reload_unit(unit, wait=False)
                except UnitError:  # no ExecReload= (or not running): restart instead
                    await runner.restart_unit(unit, wait=False)
            else:
                fn = {
                    "start": runner.start_unit,
                    "stop": runner.stop_unit,
                    "restart": runner.restart_unit,
                    "reload": runner.reload_unit,
                    "try-restart": runner.restart_unit,
                }[verb]
                await fn(unit, wait=False)
            self.say(f"{verb} {unit}")
        except UnitError as err:
            self.say(f"{verb} {unit} failed: {err}")

    # ------------------------------------------------------------------ reboots

    async def _booted_slot(self) -> str | None:
        import aiohttp

        from corral.update.agent import short_socket_path

        sock = self.root / "run/update-agent.sock"
        if not sock.exists():
            return None
        try:
            with short_socket_path(sock) as name:
                connector = aiohttp.UnixConnector(path=name)
                async with aiohttp.ClientSession(connector=connector) as session, session.get(
                    "http://agent/status", timeout=aiohttp.ClientTimeout(total=5)
                ) as resp:
                    doc = await resp.json()
        except (aiohttp.ClientError, OSError, TimeoutError, json.JSONDecodeError):
            return None
        slot = doc.get("slot") if isinstance(doc, dict) else None
        return slot if isinstance(slot, str) and slot else None

    async def _watch_slots(self, runner: Any) -> None:
        while True:
            await asyncio.sleep(self.slot_poll)
            slot = await self._booted_slot()
            if slot is None or self.software is None or slot == self.software.slot:
                continue
            await self.reboot_into(runner, slot)

    async def reboot_into(self, runner: Any, slot: str) -> None:
        """Restart the services from `slot` (what a reboot into it means for them)."""
        assert self.config is not None
        self.say(f"slot {slot} booted: restarting services from it")
        self.software = slot_software(self.root, self.python, slot)
        self.plan = self._make_plan(self.config, self.software)
        changes = apply_to_root(self.root, self.plan.files)
        self._report(changes)
        runner.daemon_reload()
        runner.defaults = dataclasses.replace(runner.defaults,
                                              environment=self._default_environment())
        changed = {c.path for c in changes if c.kind is not ChangeKind.UNCHANGED}
        restart = [s for s in self.plan.services
                   if s is not Service.UPDATE and f"run/corral/units/{s.value}" in changed]
        # As a reboot would: stop in the reverse of the start order, waiting for each, so
        # fleetd (and locksmith) shut down gracefully through the KV member before it stops
        # (fleet's purge moves its units to other machines), then start in order.
        for service in reversed(restart):
            try:
                await runner.stop_unit(service.value, wait=True)
            except UnitError as err:
                self.say(f"stop {service.value} failed: {err}")
        if self.reboot_pause > 0:
            # A real reboot keeps the machine away for a while (firmware, kernel, boot):
            # long enough for fleet to see it gone and run its units elsewhere.
            self.say(f"down for {self.reboot_pause:g} s, as a reboot would be")
            await asyncio.sleep(self.reboot_pause)
        for service in restart:
            await self._job(runner, "start", service.value)

    def _default_environment(self) -> tuple[tuple[str, str], ...]:
        """DefaultEnvironment= of the machine's units: with slots, every program a unit runs
        (fleet's units too) comes from the booted slot, as /usr did on CoreOS."""
        if self.software is None or not self.software.slot:
            return ()
        return (("PYTHONPATH", self.software.pythonpath),)


def _has_fleetd() -> bool:
    import importlib.util

    return importlib.util.find_spec("corral.cli.fleetd") is not None
