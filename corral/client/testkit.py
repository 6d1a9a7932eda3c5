"""Test helpers for clients of the v2 API: servers of either kind, and a fault proxy.

`HoldingProxy` is a loopback TCP proxy placed in front of one member. In `forward` mode
it relays bytes both ways. In `hold` mode it relays the client's request to the member but
keeps the member's answer back, and signals `request_seen`; the test can then kill the
member and `drop()` the client's connection: from the client's side the request was sent
and the connection broke before any answer, which is exactly the "may or may not have been
applied" case `OutcomeUnknown` exists for. In `refuse` mode it accepts and closes at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from corral.testing.ports import free_port
from corral.testing.servers import (
    ServerProcess,
    corral_etcd_command,
    real_etcd_command,
    start_cluster,
)

__all__ = ["HoldingProxy", "Outcome", "normalize", "run_corral_kv", "run_etcdctl",
           "server_cluster"]


@dataclass(frozen=True)
class Outcome:
    """What one CLI invocation printed and returned."""

    argv: tuple[str, ...]
    code: int
    stdout: str
    stderr: str


def run_etcdctl(endpoint: str, argv: list[str], stdin: str = "",
                timeout: float = 60) -> Outcome:
    """The real etcdctl in v2 mode (`--endpoints` is added unless argv has one)."""
    exe = shutil.which("etcdctl", path="/usr/bin:/usr/local/bin:/bin") or "etcdctl"
    full = argv if "--endpoints" in argv else ["--endpoints", endpoint, *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "2"
    proc = subprocess.run([exe, *full], input=stdin.encode(), capture_output=True,
                          env=env, timeout=timeout, check=False)
    return Outcome(tuple(argv), proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def run_corral_kv(endpoint: str, argv: list[str], stdin: str = "") -> Outcome:
    """`corral kv`, run in-process through click's test runner (same argv as etcdctl)."""
    from click.testing import CliRunner

    from corral.cli.main import cli

    full = argv if "--endpoints" in argv else ["--endpoints", endpoint, *argv]
    env = {k: None for k in os.environ if k.startswith("ETCDCTL_")}
    result = CliRunner().invoke(cli, ["kv", *full], input=stdin, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(tuple(argv), result.exit_code, result.stdout, result.stderr)


def normalize(text: str, replacements: dict[str, str]) -> str:
    """Replace run-specific strings (ports, member ids, names, times) by placeholders."""
    for old, new in sorted(replacements.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(old, new)
    text = re.sub(r'"expiration":"[^"]+"', '"expiration":"<T>"', text)
    text = re.sub(r'"ttl":\d+', '"ttl":<N>', text)
    return re.sub(r"TTL: [1-9]\d*", "TTL: <N>", text)


@contextlib.contextmanager
def server_cluster(kind: str, base_dir: Path, size: int = 1) -> Iterator[list[ServerProcess]]:
    """Start a fresh cluster of real etcd 3.4 (`kind="etcd"`) or `corral etcd` members."""
    if kind == "etcd":
        command = real_etcd_command()
    elif kind == "corral":
        command = corral_etcd_command()
    else:
        raise ValueError(f"unknown server kind {kind!r}")
    with start_cluster(command, base_dir, size=size, prefix=kind) as members:
        yield members


class HoldingProxy:
    """A TCP proxy on 127.0.0.1 in front of `target_port` (see the module docstring)."""

    def __init__(self, target_port: int, mode: str = "forward") -> None:
        self.target_port = target_port
        self.mode = mode
        self.port = free_port()
        self.request_seen = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == "refuse":
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        if self.mode == "hold":
            with self._lock:
                self._held.append(client)
            data = client.recv(65536)
            if data:
                upstream.sendall(data)
            self.request_seen.set()
            # The member's answer is never relayed: the connection is held until drop().
            return
        t = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        t.start()
        self._pump(client, upstream)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def drop(self) -> None:
        """Close every held client connection without an answer."""
        with self._lock:
            held, self._held = self._held, []
        for s in held:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._stop.set()
        self.drop()
        self._listener.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HoldingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
