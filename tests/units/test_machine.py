"""The pure service state machine on a virtual clock (systemd.service(5), systemd.kill(5))."""

from __future__ import annotations

import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.units.machine import (
    ACTIVE_OF_SUB,
    ConditionOutcome,
    KillScope,
    ReloadRequest,
    ResetFailed,
    RestartRequest,
    StartRequest,
)

from .simulate import Sim


def test_simple_runs_and_stops_cleanly() -> None:
    sim = Sim.of("ExecStart=/bin/sleep 100")
    sim.start()
    assert sim.state == ("active", "running")
    assert sim.machine.main_pid == 1001
    sim.stop()
    assert sim.state == ("inactive", "dead")
    assert [k.signal for k in sim.kills[:2]] == [signal.SIGTERM, signal.SIGCONT]
    assert sim.kills[0].scope is KillScope.GROUP
    assert sim.machine.result.value == "success"


def test_simple_trajectory_with_pre_post_and_stop_commands() -> None:
    sim = Sim.of(
        "ExecStartPre=/bin/pre\nExecStart=/bin/main\nExecStartPost=/bin/post\n"
        "ExecStop=/bin/stop\nExecStopPost=/bin/stoppost"
    )
    sim.start()
    assert sim.state == ("activating", "start-pre")
    sim.exit_last(0)
    assert sim.state == ("activating", "start-post")
    assert sim.main().command.path == "/bin/main"
    sim.exit_last(0)
    assert sim.state == ("active", "running")
    sim.stop()
    assert sim.state == ("deactivating", "stop")
    stop = sim.spawned[-1]
    assert stop.command.path == "/bin/stop"
    assert ("MAINPID", "1002") in stop.extra_env
    sim.exit_last(0)  # ExecStop done → SIGTERM kills main → stop-post
    assert sim.state == ("deactivating", "stop-post")
    assert ("SERVICE_RESULT", "success") in sim.spawned[-1].extra_env
    sim.exit_last(0)
    assert sim.state == ("inactive", "dead")
    assert sim.subs == [
        "start-pre",
        "start-post",
        "running",
        "stop",
        "stop-sigterm",
        "stop-post",
        "final-sigterm",
        "dead",
    ]


def test_failed_pre_skips_start_and_exec_stop_but_runs_stop_post() -> None:
    sim = Sim.of(
        "ExecStartPre=/bin/false\nExecStart=/bin/main\nExecStop=/bin/stop\n"
        "ExecStopPost=/bin/cleanup"
    )
    sim.start()
    sim.exit_last(1)
    assert [s.command.path for s in sim.spawned] == ["/bin/false", "/bin/cleanup"]
    assert ("SERVICE_RESULT", "exit-code") in sim.spawned[-1].extra_env
    sim.exit_last(0)
    assert sim.state == ("failed", "failed")
    assert sim.machine.result.value == "exit-code"


def test_dash_prefix_ignores_failure() -> None:
    sim = Sim.of("ExecStartPre=-/bin/false\nExecStart=/bin/main")
    sim.start()
    sim.exit_last(3)
    assert sim.state == ("active", "running")


def test_main_exit_codes() -> None:
    sim = Sim.of("ExecStart=/bin/main")
    sim.start()
    sim.exit(sim.main().proc, 0)
    assert sim.state == ("inactive", "dead")
    sim.start()
    sim.exit(sim.main().proc, 2)
    assert sim.state == ("failed", "failed")
    assert sim.machine.result.value == "exit-code"
    assert any("status=2/INVALIDARGUMENT" in line for line in sim.logs)


def test_sigterm_is_clean_for_non_oneshot_but_not_for_oneshot() -> None:
    sim = Sim.of("ExecStart=/bin/main")
    sim.start()
    sim.exit(sim.main().proc, sig=signal.SIGTERM)
    assert sim.state == ("inactive", "dead")
    one = Sim.of("Type=oneshot\nExecStart=/bin/x")
    one.start()
    one.exit_last(sig=signal.SIGTERM)
    assert one.state == ("failed", "failed")
    assert one.machine.result.value == "signal"


def test_success_exit_status() -> None:
    sim = Sim.of("ExecStart=/bin/main\nSuccessExitStatus=3 TEMPFAIL SIGUSR1")
    for code, sig in ((3, None), (75, None), (None, signal.SIGUSR1)):
        sim.start()
        sim.exit(sim.main().proc, code, sig)
        assert sim.state == ("inactive", "dead"), (code, sig)
    sim.start()
    sim.exit(sim.main().proc, 4)
    assert sim.state == ("failed", "failed")


# exit cause → which Restart= values restart (systemd.service(5), table 2)
MATRIX = {
    "clean": {"always", "on-success"},
    "code": {"always", "on-failure"},
    "signal": {"always", "on-failure", "on-abnormal", "on-abort"},
    "timeout": {"always", "on-failure", "on-abnormal"},
    "kill": {"always", "on-failure", "on-abnormal", "on-abort"},
    "watchdog": {"always", "on-failure", "on-abnormal", "on-watchdog"},
}
POLICIES = ["no", "always", "on-success", "on-failure", "on-abnormal", "on-abort", "on-watchdog"]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("cause", sorted(MATRIX))
def test_restart_matrix(policy: str, cause: str) -> None:
    body = f"Type=notify\nExecStart=/bin/main\nRestart={policy}\nRestartSec=5\nTimeoutStartSec=10"
    if cause == "watchdog":
        body += "\nWatchdogSec=3"
    sim = Sim.of(body)
    sim.start()
    main = sim.main().proc
    if cause == "timeout":
        sim.advance(10)  # never READY=1: start times out
    else:
        sim.notify(READY="1")
        assert sim.state == ("active", "running")
        if cause == "clean":
            sim.exit(main, 0)
        elif cause == "code":
            sim.exit(main, 1)
        elif cause == "signal":
            sim.exit(main, sig=signal.SIGSEGV)
        elif cause == "kill":  # killed from outside, no watchdog involved
            sim.exit(main, sig=signal.SIGKILL)
        else:  # no WATCHDOG=1 within WatchdogSec: SIGABRT (WatchdogSignal=)
            sim.advance(2.9)
            sim.notify(WATCHDOG="1")
            sim.advance(2.9)
            assert sim.state == ("active", "running")
            sim.advance(0.2)
            assert sim.kills[0].signal == signal.SIGABRT
    if cause != "clean":
        results = {"code": "exit-code", "timeout": "timeout", "watchdog": "watchdog"}
        assert sim.machine.result.value == results.get(cause, "signal")
    expect = policy in MATRIX[cause]
    if expect:
        assert sim.state == ("activating", "auto-restart")
        spawned = len(sim.spawned)
        sim.advance(sim.machine.state_change + 4.9 - sim.now)  # from entering auto-restart
        assert len(sim.spawned) == spawned  # RestartSec honoured
        sim.advance(0.2)
        assert sim.state == ("activating", "start")
        assert sim.machine.restart_count == 1
    else:
        assert sim.state in (("inactive", "dead"), ("failed", "failed"))
        sim.advance(60)
        assert sim.state in (("inactive", "dead"), ("failed", "failed"))


def test_manual_stop_never_restarts() -> None:
    sim = Sim.of("ExecStart=/bin/main\nRestart=always")
    sim.start()
    sim.stop()
    sim.advance(10)
    assert sim.state == ("inactive", "dead")


def test_restart_prevent_and_force_exit_status() -> None:
    sim = Sim.of(
        "ExecStart=/bin/main\nRestart=on-failure\nRestartPreventExitStatus=7\n"
        "RestartForceExitStatus=0"
    )
    sim.start()
    sim.exit(sim.main().proc, 7)
    assert sim.state == ("failed", "failed")
    sim.start()
    sim.exit(sim.main().proc, 0)
    assert sim.state == ("activating", "auto-restart")


def test_start_limit_hit_stops_restarts_until_reset_failed() -> None:
    sim = Sim.of(
        "ExecStart=/bin/main\nRestart=always\nRestartSec=1",
        unit="StartLimitIntervalSec=60\nStartLimitBurst=3",
    )
    sim.start()
    for _ in range(3):
        sim.exit(sim.main().proc, 1)
        sim.advance(1)
    assert sim.state == ("failed", "failed")
    assert sim.machine.result.value == "start-limit-hit"
    assert sim.machine.restart_count == 3
    sim.start()
    assert sim.state == ("failed", "failed")  # still refused
    sim.send(ResetFailed())
    assert sim.state == ("inactive", "dead")
    sim.start()
    assert sim.state == ("active", "running")


def test_start_limit_window_slides() -> None:
    sim = Sim.of("ExecStart=/bin/main", unit="StartLimitIntervalSec=10\nStartLimitBurst=2")
    for _ in range(2):
        sim.start()
        sim.exit(sim.main().proc, 0)
    sim.start()
    assert sim.machine.result.value == "start-limit-hit"
    sim.advance(11)
    sim.start()
    assert sim.state == ("active", "running")


def test_sigterm_ignored_escalates_to_sigkill_after_timeout_stop() -> None:
    sim = Sim.of("ExecStart=/bin/main\nTimeoutStopSec=5")
    sim.start()
    sim.stubborn.add(sim.main().proc)
    sim.stop()
    assert sim.state == ("deactivating", "stop-sigterm")
    sim.advance(4.9)
    assert sim.state == ("deactivating", "stop-sigterm")
    sim.advance(0.2)
    assert signal.SIGKILL in [k.signal for k in sim.kills]
    assert sim.state == ("failed", "failed")
    assert sim.machine.result.value == "timeout"


def test_send_sigkill_no_gives_up() -> None:
    sim = Sim.of("ExecStart=/bin/main\nTimeoutStopSec=5\nSendSIGKILL=no")
    sim.start()
    sim.stubborn.add(sim.main().proc)
    sim.stop()
    sim.advance(30)
    assert signal.SIGKILL not in [k.signal for k in sim.kills]
    assert sim.machine.result.value == "timeout"


@pytest.mark.parametrize(
    ("mode", "first_scope", "final_scope"),
    [
        ("control-group", KillScope.GROUP, KillScope.GROUP),
        ("mixed", KillScope.MAIN, KillScope.GROUP),
        ("process", KillScope.MAIN, KillScope.MAIN),
        ("none", KillScope.NOTHING, KillScope.NOTHING),
    ],
)
def test_kill_modes(mode: str, first_scope: KillScope, final_scope: KillScope) -> None:
    sim = Sim.of(f"ExecStart=/bin/main\nKillMode={mode}\nKillSignal=SIGINT\nSendSIGHUP=yes")
    sim.start()
    sim.stop()
    first = sim.kills[0]
    assert (first.signal, first.scope) == (signal.SIGINT, first_scope)
    assert [k.signal for k in sim.kills[:3]] == [signal.SIGINT, signal.SIGHUP, signal.SIGCONT]
    assert sim.kills[-1].scope is final_scope
    if mode == "mixed":
        assert sim.kills[-1].signal == signal.SIGKILL
    assert sim.state == ("inactive", "dead")


def test_start_timeout_fails_and_kills() -> None:
    sim = Sim.of("ExecStartPre=/bin/slow\nExecStart=/bin/main\nTimeoutStartSec=3")
    sim.start()
    sim.advance(3)
    assert sim.machine.result.value == "timeout"
    assert sim.state == ("failed", "failed")
    assert sim.kills[0].signal == signal.SIGTERM


def test_oneshot_runs_commands_in_order_then_dead() -> None:
    sim = Sim.of("Type=oneshot\nExecStart=/bin/a\nExecStart=/bin/b ; /bin/c")
    sim.start()
    assert sim.state == ("activating", "start")
    for _ in range(3):
        sim.exit_last(0)
    assert [s.command.path for s in sim.spawned] == ["/bin/a", "/bin/b", "/bin/c"]
    assert sim.state == ("inactive", "dead")
    assert sim.timer is None  # oneshot: no start timeout by default


def test_oneshot_remain_after_exit_then_stop_runs_exec_stop() -> None:
    sim = Sim.of("Type=oneshot\nRemainAfterExit=yes\nExecStart=/bin/a\nExecStop=/bin/undo")
    sim.start()
    sim.exit_last(0)
    assert sim.state == ("active", "exited")
    sim.stop()
    assert sim.spawned[-1].command.path == "/bin/undo"
    sim.exit_last(0)
    assert sim.state == ("inactive", "dead")


def test_exec_type_is_started_only_after_exec() -> None:
    sim = Sim.of("Type=exec\nExecStart=/bin/main")
    sim.live.clear()
    actions = sim.machine.handle(StartRequest(), 0.0)
    assert sim.machine.sub == "start"
    assert any(type(a).__name__ == "Spawn" for a in actions)
    sim2 = Sim.of("Type=exec\nExecStart=/bin/missing")
    sim2.machine.handle(StartRequest(), 0.0)
    from corral.units.machine import ProcessExited

    sim2.send(ProcessExited(1, code=203))
    assert sim2.state == ("failed", "failed")


def test_forking_uses_pid_file() -> None:
    sim = Sim.of("Type=forking\nPIDFile=/run/d.pid\nExecStart=/bin/daemonize")
    sim.start()
    assert sim.state == ("activating", "start")
    sim.exit_last(0)
    assert sim.pid_requests[-1].pid_file == "/run/d.pid"
    sim.main_pid(4242)
    assert sim.state == ("active", "running")
    assert sim.machine.main_pid == 4242


def test_forking_missing_pid_file_fails_with_protocol() -> None:
    sim = Sim.of("Type=forking\nPIDFile=/run/d.pid\nExecStart=/bin/daemonize")
    sim.start()
    sim.exit_last(0)
    sim.main_pid(None)
    assert sim.machine.result.value == "protocol"


def test_notify_waits_for_ready() -> None:
    sim = Sim.of("Type=notify\nExecStart=/bin/main\nTimeoutStartSec=20")
    sim.start()
    assert sim.main().notify
    sim.advance(15)
    sim.notify(STATUS="warming up")
    assert sim.state == ("activating", "start")
    sim.notify(READY="1", STATUS="serving")
    assert sim.state == ("active", "running")
    assert sim.machine.status_text == "serving"


def test_notify_main_exits_before_ready_is_protocol_failure() -> None:
    sim = Sim.of("Type=notify\nExecStart=/bin/main")
    sim.start()
    sim.exit(sim.main().proc, 0)
    assert sim.machine.result.value == "protocol"
    assert sim.state == ("failed", "failed")


def test_notify_extend_timeout() -> None:
    sim = Sim.of("Type=notify\nExecStart=/bin/main\nTimeoutStartSec=5")
    sim.start()
    sim.advance(4)
    sim.notify(EXTEND_TIMEOUT_USEC="10000000")
    sim.advance(9)
    assert sim.state == ("activating", "start")
    sim.advance(2)
    assert sim.machine.result.value == "timeout"


def test_exec_condition_skip_and_fail() -> None:
    sim = Sim.of("ExecCondition=/bin/check\nExecStart=/bin/main\nRestart=always")
    sim.start()
    assert sim.state == ("activating", "condition")
    sim.exit_last(1)
    assert sim.state == ("inactive", "dead")
    assert sim.machine.condition_skipped
    sim.advance(10)
    assert sim.state == ("inactive", "dead")  # a skipped unit is not restarted
    sim2 = Sim.of("ExecCondition=/bin/check\nExecStart=/bin/main")
    sim2.start()
    sim2.exit_last(255)
    assert sim2.state == ("failed", "failed")


def test_unit_conditions_skip_without_failing() -> None:
    sim = Sim.of("ExecStart=/bin/main")
    sim.send(StartRequest(ConditionOutcome.SKIP))
    assert sim.state == ("inactive", "dead")
    assert not sim.spawned


def test_restart_request_stops_then_starts() -> None:
    sim = Sim.of("ExecStart=/bin/main\nExecStop=/bin/stop")
    sim.start()
    first = sim.main().proc
    sim.send(RestartRequest())
    sim.exit_last(0)  # ExecStop
    assert sim.state == ("active", "running")
    assert sim.main().proc != first
    assert "stop" in sim.subs


def test_stop_during_auto_restart_goes_dead() -> None:
    sim = Sim.of("ExecStart=/bin/main\nRestart=always\nRestartSec=5")
    sim.start()
    sim.exit(sim.main().proc, 1)
    assert sim.state == ("activating", "auto-restart")
    sim.stop()
    assert sim.state == ("inactive", "dead")
    sim.advance(10)
    assert sim.state == ("inactive", "dead")


def test_main_exit_with_failure_skips_exec_stop() -> None:
    sim = Sim.of("ExecStart=/bin/main\nExecStop=/bin/stop\nExecStopPost=/bin/post")
    sim.start()
    sim.exit(sim.main().proc, 1)
    assert [s.command.path for s in sim.spawned] == ["/bin/main", "/bin/post"]
    env = dict(sim.spawned[-1].extra_env)
    assert env["SERVICE_RESULT"] == "exit-code"
    assert (env["EXIT_CODE"], env["EXIT_STATUS"]) == ("exited", "1")


def test_main_clean_exit_runs_exec_stop_without_mainpid() -> None:
    sim = Sim.of("ExecStart=/bin/main\nExecStop=/bin/stop")
    sim.start()
    sim.exit(sim.main().proc, 0)
    stop = sim.spawned[-1]
    assert stop.command.path == "/bin/stop"
    assert "MAINPID" not in dict(stop.extra_env)


def test_reload_runs_exec_reload_with_mainpid() -> None:
    from corral.units.machine import ReloadRequest

    sim = Sim.of("ExecStart=/bin/main\nExecReload=/bin/kill -HUP $MAINPID")
    sim.start()
    sim.send(ReloadRequest())
    assert sim.state == ("reloading", "reload")
    assert ("MAINPID", "1001") in sim.spawned[-1].extra_env
    sim.exit_last(0)
    assert sim.state == ("active", "running")


def test_stale_timer_is_ignored() -> None:
    from corral.units.machine import TimerFired

    sim = Sim.of("ExecStartPre=/bin/pre\nExecStart=/bin/main\nTimeoutStartSec=5")
    sim.start()
    old = sim.timer
    assert old is not None
    sim.exit_last(0)
    sim.send(TimerFired(old.generation))
    assert sim.state == ("active", "running")


OPS = st.sampled_from(
    [
        "watchdog",
        "start",
        "stop",
        "restart",
        "reload",
        "reset",
        "exit0",
        "exit1",
        "sigkill",
        "ctl0",
        "ctl1",
        "ready",
        "tick",
        "long",
        "stubborn",
        "pid",
        "nopid",
    ]
)
BODIES = [
    "ExecStart=/bin/main\nRestart=always\nRestartSec=1\nTimeoutStopSec=3",
    "Type=notify\nExecStartPre=-/bin/pre\nExecStart=/bin/main\nExecStartPost=/bin/post\n"
    "ExecStop=/bin/stop\nExecStopPost=/bin/stoppost\nRestart=on-failure\nTimeoutStartSec=5\n"
    "TimeoutStopSec=2\nExecReload=/bin/reload",
    "Type=oneshot\nRemainAfterExit=yes\nExecCondition=/bin/cond\nExecStart=/bin/a\n"
    "ExecStart=/bin/b\nExecStop=/bin/undo",
    "Type=forking\nPIDFile=/run/x.pid\nExecStart=/bin/fork\nKillMode=mixed\nTimeoutSec=4",
    "Type=exec\nExecStart=/bin/main\nKillMode=process\nSendSIGKILL=no\nTimeoutStopSec=1\n"
    "Restart=on-abnormal",
    "Type=notify\nExecStart=/bin/main\nWatchdogSec=2\nRestart=on-watchdog\nTimeoutStopSec=1",
]


@given(st.sampled_from(BODIES), st.lists(OPS, max_size=40))
def test_random_event_sequences_keep_invariants(body: str, ops: list[str]) -> None:
    """Whatever happens, states are systemd's, and a dead/failed unit has no processes left."""
    sim = Sim.of(body, unit="StartLimitBurst=100")
    for op in ops:
        main = [sp.proc for sp in sim.live.values() if sp.is_main]
        ctl = [sp.proc for sp in sim.live.values() if not sp.is_main]
        match op:
            case "start":
                sim.start()
            case "stop":
                sim.stop()
            case "restart":
                sim.send(RestartRequest())
            case "reload":
                sim.send(ReloadRequest())
            case "reset":
                sim.send(ResetFailed())
            case "exit0" | "exit1" | "sigkill" if main:
                sim.exit(
                    main[0], 0 if op == "exit0" else 1, signal.SIGKILL if op == "sigkill" else None
                )
            case "ctl0" | "ctl1" if ctl:
                sim.exit(ctl[0], 0 if op == "ctl0" else 1)
            case "ready":
                sim.notify(READY="1")
            case "watchdog":
                sim.notify(WATCHDOG="1")
            case "tick":
                sim.advance(1.0)
            case "long":
                sim.advance(100.0)
            case "stubborn":
                sim.stubborn.update(sim.live)
            case "pid" | "nopid" if sim.pid_requests and sim.machine.sub == "start":
                sim.main_pid(5000 if op == "pid" else None)
        m = sim.machine
        assert m.sub in ACTIVE_OF_SUB
        if m.sub in ("dead", "failed", "auto-restart"):
            assert not sim.live, (m.sub, sim.live)
            assert m.main_pid is None
        if m.sub in ("dead", "failed"):
            assert sim.timer is None
            assert sim.watchdog is None
        if m.sub == "running":
            assert any(sp.is_main for sp in sim.live.values()) or m.main_pid == 5000
