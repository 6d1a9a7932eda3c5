"""Start etcd-compatible servers (the real etcd 3.4, or `corral etcd`) as real processes.

Used by interop tests, the differential tester and the benchmarks, so that corral and etcd
are always started the same way and compared side by side.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from corral.testing.ports import free_ports

__all__ = ["ServerProcess", "corral_etcd_command", "real_etcd_command", "start_cluster"]


def real_etcd_command() -> list[str]:
    """The real etcd binary (Debian `etcd-server`)."""
    path = shutil.which("etcd", path="/usr/bin:/usr/local/bin:/bin") or shutil.which("etcd")
    if path is None:
        raise FileNotFoundError("etcd is not installed (Debian package etcd-server)")
    return [path]


def corral_etcd_command() -> list[str]:
    """`corral etcd`, run with the current interpreter."""
    return [sys.executable, "-m", "corral", "etcd"]


@dataclass
class ServerProcess:
    """One etcd-compatible member running as a child process."""

    command: list[str]
    name: str
    data_dir: Path
    client_port: int
    peer_port: int
    initial_cluster: str
    cluster_state: str = "new"
    extra_args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def argv(self) -> list[str]:
        return [
            *self.command,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-state={self.cluster_state}",
            "--enable-v2=true",
            *self.extra_args,
        ]

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        env.update(self.env)
        log_path = self.log_path or self.data_dir.parent / f"{self.name}.log"
        self.log_path = log_path
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        finally:
            log.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll `/version` until it answers (the member is serving)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.client_url + "/version", timeout=1) as resp:
                    json.loads(resp.read())
                    return
            except (OSError, urllib.error.URLError, ValueError):
                time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready after {timeout}s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """kill -9 the member's whole process group."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()


@contextlib.contextmanager
def start_cluster(
    command: list[str],
    base_dir: Path,
    size: int = 1,
    extra_args: Sequence[str] = (),
    prefix: str = "m",
    env: Mapping[int, Mapping[str, str]] | None = None,
    ready_timeout: float = 30.0,
) -> Iterator[list[ServerProcess]]:
    """Start `size` members of a fresh cluster under `base_dir`; stop them on exit.

    `env[i]` adds environment variables for member i (failpoints, fault injection, disks).
    """
    ports = free_ports(2 * size)
    names = [f"{prefix}{i}" for i in range(size)]
    initial = ",".join(f"{n}=http://127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(names))
    members = [
        ServerProcess(
            command=command,
            name=n,
            data_dir=base_dir / f"{n}.etcd",
            client_port=ports[2 * i],
            peer_port=ports[2 * i + 1],
            initial_cluster=initial,
            extra_args=extra_args,
            env=dict((env or {}).get(i, {})),
        )
        for i, n in enumerate(names)
    ]
    base_dir.mkdir(parents=True, exist_ok=True)
    try:
        for m in members:
            m.start()
        for m in members:
            m.wait_ready(ready_timeout)
        yield members
    finally:
        for m in members:
            m.signal(signal.SIGCONT)  # a paused member would not stop
            m.stop()
