"""Helpers for `corral node` tests: configs on free ports and machines as real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["Machine", "eventually", "kv_config", "machines"]


def eventually(check: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Poll `check` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def kv_config(
    name: str, client: int, peer: int, initial_cluster: str, extra: str = ""
) -> str:
    return f"""#cloud-config
hostname: {name}
coreos:
  etcd2:
    name: {name}
    listen_client_urls: http://127.0.0.1:{client}
    advertise_client_urls: http://127.0.0.1:{client}
    listen_peer_urls: http://127.0.0.1:{peer}
    initial_advertise_peer_urls: http://127.0.0.1:{peer}
    initial_cluster: {initial_cluster}
    heartbeat_interval: 50
    election_timeout: 500
{extra}"""


@dataclass
class Machine:
    """One `corral node` process under its own root."""

    root: Path
    config: Path
    client_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root.parent / f"{self.root.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "corral", "node", "--root", str(self.root),
                 "--cloud-config", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"corral node exited early:\n{self.output()}")
        return "machine up" in self.output()

    def put(self, key: str, value: str) -> dict[str, object] | None:
        req = urllib.request.Request(
            f"{self.url}/v2/keys/{key}", data=f"value={value}".encode(), method="PUT",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                doc: dict[str, object] = json.load(resp)
                return doc
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def get(self, key: str) -> dict[str, object] | None:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/keys/{key}", timeout=5) as resp:
                doc: dict[str, object] = json.load(resp)
                return doc
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def stop(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise
        return self.proc.returncode


@pytest.fixture
def machines() -> Iterator[list[Machine]]:
    """Machines a test starts; any still running at the end are killed with their groups."""
    started: list[Machine] = []
    yield started
    for m in started:
        if m.proc is not None and m.proc.poll() is None:
            try:
                m.stop()
            except subprocess.TimeoutExpired:
                pass
