"""What a cloud-config writes under a machine's root, as data (pure: no files are touched).

`render()` returns the files coreos-cloudinit v1.13.0 would have written, as
`RenderedFile(path, content, mode)` with `path` relative to the root:

* `write_files` — decoded content; mode from `permissions` (octal), default 0644
  (`system/file.go`). Paths are cleaned as absolute paths, so none escapes the root.
* `hostname` → `etc/hostname`; the machine id → `etc/machine-id` (0444).
* `ssh_authorized_keys` → user `core`'s `authorized_keys.d/coreos-cloudinit`, and each user's
  keys the same way under their home; `authorized_keys` is the concatenation, as
  update-ssh-keys made it (0600).
* `manage_etc_hosts: localhost` → `etc/hosts` `127.0.0.1 <hostname>`.
* `coreos.update` → `etc/coreos/update.conf`: the base file with `KEY=` lines replaced and
  missing keys appended in sorted order (`system/update.go`).
* etcd/etcd2/fleet/locksmith → runtime drop-in `20-cloudinit.conf` with one
  `Environment="KEY=value"` line per set option (`system/env.go`); flannel →
  `run/flannel/options.env`.
* `coreos.units` → unit files and drop-ins under `etc/systemd/<group>` (`run/…` if runtime);
  a masked unit is a symlink to /dev/null (`link`).
* `corral.trusted_update_keys` → `etc/corral/update-keys/<n>.pem`; corral's settings →
  `etc/corral/node.json` (format version 1).

Not rendered (they are actions, not files): creating users/groups, running unit commands,
`daemon-reload`, `$public_ipv4`-style metadata substitution.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from corral.cloudinit._config import CloudConfig, EnvSection, Unit
from corral.cloudinit._gofmt import go_path_clean, go_quote
from corral.cloudinit._schema import UPDATE
from corral.cloudinit._validate import decode_content
from corral.cloudinit.errors import RenderError

__all__ = ["NODE_SETTINGS_VERSION", "RenderedFile", "render", "update_conf"]

NODE_SETTINGS_VERSION = 1
SSH_KEY_NAME = "coreos-cloudinit"
_STRATEGY_VALID = UPDATE.fields[0].valid


@dataclass(frozen=True, slots=True)
class RenderedFile:
    """A file to place at `root/path`; `link` set means a symlink to that target instead."""

    path: str
    content: bytes
    mode: int
    link: str | None = None


def _rel(path: str) -> str:
    return go_path_clean("/" + path).lstrip("/")


def update_conf(config: CloudConfig, base: str) -> str | None:
    """The new update.conf text from `base`, or None when no update option is set.

    Raises:
        RenderError: reboot_strategy is not one the original accepted.
    """
    u = config.coreos.update
    if not u:
        return None
    if u.reboot_strategy and not re.search(_STRATEGY_VALID, u.reboot_strategy):
        raise RenderError(
            f'invalid value {go_quote(u.reboot_strategy)} for option "RebootStrategy" '
            f"(valid options: {go_quote(_STRATEGY_VALID)})"
        )
    subs = {
        env: f"{env}={val}"
        for env, val in (
            ("REBOOT_STRATEGY", u.reboot_strategy),
            ("GROUP", u.group),
            ("SERVER", u.server),
        )
        if val
    }
    out = []
    for line in base.splitlines():
        for env in list(subs):
            if line.startswith(env):
                line = subs.pop(env)
                break
        out.append(line + "\n")
    out.extend(subs[k] + "\n" for k in sorted(subs))
    return "".join(out)


def _service_contents(section: EnvSection) -> str:
    return "[Service]\n" + "".join(f'Environment="{v}"\n' for v in section.environment())


def _unit_prefix(unit: Unit) -> str:
    group = "network" if unit.name.rsplit(".", 1)[-1] in ("network", "netdev", "link") else "system"
    return f"{'run' if unit.runtime else 'etc'}/systemd/{group}"


def _authorized_keys(home: str, keys: tuple[str, ...]) -> list[RenderedFile]:
    text = "".join(k + "\n" for k in keys).encode()
    ssh = _rel(home) + "/.ssh"
    return [
        RenderedFile(f"{ssh}/authorized_keys.d/{SSH_KEY_NAME}", text, 0o600),
        RenderedFile(f"{ssh}/authorized_keys", text, 0o600),
    ]


def render(
    config: CloudConfig,
    *,
    machine_id: str,
    hostname: str = "",
    update_conf_base: str = "",
) -> tuple[RenderedFile, ...]:
    """Everything `config` writes, relative to a machine root.

    Args:
        machine_id: used when the config's `corral.machine_id` is unset (the caller owns
            generating one, from its seeded RNG or an existing etc/machine-id).
        hostname: the machine's current hostname, for `manage_etc_hosts` when the config sets
            none.
        update_conf_base: the existing update.conf text to rewrite (empty if none).
    Raises:
        RenderError: a write_files entry whose content cannot be decoded or whose permissions
            are not octal.
    """
    files: list[RenderedFile] = []
    for wf in config.write_files:
        try:
            content = decode_content(wf.content.encode("utf-8", "surrogateescape"), wf.encoding)
        except ValueError as exc:
            raise RenderError(f"write_files {wf.path!r}: {exc}") from exc
        try:
            mode = int(wf.permissions, 8) if wf.permissions else 0o644
        except ValueError as exc:
            raise RenderError(
                f"write_files {wf.path!r}: bad permissions {wf.permissions!r}"
            ) from exc
        if not wf.path:
            raise RenderError("write_files entry without a path")
        files.append(RenderedFile(_rel(wf.path), content, mode))

    host = config.hostname or hostname
    if config.hostname:
        files.append(RenderedFile("etc/hostname", (config.hostname + "\n").encode(), 0o644))
    mid = config.corral.machine_id or machine_id
    files.append(RenderedFile("etc/machine-id", (mid + "\n").encode(), 0o444))

    # One authorized_keys.d file per home: top-level keys belong to `core`, and a `users`
    # entry for the same home adds to them rather than replacing them.
    keys_by_home: dict[str, list[str]] = {}
    if config.ssh_authorized_keys:
        keys_by_home.setdefault("/home/core", []).extend(config.ssh_authorized_keys)
    for user in config.users:
        if user.ssh_authorized_keys and user.name:
            home = user.homedir or f"/home/{user.name}"
            keys_by_home.setdefault(home, []).extend(user.ssh_authorized_keys)
    for home, keys in keys_by_home.items():
        files += _authorized_keys(home, tuple(keys))

    if config.manage_etc_hosts:
        if config.manage_etc_hosts != "localhost":
            raise RenderError("Invalid option to manage_etc_hosts")
        files.append(RenderedFile("etc/hosts", f"127.0.0.1 {host}\n".encode(), 0o644))

    conf = update_conf(config, update_conf_base)
    if conf is not None:
        files.append(RenderedFile("etc/coreos/update.conf", conf.encode(), 0o644))

    for section, service in (
        (config.coreos.etcd, "etcd.service"),
        (config.coreos.etcd2, "etcd2.service"),
        (config.coreos.fleet, "fleet.service"),
        (config.coreos.locksmith, "locksmithd.service"),
    ):
        if section:
            path = f"run/systemd/system/{service}.d/20-cloudinit.conf"
            files.append(RenderedFile(path, _service_contents(section).encode(), 0o644))
    if config.coreos.flannel:
        env = "".join(v + "\n" for v in config.coreos.flannel.environment())
        files.append(RenderedFile("run/flannel/options.env", env.encode(), 0o644))

    for unit in config.coreos.units:
        if not unit.name or "/" in unit.name:
            raise RenderError(f"bad unit name {unit.name!r}")
        prefix = _unit_prefix(unit)
        if unit.mask:
            files.append(RenderedFile(f"{prefix}/{unit.name}", b"", 0o777, link="/dev/null"))
        elif unit.content:
            files.append(RenderedFile(f"{prefix}/{unit.name}", unit.content.encode(), 0o644))
        for d in unit.drop_ins:
            if not d.name or "/" in d.name:
                raise RenderError(f"bad drop-in name {d.name!r} for {unit.name}")
            files.append(
                RenderedFile(f"{prefix}/{unit.name}.d/{d.name}", d.content.encode(), 0o644)
            )

    c = config.corral
    for i, key in enumerate(c.trusted_update_keys):
        files.append(RenderedFile(f"etc/corral/update-keys/{i:02d}.pem", key.encode(), 0o644))
    settings = {"version": NODE_SETTINGS_VERSION, **asdict(c)}
    settings["version"] = NODE_SETTINGS_VERSION
    settings["machine_id"] = mid
    files.append(
        RenderedFile(
            "etc/corral/node.json",
            (json.dumps(settings, sort_keys=True, indent=2) + "\n").encode(),
            0o644,
        )
    )
    return tuple(files)
