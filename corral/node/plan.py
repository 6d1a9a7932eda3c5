"""What one machine runs, decided from its cloud-config: the pure core of `corral node`.

Theory of operation
-------------------
coreos-cloudinit, at every boot, wrote the config's files and then told systemd which units
to (re)start (docs/cloud-config.md; update.md §6). `plan_node` makes the same decisions with
no I/O: given the parsed `CloudConfig`, the machine's identity and where its corral software
lives (`Software`: the active A/B slot's tree, or the installed corral), it returns

* `files`: everything to write under the machine root: what `cloudinit.render` produces, the
  `coreos.units` copied where corral's unit runner reads them (`etc/systemd/system/X` →
  `etc/corral/units/X`, `run/systemd/system/X` → `run/corral/units/X`), and one unit file per
  corral service (CoreOS's unit names):

  ============================  ==========================================  ===============
  unit                          runs                                        when
  ============================  ==========================================  ===============
  ``etcd2.service``             ``corral etcd`` with the ``ETCD_*`` env     ``coreos.etcd2``
  ``fleet.service``             ``corral fleetd`` with ``FLEET_*``          ``coreos.fleet``
  ``update-engine.service``     ``corral update-agent run``                 ``coreos.update.server``
                                                                            and slots provisioned
  ``locksmithd.service``        ``corral locksmith daemon``                 the update agent runs
                                                                            and the strategy is
                                                                            not ``off``
  ============================  ==========================================  ===============

* `services`: those units in start order; `commands`/`enable`: what `coreos.units` asks for;
  `notes`: what was left out and why (said to the user, never silent).

The services (not the update agent, which is the machine's boot loader and lives outside the
slots) run with ``PYTHONPATH`` set to the software's tree, so a "reboot" into the other slot
is a re-plan with another `Software` followed by a restart of the units whose file changed.

Paths in the etcd2 section (``data_dir``, ``wal_dir``) are re-rooted under the machine root,
as every other file is: nothing a machine writes lands outside its root.
"""

from __future__ import annotations

import enum
import posixpath
from dataclasses import dataclass

from corral.cloudinit import CloudConfig, EnvSection, RenderedFile, render
from corral.node.errors import UnsupportedConfig

__all__ = [
    "NODE_UNITS",
    "NodePlan",
    "Service",
    "Software",
    "UnitCommand",
    "plan_node",
    "substitute",
]

DEFAULT_CLIENT_URL = "http://127.0.0.1:2379"
_CLOUDINIT_DROPINS = ("etcd.service.d/", "etcd2.service.d/", "fleet.service.d/",
                      "locksmithd.service.d/")
_UNIT_COMMANDS = ("start", "stop", "restart", "reload", "try-restart", "reload-or-restart",
                  "reload-or-try-restart")


class Service(enum.Enum):
    """corral's own services on a machine, by their CoreOS unit names."""

    KV = "etcd2.service"
    FLEET = "fleet.service"
    UPDATE = "update-engine.service"
    LOCKSMITH = "locksmithd.service"


NODE_UNITS = tuple(s.value for s in Service)


@dataclass(frozen=True, slots=True)
class Software:
    """Where the machine's corral code comes from.

    `pythonpath` is the tree whose `corral/` package runs (a slot's tree); `slot` names the
    slot ("" = the installed corral, no slots). `python` is the interpreter.
    """

    python: str
    pythonpath: str
    slot: str = ""


@dataclass(frozen=True, slots=True)
class UnitCommand:
    """A `coreos.units` entry's `command` (start, stop, restart, …) for one unit."""

    unit: str
    command: str


@dataclass(frozen=True, slots=True)
class NodePlan:
    files: tuple[RenderedFile, ...]
    services: tuple[Service, ...]
    commands: tuple[UnitCommand, ...]
    enable: tuple[str, ...]
    notes: tuple[str, ...]
    hostname: str
    machine_id: str
    client_url: str


LOOPBACK_METADATA = {
    "private_ipv4": "127.0.0.1",
    "public_ipv4": "127.0.0.1",
    "private_ipv6": "::1",
    "public_ipv6": "::1",
}


def substitute(data: bytes, values: dict[str, str]) -> bytes:
    """Replace `$name` and `${name}` of the metadata `values` in the user data.

    coreos-cloudinit substituted `$private_ipv4`, `$public_ipv4` (and the v6 forms) from the
    provider's metadata before parsing; a loopback machine's metadata is the loopback
    addresses (`LOOPBACK_METADATA`). Longer names go first so `$public_ipv46` is not split.
    """
    for name in sorted(values, key=len, reverse=True):
        value = values[name].encode()
        data = data.replace(b"${" + name.encode() + b"}", value)
        data = data.replace(b"$" + name.encode(), value)
    return data


def _quote(value: str) -> str:
    """A value as one quoted word of a unit file (systemd.syntax: C escapes, `%` doubled)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def _rebase(root: str, path: str) -> str:
    """`path` as seen from inside the machine root (relative paths are relative to the root)."""
    clean = posixpath.normpath("/" + path).lstrip("/")
    return posixpath.join(root, clean) if clean else root


def _unit_text(
    description: str,
    argv: list[str],
    env: dict[str, str],
    *,
    after: tuple[str, ...] = (),
    restart_sec: float,
    unset: tuple[str, ...] = (),
) -> str:
    lines = ["[Unit]", f"Description={description}"]
    if after:
        lines += [f"Wants={' '.join(after)}", f"After={' '.join(after)}"]
    lines += ["", "[Service]"]
    lines += [f"Environment={_quote(f'{k}={v}')}" for k, v in env.items()]
    lines += [f"UnsetEnvironment={name}" for name in unset]
    lines.append("ExecStart=" + " ".join(_quote(a) for a in argv))
    lines += ["Restart=always", f"RestartSec={restart_sec:g}s", ""]
    return "\n".join(lines)


def _first_url(value: str) -> str:
    return value.split(",")[0].strip()


def _etcd_env(config: CloudConfig, root: str, machine_id: str) -> dict[str, str]:
    """etcd2.service's environment: CoreOS's defaults, corral's ports, then the config's."""
    c = config.corral
    env = {"ETCD_NAME": machine_id, "ETCD_DATA_DIR": "/var/lib/etcd2"}
    if c.client_port:
        url = f"http://127.0.0.1:{c.client_port}"
        env["ETCD_LISTEN_CLIENT_URLS"] = env["ETCD_ADVERTISE_CLIENT_URLS"] = url
    if c.peer_port:
        url = f"http://127.0.0.1:{c.peer_port}"
        env["ETCD_LISTEN_PEER_URLS"] = env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] = url
    env.update(config.coreos.etcd2.as_env())
    for key in ("ETCD_DATA_DIR", "ETCD_WAL_DIR"):
        if key in env:
            env[key] = _rebase(root, env[key])
    return env


def _client_url(env: dict[str, str]) -> str:
    for key in ("ETCD_ADVERTISE_CLIENT_URLS", "ETCD_LISTEN_CLIENT_URLS"):
        if env.get(key):
            url = _first_url(env[key])
            return url.replace("://0.0.0.0:", "://127.0.0.1:")
    return DEFAULT_CLIENT_URL


def _section_env(section: EnvSection) -> dict[str, str]:
    return section.as_env()


def plan_node(
    config: CloudConfig,
    *,
    root: str,
    machine_id: str,
    hostname: str,
    software: Software,
    update_conf_base: str = "",
    slots_provisioned: bool = False,
    fleetd_available: bool = True,
    kv_proxy_available: bool = True,
    restart_sec: float = 1.0,
) -> NodePlan:
    """Decide what the machine writes and runs. Pure: same inputs, same plan.

    Args:
        root: the machine root, absolute (paths inside unit files are under it).
        machine_id: used unless the config sets `corral.machine_id`.
        hostname: the machine's hostname when the config sets none.
        software: the corral tree the services run (see `Software`).
        update_conf_base: the existing etc/coreos/update.conf text.
        slots_provisioned: the root has A/B slots (the update agent needs them).
        fleetd_available / kv_proxy_available: what this corral can run.
        restart_sec: RestartSec= of corral's service units.
    Raises:
        UnsupportedConfig: `etcd2.proxy: on|readonly` and `kv_proxy_available` is false
            (a corral without `corral etcd --proxy`, e.g. an older slot).
        RenderError: from `cloudinit.render` (undecodable write_files, bad unit names).
    """
    if config.kv_proxy and not kv_proxy_available:
        raise UnsupportedConfig(
            "coreos.etcd2.proxy is "
            f"{config.coreos.etcd2.get('proxy')!r}: this machine would be a non-voting KV "
            "proxy, and this corral's `corral etcd` has no proxy mode; set proxy to \"off\" "
            "(or remove it) to run a voting member"
        )
    mid = config.corral.machine_id or machine_id
    host = config.hostname or hostname
    files = list(
        render(config, machine_id=mid, hostname=host, update_conf_base=update_conf_base)
    )
    notes: list[str] = []

    # coreos.units, where the unit runner reads them. Masked units are not supported by the
    # runner, so they are written (for the record) but not copied, and said so.
    for f in list(files):
        for src, dst in (("etc/systemd/system/", "etc/corral/units/"),
                         ("run/systemd/system/", "run/corral/units/")):
            if not f.path.startswith(src):
                continue
            rest = f.path[len(src):]
            if rest.startswith(_CLOUDINIT_DROPINS) and rest.endswith("/20-cloudinit.conf"):
                continue  # corral's own units get these settings directly (below)
            if f.link is not None:
                notes.append(f"{rest}: masking is not supported by corral's unit runner; "
                             "the unit is left as it is")
                continue
            files.append(RenderedFile(dst + rest, f.content, f.mode))

    base_env = {"PYTHONPATH": software.pythonpath, "CORRAL_MACHINE_ROOT": root}
    etcd_env = _etcd_env(config, root, mid)
    client_url = _client_url(etcd_env)
    python = software.python
    services: list[Service] = []
    units: dict[Service, str] = {}

    if config.coreos.etcd2:
        services.append(Service.KV)
        # `proxy: on|readonly` reaches `corral etcd` as ETCD_PROXY: it then runs etcd's v2
        # proxy (no Raft, no data) in front of the members named by ETCD_INITIAL_CLUSTER
        # (or ETCD_DISCOVERY), on this machine's client URL.
        what = "proxy" if config.kv_proxy else "member"
        units[Service.KV] = _unit_text(
            f"corral KV {what} (etcd2)", [python, "-m", "corral", "etcd"],
            {**base_env, **etcd_env}, restart_sec=restart_sec,
        )
    elif config.coreos.etcd:
        notes.append("coreos.etcd (etcd 0.4) is not run; use coreos.etcd2")

    kv_after = (Service.KV.value,) if Service.KV in services else ()
    if config.coreos.fleet:
        if fleetd_available:
            env = {"FLEET_ETCD_SERVERS": client_url, **_section_env(config.coreos.fleet)}
            services.append(Service.FLEET)
            units[Service.FLEET] = _unit_text(
                "corral fleet", [python, "-m", "corral", "fleetd", "--root", root],
                {**base_env, **env}, after=kv_after, restart_sec=restart_sec,
            )
        else:
            notes.append("coreos.fleet is set but this corral has no fleetd; fleet not started")

    update = config.coreos.update
    if update.server and slots_provisioned:
        # The agent is the machine's boot loader: it runs from the installed corral, not
        # from a slot, and picks the slot the other services run.
        argv = [python, "-m", "corral", "update-agent", "run", "--root", root,
                "--server", update.server, "--group", update.group or "stable",
                "--reboot-strategy", "off"]
        for needed in (Service.KV, Service.FLEET):
            if needed in services:
                argv += ["--health-unit", needed.value]
        if Service.FLEET in services:
            # Health-gated rollouts: the fleet units scheduled here must come back too. The
            # registry is read where fleetd writes it (every member it knows, so the gate
            # can read while this machine's own member restarts).
            servers = _section_env(config.coreos.fleet).get("FLEET_ETCD_SERVERS", client_url)
            for url in [u.strip() for u in str(servers).split(",") if u.strip()]:
                argv += ["--fleet-endpoint", url]
        services.append(Service.UPDATE)
        # Not the slot's PYTHONPATH (the runner's DefaultEnvironment= names the slot).
        units[Service.UPDATE] = _unit_text(
            "corral update agent (update_engine)", argv, {"CORRAL_MACHINE_ROOT": root},
            after=kv_after, restart_sec=restart_sec, unset=("PYTHONPATH",),
        )
        if update.reboot_strategy != "off":
            env = {**base_env, **_section_env(config.coreos.locksmith)}
            if update.reboot_strategy:
                env["REBOOT_STRATEGY"] = update.reboot_strategy
            endpoint = env.get("LOCKSMITHD_ENDPOINT", client_url)
            services.append(Service.LOCKSMITH)
            units[Service.LOCKSMITH] = _unit_text(
                "corral locksmith",
                [python, "-m", "corral", "locksmith", "--root", root, "--endpoint", endpoint,
                 "daemon"],
                env, after=(*kv_after, Service.UPDATE.value), restart_sec=restart_sec,
            )
    elif update.server:
        notes.append("coreos.update.server is set but the machine has no slots "
                     "(`corral update-agent provision`); the update agent is not started")
    if Service.LOCKSMITH not in services and config.coreos.locksmith:
        notes.append("coreos.locksmith is set but locksmith runs only beside the update "
                     "agent with a reboot strategy other than off; not started")

    for service in services:
        files.append(RenderedFile(f"run/corral/units/{service.value}",
                                  units[service].encode(), 0o644))

    commands: list[UnitCommand] = []
    enable: list[str] = []
    for unit in config.coreos.units:
        if unit.mask:
            continue
        if unit.enable:
            enable.append(unit.name)
        if unit.command:
            if unit.command not in _UNIT_COMMANDS:
                notes.append(f"{unit.name}: command {unit.command!r} is not supported")
                continue
            commands.append(UnitCommand(unit.name, unit.command))

    return NodePlan(
        files=tuple(files),
        services=tuple(services),
        commands=tuple(commands),
        enable=tuple(enable),
        notes=tuple(notes),
        hostname=host,
        machine_id=mid,
        client_url=client_url,
    )
