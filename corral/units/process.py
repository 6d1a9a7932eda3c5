"""Host processes for the supervisor: spawning, finding a unit's processes, signalling.

`ProcessDriver` is the seam where a container runtime plugs in: the supervisor hands it a
`SpawnSpec` (argv, environment, user, directory) and gets a `subprocess.Popen` back. The
default `HostDriver` execs on this host, each process in its own session (so its process
group can be signalled as a whole).

A unit's processes are found two ways, because a daemon that double-forks and calls setsid()
leaves the process group: by process group of what we spawned, and by the `INVOCATION_ID=`
variable every process of a unit inherits (read from /proc/<pid>/environ). A process that
clears its environment *and* leaves its session is not found; a cgroup would be needed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "DEFAULT_PATH",
    "HostDriver",
    "ProcessDriver",
    "SpawnSpec",
    "alive",
    "find_unit_processes",
    "resolve_executable",
    "set_child_subreaper",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True)
class SpawnSpec:
    executable: str
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    user: str | int | None = None
    group: str | int | None = None
    extra_groups: tuple[int, ...] | None = None  # supplementary groups (None: keep ours)
    stdout: str = "journal"  # journal | null | file:PATH | append:PATH | truncate:PATH
    stderr: str = "inherit"  # inherit (= stdout) | journal | null | file:… | append:… | truncate:…
    rlimits: tuple[tuple[int, int, int], ...] = ()  # (resource, soft, hard) via setrlimit


def _open_output(target: str) -> int | None:
    """A file descriptor for a StandardOutput=-style target, or None for the journal pipe."""
    if target in ("journal", "inherit", "kmsg", "journal+console", "syslog", "tty"):
        return None
    if target == "null":
        return os.open(os.devnull, os.O_WRONLY)
    kind, _, path = target.partition(":")
    flags = {
        "file": os.O_WRONLY | os.O_CREAT,
        "append": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        "truncate": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    }.get(kind)
    if flags is None or not path.startswith("/"):
        raise ValueError(f"unsupported output target {target!r}")
    return os.open(path, flags, 0o644)


class ProcessDriver(Protocol):
    def spawn(self, spec: SpawnSpec) -> subprocess.Popen[bytes]: ...


class HostDriver:
    """Run commands directly on this host."""

    def spawn(self, spec: SpawnSpec) -> subprocess.Popen[bytes]:
        """Start the process; journal-bound output comes back as `stdout` or `stderr` pipe."""
        out_fd = _open_output(spec.stdout)
        err_fd: int | None = None
        try:
            if spec.stderr != "inherit":
                err_fd = _open_output(spec.stderr)
            stdout: int = subprocess.PIPE if out_fd is None else out_fd
            if spec.stderr == "inherit":
                stderr: int = subprocess.STDOUT
            elif err_fd is not None:
                stderr = err_fd
            else:  # stderr to the journal: share the stdout pipe if there is one
                stderr = subprocess.STDOUT if out_fd is None else subprocess.PIPE
            rlimits = spec.rlimits

            def preexec() -> None:
                for res, soft, hard in rlimits:
                    resource.setrlimit(res, (soft, hard))

            return subprocess.Popen(
                list(spec.argv),
                executable=spec.executable,
                env=spec.env,
                cwd=spec.cwd,
                user=spec.user,
                group=spec.group,
                extra_groups=list(spec.extra_groups) if spec.extra_groups is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                close_fds=True,
                preexec_fn=preexec if rlimits else None,
            )
        finally:
            for fd in (out_fd, err_fd):
                if fd is not None:
                    os.close(fd)


def resolve_executable(path: str) -> str | None:
    if path.startswith("/"):
        return path if os.access(path, os.X_OK) and not os.path.isdir(path) else None
    for d in DEFAULT_PATH.split(":"):
        cand = os.path.join(d, path)
        if os.access(cand, os.X_OK) and not os.path.isdir(cand):
            return cand
    return None


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rpartition(b")")[2].split()[:1]
    return state not in ([b"Z"], [b"X"])


def find_unit_processes(invocation_id: str, pgids: set[int]) -> set[int]:
    """PIDs (not zombies) carrying this invocation id or in one of these process groups."""
    marker = f"INVOCATION_ID={invocation_id}".encode()
    me = os.getpid()
    found: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == me:
            continue
        try:
            if pgids and os.getpgid(pid) in pgids:
                if alive(pid):
                    found.add(pid)
                continue
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except (OSError, ProcessLookupError):
            continue
        if marker in env.split(b"\0") and alive(pid):
            found.add(pid)
    return found


def set_child_subreaper() -> bool:
    """Make orphans of our children re-parent to us (PR_SET_CHILD_SUBREAPER), if possible."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(36, 1, 0, 0, 0) == 0)
    return False
