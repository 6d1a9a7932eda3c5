"""Container drivers behind one small interface: podman, runc (OCI bundles), docker.

A driver turns a `RunSpec` into a foreground command whose exit status is the container's
(the unit's main process), and stops/removes/inspects containers by name. Stopping always acts
on the container itself: killing a client process is never enough (containers.md §4).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from corral.containers.errors import DriverError, ImageError
from corral.containers.settings import (
    ContainerSettings,
    MachinePaths,
    podman_env,
    write_podman_config,
)

__all__ = ["ContainerState", "Driver", "RunSpec", "driver_for"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class RunSpec:
    """What to run: the subset of `docker/podman run` options corral's units use."""

    name: str
    image: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    network: str = ""
    volumes: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    user: str = ""
    workdir: str = ""
    entrypoint: str | None = None
    hostname: str = ""
    init: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    rm: bool = True
    replace: bool = True
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContainerState:
    name: str
    id: str
    status: str  # created | running | exited | stopped | paused
    exit_code: int | None = None
    pid: int = 0
    image: str = ""


class Driver(Protocol):
    name: str

    def env(self) -> dict[str, str]: ...
    def run_argv(self, spec: RunSpec) -> list[str]: ...
    def stop(self, name: str, timeout: int) -> None: ...
    def kill(self, name: str, sig: str = "KILL") -> None: ...
    def remove(self, name: str, force: bool = True) -> None: ...
    def state(self, name: str) -> ContainerState | None: ...
    def list(self) -> list[ContainerState]: ...


def _run(
    argv: list[str], env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, env=full_env, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise DriverError(f"{argv[0]}: command not found", 127) from None
    except subprocess.TimeoutExpired:
        raise DriverError(f"{' '.join(argv)}: timed out after {timeout}s", 124) from None


@dataclass
class PodmanDriver:
    """podman with the machine's own containers.conf/storage.conf (settings.py)."""

    root: Path
    settings: ContainerSettings
    binary: str = ""
    name: str = "podman"

    def __post_init__(self) -> None:
        self.binary = self.binary or self.settings.podman
        write_podman_config(self.root, self.settings)

    def env(self) -> dict[str, str]:
        return podman_env(self.root)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([self.binary, *args], self.env())

    def cli_copying(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run an image-copying command (import, load) without touching the host's /var/lib.

        podman 4.3 keeps its blob-info cache at the fixed path /var/lib/containers/cache for
        root, with no setting to move it. The command runs in a private mount namespace where
        the machine's own `var/lib/…` is bind-mounted over the host folder, so the cache lands
        under the machine root.
        """
        return _run([*private_var_lib(self.root), self.binary, *args], self.env())

    def run_argv(self, spec: RunSpec) -> list[str]:
        argv = [self.binary, "run", "--name", spec.name]
        if spec.replace:
            argv.append("--replace")
        if spec.rm:
            argv.append("--rm")
        argv += ["--network", spec.network or self.settings.network]
        for k, v in spec.env:
            argv += ["--env", f"{k}={v}"]
        for v in spec.volumes:
            argv += ["--volume", v]
        for p in spec.publish:
            argv += ["--publish", p]
        for k, v in spec.labels:
            argv += ["--label", f"{k}={v}"]
        if spec.user:
            argv += ["--user", spec.user]
        if spec.workdir:
            argv += ["--workdir", spec.workdir]
        if spec.entrypoint is not None:
            argv += ["--entrypoint", spec.entrypoint]
        if spec.hostname:
            argv += ["--hostname", spec.hostname]
        if spec.init:
            argv.append("--init")
        argv += [*spec.extra, spec.image, *spec.args]
        return argv

    def stop(self, name: str, timeout: int) -> None:
        self.cli("stop", "--ignore", "-t", str(timeout), name)
        self.remove(name)

    def kill(self, name: str, sig: str = "KILL") -> None:
        r = self.cli("kill", "--signal", sig, name)
        if r.returncode != 0:
            raise DriverError(r.stderr.strip() or f"cannot kill {name}", r.returncode, r.stderr)

    def remove(self, name: str, force: bool = True) -> None:
        # `rm -f` kills at once, as docker's does; a graceful stop is `stop`'s job
        args = ["rm", "-v", "-i"] + (["-f", "-t", "0"] if force else []) + [name]
        r = self.cli(*args)
        if r.returncode != 0:
            raise DriverError(r.stderr.strip() or f"cannot remove {name}", r.returncode, r.stderr)

    def state(self, name: str) -> ContainerState | None:
        r = self.cli("inspect", "--type", "container", "--format", "json", name)
        if r.returncode != 0:
            return None
        data = json.loads(r.stdout or "[]")
        return _podman_state(data[0]) if data else None

    def list(self) -> list[ContainerState]:
        r = self.cli("ps", "-a", "--format", "json")
        if r.returncode != 0:
            raise DriverError(r.stderr.strip(), r.returncode, r.stderr)
        out = []
        for c in json.loads(r.stdout or "[]"):
            names = c.get("Names") or [""]
            out.append(
                ContainerState(
                    names[0],
                    c.get("Id", ""),
                    str(c.get("State", "")).lower(),
                    c.get("ExitCode"),
                    int(c.get("Pid") or 0),
                    c.get("Image", ""),
                )
            )
        return out


def private_var_lib(root: Path) -> list[str]:
    """A command prefix that shows `root`'s var/lib/containers as the host's (root only)."""
    if root.resolve() == Path("/") or os.geteuid() != 0 or shutil.which("unshare") is None:
        return []
    for host in ("/var/lib/containers/cache", "/var/lib/containers", "/var/lib"):
        if os.path.isdir(host):
            own = root / host.lstrip("/")
            own.mkdir(parents=True, exist_ok=True)
            script = 'mount --bind "$0" "$1" && shift && exec "$@"'
            unshare = ["unshare", "--mount", "--propagation", "private", "--"]
            return [*unshare, "sh", "-c", script, str(own), host]
    return []


def _podman_state(c: dict[str, Any]) -> ContainerState:
    st = c.get("State", {})
    return ContainerState(
        name=c.get("Name", ""),
        id=c.get("Id", ""),
        status=str(st.get("Status", "")).lower(),
        exit_code=st.get("ExitCode"),
        pid=int(st.get("Pid") or 0),
        image=c.get("ImageName", "") or c.get("Image", ""),
    )


@dataclass
class DockerDriver(PodmanDriver):
    """The docker CLI, used only when a Docker engine answers (`docker info`)."""

    name: str = "docker"

    def __post_init__(self) -> None:
        self.binary = self.binary or self.settings.docker
        r = _run([self.binary, "info", "--format", "{{.ServerVersion}}"], timeout=10)
        if r.returncode != 0:
            raise DriverError(
                "no Docker engine answers here; use driver podman or runc", 1, r.stderr
            )

    def env(self) -> dict[str, str]:
        return {}

    def run_argv(self, spec: RunSpec) -> list[str]:
        argv = super().run_argv(spec)
        return [a for a in argv if a != "--replace"]

    def remove(self, name: str, force: bool = True) -> None:
        if self.state(name) is None:
            return  # docker rm has no --ignore
        r = self.cli("rm", "-v", *(["-f"] if force else []), name)
        if r.returncode != 0:
            raise DriverError(r.stderr.strip() or f"cannot remove {name}", r.returncode, r.stderr)


@dataclass
class RuncDriver:
    """Plain runc: images are rootfs folders; each run builds an OCI bundle for the container."""

    root: Path
    settings: ContainerSettings
    name: str = "runc"
    paths: MachinePaths = field(init=False)

    def __post_init__(self) -> None:
        self.paths = MachinePaths(self.root)

    def env(self) -> dict[str, str]:
        return {}

    def _runc(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return _run(
            [self.settings.runc, "--root", str(self.paths.runc_state), *args], timeout=timeout
        )

    def image_rootfs(self, image: str) -> Path:
        from corral.containers.images import runc_image_dir

        d = runc_image_dir(self.root, image) / "rootfs"
        if not d.is_dir():
            raise ImageError(
                f"image {image!r} is not imported on this machine (corral images import)"
            )
        return d

    def run_argv(self, spec: RunSpec) -> list[str]:
        rootfs = self.image_rootfs(spec.image)
        args = ([spec.entrypoint] if spec.entrypoint else []) + list(spec.args)
        if args and not _resolve_in_rootfs(
            rootfs, args[0], dict(spec.env).get("PATH", DEFAULT_PATH)
        ):
            # runc reports a missing executable as a generic failure (1); docker and podman say 127.
            raise DriverError(f"{args[0]}: executable file not found in $PATH", 127)
        if spec.replace and self.state(spec.name) is not None:
            self.remove(spec.name)
        bundle = self.paths.bundles / spec.name
        if bundle.exists():
            shutil.rmtree(bundle)
        bundle.mkdir(parents=True)
        config = oci_config(spec, rootfs, self.settings)
        (bundle / "config.json").write_text(json.dumps(config, indent=1))
        self.paths.runc_state.mkdir(parents=True, exist_ok=True)
        argv = [
            self.settings.runc,
            "--root",
            str(self.paths.runc_state),
            "run",
            "--bundle",
            str(bundle),
        ]
        if not spec.rm:
            argv.append("--keep")
        return [*argv, spec.name]

    def stop(self, name: str, timeout: int) -> None:
        st = self.state(name)
        if st is None:
            return
        if st.status == "running":
            self._runc("kill", name, "TERM")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                st = self.state(name)
                if st is None or st.status != "running":
                    break
                time.sleep(0.05)
            else:
                self._runc("kill", name, "KILL")
        self.remove(name)

    def kill(self, name: str, sig: str = "KILL") -> None:
        r = self._runc("kill", name, sig.removeprefix("SIG"))
        if r.returncode != 0:
            raise DriverError(r.stderr.strip() or f"cannot kill {name}", r.returncode, r.stderr)

    def remove(self, name: str, force: bool = True) -> None:
        if self.state(name) is not None:
            self._runc("delete", *(["-f"] if force else []), name)
        shutil.rmtree(self.paths.bundles / name, ignore_errors=True)

    def state(self, name: str) -> ContainerState | None:
        r = self._runc("state", name)
        if r.returncode != 0:
            return None
        d = json.loads(r.stdout)
        return ContainerState(
            name, d.get("id", name), d.get("status", ""), None, int(d.get("pid") or 0)
        )

    def list(self) -> list[ContainerState]:
        r = self._runc("list", "--format", "json")
        if r.returncode != 0:
            return []
        return [
            ContainerState(d["id"], d["id"], d.get("status", ""), None, int(d.get("pid") or 0))
            for d in json.loads(r.stdout or "null") or []
        ]


def _resolve_in_rootfs(rootfs: Path, exe: str, path: str) -> bool:
    """Whether `exe` names an executable inside `rootfs` (absolute links resolved inside it)."""
    candidates = [exe] if "/" in exe else [f"{d}/{exe}" for d in path.split(":") if d]
    for c in candidates:
        p = rootfs / c.lstrip("/")
        for _ in range(16):
            if not p.is_symlink():
                break
            target = os.readlink(p)
            p = rootfs / target.lstrip("/") if target.startswith("/") else p.parent / target
        if p.is_file() and os.access(p, os.X_OK):
            return True
    return False


_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]


def _rlimits(ulimits: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for u in ulimits:
        name, _, values = u.partition("=")
        soft, _, hard = values.partition(":")
        out.append({"type": f"RLIMIT_{name.upper()}", "soft": int(soft), "hard": int(hard or soft)})
    return out


def oci_config(spec: RunSpec, rootfs: Path, settings: ContainerSettings) -> dict[str, Any]:
    """An OCI runtime config (runtime-spec 1.0) for `spec`, like `runc spec` but non-interactive."""
    network = spec.network or settings.network
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if network != "host":
        namespaces.append({"type": "network"})
    uid, _, gid = spec.user.partition(":")
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": spec.hostname or spec.name}
    env.update(dict(spec.env))
    args = ([spec.entrypoint] if spec.entrypoint else []) + list(spec.args)
    if not args:
        args = ["/bin/sh"]
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/tmp",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
    ]
    for v in spec.volumes:
        src, _, rest = v.partition(":")
        dst, _, opts = rest.partition(":")
        options = ["rbind", "ro" if "ro" in opts.split(",") else "rw"]
        mounts.append({"destination": dst, "type": "bind", "source": src, "options": options})
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": int(uid or 0), "gid": int(gid or 0)},
            "args": args,
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": spec.workdir or "/",
            "capabilities": {k: _CAPS for k in ("bounding", "effective", "permitted")},
            "rlimits": _rlimits(settings.ulimits)
            or [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": spec.hostname or spec.name,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    }


def driver_for(root: Path, settings: ContainerSettings) -> Driver:
    if settings.driver == "podman":
        return PodmanDriver(root, settings)
    if settings.driver == "runc":
        return RuncDriver(root, settings)
    return DockerDriver(root, settings)


def signal_name(sig: str | int) -> str:
    if isinstance(sig, int) or sig.isdigit():
        return signal.Signals(int(sig)).name
    return sig if sig.startswith("SIG") else f"SIG{sig}"
