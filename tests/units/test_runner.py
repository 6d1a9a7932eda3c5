"""The runner on real processes: one test per Type=, per Exec prefix, and the classic cases."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from corral.units.config import Defaults
from corral.units.errors import JobError, UnitNotFoundError
from corral.units.supervisor import UnitRunner

Body = Callable[[UnitRunner], Awaitable[None]]


def run(tmp_path: Path, scope: tuple[str, str], body: Body, **defaults: object) -> None:
    opts: dict[str, object] = {"timeout_start": 10.0, "timeout_stop": 5.0, "restart_sec": 0.1}
    opts.update(defaults)
    d = Defaults(environment=(scope,), **opts)  # type: ignore[arg-type]

    async def main() -> None:
        async with UnitRunner(tmp_path / "root", hostname="node1", defaults=d) as runner:
            await asyncio.wait_for(body(runner), 60)

    asyncio.run(main())


async def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def state(r: UnitRunner, name: str) -> tuple[str, str]:
    st = r.status(name)
    return st.active_state, st.sub_state


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rpartition(b")")[2].split()[:1] != [b"Z"]


PY = sys.executable


def test_simple_start_status_journal_stop(tmp_path: Path, scope: tuple[str, str]) -> None:
    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "a.service",
            "[Unit]\nDescription=Alpha\n[Service]\n"
            "ExecStart=/bin/sh -c 'echo hello from $INVOCATION_ID; exec sleep 60'\n",
        )
        assert await r.start_unit("a.service") == "done"
        st = r.status("a.service")
        assert (st.active_state, st.sub_state, st.load_state) == ("active", "running", "loaded")
        assert st.main_pid and alive(st.main_pid)
        await eventually(lambda: any("hello from" in x for x in r.journal.tail("a.service")))
        pid = st.main_pid
        await r.stop_unit("a.service")
        assert state(r, "a.service") == ("inactive", "dead")
        assert not alive(pid)
        lines = r.journal.tail("a.service", 2)
        assert lines[-1].endswith("a.service: Stopped Alpha.")

    run(tmp_path, scope, body)


def test_simple_with_missing_binary_starts_then_fails(
    tmp_path: Path, scope: tuple[str, str]
) -> None:
    async def body(r: UnitRunner) -> None:
        r.load_unit("m.service", "[Service]\nExecStart=/nonexistent/bin\n")
        await r.start_unit("m.service", wait=False)
        await eventually(lambda: state(r, "m.service") == ("failed", "failed"))
        assert r.status("m.service").result == "exit-code"
        assert any("Failed to locate executable" in x for x in r.journal.tail("m.service"))

    run(tmp_path, scope, body)


def test_exec_type_fails_the_start_job_for_a_missing_binary(
    tmp_path: Path, scope: tuple[str, str]
) -> None:
    async def body(r: UnitRunner) -> None:
        r.load_unit("e.service", "[Service]\nType=exec\nExecStart=/nonexistent/bin\n")
        with pytest.raises(JobError, match=r"Job for e\.service failed"):
            await r.start_unit("e.service")
        r.load_unit("ok.service", "[Service]\nType=exec\nExecStart=/bin/sleep 60\n")
        assert await r.start_unit("ok.service") == "done"
        assert state(r, "ok.service") == ("active", "running")
        await r.stop_unit("ok.service")

    run(tmp_path, scope, body)


def test_oneshot_remain_after_exit(tmp_path: Path, scope: tuple[str, str]) -> None:
    out = tmp_path / "out"

    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "o.service",
            f"[Service]\nType=oneshot\nRemainAfterExit=yes\n"
            f"ExecStart=/bin/sh -c 'echo one >> {out}'\n"
            f"ExecStart=/bin/sh -c 'echo two >> {out}'\n"
            f"ExecStop=/bin/sh -c 'echo stop $SERVICE_RESULT >> {out}'\n",
        )
        assert await r.start_unit("o.service") == "done"
        assert state(r, "o.service") == ("active", "exited")
        assert out.read_text() == "one\ntwo\n"
        await r.stop_unit("o.service")
        assert out.read_text() == "one\ntwo\nstop success\n"
        assert state(r, "o.service") == ("inactive", "dead")
        r.load_unit(
            "p.service", f"[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo p >> {out}'\n"
        )
        assert await r.start_unit("p.service") == "done"
        assert state(r, "p.service") == ("inactive", "dead")

    run(tmp_path, scope, body)


def test_forking_daemon_with_pid_file(tmp_path: Path, scope: tuple[str, str]) -> None:
    pidfile = tmp_path / "d.pid"

    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "f.service",
            f"[Service]\nType=forking\nPIDFile={pidfile}\n"
            f"ExecStart=/bin/sh -c 'setsid sleep 60 < /dev/null > /dev/null 2>&1 & "
            f"echo $! > {pidfile}'\n",
        )
        assert await r.start_unit("f.service") == "done"
        st = r.status("f.service")
        assert (st.active_state, st.sub_state) == ("active", "running")
        assert st.main_pid == int(pidfile.read_text())
        assert st.main_pid and alive(st.main_pid)
        await eventually(lambda: r.status("f.service").main_comm == "sleep")
        await r.stop_unit("f.service")
        assert not alive(st.main_pid)
        assert state(r, "f.service") == ("inactive", "dead")

    run(tmp_path, scope, body)


NOTIFY = (
    "import os, socket, time\n"
    "time.sleep(float(os.environ.get('DELAY', '0.4')))\n"
    "a = os.environ['NOTIFY_SOCKET']\n"
    "a = '\\0' + a[1:] if a.startswith('@') else a\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
    "s.sendto(b'READY=1\\nSTATUS=serving', a)\n"
    "time.sleep(60)\n"
)


def test_notify_service_ready_late(tmp_path: Path, scope: tuple[str, str]) -> None:
    script = tmp_path / "notify.py"
    script.write_text(NOTIFY)

    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "n.service", f"[Service]\nType=notify\nEnvironment=DELAY=0.5\nExecStart={PY} {script}\n"
        )
        job = asyncio.ensure_future(r.start_unit("n.service"))
        await eventually(lambda: state(r, "n.service") == ("activating", "start"))
        await asyncio.sleep(0.2)
        assert not job.done() and state(r, "n.service") == ("activating", "start")
        assert await job == "done"
        st = r.status("n.service")
        assert (st.active_state, st.sub_state, st.status_text) == ("active", "running", "serving")
        await r.stop_unit("n.service")

    run(tmp_path, scope, body)


def test_notify_start_timeout(tmp_path: Path, scope: tuple[str, str]) -> None:
    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "slow.service",
            "[Service]\nType=notify\nTimeoutStartSec=300ms\nExecStart=/bin/sleep 60\n",
        )
        with pytest.raises(JobError):
            await r.start_unit("slow.service")
        st = r.status("slow.service")
        assert (st.active_state, st.result) == ("failed", "timeout")

    run(tmp_path, scope, body)


def test_exec_prefixes_on_real_processes(tmp_path: Path, scope: tuple[str, str]) -> None:
    shared = Path(tempfile.mkdtemp(prefix="corral-units-"))  # reachable by User=nobody
    out = shared / "out"
    out.touch()
    os.chmod(shared, 0o777)
    os.chmod(out, 0o666)

    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "x.service",
            f"[Service]\nType=oneshot\nUser=nobody\nEnvironment=FOO=bar\n"
            f"ExecStart=-/bin/false\n"
            f"ExecStart=@/bin/sh custom0 -c 'echo at=$0 >> {out}'\n"
            f"ExecStart=:/bin/sh -c 'echo colon=$FOO >> {out}' \n"
            f"ExecStart=/bin/sh -c 'echo plain=$FOO uid=$(id -u) groups=$(id -G) >> {out}'\n"
            f"ExecStart=+/bin/sh -c 'echo plus=$(id -u) >> {out}'\n"
            f"ExecStart=!/bin/sh -c 'echo bang=$(id -u) >> {out}'\n",
        )
        assert await r.start_unit("x.service") == "done"
        lines = out.read_text().splitlines()
        nobody = pwd.getpwnam("nobody").pw_uid
        nogroup = pwd.getpwnam("nobody").pw_gid  # the user's primary group, nothing else
        # ":" leaves $FOO for the shell, which sees FOO in its environment anyway
        assert lines == [
            "at=custom0",
            "colon=bar",
            f"plain=bar uid={nobody} groups={nogroup}",
            "plus=0",
            "bang=0",
        ]
        r.load_unit(
            "y.service",
            "[Service]\nType=oneshot\nExecStart=/bin/echo $$FOO ${FOO}x\n"
            "ExecStart=:/bin/echo $FOO\nEnvironment=FOO=bar\n",
        )
        await r.start_unit("y.service")
        await eventually(lambda: len([x for x in r.journal.tail("y.service") if "echo[" in x]) == 2)
        echoed = [x.split(": ", 1)[1] for x in r.journal.tail("y.service") if "echo[" in x]
        assert echoed == ["$FOO barx", "$FOO"]

    try:
        run(tmp_path, scope, body)
    finally:
        shutil.rmtree(shared)


def test_main_process_ignoring_sigterm_is_killed(tmp_path: Path, scope: tuple[str, str]) -> None:
    armed = tmp_path / "armed"

    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "stubborn.service",
            "[Service]\nTimeoutStopSec=400ms\n"
            f"ExecStart=/bin/sh -c 'trap \"\" TERM; touch {armed}; sleep 60 & wait; sleep 60'\n",
        )
        await r.start_unit("stubborn.service")
        # The shell must have ignored SIGTERM before the stop, or it simply dies.
        await eventually(armed.exists)
        pid = r.status("stubborn.service").main_pid
        assert pid
        t0 = time.monotonic()
        await r.stop_unit("stubborn.service")
        assert time.monotonic() - t0 >= 0.35
        st = r.status("stubborn.service")
        assert (st.active_state, st.result) == ("failed", "timeout")
        assert not alive(pid)
        assert any("timed out. Killing" in x for x in r.journal.tail("stubborn.service"))

    run(tmp_path, scope, body)


def test_stop_kills_the_whole_group_including_double_forked(
    tmp_path: Path, scope: tuple[str, str]
) -> None:
    pidfile = tmp_path / "escaped"

    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "g.service",
            f"[Service]\nExecStart=/bin/sh -c "
            f"'setsid sh -c \"echo \\\\$\\\\$ > {pidfile}; exec sleep 60\" & exec sleep 60'\n",
        )
        await r.start_unit("g.service")
        await eventually(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
        escaped = int(pidfile.read_text())
        assert alive(escaped) and os.getpgid(escaped) != r.status("g.service").main_pid
        await r.stop_unit("g.service")
        await eventually(lambda: not alive(escaped), 3)

    run(tmp_path, scope, body)


def test_restart_on_failure_until_start_limit(tmp_path: Path, scope: tuple[str, str]) -> None:
    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "crash.service",
            "[Unit]\nStartLimitIntervalSec=30\nStartLimitBurst=3\n"
            "[Service]\nExecStart=/bin/sh -c 'exit 3'\nRestart=on-failure\nRestartSec=50ms\n",
        )
        await r.start_unit("crash.service", wait=False)
        await eventually(lambda: r.status("crash.service").result == "start-limit-hit")
        st = r.status("crash.service")
        assert (st.active_state, st.restart_count) == ("failed", 3)
        r.reset_failed("crash.service")
        assert state(r, "crash.service") == ("inactive", "dead")

    run(tmp_path, scope, body)


def test_environment_files_and_working_directory(tmp_path: Path, scope: tuple[str, str]) -> None:
    envfile = tmp_path / "env"
    envfile.write_text("A=from-file\nB='quoted value'\n")
    work = tmp_path / "work"
    work.mkdir()
    out = tmp_path / "out"

    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "env.service",
            f"[Service]\nType=oneshot\nEnvironment=A=inline C=c\n"
            f"EnvironmentFile={envfile}\nEnvironmentFile=-/nonexistent\n"
            f"WorkingDirectory={work}\nUnsetEnvironment=LANG\n"
            f"ExecStart=/bin/sh -c 'echo \"$A|$B|$C|$(pwd)|${{LANG:-unset}}|$HOME\" > {out}'\n",
        )
        await r.start_unit("env.service")
        assert out.read_text().strip() == f"from-file|quoted value|c|{work}|unset|"
        r.load_unit(
            "bad.service",
            "[Service]\nType=oneshot\nWorkingDirectory=/nonexistent\nExecStart=/bin/true\n",
        )
        with pytest.raises(JobError):
            await r.start_unit("bad.service")
        assert any("status=200/CHDIR" in x for x in r.journal.tail("bad.service"))

    run(tmp_path, scope, body)


def test_ordered_dependencies(tmp_path: Path, scope: tuple[str, str]) -> None:
    out = tmp_path / "order"

    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "db.service",
            f"[Service]\nType=notify\nEnvironment=DELAY=0.3\n"
            f"ExecStartPre=/bin/sh -c 'echo db >> {out}'\n"
            f"ExecStart={PY} {tmp_path / 'notify.py'}\n",
        )
        r.load_unit(
            "app.service",
            f"[Unit]\nRequires=db.service\nAfter=db.service\n"
            f"Wants=log.service\n[Service]\n"
            f"ExecStartPre=/bin/sh -c 'echo app >> {out}'\nExecStart=/bin/sleep 60\n",
        )
        r.load_unit(
            "log.service",
            f"[Unit]\nBefore=app.service\n[Service]\nType=oneshot\n"
            f"RemainAfterExit=yes\nExecStart=/bin/sh -c 'sleep 0.2; echo log >> {out}'\n",
        )
        (tmp_path / "notify.py").write_text(NOTIFY)
        await r.start_unit("app.service")
        assert out.read_text().split() in (["db", "log", "app"], ["log", "db", "app"])
        assert {state(r, n)[0] for n in ("db.service", "app.service", "log.service")} == {"active"}
        await r.stop_unit("db.service")  # Requires= propagates the stop
        assert state(r, "app.service") == ("inactive", "dead")
        r.load_unit("broken.service", "[Service]\nType=oneshot\nExecStart=/bin/false\n")
        r.load_unit(
            "needy.service",
            "[Unit]\nRequires=broken.service\nAfter=broken.service\n"
            "[Service]\nExecStart=/bin/sleep 60\n",
        )
        with pytest.raises(JobError, match="dependency"):
            await r.start_unit("needy.service")
        assert state(r, "needy.service") == ("inactive", "dead")
        await r.stop_unit("log.service")

    run(tmp_path, scope, body)


def test_binds_to_sidekick_and_conflicts(tmp_path: Path, scope: tuple[str, str]) -> None:
    async def body(r: UnitRunner) -> None:
        r.load_unit("app@.service", "[Service]\nExecStart=/bin/sleep 60\n")
        r.load_unit(
            "side@.service",
            "[Unit]\nBindsTo=app@%i.service\nAfter=app@%i.service\n"
            "[Service]\nExecStart=/bin/sleep 60\n",
        )
        await r.start_unit("side@1.service")
        assert state(r, "app@1.service") == ("active", "running")
        os.kill(r.status("app@1.service").main_pid or 0, signal.SIGKILL)
        await eventually(lambda: state(r, "side@1.service")[0] == "inactive")
        r.load_unit(
            "other.service", "[Unit]\nConflicts=app@1.service\n[Service]\nExecStart=/bin/sleep 60\n"
        )
        await r.start_unit("app@1.service")
        await r.start_unit("other.service")
        assert state(r, "app@1.service")[0] == "inactive"
        await r.stop_unit("other.service")

    run(tmp_path, scope, body)


def test_templates_and_specifiers_on_real_processes(tmp_path: Path, scope: tuple[str, str]) -> None:
    out = tmp_path / "spec"

    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "web@.service",
            f"[Unit]\nDescription=Web %i\n[Service]\nType=oneshot\n"
            f"ExecStart=/bin/sh -c 'echo %n %i %H %m >> {out}'\n",
        )
        await r.start_unit("web@8080.service")
        assert out.read_text().split() == [
            "web@8080.service",
            "8080",
            "node1",
            r.machine.machine_id,
        ]
        assert r.status("web@8080.service").description == "Web 8080"
        assert (tmp_path / "root/etc/machine-id").read_text().strip() == r.machine.machine_id

    run(tmp_path, scope, body)


def test_bad_unit_files_never_crash_the_runner(tmp_path: Path, scope: tuple[str, str]) -> None:
    async def body(r: UnitRunner) -> None:
        (r.layout.persistent / "broken.service").write_text("[Unit\nDescription=x\n")
        (r.layout.persistent / "noexec.service").write_text("[Service]\nType=simple\n")
        r.daemon_reload()
        st = r.status("broken.service")
        assert st.load_state == "error" and "broken.service:1:" in st.load_error
        assert r.status("noexec.service").load_state == "bad-setting"
        with pytest.raises(Exception, match="bad unit file setting"):
            await r.start_unit("noexec.service")
        assert r.status("missing.service").load_state == "not-found"
        r.load_unit("fine.service", "[Service]\nExecStart=/bin/sleep 60\n")
        await r.start_unit("fine.service")
        await r.stop_unit("fine.service")

    run(tmp_path, scope, body)


def test_dropin_and_daemon_reload(tmp_path: Path, scope: tuple[str, str]) -> None:
    out = tmp_path / "out"

    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "d.service",
            f"[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo old >> {out}'\n",
            runtime=False,
        )
        dropdir = r.layout.persistent / "d.service.d"
        dropdir.mkdir()
        (dropdir / "override.conf").write_text(
            f"[Service]\nExecStart=\nExecStart=/bin/sh -c 'echo new >> {out}'\n"
        )
        r.daemon_reload()
        await r.start_unit("d.service")
        assert out.read_text() == "new\n"
        assert "override.conf" in r.cat("d.service")

    run(tmp_path, scope, body)


def test_journal_is_bounded(tmp_path: Path, scope: tuple[str, str]) -> None:
    async def body(r: UnitRunner) -> None:
        r.journal.max_bytes = 4096
        r.load_unit(
            "chatty.service",
            "[Service]\nType=oneshot\n"
            "ExecStart=/bin/sh -c 'i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done'\n",
        )
        await r.start_unit("chatty.service")
        await eventually(lambda: any("line 299" in x for x in r.journal.tail("chatty.service")))
        files = list(r.layout.journal.glob("chatty.service.log*"))
        assert sum(f.stat().st_size for f in files) <= 2 * 4096
        assert (
            r.journal.tail("chatty.service", 3)[-1].endswith("line 299")
            or "chatty.service" in r.journal.tail("chatty.service", 3)[-1]
        )

    run(tmp_path, scope, body)


def test_reload_and_restart(tmp_path: Path, scope: tuple[str, str]) -> None:
    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "hup.service",
            "[Service]\nExecStart=/bin/sh -c "
            "'trap \"echo reloaded\" HUP; echo up; while true; do sleep 0.05; done'\n"
            "ExecReload=/bin/kill -HUP $MAINPID\n",
        )
        await r.start_unit("hup.service")
        await eventually(lambda: any(x.endswith(": up") for x in r.journal.tail("hup.service")))
        first = r.status("hup.service").main_pid
        assert await r.reload_unit("hup.service") == "done"
        await eventually(lambda: any("reloaded" in x for x in r.journal.tail("hup.service")))
        assert r.status("hup.service").main_pid == first
        assert await r.restart_unit("hup.service") == "done"
        st = r.status("hup.service")
        assert (st.active_state, st.sub_state) == ("active", "running")
        assert st.main_pid != first and first is not None and not alive(first)
        await r.stop_unit("hup.service")

    run(tmp_path, scope, body)


def test_requires_missing_unit_refuses_start(tmp_path: Path, scope: tuple[str, str]) -> None:
    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "lonely.service",
            "[Unit]\nRequires=absent.service\n[Service]\nExecStart=/bin/sleep 60\n",
        )
        with pytest.raises(UnitNotFoundError, match=r"Unit absent\.service not found"):
            await r.start_unit("lonely.service")
        assert state(r, "lonely.service") == ("inactive", "dead")
        assert [u.name for u in r.list_units()] == ["lonely.service"]

    run(tmp_path, scope, body)


def test_on_failure_part_of_requisite_and_conditions(
    tmp_path: Path, scope: tuple[str, str]
) -> None:
    marker = tmp_path / "alarm"

    async def body(r: UnitRunner) -> None:
        r.load_unit("alarm.service", f"[Service]\nType=oneshot\nExecStart=/bin/touch {marker}\n")
        r.load_unit(
            "flaky.service",
            "[Unit]\nOnFailure=alarm.service\n[Service]\nType=oneshot\nExecStart=/bin/false\n",
        )
        with pytest.raises(JobError):
            await r.start_unit("flaky.service")
        await eventually(marker.exists)
        r.load_unit("parent.service", "[Service]\nExecStart=/bin/sleep 60\n")
        r.load_unit(
            "child.service", "[Unit]\nPartOf=parent.service\n[Service]\nExecStart=/bin/sleep 60\n"
        )
        await r.start_unit("parent.service")
        await r.start_unit("child.service")
        await r.stop_unit("parent.service")
        assert state(r, "child.service") == ("inactive", "dead")
        r.load_unit(
            "picky.service",
            "[Unit]\nRequisite=parent.service\n[Service]\nExecStart=/bin/sleep 60\n",
        )
        with pytest.raises(JobError):
            await r.start_unit("picky.service")
        assert state(r, "picky.service") == ("inactive", "dead")
        r.load_unit(
            "cond.service",
            f"[Unit]\nConditionPathExists=!{marker}\n[Service]\nExecStart=/bin/sleep 60\n",
        )
        assert await r.start_unit("cond.service") == "skipped"
        assert state(r, "cond.service") == ("inactive", "dead")
        r.load_unit(
            "assert.service",
            "[Unit]\nAssertPathIsDirectory=/nonexistent\n[Service]\nExecStart=/bin/sleep 60\n",
        )
        with pytest.raises(JobError):
            await r.start_unit("assert.service")
        r.load_unit(
            "host.service",
            "[Unit]\nConditionHost=node1\n[Service]\nType=oneshot\n"
            "RemainAfterExit=yes\nExecStart=/bin/true\n",
        )
        assert await r.start_unit("host.service") == "done"

    run(tmp_path, scope, body)


def test_standard_output_targets_and_limits(tmp_path: Path, scope: tuple[str, str]) -> None:
    log = tmp_path / "out.log"

    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "io.service",
            "[Service]\nType=oneshot\nLimitNOFILE=123:456\n"
            f"StandardOutput=append:{log}\nStandardError=journal\n"
            "ExecStart=/bin/sh -c 'echo to-file; echo nofile=$(ulimit -n) hard=$(ulimit -Hn); "
            "echo to-journal >&2'\n",
        )
        await r.start_unit("io.service")
        await r.start_unit("io.service")
        assert log.read_text() == "to-file\nnofile=123 hard=456\n" * 2
        await eventually(
            lambda: sum(x.endswith(": to-journal") for x in r.journal.tail("io.service")) == 2
        )
        assert not any("to-file" in x for x in r.journal.tail("io.service"))
        r.load_unit(
            "quiet.service",
            "[Service]\nType=oneshot\nStandardOutput=null\nExecStart=/bin/echo hidden\n",
        )
        await r.start_unit("quiet.service")
        assert not any("hidden" in x for x in r.journal.tail("quiet.service"))

    run(tmp_path, scope, body)


WATCHDOG = (
    "import os, socket, time\n"
    "a = os.environ['NOTIFY_SOCKET']\n"
    "a = '\\0' + a[1:] if a.startswith('@') else a\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
    "s.sendto(('READY=1\\nSTATUS=usec=' + os.environ['WATCHDOG_USEC']).encode(), a)\n"
    "for _ in range(3):\n"
    "    time.sleep(0.1)\n"
    "    try:\n"
    "        s.sendto(b'WATCHDOG=1', a)\n"
    "    except OSError:\n"
    "        pass  # like sd_notify(): a missing manager is not fatal\n"
    "time.sleep(60)\n"
)


def test_watchdog_kills_and_restarts(tmp_path: Path, scope: tuple[str, str]) -> None:
    script = tmp_path / "wd.py"
    script.write_text(WATCHDOG)

    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "wd.service",
            f"[Service]\nType=notify\nWatchdogSec=400ms\nRestart=on-watchdog\nRestartSec=10s\n"
            f"ExecStart={PY} {script}\n",
        )
        await r.start_unit("wd.service")
        assert r.status("wd.service").status_text == "usec=400000"
        pid = r.status("wd.service").main_pid
        await eventually(lambda: state(r, "wd.service") == ("activating", "auto-restart"))
        st = r.status("wd.service")
        assert st.result == "watchdog" and pid and not alive(pid)
        lines = r.journal.tail("wd.service")
        assert any("Watchdog timeout (limit 0.4s)!" in x for x in lines)
        assert any("status=6/ABRT" in x for x in lines)
        await r.stop_unit("wd.service")
        assert state(r, "wd.service") == ("inactive", "dead")

    run(tmp_path, scope, body)


def test_forking_without_pid_file_guesses_the_main_pid(
    tmp_path: Path, scope: tuple[str, str]
) -> None:
    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "guess.service",
            "[Service]\nType=forking\nExecStart=/bin/sh -c 'sleep 60 >/dev/null 2>&1 &'\n",
        )
        await r.start_unit("guess.service")
        st = r.status("guess.service")
        assert (st.active_state, st.sub_state) == ("active", "running")
        assert st.main_pid
        await eventually(lambda: r.status("guess.service").main_comm == "sleep")
        await r.stop_unit("guess.service")
        assert not alive(st.main_pid)

    run(tmp_path, scope, body)


def test_kill_mode_process_leaves_children(tmp_path: Path, scope: tuple[str, str]) -> None:
    child = tmp_path / "child"

    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "km.service",
            "[Service]\nKillMode=process\n"
            f"ExecStart=/bin/sh -c 'sleep 60 & echo $$! > {child}; exec sleep 60'\n",
        )
        await r.start_unit("km.service")
        await eventually(lambda: child.exists() and child.read_text().strip() != "")
        pid = int(child.read_text())
        main = r.status("km.service").main_pid
        await r.stop_unit("km.service")
        assert main and not alive(main)
        try:
            assert alive(pid)  # KillMode=process: only the main process is signalled
        finally:
            os.kill(pid, signal.SIGKILL)

    run(tmp_path, scope, body)


def test_processes_left_by_exec_start_pre_are_killed(
    tmp_path: Path, scope: tuple[str, str]
) -> None:
    left = tmp_path / "left"

    async def body(r: UnitRunner) -> None:
        r.load_unit(
            "pre.service",
            f"[Service]\nExecStartPre=/bin/sh -c 'sleep 60 & echo $$! > {left}'\n"
            "ExecStart=/bin/sleep 60\n",
        )
        await r.start_unit("pre.service")
        await eventually(lambda: not alive(int(left.read_text())))
        assert state(r, "pre.service") == ("active", "running")
        await r.stop_unit("pre.service")

    run(tmp_path, scope, body)


def test_transitive_dependencies_are_loaded_from_disk(
    tmp_path: Path, scope: tuple[str, str]
) -> None:
    async def body(r: UnitRunner) -> None:
        for name, deps in (("top", "mid"), ("mid@.service", "base"), ("base", "")):
            text = f"[Unit]\nRequires={deps}.service\nAfter={deps}.service\n" if deps else ""
            if name == "top":
                text = "[Unit]\nRequires=mid@1.service\nAfter=mid@1.service\n"
            fname = name if name.endswith(".service") else f"{name}.service"
            (r.layout.persistent / fname).write_text(
                text + "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
            )
        await r.start_unit("top.service")
        for n in ("top.service", "mid@1.service", "base.service"):
            assert state(r, n) == ("active", "exited"), n

    run(tmp_path, scope, body)


def test_a_new_runner_adopts_units_after_a_crash(tmp_path: Path, scope: tuple[str, str]) -> None:
    script = tmp_path / "wd.py"
    script.write_text(WATCHDOG.replace("range(3)", "range(1000)"))

    async def main() -> None:
        d = Defaults(environment=(scope,), timeout_stop=5)
        first = UnitRunner(tmp_path / "root", defaults=d)
        await first.start()
        first.load_unit("keep.service", "[Service]\nExecStart=/bin/sleep 60\n")
        first.load_unit(
            "wd.service", f"[Service]\nType=notify\nWatchdogSec=1s\nExecStart={PY} {script}\n"
        )
        first.load_unit(
            "once.service", "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
        )
        for n in ("keep.service", "wd.service", "once.service"):
            await first.start_unit(n)
        pids = {n: first.status(n).main_pid for n in ("keep.service", "wd.service")}
        await first.close(stop_units=False)  # as if the runner died: processes live on
        second = UnitRunner(tmp_path / "root", defaults=d)
        await second.start()
        try:
            for n, pid in pids.items():
                st = second.status(n)
                assert (st.active_state, st.sub_state, st.main_pid) == ("active", "running", pid)
            assert state(second, "once.service") == ("active", "exited")
            await asyncio.sleep(1.5)  # WATCHDOG=1 reaches the new runner's notify socket
            assert state(second, "wd.service") == ("active", "running")
            await second.stop_unit("keep.service")
            assert pids["keep.service"] and not alive(pids["keep.service"])
        finally:
            await second.close()

    asyncio.run(main())
