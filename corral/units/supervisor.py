"""The unit runner: one per machine root; carries out `ServiceMachine` decisions on real
processes (the asyncio shell around the pure cores).

Layout under the machine root (format version in `var/lib/corral/units/VERSION`):

    etc/corral/units/            persistent unit files and NAME.d/ drop-ins
    run/corral/units/            runtime unit files (what fleet loads)
    var/lib/corral/units/        enabled.json, machine state
    var/log/corral/journal/      one bounded journal per unit
    run/corral/units.sock        the control socket (see corral.units.api)

Every event for a unit goes through one queue (`_feed`), so the machine never sees an event
while it is still producing actions. Process exits are observed with pidfds, not with the
asyncio child watcher, so the runner can also watch daemons it did not spawn (Type=forking).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import fnmatch
import glob
import grp
import json
import os
import pwd
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from corral.containers.errors import ContainerError
from corral.containers.units import (
    adapt_exec,
    container_name,
    container_service_text,
    container_source_names,
)
from corral.units import deps
from corral.units.config import (
    Defaults,
    ExecCommand,
    ServiceConfig,
    UnitConfig,
    build_unit,
    expand_command,
    parse_env_file,
)
from corral.units.errors import (
    BadSettingError,
    JobError,
    UnitError,
    UnitNameError,
    UnitNotFoundError,
)
from corral.units.journal import Journal
from corral.units.machine import (
    Adopt,
    ArmTimer,
    ArmWatchdog,
    CancelTimer,
    CancelWatchdog,
    ConditionOutcome,
    Event,
    FindMainPid,
    Kill,
    KillScope,
    Log,
    MainPidFound,
    Notify,
    ProcessesGone,
    ProcessExited,
    ReloadRequest,
    ResetFailed,
    RestartRequest,
    ServiceMachine,
    Spawn,
    Spawned,
    StartRequest,
    StopRequest,
    TimerFired,
    WatchdogFired,
    WatchPid,
)
from corral.units.names import Machine, UnitName
from corral.units.process import (
    DEFAULT_PATH,
    HostDriver,
    ProcessDriver,
    SpawnSpec,
    alive,
    find_unit_processes,
    resolve_executable,
)
from corral.units.syntax import ParsedUnit, merge, parse_unit_text

__all__ = ["STATE_FORMAT_VERSION", "Layout", "UnitRunner", "UnitStatus"]

STATE_FORMAT_VERSION = 1
_START_SUBS = ("condition", "start-pre", "start", "start-post")


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path

    @property
    def persistent(self) -> Path:
        return self.root / "etc/corral/units"

    @property
    def runtime(self) -> Path:
        return self.root / "run/corral/units"

    @property
    def state(self) -> Path:
        return self.root / "var/lib/corral/units"

    @property
    def journal(self) -> Path:
        return self.root / "var/log/corral/journal"

    @property
    def socket(self) -> Path:
        return self.root / "run/corral/units.sock"

    @property
    def machine_id_file(self) -> Path:
        return self.root / "etc/machine-id"


@dataclass
class UnitStatus:
    name: str
    description: str
    load_state: str
    active_state: str
    sub_state: str
    file_state: str
    fragment_path: str
    load_error: str = ""
    main_pid: int | None = None
    main_comm: str = ""
    result: str = "success"
    since: float | None = None
    status_text: str = ""
    restart_count: int = 0
    warnings: list[str] = field(default_factory=list)
    invocation_id: str = ""
    service_type: str = ""
    restart: str = ""
    exec_main_code: str = ""  # exited | killed ("" while running or never started)
    exec_main_status: str = ""  # exit code or signal name
    dropin_paths: list[str] = field(default_factory=list)
    container: str = ""  # the container the main command runs (docker/podman/.container)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class _Proc:
    pid: int
    popen: subprocess.Popen[bytes] | None
    is_main: bool
    identifier: str
    pidfd: int = -1


class _Unit:
    """The runner's record of one unit: its configuration, machine and live processes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.config: UnitConfig | None = None
        self.load_state = "not-found"
        self.load_error = ""
        self.source = ""  # "runtime" | "persistent" | ""
        self.machine: ServiceMachine | None = None
        self.invocation = ""
        self.invocation_seq = -1
        self.procs: dict[int, _Proc] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.wd_timer: asyncio.TimerHandle | None = None
        self.notify_sock: socket.socket | None = None
        self.notify_addr = ""
        self.queue: deque[Event] = deque()
        self.busy = False
        self.watch_task: asyncio.Task[None] | None = None
        self.since: float | None = None  # wall clock of the last state change
        self.changed = asyncio.Event()

    @property
    def active_state(self) -> str:
        if self.machine is None:
            return "inactive"
        return self.machine.active_state

    @property
    def sub_state(self) -> str:
        return self.machine.sub if self.machine is not None else "dead"


class UnitRunner:
    """All units of one machine. Use `async with UnitRunner(root) as r:` or start()/close()."""

    def __init__(
        self,
        root: Path | str,
        *,
        hostname: str | None = None,
        defaults: Defaults | None = None,
        driver: ProcessDriver | None = None,
        journal_max_bytes: int = 1 << 20,
        poll_interval: float = 0.02,
        reap_orphans: bool = False,
        reap_interval: float = 0.5,
    ) -> None:
        self.layout = Layout(Path(root))
        self.defaults = defaults or Defaults()
        self.driver: ProcessDriver = driver or HostDriver()
        self.poll_interval = poll_interval
        self.reap_orphans = reap_orphans
        self.reap_interval = reap_interval
        for d in (self.layout.persistent, self.layout.runtime, self.layout.state):
            d.mkdir(parents=True, exist_ok=True)
        version = self.layout.state / "VERSION"
        if version.exists():
            found = version.read_text().strip()
            if found != str(STATE_FORMAT_VERSION):
                raise UnitError(
                    f"unit state format {found} is not supported (need {STATE_FORMAT_VERSION})"
                )
        else:
            version.write_text(f"{STATE_FORMAT_VERSION}\n")
        self.journal = Journal(self.layout.journal, journal_max_bytes)
        self.machine = Machine(
            machine_id=self._machine_id(),
            boot_id=uuid.uuid4().hex,
            hostname=hostname or socket.gethostname(),
            root=str(self.layout.root),
            kernel_release=os.uname().release,
        )
        self.units: dict[str, _Unit] = {}
        self.subscribers: list[Callable[[dict[str, Any]], None]] = []
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self._lock_fd = -1
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> UnitRunner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self._lock()
        self.daemon_reload()
        self._adopt()
        if self.reap_orphans:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())

    async def boot(self) -> None:
        """Start every enabled unit (what happens when a machine comes up)."""
        for name in sorted(self._enabled()):
            with contextlib.suppress(UnitError):
                await self.start_unit(name, wait=False)

    async def close(self, stop_units: bool = True) -> None:
        """Stop every unit (waiting for it) and release sockets."""
        if self._closed:
            return
        self._closed = True
        if stop_units:
            active = [
                u.name
                for u in self.units.values()
                if u.machine and u.machine.active_state not in ("inactive", "failed")
            ]
            await asyncio.gather(
                *(self._stop_one(n, wait=True) for n in active), return_exceptions=True
            )
        for u in self.units.values():
            self._drop_notify(u)
            for handle in (u.timer, u.wd_timer):
                if handle:
                    handle.cancel()
            for p in list(u.procs.values()):
                self._unwatch(u, p)
        if self._reaper:
            self._reaper.cancel()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def _lock(self) -> None:
        """One runner per machine root: hold an exclusive flock on state/runner.lock."""
        path = self.layout.state / "runner.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UnitError(
                f"another unit runner (pid {holder}) already runs for {self.layout.root}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    # ---- surviving a runner crash ------------------------------------------------------
    def _active_file(self) -> Path:
        return self.layout.state / "active.json"

    def _save_active(self) -> None:
        """Record active units, so a runner started after a crash can take them over."""
        units = {
            name: {
                "invocation": u.invocation,
                "main_pid": u.machine.main_pid,
                "sub": u.machine.sub,
                "notify": u.notify_addr,
            }
            for name, u in self.units.items()
            if u.machine is not None and u.machine.sub in ("running", "exited")
        }
        tmp = self._active_file().with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": STATE_FORMAT_VERSION, "units": units}))
        os.replace(tmp, self._active_file())

    def _adopt(self) -> None:
        try:
            data = json.loads(self._active_file().read_text())
            entries = dict(data.get("units", {}))
        except (FileNotFoundError, ValueError, AttributeError):
            return
        for name, entry in sorted(entries.items()):
            try:
                u = self._unit(name)
            except UnitError:
                continue
            invocation = str(entry.get("invocation") or "")
            if u.machine is None or not invocation:
                continue
            pid = entry.get("main_pid")
            ours = find_unit_processes(invocation, set())
            if isinstance(pid, int) and pid in ours:
                adopt: int | None = pid
            elif entry.get("sub") == "exited" and u.machine.config.remain_after_exit:
                adopt = None
            else:
                continue  # its main process is gone: the unit is inactive now
            u.invocation = invocation
            notify = str(entry.get("notify") or "")
            if notify.startswith("@"):
                with contextlib.suppress(OSError):
                    self._open_notify(u, notify[1:])
            self._feed(u, Adopt(adopt))
            u.invocation_seq = u.machine.start_count
            self._log(u, f"Adopted from an earlier runner (main PID {adopt}).")

    def _machine_id(self) -> str:
        path = self.layout.machine_id_file
        if path.exists():
            mid = path.read_text().strip()
            if len(mid) == 32:
                return mid
        path.parent.mkdir(parents=True, exist_ok=True)
        mid = uuid.uuid4().hex
        path.write_text(mid + "\n")
        return mid

    # ---- unit files --------------------------------------------------------------------
    def load_unit(self, name: str, text: str, runtime: bool = True) -> UnitStatus:
        """Write a unit file (runtime or persistent) and load it. Returns its status."""
        un = UnitName.parse(name)  # other types are stored and shown; only services run
        parse_unit_text(text, name)  # refuse unreadable files before writing them
        directory = self.layout.runtime if runtime else self.layout.persistent
        (directory / name).write_text(text)
        if un.is_template:  # stored for its instances; never a unit of its own
            return UnitStatus(
                name, name, "loaded", "inactive", "dead", "static", str(directory / name)
            )
        if un.type == "container":  # addressed as NAME.service, as Quadlet does
            name = name.removesuffix(".container") + ".service"
        self._reload_one(name)
        return self.status(name)

    def _find_file(self, name: str) -> tuple[Path | None, str]:
        un = UnitName.parse(name)
        candidates = [name]
        if un.is_instance:
            candidates.append(un.template().name)
        candidates += container_source_names(name)  # NAME.container generates NAME.service
        for cand in candidates:
            for d, source in (
                (self.layout.persistent, "persistent"),
                (self.layout.runtime, "runtime"),
            ):
                p = d / cand
                if p.is_file():
                    return p, source
        return None, ""

    def _dropins(self, name: str) -> list[Path]:
        un = UnitName.parse(name)
        dirs = [f"{name}.d"]
        if un.is_instance:
            dirs.insert(0, f"{un.template().name}.d")
        by_name: dict[str, Path] = {}
        for d in (self.layout.runtime, self.layout.persistent):  # persistent wins on clash
            for sub in dirs:
                for p in sorted((d / sub).glob("*.conf")) if (d / sub).is_dir() else []:
                    by_name[p.name] = p
        return [by_name[k] for k in sorted(by_name)]

    def _reload_one(self, name: str) -> _Unit:
        u = self.units.get(name) or _Unit(name)
        self.units[name] = u
        try:
            un = UnitName.parse(name)
        except UnitNameError as err:
            u.load_state, u.load_error, u.config = "error", str(err), None
            return u
        path, source = self._find_file(name)
        if path is None:
            u.load_state, u.load_error, u.config, u.source = (
                "not-found",
                f"Unit {name} not found.",
                None,
                "",
            )
            return u
        u.source = source
        try:
            text = path.read_text(errors="replace")
            if path.suffix == ".container":
                try:
                    text = container_service_text(
                        text, str(path), name, self.layout.root, sys.executable
                    )
                except ContainerError as err:  # names file:line, like a bad unit file
                    raise UnitError(str(err)) from None
            main = parse_unit_text(text, str(path))
            dropins: list[ParsedUnit] = []
            dropin_paths = self._dropins(name)
            for p in dropin_paths:
                dropins.append(parse_unit_text(p.read_text(errors="replace"), str(p)))
            if un.is_template:
                raise BadSettingError(f"{name} is a template and cannot be loaded itself")
            cfg = build_unit(
                name,
                merge(main, *dropins),
                self.machine,
                self.defaults,
                str(path),
                tuple(str(p) for p in dropin_paths),
            )
        except BadSettingError as err:
            u.load_state, u.load_error, u.config = "bad-setting", str(err), None
            self._log(u, str(err))
            return u
        except UnitError as err:
            u.load_state, u.load_error, u.config = "error", str(err), None
            self._log(u, str(err))
            return u
        u.config, u.load_state, u.load_error = cfg, "loaded", ""
        for w in cfg.warnings:
            self._log(u, str(w))
        if cfg.service is not None:
            if u.machine is None:
                u.machine = ServiceMachine(name, cfg.service)
            u.machine.config = cfg.service
            u.machine.description = cfg.description
            u.machine.start_limit_interval = cfg.start_limit_interval
            u.machine.start_limit_burst = cfg.start_limit_burst
        return u

    def daemon_reload(self) -> None:
        """Re-read every unit file; running units keep running with their new settings."""
        names = set(self.units)
        for d in (self.layout.persistent, self.layout.runtime):
            for p in d.iterdir():
                if p.is_file() and "@." not in p.name:
                    with contextlib.suppress(UnitNameError):
                        UnitName.parse(p.name)
                        if p.name.endswith(".container"):
                            names.add(p.name.removesuffix(".container") + ".service")
                        else:
                            names.add(p.name)
        for name in sorted(names):
            u = self._reload_one(name)
            if u.load_state == "not-found" and (u.machine is None or u.sub_state == "dead"):
                self.units.pop(name, None)

    def _unit(self, name: str) -> _Unit:
        u = self.units.get(name)
        if u is None or u.load_state == "not-found":
            u = self._reload_one(name)
            if u.load_state == "not-found" and u.machine is None:
                self.units.pop(name, None)  # asking about a unit does not make it known
        return u

    def _configs(self) -> dict[str, UnitConfig]:
        return {n: u.config for n, u in self.units.items() if u.config is not None}

    # ---- enable / disable --------------------------------------------------------------
    def _enabled_file(self) -> Path:
        return self.layout.state / "enabled.json"

    def _enabled(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self._enabled_file().read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return dict(data.get("units", {}))

    def _save_enabled(self, units: dict[str, dict[str, Any]]) -> None:
        tmp = self._enabled_file().with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": STATE_FORMAT_VERSION, "units": units}, indent=1))
        os.replace(tmp, self._enabled_file())

    def enable(self, name: str, runtime: bool = False) -> list[str]:
        u = self._unit(name)
        if u.config is None:
            raise UnitNotFoundError(u.load_error or f"Unit {name} not found.")
        cfg = u.config
        if not cfg.has_install or not (cfg.wanted_by or cfg.required_by or cfg.alias):
            return []  # static: nothing to enable, like systemctl's message
        units = self._enabled()
        units[name] = {
            "runtime": runtime,
            "wanted_by": list(cfg.wanted_by),
            "required_by": list(cfg.required_by),
        }
        self._save_enabled(units)
        return [*cfg.wanted_by, *cfg.required_by]

    def disable(self, name: str) -> bool:
        units = self._enabled()
        found = units.pop(name, None) is not None
        self._save_enabled(units)
        return found

    def file_state(self, name: str) -> str:
        u = self.units.get(name)
        if u is None or u.config is None:
            return ""
        entry = self._enabled().get(name)
        if entry is not None:
            return "enabled-runtime" if entry.get("runtime") else "enabled"
        if u.source == "runtime":
            return "linked-runtime"
        if u.config.has_install and (u.config.wanted_by or u.config.required_by):
            return "disabled"
        return "static"

    # ---- jobs --------------------------------------------------------------------------
    async def start_unit(self, name: str, wait: bool = True) -> str:
        """Start a unit and what it pulls in. Returns the job result ("done", "skipped")."""
        u = self._unit(name)
        self._require_runnable(u)
        configs = self._configs()
        while True:  # load what the transaction pulls in from disk, until nothing new appears
            plan = deps.plan_start(name, configs)
            for n in plan.start:
                self._unit(n)
            loaded = self._configs()
            if loaded.keys() == configs.keys():
                break
            configs = loaded
        for n in plan.start:
            cfg = configs.get(n)
            for req in (*cfg.requires, *cfg.binds_to, *cfg.requisite) if cfg else ():
                if req not in configs and self._unit(req).load_state == "not-found":
                    raise UnitNotFoundError(f"Failed to start {name}: Unit {req} not found.")
        for other in plan.stop:
            ou = self.units.get(other)
            if ou and ou.machine and ou.active_state not in ("inactive", "failed"):
                await self._stop_one(other, wait=True)
        jobs: dict[str, asyncio.Future[str]] = {}
        loop = asyncio.get_running_loop()
        for n in plan.start:
            jobs[n] = loop.create_future()
        for n in plan.start:
            self._spawn_task(self._start_job(n, jobs, configs))
        if not wait:
            return "queued"
        result = await jobs[name]
        if result in ("failed", "dependency", "timeout"):
            how = f"Job for {name} failed"
            if result == "dependency":
                how = f"A dependency job for {name} failed"
            raise JobError(
                f"{how}. See 'corral units status {name}' and 'corral units journal {name}' for details."
            )
        return result

    def _require_runnable(self, u: _Unit) -> None:
        if u.load_state == "not-found":
            raise UnitNotFoundError(f"Unit {u.name} not found.")
        if u.config is None:
            raise BadSettingError(f"Unit {u.name} has a bad unit file setting: {u.load_error}")
        if u.machine is None:
            raise JobError(f"Unit {u.name} is not a service; only services can be started")

    async def _start_job(
        self, name: str, jobs: dict[str, asyncio.Future[str]], configs: dict[str, UnitConfig]
    ) -> None:
        fut = jobs[name]
        result = "failed"
        try:
            result = await self._run_start_job(name, jobs, configs)
        except UnitError as err:
            self._log(self._unit(name), f"start job failed: {err}")
        finally:
            # every job resolves, even on a bug, so no waiter hangs
            if not fut.done():
                fut.set_result(result)

    async def _run_start_job(
        self, name: str, jobs: dict[str, asyncio.Future[str]], configs: dict[str, UnitConfig]
    ) -> str:
        u = self._unit(name)
        if u.config is None or u.machine is None:
            return "failed"
        strong = deps.strong_requirements(name, configs)
        for dep in sorted(deps.after_of(name, configs) & set(jobs)):
            if dep == name:
                continue
            dep_result = await asyncio.shield(jobs[dep])
            if dep in strong and dep_result not in ("done", "skipped"):
                self._log(u, f"Dependency failed for {u.config.description or name}.")
                return "dependency"
        for req in u.config.requisite:
            ru = self.units.get(req)
            if ru is None or ru.active_state not in ("active", "reloading"):
                return "dependency"
        m = u.machine
        if m.active_state in ("active", "reloading"):
            return "done"
        cond = self._check_conditions(u.config)
        self._feed(u, StartRequest(cond))
        if cond is ConditionOutcome.ASSERT_FAILED:
            return "failed"
        if cond is ConditionOutcome.SKIP:
            return "skipped"
        return await self._wait_settled(u)

    async def _wait_settled(self, u: _Unit) -> str:
        m = u.machine
        assert m is not None
        while True:
            if m.sub in ("running", "exited") or m.active_state == "reloading":
                return "done"
            if m.sub in ("failed", "auto-restart"):
                return "failed"
            if m.sub == "dead":
                return (
                    "skipped"
                    if m.condition_skipped
                    else ("done" if m.result.value == "success" else "failed")
                )
            u.changed.clear()
            await u.changed.wait()

    async def _wait_inactive(self, u: _Unit) -> None:
        m = u.machine
        while m is not None and m.sub not in ("dead", "failed", "auto-restart"):
            u.changed.clear()
            await u.changed.wait()

    def _check_conditions(self, cfg: UnitConfig) -> ConditionOutcome:
        for c in cfg.conditions:
            ok = self._condition_holds(c.kind, c.value)
            if c.negate:
                ok = not ok
            if not ok:
                return ConditionOutcome.ASSERT_FAILED if c.is_assert else ConditionOutcome.SKIP
        return ConditionOutcome.OK

    def _condition_holds(self, kind: str, value: str) -> bool:
        if kind == "PathExists":
            return os.path.exists(value)
        if kind == "PathIsDirectory":
            return os.path.isdir(value)
        if kind == "FileNotEmpty":
            return os.path.isfile(value) and os.path.getsize(value) > 0
        if kind == "Host":
            return value in (self.machine.hostname, self.machine.machine_id)
        if kind == "Environment":
            k, sep, v = value.partition("=")
            return (os.environ.get(k) == v) if sep else k in os.environ
        return True

    async def stop_unit(self, name: str, wait: bool = True) -> str:
        """Stop a unit and the units that require/bind to/are part of it (reverse order)."""
        u = self._unit(name)
        if u.load_state == "not-found" and u.machine is None:
            raise UnitNotFoundError(f"Unit {name} not loaded.")
        configs = self._configs()
        order = deps.plan_stop(name, configs)
        tasks = [asyncio.ensure_future(self._stop_one(n, wait=True)) for n in order[1:]]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return await self._stop_one(name, wait)

    async def _stop_one(self, name: str, wait: bool) -> str:
        u = self.units.get(name)
        if u is None or u.machine is None:
            return "done"
        self._feed(u, StopRequest())
        if wait:
            await self._wait_inactive(u)
        return "done"

    async def restart_unit(self, name: str, wait: bool = True) -> str:
        u = self._unit(name)
        self._require_runnable(u)
        assert u.machine is not None
        if u.machine.sub in ("dead", "failed", "auto-restart"):
            return await self.start_unit(name, wait)
        configs = self._configs()
        for other in deps.plan_stop(name, configs)[1:]:
            ou = self.units.get(other)
            if ou and ou.config and name in ou.config.part_of + ou.config.requires:
                self._feed(ou, RestartRequest())
        self._feed(u, RestartRequest())
        if not wait:
            return "queued"
        await self._wait_stopping_over(u)
        result = await self._wait_settled(u)
        if result == "failed":
            raise JobError(f"Job for {name} failed. See 'corral units status {name}' for details.")
        return result

    async def _wait_stopping_over(self, u: _Unit) -> None:
        m = u.machine
        while m is not None and m.active_state == "deactivating":
            u.changed.clear()
            await u.changed.wait()

    async def reload_unit(self, name: str, wait: bool = True) -> str:
        u = self._unit(name)
        self._require_runnable(u)
        assert u.machine is not None and u.config is not None and u.config.service is not None
        if not u.config.service.exec_reload:
            raise JobError(f"Job type reload is not applicable for unit {name}.")
        if u.machine.sub not in ("running", "exited"):
            raise JobError(f"Unit {name} cannot be reloaded because it is inactive.")
        self._feed(u, ReloadRequest())
        if wait:
            while u.machine.sub == "reload":
                u.changed.clear()
                await u.changed.wait()
        return "done"

    def reset_failed(self, name: str | None = None) -> None:
        for u in list(self.units.values()):
            if (name is None or u.name == name) and u.machine is not None:
                self._feed(u, ResetFailed())

    async def unload(self, name: str) -> None:
        """Stop the unit, remove its runtime/persistent file and forget it."""
        if name.endswith(".container"):
            name = name.removesuffix(".container") + ".service"
        u = self.units.get(name)
        if u is None:
            raise UnitNotFoundError(f"Unit {name} not loaded.")
        if u.machine is not None:
            await self._stop_one(name, wait=True)
            self._feed(u, ResetFailed())
        for d in (self.layout.runtime, self.layout.persistent):
            for file in (name, *container_source_names(name)[:1]):  # not a shared template
                with contextlib.suppress(FileNotFoundError):
                    (d / file).unlink()
        self.disable(name)
        self._drop_notify(u)
        self.units.pop(name, None)
        self._publish(u, removed=True)

    # ---- queries -----------------------------------------------------------------------
    def status(self, name: str) -> UnitStatus:
        u = self._unit(name)
        m = u.machine
        cfg = u.config
        comm = ""
        exit_env = dict(m.main_exit.env) if m is not None and m.main_exit is not None else {}
        if m is not None and m.main_pid:
            with contextlib.suppress(OSError):
                comm = Path(f"/proc/{m.main_pid}/comm").read_text().strip()
        return UnitStatus(
            name=name,
            description=(cfg.description if cfg else "") or name,
            load_state=u.load_state,
            active_state=u.active_state,
            sub_state=u.sub_state,
            file_state=self.file_state(name),
            fragment_path=cfg.fragment_path if cfg else "",
            load_error=u.load_error,
            main_pid=m.main_pid if m else None,
            main_comm=comm,
            result=m.result.value if m else "success",
            since=u.since,
            status_text=m.status_text if m else "",
            restart_count=m.restart_count if m else 0,
            warnings=[str(w) for w in cfg.warnings] if cfg else [],
            invocation_id=u.invocation,
            service_type=cfg.service.type.value if cfg and cfg.service else "",
            restart=cfg.service.restart.value if cfg and cfg.service else "",
            exec_main_code=exit_env.get("EXIT_CODE", ""),
            exec_main_status=exit_env.get("EXIT_STATUS", ""),
            dropin_paths=list(cfg.dropin_paths) if cfg else [],
            container=self._container_of(cfg),
        )

    @staticmethod
    def _container_of(cfg: UnitConfig | None) -> str:
        if cfg is None or cfg.service is None or not cfg.service.exec_start:
            return ""
        cmd = cfg.service.exec_start[0]
        return container_name([cmd.path, *cmd.args])

    def list_units(self, pattern: str | None = None) -> list[UnitStatus]:
        return [
            self.status(n)
            for n in sorted(self.units)
            if pattern is None or fnmatch.fnmatch(n, pattern)
        ]

    def cat(self, name: str) -> str:
        path, _ = self._find_file(name)
        if path is None:
            raise UnitNotFoundError(f"No files found for {name}.")
        parts = [f"# {path}\n{path.read_text()}"]
        for p in self._dropins(name):
            parts.append(f"\n# {p}\n{p.read_text()}")
        return "".join(parts)

    def unit_files(self) -> dict[str, dict[str, str]]:
        """Every unit file on disk: name → {"source": runtime|persistent, "text": …}."""
        found: dict[str, dict[str, str]] = {}
        for d, source in ((self.layout.runtime, "runtime"), (self.layout.persistent, "persistent")):
            for p in sorted(d.iterdir()):
                if p.is_file():
                    found[p.name] = {"source": source, "text": p.read_text(errors="replace")}
        return found

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call `callback` with {unit, load, active, sub} on every state change."""
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback) if callback in self.subscribers else None

    # ---- the event pump ----------------------------------------------------------------
    def _feed(self, u: _Unit, event: Event) -> None:
        u.queue.append(event)
        if u.busy:
            return
        u.busy = True
        try:
            loop = asyncio.get_running_loop()
            while u.queue:
                ev = u.queue.popleft()
                m = u.machine
                if m is None:
                    continue
                before = (m.active_state, m.sub)
                main_before = m.main_pid
                actions = m.handle(ev, loop.time())
                for action in actions:
                    try:
                        self._act(u, action)
                    except Exception as err:  # keep the daemon alive; the journal tells why
                        self._log(
                            u, f"internal error carrying out {type(action).__name__}: {err!r}"
                        )
                after = (m.active_state, m.sub)
                if after != before:
                    self._state_changed(u, before, after)
                elif m.main_pid != main_before and m.sub == "running":
                    self._save_active()  # e.g. Type=simple learns its PID after "running"
        finally:
            u.busy = False

    def _state_changed(self, u: _Unit, before: tuple[str, str], after: tuple[str, str]) -> None:
        u.since = time.time()
        u.changed.set()
        if "running" in (before[1], after[1]) or "exited" in (before[1], after[1]):
            self._save_active()
        if after[1] in ("dead", "failed") and u.invocation and not u.procs:
            self._drop_notify(u)
        self._publish(u)
        if after[0] in ("inactive", "failed") and before[0] not in ("inactive", "failed"):
            self._on_inactive(u, failed=after[0] == "failed")

    def _on_inactive(self, u: _Unit, failed: bool) -> None:
        for other in self.units.values():
            if (
                other.config
                and u.name in other.config.binds_to
                and other.machine
                and other.active_state not in ("inactive", "failed")
            ):
                self._log(other, f"Stopping, bound to {u.name} which went inactive.")
                self._feed(other, StopRequest())
        if u.config is None or (u.machine and u.machine.sub == "auto-restart"):
            return
        targets = u.config.on_failure if failed else u.config.on_success
        for t in targets:
            self._spawn_task(self._start_quietly(t))

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_quietly(self, name: str) -> None:
        with contextlib.suppress(UnitError):
            await self.start_unit(name, wait=False)

    def _publish(self, u: _Unit, removed: bool = False) -> None:
        note = {
            "unit": u.name,
            "load": "" if removed else u.load_state,
            "active": "" if removed else u.active_state,
            "sub": "" if removed else u.sub_state,
        }
        for cb in list(self.subscribers):
            with contextlib.suppress(Exception):
                cb(note)

    # ---- actions -----------------------------------------------------------------------
    def _act(self, u: _Unit, action: object) -> None:
        loop = asyncio.get_running_loop()
        match action:
            case Spawn():
                self._spawn(u, action)
            case Kill(signal=sig, scope=scope, watch=watch):
                targets = self._targets(u, scope)
                for pid in targets:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, sig)
                if watch:
                    if u.watch_task:
                        u.watch_task.cancel()
                    u.watch_task = loop.create_task(self._watch_gone(u, scope))
            case ArmTimer(generation=gen, deadline=deadline):
                if u.timer:
                    u.timer.cancel()
                u.timer = loop.call_at(deadline, lambda: self._feed(u, TimerFired(gen)))
            case CancelTimer():
                if u.timer:
                    u.timer.cancel()
                    u.timer = None
            case ArmWatchdog(generation=wgen, deadline=wdeadline):
                if u.wd_timer:
                    u.wd_timer.cancel()
                u.wd_timer = loop.call_at(wdeadline, lambda: self._feed(u, WatchdogFired(wgen)))
            case CancelWatchdog():
                if u.wd_timer:
                    u.wd_timer.cancel()
                    u.wd_timer = None
            case FindMainPid(pid_file=pid_file):
                self._feed_soon(u, MainPidFound(self._find_main_pid(u, pid_file)))
            case WatchPid(proc=proc, pid=pid):
                self._watch_pid(u, proc, pid)
            case Log(message=message):
                self._log(u, message)

    def _feed_soon(self, u: _Unit, event: Event) -> None:
        asyncio.get_running_loop().call_soon(self._feed, u, event)

    def _targets(self, u: _Unit, scope: KillScope) -> set[int]:
        m = u.machine
        if m is None or scope is KillScope.NOTHING:
            return set()
        if scope is KillScope.MAIN:  # only PIDs we still hold (unreaped), never stale ones
            return {p.pid for p in u.procs.values() if p.is_main and alive(p.pid)}
        if scope is KillScope.CONTROL:
            return {p.pid for p in u.procs.values() if not p.is_main and alive(p.pid)}
        if not u.invocation:
            return set()
        # process groups only of leaders we still track, so a recycled PGID is never hit
        leaders = {p.pid for p in u.procs.values() if p.popen is not None}
        return find_unit_processes(u.invocation, leaders)

    async def _watch_gone(self, u: _Unit, scope: KillScope) -> None:
        while True:
            if scope is KillScope.MAIN:
                live = bool(self._targets(u, scope)) or any(p.is_main for p in u.procs.values())
            elif scope is KillScope.NOTHING:
                live = False
            else:
                live = bool(self._targets(u, KillScope.GROUP)) or bool(u.procs)
            if not live:
                self._feed(u, ProcessesGone())
                return
            await asyncio.sleep(self.poll_interval)

    def _find_main_pid(self, u: _Unit, pid_file: str | None) -> int | None:
        if pid_file:
            path = (
                pid_file if pid_file.startswith("/") else str(self.layout.root / "run" / pid_file)
            )
            try:
                pid = int(Path(path).read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return None
            return pid if alive(pid) else None
        found = self._targets(u, KillScope.GROUP)
        return min(found) if len(found) == 1 else (min(found) if found else None)

    # ---- spawning ----------------------------------------------------------------------
    def _spawn(self, u: _Unit, action: Spawn) -> None:
        m = u.machine
        assert m is not None and u.config is not None and u.config.service is not None
        svc = u.config.service
        if not u.invocation or u.invocation_seq != m.start_count:
            u.invocation = uuid.uuid4().hex  # a new $INVOCATION_ID per start
            u.invocation_seq = m.start_count
        if action.notify and u.notify_sock is None:
            self._open_notify(u)
        cmd = action.command
        try:
            env = self._environment(u, svc, cmd, action)
        except OSError as err:
            self._log(u, f"Failed to load environment files: {err}")
            self._feed_soon(u, ProcessExited(action.proc, code=1))
            return
        try:  # docker lines run on this machine's driver; podman lines get its own config
            mapped, env = adapt_exec([cmd.path], env, self.layout.root, sys.executable)
        except (OSError, ContainerError) as err:
            self._log(u, f"Failed to set up containers: {err}")
            self._feed_soon(u, ProcessExited(action.proc, code=1))
            return
        executable = resolve_executable(mapped[0])
        if executable is None:
            self._log(u, f"Failed to locate executable {cmd.path}: No such file or directory")
            self._feed_soon(u, ProcessExited(action.proc, code=203))
            return
        user = group = None
        if not (cmd.full_privileges or cmd.ignore_user):
            user, group = svc.user, svc.group
        uid: int | None = None
        gid: int | None = None
        extra: tuple[int, ...] | None = None
        try:
            if user is not None:
                pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
                env.update(USER=pw.pw_name, LOGNAME=pw.pw_name, HOME=pw.pw_dir, SHELL=pw.pw_shell)
                uid, gid = pw.pw_uid, pw.pw_gid  # the group defaults to the user's primary one
                extra = tuple(os.getgrouplist(pw.pw_name, pw.pw_gid))
        except KeyError:
            self._log(u, f"Failed to determine user credentials: No such process ({user})")
            self._feed_soon(u, ProcessExited(action.proc, code=217))
            return
        try:
            if group is not None:
                gid = (
                    grp.getgrgid(int(group)).gr_gid
                    if group.isdigit()
                    else grp.getgrnam(group).gr_gid
                )
                if extra is None:
                    extra = ()
        except KeyError:
            self._log(u, f"Failed to determine group credentials: No such process ({group})")
            self._feed_soon(u, ProcessExited(action.proc, code=216))
            return
        cwd = svc.working_directory or "/"
        if cwd == "~":
            cwd = env.get("HOME", "/root")
        if not os.path.isdir(cwd):
            if svc.working_directory_optional:
                cwd = "/"
            else:
                self._log(u, f"Changing to the requested working directory failed: {cwd}")
                self._feed_soon(u, ProcessExited(action.proc, code=200))
                return
        argv = expand_command(cmd, env)
        if mapped[0] != cmd.path:
            argv = [*mapped, *argv[1:]]
        spec = SpawnSpec(
            executable,
            tuple(argv),
            env,
            cwd,
            user=uid,
            group=gid,
            extra_groups=extra,
            stdout=svc.standard_output,
            stderr=svc.standard_error,
            rlimits=svc.rlimits,
        )
        try:
            popen = self.driver.spawn(spec)
        except (OSError, ValueError, subprocess.SubprocessError) as err:
            self._log(u, f"Failed to execute {cmd.path}: {err}")
            self._feed_soon(u, ProcessExited(action.proc, code=203))
            return
        ident = svc.syslog_identifier or os.path.basename(cmd.path)
        proc = _Proc(popen.pid, popen, action.is_main, ident)
        u.procs[action.proc] = proc
        self._watch(u, action.proc, proc)
        pipe = popen.stdout or popen.stderr
        if pipe is not None:
            self._pump_output(u, proc, pipe)
        self._feed_soon(u, Spawned(action.proc, popen.pid))

    def _environment(
        self, u: _Unit, svc: ServiceConfig, cmd: ExecCommand, action: Spawn
    ) -> dict[str, str]:
        env: dict[str, str] = {
            "PATH": DEFAULT_PATH,
            "LANG": "C.UTF-8",
            "INVOCATION_ID": u.invocation,
            "SYSTEMD_EXEC_PID": "0",
        }
        env.update(self.defaults.environment)
        for k in svc.pass_environment:
            if k in os.environ:
                env[k] = os.environ[k]
        env.update(svc.environment)
        for pattern, optional in svc.environment_files:
            paths = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
            if not paths and not optional:
                raise FileNotFoundError(pattern)
            for p in paths:
                try:
                    env.update(parse_env_file(Path(p).read_text(errors="replace")))
                except FileNotFoundError:
                    if not optional:
                        raise
        if u.notify_addr:
            env["NOTIFY_SOCKET"] = u.notify_addr
        if svc.pid_file:
            env["PIDFILE"] = svc.pid_file
        env.update(action.extra_env)
        for k in svc.unset_environment:
            if "=" in k:
                if env.get(k.partition("=")[0]) == k.partition("=")[2]:
                    env.pop(k.partition("=")[0], None)
            else:
                env.pop(k, None)
        env.pop("SYSTEMD_EXEC_PID", None)
        return env

    def _pump_output(self, u: _Unit, proc: _Proc, pipe: IO[bytes]) -> None:
        loop = asyncio.get_running_loop()
        fd = pipe.fileno()
        os.set_blocking(fd, False)
        buf = bytearray()

        def readable() -> None:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(fd)
                if buf:
                    self.journal.write(
                        u.name, proc.identifier, proc.pid, buf.decode(errors="replace")
                    )
                    buf.clear()
                pipe.close()
                return
            buf.extend(data)
            if b"\n" in buf:
                head, _, rest = bytes(buf).rpartition(b"\n")
                buf[:] = rest
                self.journal.write(u.name, proc.identifier, proc.pid, head.decode(errors="replace"))

        loop.add_reader(fd, readable)

    def _watch(self, u: _Unit, token: int, proc: _Proc) -> None:
        loop = asyncio.get_running_loop()
        try:
            proc.pidfd = os.pidfd_open(proc.pid)
        except ProcessLookupError:
            self._feed_soon(u, ProcessExited(token, code=0))
            return

        def exited() -> None:
            self._unwatch(u, proc)
            u.procs.pop(token, None)
            code, sig = self._reap(proc)
            self._feed(u, ProcessExited(token, code=code, signal=sig))
            if u.machine and u.machine.sub in ("dead", "failed") and not u.procs:
                self._drop_notify(u)

        loop.add_reader(proc.pidfd, exited)

    def _watch_pid(self, u: _Unit, token: int, pid: int) -> None:
        proc = _Proc(pid, None, True, "daemon")
        u.procs[token] = proc
        self._watch(u, token, proc)

    def _unwatch(self, u: _Unit, proc: _Proc) -> None:
        if proc.pidfd >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(proc.pidfd)
            os.close(proc.pidfd)
            proc.pidfd = -1

    @staticmethod
    def _reap(proc: _Proc) -> tuple[int | None, int | None]:
        try:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            return 0, None  # not our child (a forking daemon): its status is unknown
        if pid == 0:
            return 0, None
        if proc.popen is not None:
            proc.popen.returncode = os.waitstatus_to_exitcode(status)
        if os.WIFSIGNALED(status):
            return None, os.WTERMSIG(status)
        return os.WEXITSTATUS(status), None

    async def _reap_loop(self) -> None:
        """Reap orphans re-parented to us (subreaper mode) that nobody watches."""
        while True:
            await asyncio.sleep(self.reap_interval)
            self._reap_orphans()

    def _reap_orphans(self) -> None:
        watched = {p.pid for u in self.units.values() for p in u.procs.values()}
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid in watched:
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(info.si_pid, os.WNOHANG)

    # ---- notify socket -----------------------------------------------------------------
    def _open_notify(self, u: _Unit, name: str | None = None) -> None:
        name = name or f"corral/{secrets.token_hex(8)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind("\0" + name)
        sock.setblocking(False)
        u.notify_sock = sock
        u.notify_addr = "@" + name
        loop = asyncio.get_running_loop()

        def readable() -> None:
            while True:
                try:
                    data = sock.recv(4096)
                except (BlockingIOError, OSError):
                    return
                fields = tuple(
                    (k, v)
                    for k, sep, v in (
                        line.partition("=") for line in data.decode(errors="replace").splitlines()
                    )
                    if sep
                )
                self._feed(u, Notify(fields))

        loop.add_reader(sock.fileno(), readable)

    def _drop_notify(self, u: _Unit) -> None:
        if u.notify_sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(u.notify_sock.fileno())
            u.notify_sock.close()
            u.notify_sock = None
            u.notify_addr = ""
        if u.machine is not None and u.machine.sub in ("dead", "failed") and not u.procs:
            u.invocation = ""

    def _log(self, u: _Unit, message: str) -> None:
        self.journal.write(
            u.name,
            "corral",
            os.getpid(),
            f"{u.name}: {message}" if not message.startswith(u.name) else message,
        )


def format_timestamp(when: float | None) -> str:
    if when is None:
        return "n/a"
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%a %Y-%m-%d %H:%M:%S UTC")
