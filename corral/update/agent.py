"""The update agent: update_engine's loop on one machine, with A/B slots and boot counting.

Theory of operation
-------------------
The agent is the machine's "boot loader + update engine" for corral's own software:

1. **Boot** (`boot`): run gptprio (`slots.select_next`) on the slot table, persist the
   decremented tries *before* starting anything, then start the machine's services from
   the chosen slot (`PYTHONPATH=<slot>`, so the slot's code is what runs). The booted
   version is the slot's `release.json` version.
2. **Health gate** (decided by `health.BootHealth`): the slot is marked good
   (`slots.mark_good`: successful, tries 0, top priority) once every service — and every
   named unit present on the machine, asked of corral's unit runner — has stayed up for
   `health_period` seconds, every fleet unit scheduled to the machine is active again
   (`fleet_health`, when a `fleet_view` is configured; judged within `fleet_window`) and
   the health command exits 0. If a service exits first, the fleet window closes first,
   or `boot_deadline` seconds pass first, the machine records why (a code from corral's
   3000–3099 range) and reboots itself; a new slot that used its one try is then
   ineligible and the previous slot boots (rollback). Update checks wait for the gate, as
   update_engine marks the root good before any update processing.
3. **Checks** (`check_once`), timed by `schedule.CheckScheduler` (jitter, `PollInterval`,
   backoff), follow update_engine's order exactly: ping + updatecheck + event
   `3/2 previousversion=<pref>` (`0.0.0.0` on first run; `3/0 errorcode=44` instead when
   the machine came back to the version it updated from, with the recorded corral health
   code instead of 44 when the failed boot knew why) → `13/1` → download (resumable
   with HTTP Range, progress reported) → `14/1` → verify (size, SHA-256, Ed25519 signature
   by a trusted release key) → write the inactive slot and `mark_updated` → `3/1` →
   `UPDATED_NEED_REBOOT` (then only pings). Any failure after the offer is reported once as
   `3/0 errorcode=N|0x10000000` (custom-server flag; bit 30 when the download resumed).
4. **Reboot**: stop the services, boot again. With `reboot_strategy="reboot"` the agent
   reboots as soon as an update is applied; with `"off"` something else (locksmith, an
   operator) asks for it through the control socket.
5. A version the machine fell back from is remembered and never installed again unless
   the check is forced.

Every timer is a constructor argument. Control: `GET /status`, `POST /check`,
`POST /reboot`, `POST /reset` on a Unix socket under the machine root (what `corral
update` talks to). State lives under the machine root only.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import json
import logging
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from corral.update.errors import RefusedError, SlotError, UpdateError
from corral.update.fleet_health import FleetGate, FleetView, GateResult, GateVerdict
from corral.update.health import BootHealth, Verdict, check_event, fell_back
from corral.update.omaha import (
    AppRequest,
    ErrorCode,
    Event,
    EventResult,
    EventType,
    NoUpdate,
    Os,
    Ping,
    Request,
    UpdateCheck,
    UpdateOffer,
    encode_request,
    interpret_update_check,
)
from corral.update.payload import verify_payload
from corral.update.schedule import CheckScheduler
from corral.update.server import CORRAL_APP_ID
from corral.update.slots import (
    DirectorySlots,
    ImageSlots,
    initial_table,
    mark_good,
    mark_updated,
    open_slots,
    other_slot,
)
from corral.update.slots import select_next as gptprio_next

__all__ = [
    "DEFAULT_SERVICE",
    "Agent",
    "AgentConfig",
    "Status",
    "provision",
    "service_reported",
    "short_socket_path",
]

log = logging.getLogger("corral.update.agent")

DEFAULT_SERVICE = ("{python}", "-P", "-m", "corral", "update-agent", "service",
                   "--status-file", "{root}/run/service-status.json")


def service_reported(status_file: Path) -> bool:
    """The stand-in service's readiness: its status file names a live process."""
    try:
        os.kill(int(json.loads(status_file.read_text())["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


class Status(enum.Enum):
    IDLE = "UPDATE_STATUS_IDLE"
    CHECKING_FOR_UPDATE = "UPDATE_STATUS_CHECKING_FOR_UPDATE"
    UPDATE_AVAILABLE = "UPDATE_STATUS_UPDATE_AVAILABLE"
    DOWNLOADING = "UPDATE_STATUS_DOWNLOADING"
    VERIFYING = "UPDATE_STATUS_VERIFYING"
    FINALIZING = "UPDATE_STATUS_FINALIZING"
    UPDATED_NEED_REBOOT = "UPDATE_STATUS_UPDATED_NEED_REBOOT"
    REPORTING_ERROR_EVENT = "UPDATE_STATUS_REPORTING_ERROR_EVENT"


@dataclass
class AgentConfig:
    root: Path
    server: str
    trusted_keys: list[Ed25519PublicKey]
    app_id: str = CORRAL_APP_ID
    group: str = "stable"
    services: list[Sequence[str]] = field(default_factory=lambda: [DEFAULT_SERVICE])
    health_command: Sequence[str] | None = None
    health_units: Sequence[str] = ()
    health_period: float = 45.0
    boot_deadline: float = 300.0
    fleet_view: FleetView | None = None
    fleet_window: float = 120.0
    initial_check: float = 7 * 60.0
    initial_fuzz: float = 10 * 60.0
    interval: float = 45 * 60.0
    interval_fuzz: float = 10 * 60.0
    max_backoff: float = 4 * 3600.0
    reboot_strategy: str = "off"
    stop_timeout: float = 5.0
    http_timeout: float = 60.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.reboot_strategy not in ("reboot", "off"):
            raise ValueError(f"reboot strategy must be 'reboot' or 'off', not "
                             f"{self.reboot_strategy!r}")
        for name in ("health_period", "boot_deadline", "fleet_window", "interval",
                     "stop_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


@contextlib.contextmanager
def short_socket_path(path: Path) -> Iterator[str]:
    """A name for `path` that fits in sun_path (108 bytes), valid inside the block.

    Long paths are reached through /proc/self/fd/<fd of the directory>/<name>.
    """
    if len(os.fsencode(str(path))) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _slots(root: Path, kind: str | None = None) -> DirectorySlots | ImageSlots:
    return open_slots(root / "slots", kind)


def provision(root: Path, payload: bytes, trusted: list[Ed25519PublicKey],
              backend: str = "directory") -> str:
    """A new machine: the verified payload in slot `a` (`S1 P1`), slot `b` empty."""
    manifest = verify_payload(payload, trusted)
    slots = _slots(root, backend)
    slots.ensure()
    slots.write_slot("a", payload)
    slots.write_table(initial_table(slots.names))
    prefs = root / "var/lib/corral/update/prefs"
    prefs.mkdir(parents=True, exist_ok=True)
    (prefs / "aleph-version").write_text(manifest.version)
    return manifest.version


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.root = config.root.resolve()
        self.slots = _slots(self.root)
        self.prefs = self.root / "var/lib/corral/update/prefs"
        self.prefs.mkdir(parents=True, exist_ok=True)
        (self.root / "run").mkdir(parents=True, exist_ok=True)
        (self.root / "var/log").mkdir(parents=True, exist_ok=True)
        self.download_dir = self.root / "var/lib/corral/update/download"
        self.download_dir.mkdir(parents=True, exist_ok=True)
        self.machine_id = self._machine_id()
        seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(8), "big")
        self.scheduler = CheckScheduler(
            random.Random(seed), config.initial_check, config.initial_fuzz, config.interval,
            config.interval_fuzz, config.max_backoff,
        )
        self._watchers: list[asyncio.Queue[str]] = []
        self._status = Status.IDLE
        self.progress = 0.0
        self.new_version = "0.0.0"
        self.new_size = 0
        self.last_checked = 0
        self.last_error: str = ""
        self.boot_id = ""
        self.booted_slot = ""
        self.slot_dir = self.root
        self.version = ""
        self.good = False
        self.boots = 0
        self.procs: list[asyncio.subprocess.Process] = []
        self._check_now = asyncio.Event()
        self._force_next = False
        self._interactive_next = False
        self._lock = asyncio.Lock()
        self._health = BootHealth(config.health_period, config.boot_deadline, 0.0)
        self._fleet_gate = FleetGate(config.fleet_window, 0.0)
        self._judge_fleet = False
        self._stopping = asyncio.Event()
        self._good_event = asyncio.Event()
        self._poll_interval: int | None = None

    # ------------------------------------------------------------------ status

    @property
    def status(self) -> Status:
        return self._status

    @status.setter
    def status(self, value: Status) -> None:
        # Every change is broadcast, like update_engine's StatusUpdate D-Bus signal.
        changed = value != self._status
        self._status = value
        if changed:
            for queue in self._watchers:
                queue.put_nowait(value.value)

    def subscribe(self) -> asyncio.Queue[str]:
        """A queue that receives every new CURRENT_OP (what locksmith waits on)."""
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._watchers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        with contextlib.suppress(ValueError):
            self._watchers.remove(queue)

    @property
    def healthy(self) -> asyncio.Event:
        """Set once the booted slot is marked good (cleared at every boot)."""
        return self._good_event

    # ------------------------------------------------------------------ prefs

    def _machine_id(self) -> str:
        path = self.root / "etc/machine-id"
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        mid = uuid.uuid4().hex
        path.write_text(mid + "\n")
        return mid

    def _pref(self, name: str) -> str | None:
        try:
            return (self.prefs / name).read_text()
        except FileNotFoundError:
            return None

    def _set_pref(self, name: str, value: str | None) -> None:
        path = self.prefs / name
        if value is None:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(value)
        os.replace(tmp, path)

    def _json_pref(self, name: str) -> dict[str, Any] | None:
        text = self._pref(name)
        try:
            doc = json.loads(text) if text else None
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    @property
    def fell_back_from(self) -> list[str]:
        text = self._pref("fell-back-from")
        return list(json.loads(text)) if text else []

    # ------------------------------------------------------------------ boot

    async def boot(self) -> None:
        """gptprio, persist, start services from the chosen slot."""
        table = self.slots.read_table()
        name, table = gptprio_next(table)
        self.slots.write_table(table)
        version = self.slots.slot_version(name)
        if version is None:
            raise SlotError(f"slot {name} holds no release")
        self.slot_dir = self.slots.mount(name)
        self.booted_slot, self.version = name, version
        self.boot_id = "{" + str(uuid.uuid4()) + "}"
        self.boots += 1
        self.good = False
        self._good_event.clear()
        self._health = BootHealth(self.config.health_period, self.config.boot_deadline,
                                  time.monotonic())
        self._fleet_gate = FleetGate(self.config.fleet_window, time.monotonic())
        # Only a slot still on trial is judged by fleet: a proven slot has nothing to fall
        # back to, and rebooting it because fleet is slow or down would help no one.
        self._judge_fleet = not table.get(name).successful
        failure = self._json_pref("boot-failure")
        self._set_pref("boot-failure", None)
        # The pending version is cleared when its slot is marked good; booting anything
        # else while it is pending means the new slot was abandoned (rollback).
        pending = self._pref("pending-version")
        if pending is not None and fell_back(pending, version):
            fell = self.fell_back_from
            if pending not in fell:
                fell.append(pending)
            self._set_pref("fell-back-from", json.dumps(fell))
            self._set_pref("pending-version", None)
            # Why the new slot was given up, if its boot knew; else update_engine's 44.
            if failure is None or failure.get("version") != pending:
                failure = {"version": pending, "code": int(ErrorCode.ROLLBACK),
                           "detail": "the new slot never became good"}
            report = dict(failure, fell_back_to=version)
            self._set_pref("fallback-report", json.dumps(report))
            self._set_pref("last-fallback", json.dumps(report))
            log.warning("fell back from %s to %s (code %s: %s)", pending, version,
                        report["code"], report["detail"])
        log.info("boot %d: slot %s, version %s", self.boots, name, version)
        await self._start_services()

    def _expand(self, arg: str) -> str:
        return (arg.replace("{python}", sys.executable).replace("{root}", str(self.root))
                .replace("{slot}", str(self.slot_dir)))

    def _clear_default_status(self) -> None:
        if DEFAULT_SERVICE in [tuple(c) for c in self.config.services]:
            (self.root / "run/service-status.json").unlink(missing_ok=True)

    def _reap_leftovers(self) -> None:
        """Kill services a crashed agent left behind (recorded in run/services.pids).

        A pid is only signalled if its environment names this machine root, so a reused
        pid of an unrelated process is left alone.
        """
        pids_file = self.root / "run/services.pids"
        try:
            pids = [int(p) for p in pids_file.read_text().split()]
        except (OSError, ValueError):
            return
        marker = f"CORRAL_MACHINE_ROOT={self.root}".encode()
        for pid in pids:
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        pids_file.unlink(missing_ok=True)

    async def _start_services(self) -> None:
        self._reap_leftovers()
        self._clear_default_status()
        slot_dir = self.slot_dir
        env = dict(os.environ, PYTHONPATH=str(slot_dir), CORRAL_MACHINE_ROOT=str(self.root))
        self.procs = []
        for i, command in enumerate(self.config.services):
            argv = [self._expand(a) for a in command]
            logfd = os.open(self.root / f"var/log/service-{i}.log",
                            os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, cwd=slot_dir, env=env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=logfd, stderr=logfd, start_new_session=True,
                )
            finally:
                os.close(logfd)
            self.procs.append(proc)
        (self.root / "run/services.pids").write_text(
            "".join(f"{p.pid}\n" for p in self.procs))

    async def _stop_services(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), self.config.stop_timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        self.procs = []

    async def reboot(self) -> None:
        async with self._lock:
            log.info("rebooting")
            await self._stop_services()
            if self.status == Status.UPDATED_NEED_REBOOT:
                self.status = Status.IDLE
                self.progress = 0.0
            await self.boot()

    # ------------------------------------------------------------------ health

    async def _health_step(self) -> None:
        now = time.monotonic()
        if self.good:
            return
        alive = (
            bool(self.procs or self.config.health_units)
            and all(p.returncode is None for p in self.procs)
            and await self._units_active()
        )
        exited = any(p.returncode is not None for p in self.procs)
        fleet = await self._fleet_result(now)
        if fleet is not None and fleet.verdict == GateVerdict.FAIL:
            await self._give_up(fleet.code or ErrorCode.CORRAL_FLEET_UNITS_INACTIVE,
                                fleet.detail)
            return
        if fleet is not None and fleet.verdict == GateVerdict.WAIT:
            alive = False
        verdict = self._health.observe(now, alive, exited)
        command_failed = False
        if verdict == Verdict.CHECK:
            command_failed = not await self._health_command_ok()
            verdict = Verdict.GOOD if not command_failed else self._health.check_failed(now)
        if verdict == Verdict.GOOD:
            self._health.mark_good()
            self.slots.write_table(mark_good(self.slots.read_table(), self.booted_slot))
            self.good = True
            self._good_event.set()
            if self._pref("pending-version") == self.version:
                self._set_pref("pending-version", None)
            log.info("slot %s (%s) marked good", self.booted_slot, self.version)
            return
        if verdict == Verdict.REBOOT:
            if exited:
                await self._give_up(ErrorCode.CORRAL_SERVICE_EXITED,
                                    "a service exited before the slot was good")
            elif fleet is not None and fleet.verdict == GateVerdict.WAIT:
                await self._give_up(fleet.code or ErrorCode.CORRAL_FLEET_UNITS_INACTIVE,
                                    fleet.detail)
            elif command_failed:
                await self._give_up(ErrorCode.CORRAL_HEALTH_COMMAND,
                                    "the health command failed until the boot deadline")
            else:
                await self._give_up(ErrorCode.CORRAL_HEALTH_DEADLINE,
                                    f"not healthy {self.config.boot_deadline:g}s after boot")

    async def _fleet_result(self, now: float) -> GateResult | None:
        view = self.config.fleet_view
        if view is None or not self._judge_fleet:
            return None
        try:
            units = list(await view())
        except Exception as exc:  # a seam: whatever the view raises, fleet did not answer
            log.warning("health: fleet view: %s", exc)
            return self._fleet_gate.observe(now, None)
        return self._fleet_gate.observe(now, units)

    async def _give_up(self, code: int, detail: str) -> None:
        """This boot cannot become good: record why (reported after a fallback), reboot."""
        log.warning("slot %s (%s) failed its health gate (code %d): %s; rebooting",
                    self.booted_slot, self.version, code, detail)
        self._set_pref("boot-failure", json.dumps(
            {"version": self.version, "code": int(code), "detail": detail}))
        await self.reboot()

    async def _units_active(self) -> bool:
        """Every named unit that exists on this machine is active (corral's unit runner)."""
        if not self.config.health_units:
            return True
        from corral.units.api import AsyncUnitsClient
        from corral.units.errors import UnitError, UnitNotFoundError

        client = AsyncUnitsClient(self.root)
        for name in self.config.health_units:
            try:
                state = await client.call("status", unit=name, lines=0)
            except UnitNotFoundError:
                continue  # "when present": a unit this machine does not have is not required
            except UnitError as exc:
                log.warning("health: cannot ask the unit runner about %s: %s", name, exc)
                return False
            if state.get("load_state") == "not-found":
                continue
            if state.get("active_state") != "active":
                return False
        return True

    async def _health_command_ok(self) -> bool:
        command = self.config.health_command
        if command is None and DEFAULT_SERVICE in [tuple(c) for c in self.config.services]:
            # With the default service, the slot is healthy once the service reported in.
            return service_reported(self.root / "run/service-status.json")
        if not command:
            return True
        argv = [self._expand(a) for a in command]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await proc.wait() == 0

    async def _health_loop(self) -> None:
        tick = min(0.2, self.config.health_period / 4)
        while not self._stopping.is_set():
            try:
                await self._health_step()
            except UpdateError as exc:
                log.error("health check failed: %s", exc)
            await asyncio.sleep(tick)

    # ------------------------------------------------------------------ Omaha

    def _request(self, *, ping: bool = False, check: bool = False,
                 events: Sequence[Event] = ()) -> bytes:
        install_source = "ondemandupdate" if self._interactive_next else "scheduler"
        return encode_request(Request(
            apps=(AppRequest(
                app_id=self.config.app_id, version=self.version, track=self.config.group,
                boot_id=self.boot_id, oem="", oem_version="",
                aleph_version=self._pref("aleph-version") or "", machine_id=self.machine_id,
                machine_alias="", lang="en-US", board="amd64-usr", hardware_class="",
                delta_okay="false", ping=Ping("1") if ping else None,
                update_check=UpdateCheck() if check else None, events=tuple(events),
            ),),
            os=Os("Chateau", "CoreOS", f"{self.version}_{os.uname().machine}"),
            install_source=install_source,
        ))

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> bytes:
        async with session.post(self.config.server, data=body,
                                headers={"Content-Type": "text/xml"}) as resp:
            if resp.status != 200:
                raise _HttpError(resp.status)
            return await resp.content.read(1024 * 1024 + 1)

    async def _event(self, session: aiohttp.ClientSession, ev_type: int, result: int,
                     code: int | None = None) -> None:
        # Event requests are best effort (update_engine ignores their answers).
        try:
            await self._post(session, self._request(events=(Event(ev_type, result, code),)))
        except (aiohttp.ClientError, TimeoutError, _HttpError) as exc:
            log.warning("event %d/%d not delivered: %s", ev_type, result, exc)

    async def check_once(self, *, force: bool = False, only_if_good: bool = False) -> str:
        """One update attempt, update_engine's order; returns a one-line outcome.

        `only_if_good`: do nothing (return `_DEFERRED`) unless the booted slot is good once
        the agent's lock is held — a reboot may have happened while the check waited.
        """
        timeout = aiohttp.ClientTimeout(total=self.config.http_timeout)
        async with self._lock, aiohttp.ClientSession(timeout=timeout) as session:
            if only_if_good and not self.good:
                return _DEFERRED
            if self.status == Status.UPDATED_NEED_REBOOT:
                await self._post(session, self._request(ping=True))
                return "ping (reboot needed)"
            self.status = Status.CHECKING_FOR_UPDATE
            report = self._json_pref("fallback-report")
            code = report.get("code") if report is not None else None
            first = check_event(self._pref("previous-version"), self.version,
                                code if isinstance(code, int) else None)
            try:
                body = await self._post(session, self._request(ping=True, check=True,
                                                               events=(first,)))
            except (aiohttp.ClientError, TimeoutError, _HttpError):
                self.status = Status.IDLE
                raise
            self._set_pref("previous-version", "")
            self._set_pref("fallback-report", None)
            self.last_checked = int(time.time())
            try:
                answer = interpret_update_check(body)
            except UpdateError as exc:
                await self._fail(session, exc.code, False, str(exc))
                return f"error {exc.code}: {exc}"
            self._poll_interval = answer.poll_interval
            if isinstance(answer, NoUpdate):
                self.status = Status.IDLE
                return "no update"
            if answer.version in self.fell_back_from and not force:
                self.status = Status.IDLE
                log.warning("refusing %s: this machine fell back from it", answer.version)
                return f"refused {answer.version}: fell back from it before (use --force)"
            return await self._apply(session, answer)

    async def _fail(self, session: aiohttp.ClientSession, code: int, resumed: bool,
                    message: str) -> None:
        self.status = Status.REPORTING_ERROR_EVENT
        self.last_error = message
        log.error("update failed (%d): %s", code, message)
        flags = ErrorCode.FLAG_CUSTOM_SERVER | (ErrorCode.FLAG_RESUMED if resumed else 0)
        await self._event(session, EventType.UPDATE_COMPLETE, EventResult.ERROR, code | flags)
        self.status = Status.IDLE
        self.progress = 0.0

    async def _apply(self, session: aiohttp.ClientSession, offer: UpdateOffer) -> str:
        self.status = Status.UPDATE_AVAILABLE
        self.new_version, self.new_size = offer.version, offer.size
        await self._event(session, EventType.UPDATE_DOWNLOAD_STARTED, EventResult.SUCCESS)
        resumed = False
        try:
            data, resumed = await self._download(session, offer)
        except (aiohttp.ClientError, TimeoutError, _HttpError, OSError) as exc:
            await self._fail(session, ErrorCode.DOWNLOAD_TRANSFER_ERROR, resumed, str(exc))
            return f"error {int(ErrorCode.DOWNLOAD_TRANSFER_ERROR)}: {exc}"
        await self._event(session, EventType.UPDATE_DOWNLOAD_FINISHED, EventResult.SUCCESS)
        self.status = Status.FINALIZING
        try:
            manifest = verify_payload(data, self.config.trusted_keys, expected_size=offer.size,
                                      expected_sha256=offer.sha256)
            if manifest.version != offer.version:
                raise RefusedError(f"payload is {manifest.version}, server said {offer.version}")
            self._install(data)
        except UpdateError as exc:
            self._discard_download(offer)
            await self._fail(session, exc.code, resumed, str(exc))
            return f"error {exc.code}: {exc}"
        self._discard_download(offer)
        self._set_pref("previous-version", self.version)
        self._set_pref("pending-version", offer.version)
        await self._event(session, EventType.UPDATE_COMPLETE, EventResult.SUCCESS)
        self.status = Status.UPDATED_NEED_REBOOT
        self.progress = 1.0
        (self.root / "run/reboot-required").touch()
        return f"updated to {offer.version}; reboot needed"

    def _part_path(self, offer: UpdateOffer) -> Path:
        key = hashlib.sha256(offer.sha256.encode()).hexdigest()[:32]
        return self.download_dir / f"{key}.part"

    def _discard_download(self, offer: UpdateOffer) -> None:
        self._part_path(offer).unlink(missing_ok=True)

    async def _download(self, session: aiohttp.ClientSession,
                        offer: UpdateOffer) -> tuple[bytes, bool]:
        """Fetch into a `.part` file keyed by the announced sha256, resuming with Range."""
        part = self._part_path(offer)
        have = part.stat().st_size if part.exists() else 0
        resumed = have > 0
        if have > offer.size:
            part.unlink()
            have, resumed = 0, False
        last_exc: Exception | None = None
        for url in offer.urls:
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                async with session.get(url, headers=headers) as resp:
                    if resp.status == 200:
                        have = 0
                    elif resp.status != 206:
                        raise _HttpError(resp.status)
                    with _open_part(part, have) as f:
                        f.seek(have)
                        self.status = Status.DOWNLOADING
                        async for chunk in resp.content.iter_chunked(64 * 1024):
                            f.write(chunk)
                            have += len(chunk)
                            self.progress = min(have / offer.size, 1.0)
                            if have > offer.size:
                                break
                return part.read_bytes(), resumed
            except (aiohttp.ClientError, TimeoutError, _HttpError) as exc:
                last_exc = exc
                continue
        assert last_exc is not None
        raise last_exc

    def _install(self, data: bytes) -> None:
        table = self.slots.read_table()
        target = other_slot(table, self.booted_slot)
        self.slots.write_slot(target, data)
        self.slots.write_table(mark_updated(self.slots.read_table(), target))

    # ------------------------------------------------------------------ loops

    async def _check_loop(self) -> None:
        delay = self.scheduler.first_delay()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._check_now.wait(), delay)
            self._check_now.clear()
            await self._good_event.wait()
            force, self._force_next = self._force_next, False
            failed = False
            self._poll_interval = None
            try:
                while (outcome := await self.check_once(force=force, only_if_good=True)) \
                        == _DEFERRED:
                    # A reboot came between the wait and the check: the new boot proves
                    # itself first (else its version would count as installed: a server
                    # would see a version complete that may yet be given up).
                    await self._good_event.wait()
                log.info("check: %s", outcome)
            except (aiohttp.ClientError, TimeoutError, _HttpError) as exc:
                failed = True
                self.last_error = str(exc) or type(exc).__name__
                log.warning("check failed: %s", self.last_error)
            self._interactive_next = False
            if (self.status == Status.UPDATED_NEED_REBOOT
                    and self.config.reboot_strategy == "reboot"):
                await self.reboot()
            delay = self.scheduler.next_delay(failed=failed, poll_interval=self._poll_interval)

    def status_doc(self) -> dict[str, Any]:
        return {
            "LAST_CHECKED_TIME": self.last_checked,
            "PROGRESS": self.progress,
            "CURRENT_OP": self.status.value,
            "NEW_VERSION": self.new_version,
            "NEW_SIZE": self.new_size,
            "version": self.version,
            "slot": self.booted_slot,
            "slot_good": self.good,
            "boot_id": self.boot_id,
            "boots": self.boots,
            "machine_id": self.machine_id,
            "fell_back_from": self.fell_back_from,
            "last_fallback": self._json_pref("last-fallback"),
            "server": self.config.server,
            "app_id": self.config.app_id,
            "group": self.config.group,
            "slots": [
                {"name": n, "priority": a.priority, "tries": a.tries,
                 "successful": a.successful,
                 "version": self.slots.slot_version(n)}
                for n, a in self.slots.read_table().slots
            ],
            "last_error": self.last_error,
        }

    def _control_app(self) -> web.Application:
        async def status(request: web.Request) -> web.Response:
            return web.json_response(self.status_doc())

        async def check(request: web.Request) -> web.Response:
            self._force_next = request.query.get("force") == "1"
            self._interactive_next = True
            self._check_now.set()
            return web.json_response({"ok": True})

        async def reboot(request: web.Request) -> web.Response:
            asyncio.get_running_loop().create_task(self.reboot())
            return web.json_response({"ok": True})

        async def reset(request: web.Request) -> web.Response:
            if self.status not in (Status.IDLE, Status.UPDATED_NEED_REBOOT):
                return web.json_response({"error": "Reset not allowed"}, status=409)
            self.status = Status.IDLE
            (self.root / "run/reboot-required").unlink(missing_ok=True)
            return web.json_response({"ok": True})

        async def watch(request: web.Request) -> web.StreamResponse:
            # One JSON status document per line: now, then after every status change.
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            queue = self.subscribe()
            try:
                await response.write((json.dumps(self.status_doc()) + "\n").encode())
                while True:
                    await queue.get()
                    await response.write((json.dumps(self.status_doc()) + "\n").encode())
            finally:
                self.unsubscribe(queue)

        app = web.Application()
        app.add_routes([web.get("/status", status), web.get("/watch", watch),
                        web.post("/check", check),
                        web.post("/reboot", reboot), web.post("/reset", reset)])
        return app

    async def run(self) -> None:
        """Boot, then serve control requests and run the health and check loops."""
        self.good = False
        await self.boot()
        runner = web.AppRunner(self._control_app(), shutdown_timeout=1.0)
        await runner.setup()
        sock = self.root / "run/update-agent.sock"
        sock.unlink(missing_ok=True)
        with short_socket_path(sock) as name:
            site = web.UnixSite(runner, name)
            await site.start()
        tasks = [asyncio.create_task(self._health_loop()),
                 asyncio.create_task(self._check_loop())]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        try:
            await self._stopping.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._stop_services()
            await runner.cleanup()
            sock.unlink(missing_ok=True)


_DEFERRED = "deferred: the booted slot is not good yet"


def _open_part(part: Path, offset: int) -> BinaryIO:
    return open(part, "r+b" if offset else "wb")


class _HttpError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
