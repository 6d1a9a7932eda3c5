"""Quadlet-style `.container` units → services, as Podman's generator does (containers.md §2.3).

Pure: a parsed `.container` file in, the text of the generated `.service` out. Differences
from Podman's generator, because corral's runner is not systemd: the container runs in the
foreground under `corral containers run` (no `--sdnotify=conmon`, no `-d`), so the unit's main
process lives exactly as long as the container; `Type=` defaults to `simple` (the unit's own
readiness, not conmon's); stop removes the container itself (`stop -t StopTimeout`, then
`rm -f` in ExecStopPost for the case where ExecStop was skipped).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from corral.containers.errors import QuadletError
from corral.units.syntax import Entry, ParsedUnit, split_words

__all__ = ["CONTAINER_KEYS", "generate_service", "service_name"]

# [Container] keys corral supports → how each becomes `run` arguments.
_LIST_OPTS = {
    "PublishPort": "--publish",
    "Volume": "--volume",
    "Label": "--label",
    "AddHost": "--add-host",
    "DNS": "--dns",
    "Tmpfs": "--tmpfs",
    "Mount": "--mount",
    "Ulimit": "--ulimit",
    "EnvironmentFile": "--env-file",
    "AddCapability": "--cap-add",
    "DropCapability": "--cap-drop",
    "ExposeHostPort": "--expose",
}
_SINGLE_OPTS = {
    "Network": "--network",
    "HostName": "--hostname",
    "WorkingDir": "--workdir",
    "StopSignal": "--stop-signal",
    "Memory": "--memory",
    "PidsLimit": "--pids-limit",
}
_BOOL_FLAGS = {"RunInit": "--init", "ReadOnly": "--read-only"}
_OTHER = {
    "Image",
    "Exec",
    "Entrypoint",
    "ContainerName",
    "Environment",
    "User",
    "Group",
    "StopTimeout",
    "PodmanArgs",
    "Notify",
    "Pull",
}
CONTAINER_KEYS = frozenset(_LIST_OPTS) | frozenset(_SINGLE_OPTS) | frozenset(_BOOL_FLAGS) | _OTHER


def service_name(container_unit: str) -> str:
    """`web.container` → `web.service`; `web@.container` → `web@.service`."""
    if not container_unit.endswith(".container"):
        raise QuadletError(f"{container_unit}: not a .container unit")
    return container_unit.removesuffix(".container") + ".service"


def _last(entries: Sequence[Entry], key: str) -> Entry | None:
    found = [e for e in entries if e.key == key]
    return found[-1] if found else None


def _bool(e: Entry) -> bool:
    v = e.value.strip().lower()
    if v in ("1", "yes", "true", "on"):
        return True
    if v in ("0", "no", "false", "off"):
        return False
    raise QuadletError(f"invalid boolean {e.value!r} for {e.key}", e.line, e.path)


def _quote(args: Sequence[str]) -> str:
    # systemd command-line quoting: double quotes, with % doubled outside specifiers left alone.
    out = []
    for a in args:
        if a and all(c.isalnum() or c in "-_./:=@%,+" for c in a):
            out.append(a)
        else:
            out.append('"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return " ".join(out)


def generate_service(
    unit: ParsedUnit, unit_name: str, root: Path, python: str, source_path: str = ""
) -> str:
    """The `.service` text for a parsed `.container` unit named `unit_name`."""
    container = [e for e in unit.entries if e.section == "Container"]
    if not unit.has_section("Container"):
        raise QuadletError("missing [Container] section", 0, source_path)
    for e in container:
        if e.key not in CONTAINER_KEYS:
            raise QuadletError(
                f"unsupported key '{e.key}' in group 'Container'", e.line, e.path or source_path
            )
    image = _last(container, "Image")
    if image is None or not image.value.strip():
        raise QuadletError("no Image key specified", 0, source_path)
    service_type = _last([e for e in unit.entries if e.section == "Service"], "Type")
    if service_type is not None and service_type.value not in (
        "simple",
        "exec",
        "oneshot",
        "notify",
    ):
        raise QuadletError(
            f"invalid service Type '{service_type.value}'",
            service_type.line,
            service_type.path or source_path,
        )

    name_entry = _last(container, "ContainerName")
    name = name_entry.value if name_entry and name_entry.value else "systemd-%N"
    args: list[str] = ["--name", name, "--replace", "--rm"]
    for e in container:
        if e.key in _LIST_OPTS and e.value:
            args += [_LIST_OPTS[e.key], e.value]
        elif e.key == "Environment":
            for word in split_words(e.value):
                if "=" not in word:
                    raise QuadletError(
                        f"invalid Environment assignment {word!r}", e.line, e.path or source_path
                    )
                args += ["--env", word]
    for key, opt in _SINGLE_OPTS.items():
        s = _last(container, key)
        if s is not None and s.value:
            args += [opt, s.value]
    for key, flag in _BOOL_FLAGS.items():
        b = _last(container, key)
        if b is not None and _bool(b):
            args.append(flag)
    user, group = _last(container, "User"), _last(container, "Group")
    if user is not None and user.value:
        args += [
            "--user",
            user.value + (f":{group.value}" if group is not None and group.value else ""),
        ]
    elif group is not None and group.value:
        raise QuadletError("Group set without User", group.line, group.path or source_path)
    entry = _last(container, "Entrypoint")
    if entry is not None:
        args += ["--entrypoint", entry.value]
    for e in container:
        if e.key == "PodmanArgs":
            args += split_words(e.value)
    exec_entry = _last(container, "Exec")
    exec_args = split_words(exec_entry.value) if exec_entry is not None else []
    stop_entry = _last(container, "StopTimeout")
    stop_timeout = "10"
    if stop_entry is not None:
        if not stop_entry.value.isdigit():
            raise QuadletError(
                f"invalid StopTimeout {stop_entry.value!r}",
                stop_entry.line,
                stop_entry.path or source_path,
            )
        stop_timeout = stop_entry.value

    corral = [python, "-m", "corral", "containers", "--root", str(root)]
    lines = [
        "# Generated by corral from " + (source_path or unit_name) + "; do not edit.",
        "[Unit]",
    ]
    lines += _passthrough(unit, "Unit")
    lines += ["", "[X-Container]"] + [f"{e.key}={e.value}" for e in container]
    lines += [
        "",
        "[Service]",
        "Environment=PODMAN_SYSTEMD_UNIT=%n",
        "KillMode=mixed",
        "SyslogIdentifier=%N",
        f"ExecStart={_quote([*corral, 'run', *args, image.value.strip(), *exec_args])}",
        f"ExecStop={_quote([*corral, 'stop', '-t', stop_timeout, name])}",
        f"ExecStopPost=-{_quote([*corral, 'rm', '-f', name])}",
    ]
    if service_type is None:
        lines.append("Type=simple")
    lines += _passthrough(unit, "Service")
    install = _passthrough(unit, "Install")
    if install:
        lines += ["", "[Install]", *install]
    return "\n".join(lines) + "\n"


def _passthrough(unit: ParsedUnit, section: str) -> list[str]:
    out = []
    for e in unit.entries:
        if e.section != section:
            continue
        value = e.value
        if section == "Unit" and e.key in (
            "After",
            "Before",
            "Requires",
            "Wants",
            "BindsTo",
            "PartOf",
        ):
            value = " ".join(
                w.removesuffix(".container") + ".service" if w.endswith(".container") else w
                for w in value.split()
            )
        out.append(f"{e.key}={value}")
    return out
