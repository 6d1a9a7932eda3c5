"""Long-running verbs (`watch -f`, `exec-watch`) of etcdctl and `corral kv`, compared live.

Both tools run as real processes against the same member. Each watch starts from a known
index (`--after-index`), so which events it sees does not depend on when it registered;
the test writes one value at a time and waits for the tool to print it before the next.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.client import SyncClient
from corral.client.testkit import server_cluster
from corral.testing.servers import ServerProcess

pytestmark = pytest.mark.interop


@pytest.fixture(params=["etcd", "corral"])
def member(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    kind = str(request.param)
    try:
        cm = server_cluster(kind, tmp_path / kind, size=1)
        members = cm.__enter__()
    except (RuntimeError, TimeoutError) as exc:
        if kind == "corral":
            pytest.xfail(f"corral etcd does not start yet: {str(exc)[-300:]}")
        raise
    try:
        yield members[0]
    finally:
        cm.__exit__(None, None, None)


def _command(tool: str, endpoint: str, argv: list[str]) -> list[str]:
    if tool == "etcdctl":
        return ["etcdctl", "--endpoints", endpoint, *argv]
    return [sys.executable, "-m", "corral", "kv", "--endpoints", endpoint, *argv]


class Lines:
    """A child process whose stdout lines are collected by a reader thread."""

    def __init__(self, argv: list[str]) -> None:
        env = dict(os.environ, ETCDCTL_API="2")
        env.pop("ETCDCTL_ENDPOINTS", None)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                if self.proc.poll() is None:
                    self.proc.kill()
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"got {self.lines!r}, wanted {count} lines; {err}")
            time.sleep(0.02)

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def _watch_forever(tool: str, m: ServerProcess, prefix: str) -> list[str]:
    with SyncClient(m.client_url) as c:
        start = c.set(f"{prefix}/k", "0").etcd_index
        w = Lines(_command(tool, m.client_url,
                           ["watch", "-f", "-r", "--after-index", str(start), prefix]))
        try:
            c.mkdir(f"{prefix}/skipped-dir")  # dir events are not printed
            for i in range(1, 4):
                c.set(f"{prefix}/k", str(i))
                w.wait_for(2 * i)
            c.delete(f"{prefix}/k")
            w.wait_for(8)
        finally:
            code = w.interrupt()
    assert code in (0, -signal.SIGINT)
    return [line.replace(prefix, "<P>") for line in w.lines]


def test_watch_forever_prints_the_same(member: ServerProcess) -> None:
    by_etcdctl = _watch_forever("etcdctl", member, "/wf-etcdctl")
    by_kv = _watch_forever("kv", member, "/wf-kv")
    assert by_kv[:2] == ["[set] <P>/k", "1"]
    assert by_kv == by_etcdctl


def _exec_watch(tool: str, m: ServerProcess, prefix: str) -> list[str]:
    with SyncClient(m.client_url) as c:
        start = c.set(f"{prefix}/k", "0").etcd_index
        script = 'echo "$ETCD_WATCH_ACTION $ETCD_WATCH_KEY $ETCD_WATCH_VALUE"'
        # etcdctl 3.4 drops "--" and takes the last argument as the key: CMD… KEY.
        w = Lines(_command(tool, m.client_url, ["exec-watch", "-r", "--after-index",
                                                str(start), "sh", "-c", script, prefix]))
        try:
            for i in range(1, 3):
                c.set(f"{prefix}/k", str(i))
                w.wait_for(i)
        finally:
            w.interrupt()
    return [line.replace(prefix, "<P>") for line in w.lines]


def test_exec_watch_runs_the_command_per_event(member: ServerProcess) -> None:
    by_kv = _exec_watch("kv", member, "/ew-kv")
    assert by_kv == ["set <P>/k 1", "set <P>/k 2"]
    assert _exec_watch("etcdctl", member, "/ew-etcdctl") == by_kv
