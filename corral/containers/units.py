"""How the unit runner meets containers: Exec lines, `.container` units, container names.

Theory of operation (reference: containers.md §1, §2.3, §4):

* `adapt_exec` is applied by the runner to every Exec line before it is spawned. A line whose
  argv[0] is `docker` (or `/usr/bin/docker` …) becomes `corral containers --root ROOT …`, so
  fleet-era units run unchanged on the machine's driver and no host binary is replaced. A line
  calling `podman` keeps its binary but gets the machine's own containers.conf/storage.conf
  through the environment, so it sees this machine's images and containers only.
* `container_service_text` turns `NAME.container` into the text of `NAME.service` with
  `quadlet.generate_service`; the runner loads that text as if it were the unit file, so every
  service setting (`Restart=`, `[Install]`, dependencies) keeps its meaning.
* `container_name` reads back which container a service runs (`--name` of its `run` line), so
  `corral units status` can ask the driver for the container's state and id.

Everything here is pure except `adapt_exec`, which writes the machine's podman configuration
(idempotent) the first time a podman line runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from corral.containers.dockercompat import is_docker_argv, map_docker_argv, parse_run
from corral.containers.errors import ContainerError
from corral.containers.quadlet import generate_service
from corral.containers.settings import load_settings, podman_env, write_podman_config
from corral.units.syntax import parse_unit_text

__all__ = [
    "adapt_exec",
    "container_name",
    "container_service_text",
    "container_source_names",
    "describe_container",
    "is_podman_argv",
]


def is_podman_argv(argv: Sequence[str]) -> bool:
    return bool(argv) and os.path.basename(argv[0]) == "podman"


def adapt_exec(
    argv: Sequence[str], env: Mapping[str, str], root: Path, python: str = sys.executable
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment an Exec line really runs with on this machine."""
    if is_docker_argv(argv):
        return map_docker_argv(argv, root, python), dict(env)
    if is_podman_argv(argv):
        write_podman_config(root, load_settings(root))
        return list(argv), {**env, **podman_env(root)}
    return list(argv), dict(env)


def container_source_names(service: str) -> list[str]:
    """`web.service` → [`web.container`]; `web@1.service` → [`web@1.container`, `web@.container`]."""
    if not service.endswith(".service"):
        return []
    stem = service.removesuffix(".service")
    names = [f"{stem}.container"]
    prefix, at, instance = stem.partition("@")
    if at and instance:
        names.append(f"{prefix}@.container")
    return names


def container_service_text(
    text: str, path: str, service: str, root: Path, python: str = sys.executable
) -> str:
    """The service text for a `.container` file (raises QuadletError naming the line)."""
    parsed = parse_unit_text(text, path)
    return generate_service(parsed, service, root, python, source_path=path)


def container_name(exec_start: Sequence[str]) -> str:
    """The container a service's main command runs, or "" if it runs none.

    Understands `docker run …`, `podman [global options] run …` and
    `… corral containers [--root R] run …` (what `.container` units and mapped docker lines
    become). Specifiers must already be resolved; `$VAR` words are returned unexpanded.
    """
    argv = list(exec_start)
    if not argv:
        return ""
    if is_docker_argv(argv) or is_podman_argv(argv):
        rest = argv[1:]
    elif "containers" in argv and "corral" in argv:
        rest = argv[argv.index("containers") + 1 :]
    else:
        return ""
    i = 0
    while i < len(rest) and rest[i].startswith("-"):
        # global options of podman / corral containers: `--root R`, `--root=R`, `--log-level …`
        i += 1 if "=" in rest[i] else 2
    if i >= len(rest) or rest[i] != "run":
        return ""
    try:
        return parse_run(rest[i + 1 :]).spec.name
    except ContainerError:
        return ""


def describe_container(root: Path, name: str) -> str:
    """`web1 (running, id 3f2a9c1b2d3e)` from the machine's driver, for `units status`."""
    from corral.containers.drivers import driver_for  # the driver runs commands: import late

    try:
        state = driver_for(root, load_settings(root)).state(name)
    except ContainerError as err:
        return f"{name} (unknown: {err})"
    if state is None:
        return f"{name} (no such container)"
    extra = f", exit code {state.exit_code}" if state.status in ("exited", "stopped") else ""
    return f"{name} ({state.status}{extra}, id {state.id[:12]})"
