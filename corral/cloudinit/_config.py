"""The parsed cloud-config: frozen dataclasses that `corral node` consumes.

Built from the validator's coerced tree with the original's *strong* decoding rules: a value
of the wrong type decodes to the field's zero value ("", 0, false, empty), unknown keys are
ignored, `-` and `_` in keys are the same. Validation and parsing are separate steps, as in
coreos-cloudinit: an invalid config still parses; callers decide whether entries are fatal.

Sections that only become `Environment=` lines of a drop-in (etcd, etcd2, fleet, flannel,
locksmith) are kept as `EnvSection`s: the set options in schema order, with their env names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corral.cloudinit._gofmt import go_format_value
from corral.cloudinit._schema import (
    CLOUD_CONFIG,
    ETCD,
    ETCD2,
    FLANNEL,
    FLEET,
    LOCKSMITH,
    Kind,
    SliceOf,
    Struct,
    TypeSpec,
)
from corral.cloudinit._validate import Node, parse_tree
from corral.cloudinit.errors import CloudConfigError

__all__ = [
    "CloudConfig",
    "CoreOS",
    "CorralSettings",
    "EnvSection",
    "HealthCheck",
    "Unit",
    "UnitDropIn",
    "Update",
    "User",
    "WriteFile",
    "parse",
]

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class EnvSection:
    """Options of a service section that are set (non-zero), in the schema's order."""

    section: str
    options: tuple[tuple[str, str, Scalar], ...] = ()  # (key, ENV_NAME, value)

    def __bool__(self) -> bool:
        return bool(self.options)

    def get(self, key: str, default: Scalar | None = None) -> Scalar | None:
        for k, _env, value in self.options:
            if k == key:
                return value
        return default

    def environment(self) -> tuple[str, ...]:
        """`KEY=value` strings, values formatted as Go's %v formats them."""
        return tuple(f"{env}={go_format_value(v)}" for _k, env, v in self.options)

    def as_env(self) -> dict[str, str]:
        """The same as a mapping, to hand a service its environment directly."""
        return {env: go_format_value(v) for _k, env, v in self.options}


@dataclass(frozen=True, slots=True)
class WriteFile:
    path: str = ""
    content: str = ""
    encoding: str = ""
    owner: str = ""
    permissions: str = ""


@dataclass(frozen=True, slots=True)
class User:
    name: str = ""
    passwd: str = ""
    ssh_authorized_keys: tuple[str, ...] = ()
    gecos: str = ""
    homedir: str = ""
    no_create_home: bool = False
    primary_group: str = ""
    groups: tuple[str, ...] = ()
    no_user_group: bool = False
    system: bool = False
    no_log_init: bool = False
    shell: str = ""


@dataclass(frozen=True, slots=True)
class UnitDropIn:
    name: str = ""
    content: str = ""


@dataclass(frozen=True, slots=True)
class Unit:
    name: str = ""
    mask: bool = False
    enable: bool = False
    runtime: bool = False
    content: str = ""
    command: str = ""
    drop_ins: tuple[UnitDropIn, ...] = ()


@dataclass(frozen=True, slots=True)
class Update:
    reboot_strategy: str = ""
    group: str = ""
    server: str = ""

    def __bool__(self) -> bool:
        return bool(self.reboot_strategy or self.group or self.server)


@dataclass(frozen=True, slots=True)
class CoreOS:
    etcd: EnvSection = EnvSection("etcd")
    etcd2: EnvSection = EnvSection("etcd2")
    flannel: EnvSection = EnvSection("flannel")
    fleet: EnvSection = EnvSection("fleet")
    locksmith: EnvSection = EnvSection("locksmith")
    oem: tuple[tuple[str, str], ...] = ()
    update: Update = Update()
    units: tuple[Unit, ...] = ()


@dataclass(frozen=True, slots=True)
class HealthCheck:
    name: str = ""
    command: str = ""
    timeout: str = ""


@dataclass(frozen=True, slots=True)
class CorralSettings:
    """corral's own settings (`corral:`); see docs/cloud-config.md. Ports 0 = not set."""

    version: int = 1
    machine_id: str = ""
    root: str = ""
    client_port: int = 0
    peer_port: int = 0
    fleetlock_port: int = 0
    update_port: int = 0
    trusted_update_keys: tuple[str, ...] = ()
    health_checks: tuple[HealthCheck, ...] = ()
    heartbeat_ttl: str = ""
    dead_holder_grace: str = ""


@dataclass(frozen=True, slots=True)
class CloudConfig:
    ssh_authorized_keys: tuple[str, ...] = ()
    hostname: str = ""
    users: tuple[User, ...] = ()
    write_files: tuple[WriteFile, ...] = ()
    manage_etc_hosts: str = ""
    coreos: CoreOS = CoreOS()
    corral: CorralSettings = field(default_factory=CorralSettings)

    @property
    def kv_proxy(self) -> bool:
        """`etcd2.proxy: on` (or readonly) makes this machine a non-voting KV proxy."""
        return self.coreos.etcd2.get("proxy", "off") in ("on", "readonly")


# --- strong decoding from the coerced tree ----------------------------------------------------


def _strong(node: Node, spec: TypeSpec) -> Any:
    """The Go zero-or-value a strong yaml.Unmarshal gives for `node` decoded as `spec`."""
    if isinstance(spec, Struct):
        if node.kind is not Kind.MAP:
            return {}
        out: dict[str, Any] = {}
        for c in node.children:
            f = spec.field(c.name)
            if f is not None:
                out[f.name] = _strong(c, f.type)
        return out
    if isinstance(spec, SliceOf):
        if node.kind is not Kind.SLICE:
            return ()
        return tuple(_strong(c, spec.elem) for c in node.children)
    if spec is Kind.STRING:
        return node.value if node.kind is Kind.STRING else ""
    if spec is Kind.INT:
        return node.value if node.kind is Kind.INT else 0
    if spec is Kind.FLOAT:
        return float(node.value) if node.kind in (Kind.FLOAT, Kind.INT) else 0.0
    if spec is Kind.BOOL:
        return node.value if node.kind is Kind.BOOL else False
    return None


def _env_section(name: str, spec: Struct, values: dict[str, Any]) -> EnvSection:
    opts = []
    for f in spec.fields:
        v = values.get(f.name)
        if v not in (None, "", 0, False) or (isinstance(v, float) and v != 0.0):
            opts.append((f.name, f.env, v))
    return EnvSection(name, tuple(opts))


def _pick(cls: type, values: dict[str, Any]) -> Any:
    names = cls.__dataclass_fields__  # type: ignore[attr-defined]
    return cls(**{k: v for k, v in values.items() if k in names})


def from_tree(tree: Node) -> CloudConfig:
    top = _strong(tree, CLOUD_CONFIG)
    co = top.get("coreos", {})
    coreos = CoreOS(
        etcd=_env_section("etcd", ETCD, co.get("etcd", {})),
        etcd2=_env_section("etcd2", ETCD2, co.get("etcd2", {})),
        flannel=_env_section("flannel", FLANNEL, co.get("flannel", {})),
        fleet=_env_section("fleet", FLEET, co.get("fleet", {})),
        locksmith=_env_section("locksmith", LOCKSMITH, co.get("locksmith", {})),
        oem=tuple((k, v) for k, v in co.get("oem", {}).items() if v),
        update=_pick(Update, co.get("update", {})),
        units=tuple(
            _pick(
                Unit, {**u, "drop_ins": tuple(_pick(UnitDropIn, d) for d in u.get("drop_ins", ()))}
            )
            for u in co.get("units", ())
        ),
    )
    cr = top.get("corral", {})
    ports = cr.get("ports", {})
    lk = cr.get("locksmith", {})
    corral = CorralSettings(
        version=cr.get("version") or 1,
        machine_id=cr.get("machine_id", ""),
        root=cr.get("root", ""),
        client_port=ports.get("client", 0),
        peer_port=ports.get("peer", 0),
        fleetlock_port=ports.get("fleetlock", 0),
        update_port=ports.get("update", 0),
        trusted_update_keys=tuple(cr.get("trusted_update_keys", ())),
        health_checks=tuple(_pick(HealthCheck, h) for h in cr.get("health_checks", ())),
        heartbeat_ttl=lk.get("heartbeat_ttl", ""),
        dead_holder_grace=lk.get("dead_holder_grace", ""),
    )
    return CloudConfig(
        ssh_authorized_keys=tuple(top.get("ssh_authorized_keys", ())),
        hostname=top.get("hostname", ""),
        users=tuple(_pick(User, u) for u in top.get("users", ())),
        write_files=tuple(_pick(WriteFile, f) for f in top.get("write_files", ())),
        manage_etc_hosts=top.get("manage_etc_hosts", ""),
        coreos=coreos,
        corral=corral,
    )


def parse(data: bytes | str) -> CloudConfig:
    """Parse `#cloud-config` user data; raises CloudConfigError if it is not YAML."""
    text = data if isinstance(data, str) else data.decode("utf-8", "surrogateescape")
    tree, errors = parse_tree(text)
    if errors:
        raise CloudConfigError(str(errors[0]))
    return from_tree(tree)
