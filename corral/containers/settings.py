"""A machine's container settings and the corral-owned podman configuration derived from them.

Everything podman would otherwise keep in /var/lib/containers, /run/libpod or /etc/containers
is placed under the machine root, so several machines can share one host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from corral.containers.errors import SettingsError

__all__ = [
    "DRIVERS",
    "RUNROOT_MAX",
    "ContainerSettings",
    "MachinePaths",
    "load_settings",
    "podman_env",
]

DRIVERS = ("podman", "runc", "docker")
RUNROOT_MAX = 50


@dataclass(frozen=True)
class ContainerSettings:
    driver: str = "podman"
    podman: str = "podman"
    runc: str = "runc"
    docker: str = "docker"
    runtime: str = ""
    cgroup_manager: str = ""
    storage_driver: str = "vfs"
    ulimits: tuple[str, ...] = ()
    network: str = "none"
    networks: tuple[str, ...] = ("none", "host")
    stop_timeout: int = 10

    @classmethod
    def from_mapping(cls, data: dict[str, Any], origin: str = "") -> ContainerSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(f"{origin}: unknown container setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("ulimits", "networks"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise SettingsError(f"{origin}: {key} must be a list of strings")
                values[key] = tuple(value)
            elif key == "stop_timeout":
                if not isinstance(value, int) or value < 0:
                    raise SettingsError(f"{origin}: stop_timeout must be a whole number >= 0")
                values[key] = value
            else:
                if not isinstance(value, str):
                    raise SettingsError(f"{origin}: {key} must be a string")
                values[key] = value
        settings = cls(**values)
        if settings.driver not in DRIVERS:
            raise SettingsError(f"{origin}: driver must be one of {', '.join(DRIVERS)}")
        if settings.network not in settings.networks:
            raise SettingsError(f"{origin}: default network {settings.network!r} is not allowed")
        return settings

    def merged(self, data: dict[str, Any], origin: str = "") -> ContainerSettings:
        base = {f.name: getattr(self, f.name) for f in fields(self)}
        base = {k: list(v) if isinstance(v, tuple) else v for k, v in base.items()}
        base.update(data)
        return ContainerSettings.from_mapping(base, origin)


@dataclass(frozen=True)
class MachinePaths:
    """Where a machine keeps its container configuration, storage and state."""

    root: Path

    @property
    def settings_file(self) -> Path:
        return self.root / "etc/corral/containers.yaml"

    @property
    def containers_conf(self) -> Path:
        return self.root / "etc/containers/containers.conf"

    @property
    def storage_conf(self) -> Path:
        return self.root / "etc/containers/storage.conf"

    @property
    def graphroot(self) -> Path:
        return self.root / "var/lib/containers/storage"

    @property
    def runroot(self) -> Path:
        # podman 4.3's `container cleanup` (run by conmon when a container exits) refuses a
        # runroot longer than 50 characters; `podman run` then waits out a 20 s timeout
        usual = self.root / "run/containers/storage"
        return usual if len(str(usual)) <= RUNROOT_MAX else self.root / "run/ps"

    @property
    def libpod_tmp(self) -> Path:
        return self.root / "run/libpod"

    @property
    def var_tmp(self) -> Path:
        return self.root / "var/tmp"

    @property
    def runc_state(self) -> Path:
        return self.root / "run/runc"

    @property
    def runc_images(self) -> Path:
        return self.root / "var/lib/corral/images"

    @property
    def bundles(self) -> Path:
        return self.root / "run/corral/bundles"


def _defaults() -> ContainerSettings:
    text = resources.files("corral.containers").joinpath("defaults.yaml").read_text()
    return ContainerSettings.from_mapping(yaml.safe_load(text) or {}, "defaults.yaml")


def load_settings(root: Path) -> ContainerSettings:
    """The machine's settings: corral's defaults overridden by `etc/corral/containers.yaml`."""
    settings = _defaults()
    path = MachinePaths(root).settings_file
    if path.exists():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path}: {exc}") from None
        if not isinstance(data, dict):
            raise SettingsError(f"{path}: expected a mapping of settings")
        settings = settings.merged(data, str(path))
    return settings


def save_settings(root: Path, settings: ContainerSettings, **changes: Any) -> ContainerSettings:
    settings = replace(settings, **changes)
    path = MachinePaths(root).settings_file
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {f.name: getattr(settings, f.name) for f in fields(settings)}
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return settings


def _toml_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def write_podman_config(root: Path, settings: ContainerSettings) -> None:
    """Write the machine's own containers.conf and storage.conf (idempotent)."""
    p = MachinePaths(root)
    for d in (p.graphroot, p.runroot, p.libpod_tmp, p.var_tmp, p.containers_conf.parent):
        d.mkdir(parents=True, exist_ok=True)
    engine = [
        # images come only from `corral images import`: never reach out to a registry
        'pull_policy = "never"',
        f'tmp_dir = "{p.libpod_tmp}"',
        'events_logger = "file"',
        f'volume_path = "{root / "var/lib/containers/volumes"}"',
        f'static_dir = "{p.graphroot / "libpod"}"',
    ]
    if settings.runtime:
        engine.append(f'runtime = "{settings.runtime}"')
    if settings.cgroup_manager:
        engine.append(f'cgroup_manager = "{settings.cgroup_manager}"')
    conf = [
        "# Written by corral from etc/corral/containers.yaml; edits are overwritten.",
        "[containers]",
        f"default_ulimits = {_toml_list(settings.ulimits)}",
        f'netns = "{settings.network}"',
        "[engine]",
        *engine,
        "[network]",
        # netavark's state is the fixed host folder /run/containers/networks in podman 4.3;
        # the CNI backend keeps all of its files in network_config_dir (only none/host are used)
        'network_backend = "cni"',
        f'network_config_dir = "{root / "etc/containers/networks"}"',
        "",
    ]
    storage = [
        "# Written by corral; this machine's own image and container storage.",
        "[storage]",
        f'driver = "{settings.storage_driver}"',
        f'graphroot = "{p.graphroot}"',
        f'runroot = "{p.runroot}"',
        "",
    ]
    _write_if_changed(p.containers_conf, "\n".join(conf))
    _write_if_changed(p.storage_conf, "\n".join(storage))


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def podman_env(root: Path) -> dict[str, str]:
    """Environment that points podman at the machine's own configuration and storage."""
    p = MachinePaths(root)
    return {
        "CONTAINERS_CONF": str(p.containers_conf),
        "CONTAINERS_STORAGE_CONF": str(p.storage_conf),
        "TMPDIR": str(p.var_tmp),
    }
