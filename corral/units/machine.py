"""The state machine of one service unit (systemd.service(5), systemd.kill(5)).

Theory of operation. `ServiceMachine.handle(event, now)` consumes one event and returns the
actions the shell must carry out; it never touches processes, files or clocks itself. The
shell (`corral.units.supervisor`) spawns the processes the machine asks for and reports back
what happened, always naming processes by the small integer `proc` the machine chose, never
by PID, so the machine is replayable on a virtual clock.

Rulebook (mirrors systemd 252's service.c; states are systemd's exact SUB strings):

1. Start: start-limit check → ExecCondition= (`condition`) → ExecStartPre= (`start-pre`) →
   ExecStart= (`start`) → ExecStartPost= (`start-post`) → `running` (a main process is alive),
   `exited` (RemainAfterExit=yes) or straight into the stop sequence (nothing left to run).
   Type= decides when `start` is over: simple at spawn, exec once exec() succeeded, oneshot
   when the last ExecStart= exited, forking when the first process exited and the main PID was
   found, notify on READY=1.
2. Each Exec*= list runs one command at a time; a failure (non-zero exit not in
   SuccessExitStatus=, or a signal) of a command without `-` abandons the list. During start
   that means: kill what is left (`stop-sigterm`), skip ExecStop=, run ExecStopPost=.
   ExecCondition= exiting 1–254 skips the unit without failing it.
3. Stop: ExecStop= (`stop`, only if the start had succeeded) → KillSignal= + SIGCONT to the
   unit's processes per KillMode= (`stop-sigterm`) → after TimeoutStopSec= the final kill
   signal if SendSIGKILL=yes (`stop-sigkill`) → ExecStopPost= (`stop-post`) → leftovers are
   killed again (`final-sigterm`, `final-sigkill`) → `dead`, or `failed` if the result is not
   `success`.
4. The first failure sticks: `result` is only overwritten while it is still `success`.
5. Restart= is decided when the unit reaches dead/failed, from the result and the main
   process's exit (the matrix of systemd.service(5)); a stop requested by the manager never
   restarts. A restart waits RestartSec= in `auto-restart` and counts towards the start limit.
6. Timers: one state timer per unit; arming a new one replaces the old (a generation number
   makes stale firings harmless). TimeoutStartSec= is armed per start state, TimeoutStopSec=
   per stop state. WatchdogSec= has its own timer, armed when the main process starts and
   re-armed by WATCHDOG=1; when it fires, WatchdogSignal= goes to the unit (`stop-watchdog`)
   and the result is `watchdog`.
7. Processes left over by ExecCondition=/ExecStartPre= are SIGKILLed before the next command.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass, field

from corral.units.config import (
    ExecCommand,
    KillMode,
    RestartPolicy,
    ServiceConfig,
    ServiceType,
)

__all__ = [
    "ACTIVE_OF_SUB",
    "Action",
    "Adopt",
    "ArmTimer",
    "ArmWatchdog",
    "CancelTimer",
    "CancelWatchdog",
    "ConditionOutcome",
    "Event",
    "FindMainPid",
    "Kill",
    "KillScope",
    "Log",
    "MainPidFound",
    "Notify",
    "ProcessExited",
    "ProcessesGone",
    "ReloadRequest",
    "ResetFailed",
    "RestartRequest",
    "Result",
    "ServiceMachine",
    "Spawn",
    "Spawned",
    "StartRequest",
    "StopRequest",
    "TimerFired",
    "WatchPid",
    "WatchdogFired",
]


class Result(enum.Enum):
    SUCCESS = "success"
    PROTOCOL = "protocol"
    TIMEOUT = "timeout"
    EXIT_CODE = "exit-code"
    SIGNAL = "signal"
    CORE_DUMP = "core-dump"
    WATCHDOG = "watchdog"
    START_LIMIT_HIT = "start-limit-hit"
    RESOURCES = "resources"


ACTIVE_OF_SUB = {
    "dead": "inactive",
    "condition": "activating",
    "start-pre": "activating",
    "start": "activating",
    "start-post": "activating",
    "auto-restart": "activating",
    "running": "active",
    "exited": "active",
    "reload": "reloading",
    "stop": "deactivating",
    "stop-sigterm": "deactivating",
    "stop-sigkill": "deactivating",
    "stop-watchdog": "deactivating",
    "stop-post": "deactivating",
    "final-sigterm": "deactivating",
    "final-sigkill": "deactivating",
    "failed": "failed",
}
_START_STATES = ("condition", "start-pre", "start", "start-post")
_STOP_STATES = (
    "stop",
    "stop-watchdog",
    "stop-sigterm",
    "stop-sigkill",
    "stop-post",
    "final-sigterm",
    "final-sigkill",
)
_CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})


class ConditionOutcome(enum.Enum):
    OK = "ok"
    SKIP = "skip"  # a Condition…= failed: not started, not failed
    ASSERT_FAILED = "assert"  # an Assert…= failed: the start job fails


# ---- events (shell → machine) ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StartRequest:
    conditions: ConditionOutcome = ConditionOutcome.OK


@dataclass(frozen=True, slots=True)
class StopRequest:
    pass


@dataclass(frozen=True, slots=True)
class RestartRequest:
    pass


@dataclass(frozen=True, slots=True)
class ReloadRequest:
    pass


@dataclass(frozen=True, slots=True)
class ResetFailed:
    pass


@dataclass(frozen=True, slots=True)
class Spawned:
    """The process `proc` exec()ed successfully with this PID."""

    proc: int
    pid: int


@dataclass(frozen=True, slots=True)
class ProcessExited:
    """`proc` ended: exactly one of `code`/`signal` is set (code 203 = could not exec)."""

    proc: int
    code: int | None = None
    signal: int | None = None


@dataclass(frozen=True, slots=True)
class ProcessesGone:
    """Every process targeted by the last watching Kill is gone."""


@dataclass(frozen=True, slots=True)
class TimerFired:
    generation: int


@dataclass(frozen=True, slots=True)
class Adopt:
    """A new runner takes over a unit an earlier runner left active (main PID or none)."""

    pid: int | None


@dataclass(frozen=True, slots=True)
class WatchdogFired:
    generation: int


@dataclass(frozen=True, slots=True)
class Notify:
    """One sd_notify datagram, already split into fields."""

    fields: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class MainPidFound:
    pid: int | None


Event = (
    StartRequest
    | StopRequest
    | RestartRequest
    | ReloadRequest
    | ResetFailed
    | Spawned
    | ProcessExited
    | ProcessesGone
    | TimerFired
    | WatchdogFired
    | Notify
    | MainPidFound
    | Adopt
)


# ---- actions (machine → shell) -----------------------------------------------------------
class KillScope(enum.Enum):
    MAIN = "main"
    CONTROL = "control"
    GROUP = "group"  # every process of the unit
    NOTHING = "nothing"


@dataclass(frozen=True, slots=True)
class Spawn:
    proc: int
    command: ExecCommand
    is_main: bool
    extra_env: tuple[tuple[str, str], ...] = ()
    notify: bool = False  # hand it a NOTIFY_SOCKET


@dataclass(frozen=True, slots=True)
class Kill:
    signal: int
    scope: KillScope
    watch: bool = False  # report ProcessesGone once the scope is empty


@dataclass(frozen=True, slots=True)
class ArmTimer:
    generation: int
    deadline: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    pass


@dataclass(frozen=True, slots=True)
class ArmWatchdog:
    """The WatchdogSec= timer, separate from the state timer; WATCHDOG=1 re-arms it."""

    generation: int
    deadline: float


@dataclass(frozen=True, slots=True)
class CancelWatchdog:
    pass


@dataclass(frozen=True, slots=True)
class FindMainPid:
    pid_file: str | None


@dataclass(frozen=True, slots=True)
class WatchPid:
    """Report ProcessExited(proc) when this (not directly spawned) PID ends."""

    proc: int
    pid: int


@dataclass(frozen=True, slots=True)
class Log:
    message: str


Action = (
    Spawn
    | Kill
    | ArmTimer
    | CancelTimer
    | ArmWatchdog
    | CancelWatchdog
    | FindMainPid
    | WatchPid
    | Log
)


@dataclass
class _Exit:
    code: int | None
    signal: int | None

    @property
    def env(self) -> tuple[tuple[str, str], ...]:
        if self.signal is not None:
            return (
                ("EXIT_CODE", "killed"),
                ("EXIT_STATUS", signal.Signals(self.signal).name.removeprefix("SIG")),
            )
        return (("EXIT_CODE", "exited"), ("EXIT_STATUS", str(self.code)))

    def __str__(self) -> str:
        if self.signal is not None:
            return f"code=killed, status={self.signal}/{signal.Signals(self.signal).name.removeprefix('SIG')}"
        return (
            f"code=exited, status={self.code}/{_EXIT_STATUS_NAMES.get(self.code or 0, '')}".rstrip(
                "/"
            )
        )


_EXIT_STATUS_NAMES = {
    0: "SUCCESS",
    1: "FAILURE",
    2: "INVALIDARGUMENT",
    200: "CHDIR",
    203: "EXEC",
    216: "GROUP",
    217: "USER",
}


@dataclass
class ServiceMachine:
    """One service unit's lifecycle. See the module docstring for the rules."""

    name: str
    config: ServiceConfig
    start_limit_interval: float = 10.0
    start_limit_burst: int = 5
    description: str = ""
    sub: str = "dead"
    result: Result = Result.SUCCESS
    main_pid: int | None = None
    control_pid: int | None = None
    main_exit: _Exit | None = None
    status_text: str = ""
    restart_count: int = 0
    start_count: int = 0  # bumps on every start attempt (the shell's $INVOCATION_ID)
    condition_skipped: bool = False
    active_enter: float | None = None
    inactive_enter: float | None = None
    state_change: float = 0.0
    _proc_seq: int = 0
    _main_proc: int | None = None
    _control_proc: int | None = None
    _commands: list[ExecCommand] = field(default_factory=list)
    _timer_gen: int = 0
    _wd_gen: int = 0
    _starts: list[float] = field(default_factory=list)
    _stop_requested: bool = False
    _start_pending: bool = False
    _started_ok: bool = False
    _ready: bool = False
    _main_alive: bool = False
    _current: ExecCommand | None = None
    _main_cmd: ExecCommand | None = None

    # ---- public view ------------------------------------------------------------------
    @property
    def active_state(self) -> str:
        return ACTIVE_OF_SUB[self.sub]

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event; returns the actions to perform, in order."""
        out: list[Action] = []
        self._now = now
        self._out = out
        match event:
            case StartRequest(conditions=cond):
                self._on_start(cond)
            case StopRequest():
                self._on_stop()
            case RestartRequest():
                self._on_restart()
            case ReloadRequest():
                self._on_reload()
            case ResetFailed():
                if self.sub == "failed":
                    self._set_state("dead")
                self.result = Result.SUCCESS
                self._starts.clear()
            case Spawned(proc=proc, pid=pid):
                self._on_spawned(proc, pid)
            case ProcessExited(proc=proc, code=code, signal=sig):
                self._on_exit(proc, _Exit(code, sig))
            case ProcessesGone():
                self._on_gone()
            case TimerFired(generation=gen):
                if gen == self._timer_gen:
                    self._timer_gen += 1
                    self._on_timeout()
            case WatchdogFired(generation=gen):
                if gen == self._wd_gen:
                    self._on_watchdog()
            case Notify(fields=fields):
                self._on_notify(dict(fields))
            case MainPidFound(pid=pid):
                self._on_main_pid(pid)
            case Adopt(pid=pid):
                self._on_adopt(pid)
        return out

    # ---- helpers -----------------------------------------------------------------------
    def _emit(self, action: Action) -> None:
        self._out.append(action)

    def _log(self, message: str) -> None:
        self._emit(Log(message))

    def _title(self) -> str:
        return self.description or self.name

    def _set_state(self, sub: str) -> None:
        old_active = ACTIVE_OF_SUB[self.sub]
        self.sub = sub
        self.state_change = self._now
        new_active = ACTIVE_OF_SUB[sub]
        if new_active in ("active", "reloading") and old_active not in ("active", "reloading"):
            self.active_enter = self._now
        if new_active in ("inactive", "failed") and old_active not in ("inactive", "failed"):
            self.inactive_enter = self._now

    def _arm(self, seconds: float | None) -> None:
        self._timer_gen += 1
        if seconds is None:
            self._emit(CancelTimer())
        else:
            self._emit(ArmTimer(self._timer_gen, self._now + seconds))

    def _arm_watchdog(self) -> None:
        if self.config.watchdog_sec:
            self._wd_gen += 1
            self._emit(ArmWatchdog(self._wd_gen, self._now + self.config.watchdog_sec))

    def _cancel_watchdog(self) -> None:
        if self.config.watchdog_sec:
            self._wd_gen += 1
            self._emit(CancelWatchdog())

    def _new_proc(self) -> int:
        self._proc_seq += 1
        return self._proc_seq

    def _fail(self, result: Result) -> None:
        if self.result is Result.SUCCESS:
            self.result = result

    def _stop_env(self) -> tuple[tuple[str, str], ...]:
        env: list[tuple[str, str]] = [("SERVICE_RESULT", self.result.value)]
        if self.main_exit is not None:
            env.extend(self.main_exit.env)
        return tuple(env)

    def _clean_main(self, ex: _Exit) -> bool:
        cfg = self.config
        if self._main_cmd is not None and self._main_cmd.ignore_failure:
            return True
        if ex.signal is not None:
            return ex.signal in cfg.success_signals or (
                cfg.type is not ServiceType.ONESHOT and ex.signal in _CLEAN_SIGNALS
            )
        return ex.code == 0 or ex.code in cfg.success_exit_status

    def _clean_command(self, ex: _Exit) -> bool:
        if ex.signal is not None:
            return ex.signal in self.config.success_signals
        return ex.code == 0 or ex.code in self.config.success_exit_status

    @staticmethod
    def _result_of(ex: _Exit) -> Result:
        return Result.SIGNAL if ex.signal is not None else Result.EXIT_CODE

    # ---- requests ----------------------------------------------------------------------
    def _on_start(self, cond: ConditionOutcome) -> None:
        if self.sub in _STOP_STATES:
            self._start_pending = True
            return
        if self.sub == "auto-restart":
            self._arm(None)
        elif self.sub not in ("dead", "failed"):
            return  # already active or activating: the start job merges
        self._begin_start(cond, manual=True)

    def _begin_start(self, cond: ConditionOutcome, manual: bool) -> None:
        if cond is ConditionOutcome.SKIP:
            self.condition_skipped = True
            self._log(f"Condition check resulted in {self._title()} being skipped.")
            if self.sub == "failed":
                self._set_state("dead")
            return
        self.condition_skipped = False
        if cond is ConditionOutcome.ASSERT_FAILED:
            self._log(f"Assertion failed for {self._title()}.")
            return
        interval = self.start_limit_interval
        if interval > 0 and self.start_limit_burst > 0:
            self._starts = [t for t in self._starts if t > self._now - interval]
            if len(self._starts) >= self.start_limit_burst:
                self.result = Result.START_LIMIT_HIT
                self._log("Start request repeated too quickly.")
                self._log(f"Failed with result '{self.result.value}'.")
                self._log(f"Failed to start {self._title()}.")
                self._set_state("failed")
                return
            self._starts.append(self._now)
        if manual:
            self.restart_count = 0
        self.start_count += 1
        self.result = Result.SUCCESS
        self.main_exit = None
        self.main_pid = None
        self.status_text = ""
        self._stop_requested = False
        self._started_ok = False
        self._ready = False
        self._main_alive = False
        self._log(f"Starting {self._title()}...")
        if self.config.exec_condition:
            self._run_list("condition", self.config.exec_condition, self.config.timeout_start)
        else:
            self._enter_start_pre()

    def _on_stop(self) -> None:
        self._start_pending = False
        self._stop_requested = True
        if self.sub in ("dead", "failed") or self.sub in _STOP_STATES:
            return
        if self.sub == "auto-restart":
            self._arm(None)
            self._set_state("dead")
            return
        self._log(f"Stopping {self._title()}...")
        if self.sub in _START_STATES:
            self._enter_signal("stop-sigterm")
        else:
            self._enter_stop()

    def _on_restart(self) -> None:
        if self.sub in ("dead", "failed", "auto-restart"):
            self._on_start(ConditionOutcome.OK)
            return
        self._on_stop()
        self._start_pending = True

    def _on_reload(self) -> None:
        if self.sub not in ("running", "exited") or not self.config.exec_reload:
            return
        self._log(f"Reloading {self._title()}...")
        self._run_list("reload", self.config.exec_reload, self.config.timeout_start)

    # ---- command lists -----------------------------------------------------------------
    def _run_list(
        self, state: str, commands: tuple[ExecCommand, ...], timeout: float | None
    ) -> None:
        self._set_state(state)
        self._commands = list(commands)
        self._arm(timeout)
        self._run_next()

    def _run_next(self) -> None:
        cmd = self._commands.pop(0)
        proc = self._new_proc()
        self._control_proc = proc
        self._current = cmd
        env: tuple[tuple[str, str], ...] = ()
        if self.sub in ("stop", "stop-post"):
            env = self._stop_env()
        if self.sub in ("reload", "stop", "start-post") and self.main_pid and self._main_alive:
            env = (*env, ("MAINPID", str(self.main_pid)))
        self._emit(
            Spawn(
                proc,
                cmd,
                is_main=False,
                extra_env=env,
                notify=self.config.type is ServiceType.NOTIFY,
            )
        )

    def _enter_start_pre(self) -> None:
        if self.config.exec_start_pre:
            self._run_list("start-pre", self.config.exec_start_pre, self.config.timeout_start)
        else:
            self._enter_start()

    def _enter_start(self) -> None:
        cfg = self.config
        if cfg.type is ServiceType.ONESHOT:
            if not cfg.exec_start:
                self._enter_start_post()
                return
            self._run_list("start", cfg.exec_start, cfg.timeout_start)
            return
        self._set_state("start")
        self._arm(cfg.timeout_start)
        proc = self._new_proc()
        if cfg.type is ServiceType.FORKING:
            self._control_proc = proc
            self._current = cfg.exec_start[0]
            self._emit(Spawn(proc, cfg.exec_start[0], is_main=False))
            return
        self._main_proc = proc
        self._main_alive = True
        self._main_cmd = cfg.exec_start[0]
        wd_env = (("WATCHDOG_USEC", str(int(cfg.watchdog_sec * 1e6))),) if cfg.watchdog_sec else ()
        self._emit(
            Spawn(
                proc,
                cfg.exec_start[0],
                is_main=True,
                extra_env=wd_env,
                notify=cfg.type is ServiceType.NOTIFY or bool(cfg.watchdog_sec),
            )
        )
        self._arm_watchdog()
        if cfg.type is ServiceType.SIMPLE:
            self._enter_start_post()

    def _enter_start_post(self) -> None:
        self._started_ok = True
        if self.config.exec_start_post:
            self._run_list("start-post", self.config.exec_start_post, self.config.timeout_start)
        else:
            self._enter_running()

    def _enter_running(self) -> None:
        self._arm(None)
        self._control_proc = None
        if self.result is not Result.SUCCESS:
            self._enter_signal("stop-sigterm")  # a failed main process skips ExecStop=
        elif self._main_alive:
            if self.sub != "running":
                self._log(f"Started {self._title()}.")
            self._set_state("running")
        elif self.config.remain_after_exit:
            if self.sub != "exited":
                self._log(f"Finished {self._title()}.")
            self._set_state("exited")
        else:
            if self.config.type is ServiceType.ONESHOT and self.result is Result.SUCCESS:
                self._log(f"Finished {self._title()}.")
            self._enter_stop()

    def _enter_stop(self) -> None:
        self._cancel_watchdog()
        if self._started_ok and self.config.exec_stop:
            self._run_list("stop", self.config.exec_stop, self.config.timeout_stop)
        else:
            self._enter_signal("stop-sigterm")

    def _kill_scope(self, final: bool) -> KillScope:
        mode = self.config.kill_mode
        if mode is KillMode.NONE:
            return KillScope.NOTHING
        if mode is KillMode.PROCESS:
            return KillScope.MAIN
        if mode is KillMode.MIXED and not final:
            return KillScope.MAIN
        return KillScope.GROUP

    def _enter_signal(self, state: str) -> None:
        cfg = self.config
        self._cancel_watchdog()
        self._set_state(state)
        if state == "stop-watchdog":
            scope = self._kill_scope(final=False)
            self._emit(Kill(cfg.watchdog_signal, scope))
            self._emit(Kill(signal.SIGCONT, scope, watch=True))
        elif state == "final-sigterm" and cfg.kill_mode is KillMode.MIXED:
            # mixed: "the subsequent SIGKILL is sent to all remaining processes"
            self._emit(Kill(cfg.final_kill_signal, KillScope.GROUP, watch=True))
        elif state in ("stop-sigterm", "final-sigterm"):
            sig = cfg.kill_signal
            if self._start_pending and cfg.restart_kill_signal is not None:
                sig = cfg.restart_kill_signal
            scope = self._kill_scope(final=False)
            if self._control_proc is not None and scope is not KillScope.GROUP:
                self._emit(Kill(sig, KillScope.CONTROL))
            self._emit(Kill(sig, scope))
            if cfg.send_sighup:
                self._emit(Kill(signal.SIGHUP, scope))
            self._emit(Kill(signal.SIGCONT, scope, watch=True))
        else:
            scope = self._kill_scope(final=True)
            self._emit(Kill(cfg.final_kill_signal, scope, watch=True))
        self._arm(cfg.timeout_stop)

    def _enter_stop_post(self) -> None:
        self._control_proc = None
        if self.config.exec_stop_post:
            self._run_list("stop-post", self.config.exec_stop_post, self.config.timeout_stop)
        else:
            self._enter_signal("final-sigterm")

    def _enter_dead(self) -> None:
        self._arm(None)
        self._cancel_watchdog()
        self._control_proc = None
        self._main_proc = None
        self.main_pid = None
        self._main_alive = False
        restart = self._should_restart()
        if self.result is Result.SUCCESS:
            if self.sub != "dead" and not (
                self.config.type is ServiceType.ONESHOT and not self._stop_requested
            ):
                self._log(
                    f"Stopped {self._title()}."
                    if self._stop_requested
                    else f"{self.name}: Deactivated successfully."
                )
            self._set_state("dead")
        else:
            self._log(f"Failed with result '{self.result.value}'.")
            self._set_state("failed")
        if self._start_pending:
            self._start_pending = False
            self._begin_start(ConditionOutcome.OK, manual=True)
        elif restart:
            self._set_state("auto-restart")
            self._arm(self.config.restart_sec)

    def _should_restart(self) -> bool:
        if self._stop_requested or self.condition_skipped or self.result is Result.START_LIMIT_HIT:
            return False
        cfg = self.config
        ex = self.main_exit
        if ex is not None:
            if ex.code is not None and ex.code in cfg.restart_prevent_status and ex.signal is None:
                return False
            if ex.signal is not None and ex.signal in cfg.restart_prevent_signals:
                return False
            if ex.code is not None and ex.signal is None and ex.code in cfg.restart_force_status:
                return True
            if ex.signal is not None and ex.signal in cfg.restart_force_signals:
                return True
        r = self.result
        match cfg.restart:
            case RestartPolicy.NO:
                return False
            case RestartPolicy.ALWAYS:
                return True
            case RestartPolicy.ON_SUCCESS:
                return r is Result.SUCCESS
            case RestartPolicy.ON_FAILURE:
                return r is not Result.SUCCESS
            case RestartPolicy.ON_ABNORMAL:
                return r in (Result.SIGNAL, Result.CORE_DUMP, Result.TIMEOUT, Result.WATCHDOG)
            case RestartPolicy.ON_ABORT:
                return r in (Result.SIGNAL, Result.CORE_DUMP)
            case RestartPolicy.ON_WATCHDOG:
                return r is Result.WATCHDOG
        return False

    # ---- process events ----------------------------------------------------------------
    def _on_spawned(self, proc: int, pid: int) -> None:
        if proc == self._main_proc:
            self.main_pid = pid
            if self.config.type is ServiceType.EXEC and self.sub == "start":
                self._enter_start_post()
        elif proc == self._control_proc:
            self.control_pid = pid

    def _on_exit(self, proc: int, ex: _Exit) -> None:
        if proc == self._main_proc:
            self._main_proc = None
            self._main_alive = False
            self.main_pid = None  # never signal a PID that may be recycled
            self.main_exit = ex
            clean = self._clean_main(ex)
            if not clean:
                self._log(f"Main process exited, {ex}")
                self._fail(self._result_of(ex))
            self._on_main_exit(clean)
        elif proc == self._control_proc:
            self._control_proc = None
            self.control_pid = None
            self._on_control_exit(ex)

    def _on_main_exit(self, clean: bool) -> None:
        sub = self.sub
        if sub == "start":
            if self.config.type is ServiceType.NOTIFY and not self._ready:
                self._fail(Result.PROTOCOL)
            if self.config.type in (ServiceType.NOTIFY, ServiceType.EXEC) or not clean:
                self._enter_signal("stop-sigterm")
        elif sub == "running":
            self._enter_running()
        # In start-post/reload the death is noticed when the control process finishes; in
        # the stop states ProcessesGone moves on.

    def _on_control_exit(self, ex: _Exit) -> None:
        sub = self.sub
        failed = not self._clean_command(ex)
        ignored = False
        if failed and self._current_ignores_failure(ex):
            ignored, failed = True, False
        if (
            sub == "condition"
            and failed
            and ex.signal is None
            and ex.code is not None
            and (1 <= ex.code <= 254)
        ):
            self.condition_skipped = True
            self._log(f"{self.name}: Skipped due to 'exec-condition'.")
            self._enter_signal("final-sigterm")
            return
        if failed:
            self._log(f"Control process exited, {ex}")
        if sub in ("condition", "start-pre") or (
            sub == "start" and self.config.type is ServiceType.ONESHOT
        ):
            if failed:
                self._fail(self._result_of(ex))
                if self.config.type is ServiceType.ONESHOT and sub == "start":
                    self.main_exit = ex
                self._enter_signal("stop-sigterm")
            elif self._commands:
                if sub in ("condition", "start-pre"):
                    # "All processes forked off by ExecStartPre= will be killed before the
                    # next service process is run" (systemd.service(5))
                    self._emit(Kill(signal.SIGKILL, KillScope.GROUP))
                self._run_next()
            elif sub == "condition":
                self._emit(Kill(signal.SIGKILL, KillScope.GROUP))
                self._enter_start_pre()
            elif sub == "start-pre":
                self._emit(Kill(signal.SIGKILL, KillScope.GROUP))
                self._enter_start()
            else:
                self.main_exit = ex if not ignored else _Exit(0, None)
                self._enter_start_post()
        elif sub == "start":  # forking: the launcher exited
            if failed:
                self._fail(self._result_of(ex))
                self._enter_signal("stop-sigterm")
            else:
                self._emit(FindMainPid(self.config.pid_file))
        elif sub == "start-post":
            if failed:
                self._fail(self._result_of(ex))
                self._enter_signal("stop-sigterm")
            elif self._commands:
                self._run_next()
            else:
                self._enter_running()
        elif sub == "reload":
            if self._commands and not failed:
                self._run_next()
            else:
                if failed:
                    self._log(f"Reload failed for {self._title()}.")
                else:
                    self._log(f"Reloaded {self._title()}.")
                self._enter_running()
        elif sub == "stop":
            if self._commands and not failed:
                self._run_next()
            else:
                if failed:
                    self._fail(self._result_of(ex))
                self._enter_signal("stop-sigterm")
        elif sub == "stop-post":
            if self._commands and not failed:
                self._run_next()
            else:
                self._enter_signal("final-sigterm")

    def _current_ignores_failure(self, ex: _Exit) -> bool:
        return self._current is not None and self._current.ignore_failure

    def _on_main_pid(self, pid: int | None) -> None:
        if self.sub != "start":
            return
        if pid is None:
            if self.config.pid_file:
                self._log(f"Can't open PID file {self.config.pid_file}: no such file")
                self._fail(Result.PROTOCOL)
                self._enter_signal("stop-sigterm")
                return
            self._main_alive = False
            self._started_ok = True
            self._enter_start_post()
            return
        proc = self._new_proc()
        self._main_proc = proc
        self.main_pid = pid
        self._main_alive = True
        self._emit(WatchPid(proc, pid))
        self._arm_watchdog()
        self._enter_start_post()

    def _on_adopt(self, pid: int | None) -> None:
        if self.sub not in ("dead", "failed"):
            return
        self.start_count += 1
        self.result = Result.SUCCESS
        self._started_ok = True
        if pid is None:
            self._set_state("exited")
            return
        proc = self._new_proc()
        self._main_proc = proc
        self.main_pid = pid
        self._main_alive = True
        self._emit(WatchPid(proc, pid))
        self._arm_watchdog()
        self._set_state("running")

    def _on_gone(self) -> None:
        sub = self.sub
        if sub in ("stop-sigterm", "stop-sigkill", "stop-watchdog"):
            self._enter_stop_post()
        elif sub in ("final-sigterm", "final-sigkill"):
            self._enter_dead()

    def _on_timeout(self) -> None:
        sub = self.sub
        if sub in _START_STATES:
            self._log(
                f"{'Start' if sub != 'condition' else 'Condition'} operation timed out. Terminating."
            )
            self._fail(Result.TIMEOUT)
            self._enter_signal("stop-sigterm")
        elif sub == "reload":
            self._log("Reload operation timed out. Killing reload process.")
            self._emit(Kill(signal.SIGKILL, KillScope.CONTROL))
            self._control_proc = None
            self._enter_running()
        elif sub == "stop":
            self._log("Stopping timed out. Terminating.")
            self._fail(Result.TIMEOUT)
            self._enter_signal("stop-sigterm")
        elif sub in ("stop-sigterm", "stop-watchdog"):
            self._fail(Result.TIMEOUT)
            if self.config.send_sigkill:
                self._log(f"State '{sub}' timed out. Killing.")
                self._enter_signal("stop-sigkill")
            else:
                self._log("State 'stop-sigterm' timed out. Skipping SIGKILL.")
                self._enter_stop_post()
        elif sub == "stop-sigkill":
            self._log("Processes still around after SIGKILL. Ignoring.")
            self._enter_stop_post()
        elif sub == "stop-post":
            self._log("State 'stop-post' timed out. Terminating.")
            self._fail(Result.TIMEOUT)
            self._enter_signal("final-sigterm")
        elif sub == "final-sigterm":
            self._fail(Result.TIMEOUT)
            if self.config.send_sigkill:
                self._log("State 'final-sigterm' timed out. Killing.")
                self._enter_signal("final-sigkill")
            else:
                self._enter_dead()
        elif sub == "final-sigkill":
            self._log("Processes still around after final SIGKILL. Entering failed mode.")
            self._enter_dead()
        elif sub == "auto-restart":
            self.restart_count += 1
            self._log(f"Scheduled restart job, restart counter is at {self.restart_count}.")
            self._begin_start(ConditionOutcome.OK, manual=False)

    def _on_watchdog(self) -> None:
        if self.sub not in ("start", "start-post", "running", "reload"):
            return
        self._log(f"Watchdog timeout (limit {self.config.watchdog_sec:g}s)!")
        self._fail(Result.WATCHDOG)
        self._enter_signal("stop-watchdog")

    def _on_notify(self, fields: dict[str, str]) -> None:
        if "STATUS" in fields:
            self.status_text = fields["STATUS"]
        if "MAINPID" in fields and fields["MAINPID"].isdigit() and self._main_proc is None:
            proc = self._new_proc()
            self._main_proc = proc
            self.main_pid = int(fields["MAINPID"])
            self._main_alive = True
            self._emit(WatchPid(proc, self.main_pid))
        if fields.get("READY") == "1" and not self._ready:
            self._ready = True
            if self.sub == "start" and self.config.type is ServiceType.NOTIFY:
                self._enter_start_post()
        if (
            fields.get("WATCHDOG") == "1"
            and self._main_alive
            and self.sub
            in (
                "start",
                "start-post",
                "running",
                "reload",
            )
        ):
            self._arm_watchdog()
        elif fields.get("WATCHDOG") == "trigger":
            self._on_watchdog()
        if fields.get("STOPPING") == "1" and self.sub in ("running", "exited"):
            self._stop_requested = True
            self._enter_stop()
        if "EXTEND_TIMEOUT_USEC" in fields and self.sub in _START_STATES:
            try:
                extra = int(fields["EXTEND_TIMEOUT_USEC"]) / 1e6
            except ValueError:
                return
            self._arm(extra)
