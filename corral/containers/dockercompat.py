"""Fleet-era `docker …` command lines, understood and mapped onto the machine's driver.

An Exec line that calls `docker` or `/usr/bin/docker` is rewritten to
`corral containers --root ROOT …`, a docker-like CLI over the configured driver, so units
written for CoreOS run unchanged and no host binary is replaced. `parse_run` is pure.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from corral.containers.drivers import RunSpec
from corral.containers.errors import ContainerError

__all__ = ["DOCKER_NAMES", "RunRequest", "is_docker_argv", "map_docker_argv", "parse_run"]

DOCKER_NAMES = frozenset({"docker", "/usr/bin/docker", "/bin/docker", "/usr/local/bin/docker"})

# `docker run` options that take a value (the rest are flags).
_VALUE_OPTS = {
    "--name",
    "-e",
    "--env",
    "--env-file",
    "-v",
    "--volume",
    "-p",
    "--publish",
    "--net",
    "--network",
    "-u",
    "--user",
    "-w",
    "--workdir",
    "--entrypoint",
    "-h",
    "--hostname",
    "-l",
    "--label",
    "--restart",
    "--stop-signal",
    "--stop-timeout",
    "-m",
    "--memory",
    "--ulimit",
    "--add-host",
    "--dns",
    "--log-driver",
    "--log-opt",
    "--cpu-shares",
    "--pids-limit",
    "--mount",
    "--tmpfs",
    "--cap-add",
    "--cap-drop",
    "--security-opt",
    "--expose",
    "--pull",
}
_IGNORED_FLAGS = {"-i", "--interactive", "-t", "--tty", "-it", "-ti", "--sig-proxy"}


class RunRequest:
    """A parsed `docker run`: the spec, plus whether it asked to detach."""

    def __init__(self, spec: RunSpec, detach: bool) -> None:
        self.spec = spec
        self.detach = detach


def is_docker_argv(argv: Sequence[str]) -> bool:
    return bool(argv) and argv[0] in DOCKER_NAMES


def map_docker_argv(argv: Sequence[str], root: Path, python: str = sys.executable) -> list[str]:
    """`/usr/bin/docker ARGS…` → `python -m corral containers --root ROOT ARGS…`."""
    if not is_docker_argv(argv):
        return list(argv)
    return [python, "-m", "corral", "containers", "--root", str(root), *argv[1:]]


def parse_run(args: Sequence[str], default_name: str = "") -> RunRequest:
    """Parse the arguments after `run` the way docker does (options stop at the image)."""
    opts: dict[str, list[str]] = {}
    flags: set[str] = set()
    extra: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("-") or a == "-":
            break
        if a == "--":
            i += 1
            break
        name, eq, value = a.partition("=")
        if name in _VALUE_OPTS:
            if not eq:
                i += 1
                if i >= len(args):
                    raise ContainerError(f"flag needs an argument: {name}")
                value = args[i]
            opts.setdefault(name, []).append(value)
        elif name in (
            "--rm",
            "-d",
            "--detach",
            "--init",
            "--privileged",
            "--read-only",
            "--replace",
        ):
            flags.add(name)
        elif name in _IGNORED_FLAGS:
            pass
        else:
            extra.append(a)
        i += 1
    if i >= len(args):
        raise ContainerError('"docker run" requires at least 1 argument: an image')
    image, command = args[i], tuple(args[i + 1 :])

    def all_of(*names: str) -> list[str]:
        return [v for n in names for v in opts.get(n, [])]

    def last(*names: str) -> str:
        vals = all_of(*names)
        return vals[-1] if vals else ""

    env: list[tuple[str, str]] = []
    for e in all_of("-e", "--env"):
        k, _, v = e.partition("=")
        env.append((k, v))
    labels = [tuple(x.partition("=")[::2]) for x in all_of("-l", "--label")]
    passthrough = list(extra)
    for n in (
        "--ulimit",
        "--add-host",
        "--dns",
        "--mount",
        "--tmpfs",
        "--cap-add",
        "--cap-drop",
        "--security-opt",
        "--stop-signal",
        "--stop-timeout",
        "-m",
        "--memory",
        "--pids-limit",
        "--env-file",
    ):
        for v in opts.get(n, []):
            passthrough += [n, v]
    if "--privileged" in flags:
        passthrough.append("--privileged")
    if "--read-only" in flags:
        passthrough.append("--read-only")
    entry = opts.get("--entrypoint")
    spec = RunSpec(
        name=last("--name") or default_name,
        image=image,
        args=command,
        env=tuple(env),
        network=last("--net", "--network"),
        volumes=tuple(all_of("-v", "--volume")),
        publish=tuple(all_of("-p", "--publish")),
        user=last("-u", "--user"),
        workdir=last("-w", "--workdir"),
        entrypoint=entry[-1] if entry else None,
        hostname=last("-h", "--hostname"),
        init="--init" in flags,
        labels=tuple((k, v) for k, v in labels),
        rm="--rm" in flags,
        replace="--replace" in flags,
        extra=tuple(passthrough),
    )
    return RunRequest(spec, detach=bool(flags & {"-d", "--detach"}))
