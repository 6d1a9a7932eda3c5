"""A virtual-clock harness for `ServiceMachine`: plays the shell's part in memory."""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.units.config import build_unit
from corral.units.machine import (
    ArmTimer,
    ArmWatchdog,
    CancelTimer,
    CancelWatchdog,
    Event,
    FindMainPid,
    Kill,
    KillScope,
    Log,
    MainPidFound,
    Notify,
    ProcessesGone,
    ProcessExited,
    ServiceMachine,
    Spawn,
    Spawned,
    StartRequest,
    StopRequest,
    TimerFired,
    WatchdogFired,
)
from corral.units.syntax import parse_unit_text


@dataclass
class Sim:
    machine: ServiceMachine
    now: float = 0.0
    timer: ArmTimer | None = None
    watchdog: ArmWatchdog | None = None
    live: dict[int, Spawn] = field(default_factory=dict)
    spawned: list[Spawn] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    subs: list[str] = field(default_factory=list)
    pid_requests: list[FindMainPid] = field(default_factory=list)
    auto_gone: bool = True  # processes die on the first kill signal unless told otherwise
    stubborn: set[int] = field(default_factory=set)  # procs ignoring the kill signal
    queue: list[Event] = field(default_factory=list)
    busy: bool = False

    @classmethod
    def of(cls, service_body: str, unit: str = "", name: str = "t.service") -> Sim:
        text = f"[Unit]\nDescription=Test\n{unit}\n[Service]\n{service_body}\n"
        cfg = build_unit(name, parse_unit_text(text, name))
        assert cfg.service is not None
        m = ServiceMachine(
            name, cfg.service, cfg.start_limit_interval, cfg.start_limit_burst, cfg.description
        )
        return cls(m)

    @property
    def state(self) -> tuple[str, str]:
        return self.machine.active_state, self.machine.sub

    def send(self, event: Event) -> None:
        """Queue an event and run the machine until the queue is empty (as the shell does)."""
        self.queue.append(event)
        if self.busy:
            return
        self.busy = True
        try:
            while self.queue:
                self._step(self.queue.pop(0))
        finally:
            self.busy = False

    def _step(self, event: Event) -> None:
        actions = self.machine.handle(event, self.now)
        if not self.subs or self.subs[-1] != self.machine.sub:
            self.subs.append(self.machine.sub)
        follow = self.queue
        for a in actions:
            match a:
                case Spawn():
                    self.live[a.proc] = a
                    self.spawned.append(a)
                    follow.append(Spawned(a.proc, 1000 + a.proc))
                case Kill():
                    self.kills.append(a)
                    if a.signal not in (18, 1):  # SIGCONT, SIGHUP do not kill
                        self._kill(a, follow)
                    if a.watch and self._gone(a.scope):
                        follow.append(ProcessesGone())
                case ArmTimer():
                    self.timer = a
                case CancelTimer():
                    self.timer = None
                case ArmWatchdog():
                    self.watchdog = a
                case CancelWatchdog():
                    self.watchdog = None
                case Log():
                    self.logs.append(a.message)
                case FindMainPid():
                    self.pid_requests.append(a)

    def _kill(self, k: Kill, follow: list[Event]) -> None:
        for proc, sp in list(self.live.items()):
            hit = (
                k.scope is KillScope.GROUP
                or (k.scope is KillScope.MAIN and sp.is_main)
                or (k.scope is KillScope.CONTROL and not sp.is_main)
            )
            if hit and (proc not in self.stubborn or k.signal == 9):
                del self.live[proc]
                follow.append(ProcessExited(proc, signal=k.signal))

    def _gone(self, scope: KillScope) -> bool:
        if scope is KillScope.NOTHING:
            return True
        if scope is KillScope.MAIN:
            return not any(sp.is_main for sp in self.live.values())
        return not self.live

    def start(self) -> None:
        self.send(StartRequest())

    def stop(self) -> None:
        self.send(StopRequest())

    def exit(self, proc: int, code: int | None = 0, sig: int | None = None) -> None:
        self.live.pop(proc, None)
        self.send(ProcessExited(proc, code=code if sig is None else None, signal=sig))

    def exit_last(self, code: int | None = 0, sig: int | None = None) -> Spawn:
        sp = self.spawned[-1]
        self.exit(sp.proc, code, sig)
        return sp

    def main(self) -> Spawn:
        return next(sp for sp in reversed(self.spawned) if sp.is_main)

    def notify(self, **fields: str) -> None:
        self.send(Notify(tuple(fields.items())))

    def main_pid(self, pid: int | None) -> None:
        self.send(MainPidFound(pid))

    def advance(self, seconds: float) -> None:
        """Move the virtual clock, firing the state and watchdog timers in time order."""
        end = self.now + seconds
        while True:
            due = [t for t in (self.timer, self.watchdog) if t is not None and t.deadline <= end]
            if not due:
                break
            t = min(due, key=lambda x: x.deadline)
            self.now = t.deadline
            if isinstance(t, ArmTimer):
                self.timer = None
                self.send(TimerFired(t.generation))
            else:
                self.watchdog = None
                self.send(WatchdogFired(t.generation))
        self.now = end

    def argv(self, sp: Spawn) -> list[str]:
        return [sp.command.path, *sp.command.args]
